"""Caption quality recipe: cross-entropy training, then self-critical training (CIDEr-D rewards), scored per stage.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py flickr [--shared ../shared]
        [--cache-dir /tmp/captioning-quality] [--features DIR] [--xe-model DIR] [--sc-updates 1000]
        [--sc-learning-rate 0.00002] [--sc-batch-size 16] [--samples 5] [--baseline mean]
        [--checkpoint-interval 100] [--beam-size 3] [--augment none|flip|ten-crop]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py speed --xe-model DIR [--updates 12] [--samples 5]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py scenes [--cache-dir ...] --sc-updates 200 \
        --sc-learning-rate 0.0001 --sc-batch-size 32 --checkpoint-interval 50

``flickr`` (FLICKR-A: flickr8k-sample's 753 training images x 5 captions; dev 113 images, 5 references):
1. cross-entropy: benchmarks/train.py's tutorial model with its regularised recipe for 1,600 updates (or the model
   folder ``--xe-model``, e.g. the one benchmarks/train.py wrote);
2. self-critical: ``--params XE/params.best --loss self-critical`` with the same network options, ``--samples`` K,
   ``--baseline``, a constant learning rate ``--sc-learning-rate``, ``--sc-updates`` updates (no early stopping; the
   checkpoint decoder reports cider-val on all of dev with its 5 references);
3. each stage's model (XE: params.best by validation perplexity; self-critical: the LAST checkpoint, so nothing is
   chosen on dev) captions dev at ``--beam-size`` (length penalty alpha 1.0) and is scored against the 5 references
   with captioning.evaluate (BLEU-1..4, METEOR where Java exists, ROUGE-L, CIDEr-D), plus the number of distinct
   captions, the vocabulary used and the captions that end with a dangling word (beam_search.DANGLING_WORDS).
``speed``: self-critical updates/s of the tutorial model on FLICKR-A (batches of 64 training lines, K samples per
distinct image, Adam with clipping as the train CLI), and the share of an update spent sampling, computing rewards and
in the forward/backward pass (after 2 warm-up updates).
``scenes``: the synthetic scenes (1,000 training images x 5 captions, 100 test images), the system test's small RNN
model: cross-entropy, then self-critical; test scores per stage.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import train as train_bench  # noqa: E402  (benchmarks/train.py: FLICKR-A lists, the tutorial model and recipe)

PYTHON = sys.executable


def caption_stats(hypotheses: Sequence[str]) -> Dict[str, float]:
    from captioning.beam_search import DANGLING_WORDS
    words = [h.split() for h in hypotheses]
    return {"distinct captions": len(set(hypotheses)),
            "vocabulary used": len({w for ws in words for w in ws}),
            "dangling endings": sum(1 for ws in words if ws and ws[-1] in DANGLING_WORDS),
            "mean length": statistics.mean(len(ws) for ws in words)}


def score(model: Path, features_list: str, root: str, references: List[List[str]], out: Path, beam_size: int,
          checkpoint: Optional[int] = None) -> Dict[str, float]:
    """Caption ``features_list`` with the model and score against ``references``; predictions kept in ``out``."""
    from captioning import evaluate
    chosen = [] if checkpoint is None else ["--checkpoints", str(checkpoint)]
    train_bench.run([PYTHON, "-m", "captioning.captioner", "--models", str(model), "--input", features_list,
                     "--source-root", root, "--beam-size", str(beam_size), "--length-penalty-alpha", "1.0",
                     "--batch-size", "64", "--max-output-length", "60", "--use-cpu", "--output", str(out)] + chosen,
                    out.with_suffix(".log"))
    hypotheses = out.read_text().splitlines()
    scores = evaluate.evaluate(hypotheses, references, ["coco"])
    scores.update(caption_stats(hypotheses))
    return scores


def line(scores: Dict[str, float]) -> str:
    order = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "distinct captions",
             "vocabulary used", "dangling endings", "mean length"]
    return ", ".join("%s %s" % (k, ("%.1f" % scores[k]) if isinstance(scores[k], float) else scores[k])
                     for k in order if k in scores)


def last_checkpoint(folder: Path) -> int:
    return train_bench.metrics(folder)[-1]["checkpoint"]


def with_validation_targets(cmd: List[str], targets: Sequence[str]) -> List[str]:
    i = cmd.index("--validation-target")
    return cmd[:i + 1] + list(targets) + cmd[i + 2:]


def self_critical_flags(xe: Path, args: argparse.Namespace) -> List[str]:
    start = "params.best" if args.xe_checkpoint is None else "params.%05d" % args.xe_checkpoint
    return ["--params", str(xe / start), "--loss", "self-critical", "--self-critical-samples",
            str(args.samples), "--self-critical-baseline", args.baseline, "--initial-learning-rate",
            str(args.sc_learning_rate), "--learning-rate-scheduler-type", "none", "--max-updates",
            str(args.sc_updates), "--checkpoint-interval", str(args.checkpoint_interval),
            "--max-num-checkpoint-not-improved", "-1", "--optimized-metric", "cider", "--decode-and-evaluate", "-1",
            "--batch-size", str(args.sc_batch_size), "--self-critical-top-k", str(args.sc_top_k)] + \
        (["--self-critical-sample-dropout"] if args.sc_sample_dropout else [])


# ---------------------------------------------------------------------------------------------------------------
def flickr(args: argparse.Namespace) -> None:
    shared, cache = Path(args.shared).resolve(), Path(args.cache_dir)
    data = shared / "data" / "flickr8k-sample"
    cache.mkdir(parents=True, exist_ok=True)
    feats = Path(args.features) if args.features else train_bench.extract(shared, cache, "head_conv", args.augment)
    paths = train_bench.make_lists(shared, feats, cache, args.augment)
    dev_targets = [str(data / ("dev.captions.%d" % k)) for k in range(5)]
    references = [list(r) for r in zip(*[Path(t).read_text().splitlines() for t in dev_targets])]

    suffix = train_bench.augment_suffix(args.augment)
    xe = Path(args.xe_model) if args.xe_model else cache / ("xe" + suffix)
    if not (xe / "params.best").exists():
        extra = ["--load-all-features-to-memory", "--max-updates", "1600", "--checkpoint-interval", "200",
                 "--decode-and-evaluate", "0"] + train_bench.REGULARISED
        seconds, _ = train_bench.run(train_bench.train_command(paths, xe, extra), cache / "xe.log")
        print("cross-entropy: 1600 updates in %.0f s wall" % seconds)
    xe_name = ("xe" if args.xe_checkpoint is None else "xe-%d" % args.xe_checkpoint) + suffix
    xe_scores = score(xe, paths["validation_source"], paths["root"], references, cache / (xe_name + ".dev.predictions"),
                      args.beam_size, args.xe_checkpoint)
    print("cross-entropy (%s, %s), dev beam %d, 5 references: %s"
          % (xe, "params.best by perplexity-val" if args.xe_checkpoint is None else
             "checkpoint %d" % args.xe_checkpoint, args.beam_size, line(xe_scores)))
    if args.sc_updates <= 0:
        return
    start = "" if args.xe_checkpoint is None else "-from%d" % args.xe_checkpoint
    sc = cache / ("sc-%s-k%d-b%d-lr%g-top%d%s%s%s" % (args.baseline, args.samples, args.sc_batch_size,
                                                     args.sc_learning_rate, args.sc_top_k,
                                                     "-dropout" if args.sc_sample_dropout else "", start, suffix))
    cmd = train_bench.train_command(paths, sc, ["--load-all-features-to-memory"] + train_bench.REGULARISED +
                                    self_critical_flags(xe, args))
    seconds, rss = train_bench.run(with_validation_targets(cmd, dev_targets), cache / (sc.name + ".log"))
    rows = train_bench.metrics(sc)
    print("self-critical: %d updates in %.0f s wall (%.3f updates/s), peak RSS %d MB; cider-val by checkpoint: %s"
          % (args.sc_updates, seconds, args.sc_updates / seconds, rss,
             " ".join("%.1f" % r.get("cider-val", float("nan")) for r in rows)))
    sc_scores = score(sc, paths["validation_source"], paths["root"], references, cache / (sc.name + ".dev.predictions"),
                      args.beam_size, last_checkpoint(sc))
    print("self-critical (%s, last checkpoint), dev beam %d, 5 references: %s" % (sc.name, args.beam_size,
                                                                                  line(sc_scores)))
    gain = 100.0 * (sc_scores["CIDEr-D"] / xe_scores["CIDEr-D"] - 1.0)
    print("CIDEr-D %.1f -> %.1f (%+.1f%% relative); BLEU-4 %.1f -> %.1f"
          % (xe_scores["CIDEr-D"], sc_scores["CIDEr-D"], gain, xe_scores["BLEU-4"], sc_scores["BLEU-4"]))


# ---------------------------------------------------------------------------------------------------------------
def speed(args: argparse.Namespace) -> None:
    """Self-critical updates of the tutorial model in-process, timed by part."""
    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from captioning import data_io, features, model as model_module
    from captioning.objective import BatchShare
    from captioning.self_critical import SelfCriticalObjective

    shared, cache = Path(args.shared).resolve(), Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    feats = Path(args.features) if args.features else train_bench.extract(shared, cache, "head_conv")
    paths = train_bench.make_lists(shared, feats, cache)
    names = Path(paths["source"]).read_text().splitlines()
    captions = Path(paths["target"]).read_text().splitlines()
    image_ids, distinct = data_io.image_ids(names)
    references: List[List[str]] = [[] for _ in distinct]
    for i, caption in zip(image_ids, captions):
        references[i].append(" ".join(caption.split()))
    store = features.open_feature_store(paths["root"], distinct, mode="memory", list_path=paths["source"])
    model, vocab = model_module.load_model(str(args.xe_model), None, mx.cpu())
    objective = SelfCriticalObjective(references, vocab, num_samples=args.samples, baseline=args.baseline,
                                      max_output_length=model.config.max_output_length)
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": args.sc_learning_rate,
                                                             "clip_gradient": 1.0})
    rng = np.random.RandomState(0)
    mx.random.seed(1)
    times, parts = [], []
    for update in range(args.updates + 2):
        lines = rng.choice(len(names), size=args.batch_size, replace=False)
        ids = image_ids[lines]
        share = BatchShare(ctx=mx.cpu(), features=mx.nd.array(store.get_batch(ids)),
                           target_input=mx.nd.zeros((len(ids), 1)), labels=mx.nd.zeros((len(ids), 1)),
                           image_ids=ids)
        mx.nd.waitall()
        before = dict(objective.seconds)
        start = time.perf_counter()
        objective.forward_backward(model, [share])
        trainer.step(1)
        mx.nd.waitall()
        elapsed = time.perf_counter() - start
        if update >= 2:
            times.append(elapsed)
            parts.append({k: objective.seconds[k] - before[k] for k in before})
    total = sum(times)
    share = {k: sum(p[k] for p in parts) / total for k in parts[0]}
    metrics = objective.metrics()
    print("self-critical speed (tutorial model %s, batches of %d training lines, K=%d, %s baseline, %d updates, "
          "OMP_NUM_THREADS=%s): %.3f updates/s (%.2f s per update); share of an update: sampling %.1f%%, "
          "reward %.1f%%, rest (teacher-forced forward/backward, optimizer) %.1f%%; mean sample length %.1f"
          % (args.xe_model, args.batch_size, args.samples, args.baseline, len(times),
             os.environ.get("OMP_NUM_THREADS", "default"), len(times) / total, total / len(times),
             100 * share["sample"], 100 * share["reward"], 100 * (1 - share["sample"] - share["reward"]),
             metrics["sample-length-train"]))


# ---------------------------------------------------------------------------------------------------------------
SCENES_MODEL = ["--rnn-num-hidden", "64", "--num-embed", "32", "--image-encoder-num-hidden", "64", "--batch-size",
                "32", "--no-rnn-input-feeding", "--rnn-decoder-hidden-dropout", "0.1", "--use-cpu", "--seed", "5"]


def scenes(args: argparse.Namespace) -> None:
    cache = Path(args.cache_dir) / "scenes"
    data, feats = cache / "data", cache / "features"
    if not (data / "train.images").exists():
        train_bench.run([PYTHON, "-m", "captioning.synthetic", str(data), "--train", "1000", "--val", "100",
                         "--test", "100", "--seed", "1"], cache.parent / "scenes-data.log")
    for split in ("train", "val", "test"):
        if not (feats / ("%s.features" % split)).exists():
            feats.mkdir(parents=True, exist_ok=True)
            train_bench.run([PYTHON, "-m", "captioning.extract_features", "--image-root", str(data), "--input",
                             str(data / ("%s.images" % split)), "--output-root", str(feats), "--output",
                             str(feats / ("%s.features" % split)), "--source-image-size", "3", "128", "128",
                             "--image-encoder-model-path", str(data / "cnn" / "synthetic-cnn"),
                             "--image-encoder-layer", "stage4_unit2_conv2", "--use-cpu"],
                            cache / ("extract-%s.log" % split))
    val_targets = [str(data / "val.captions")] + [str(data / ("val.captions.%d" % k)) for k in range(1, 5)]
    test_targets = [str(data / "test.captions")] + [str(data / ("test.captions.%d" % k)) for k in range(1, 5)]
    references = [list(r) for r in zip(*[Path(t).read_text().splitlines() for t in test_targets])]

    def command(output: Path, extra: List[str]) -> List[str]:
        return with_validation_targets(
            [PYTHON, "-m", "captioning.train", "--source-root", str(feats), "--source",
             str(feats / "train.features"), "--target", str(data / "train.captions"), "--validation-source",
             str(feats / "val.features"), "--validation-target", "VAL", "--output", str(output),
             "--overwrite-output"] + SCENES_MODEL + extra, val_targets)

    xe = cache / "xe"
    if not (xe / "params.best").exists():
        seconds, _ = train_bench.run(command(xe, ["--checkpoint-interval", "50", "--max-updates", "400",
                                                  "--initial-learning-rate", "0.003", "--decode-and-evaluate", "0"]),
                                     cache / "xe.log")
        print("scenes cross-entropy: 400 updates in %.0f s wall" % seconds)
    xe_scores = score(xe, str(feats / "test.features"), str(feats), references, cache / "xe.test.predictions",
                      args.beam_size)
    print("scenes cross-entropy (params.best by perplexity-val), test beam %d, 5 references: %s"
          % (args.beam_size, line(xe_scores)))
    sc = cache / ("sc-%s-k%d-b%d-lr%g-top%d%s" % (args.baseline, args.samples, args.sc_batch_size,
                                                 args.sc_learning_rate, args.sc_top_k,
                                                 "-dropout" if args.sc_sample_dropout else ""))
    seconds, _ = train_bench.run(command(sc, self_critical_flags(xe, args)), cache / (sc.name + ".log"))
    sc_scores = score(sc, str(feats / "test.features"), str(feats), references, cache / (sc.name + ".test.predictions"),
                      args.beam_size, last_checkpoint(sc))
    print("scenes self-critical (%d updates in %.0f s wall, last checkpoint), test beam %d, 5 references: %s"
          % (args.sc_updates, seconds, args.beam_size, line(sc_scores)))
    print("scenes CIDEr-D %.1f -> %.1f; BLEU-4 %.1f -> %.1f" % (xe_scores["CIDEr-D"], sc_scores["CIDEr-D"],
                                                                  xe_scores["BLEU-4"], sc_scores["BLEU-4"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["flickr", "speed", "scenes"])
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    parser.add_argument("--cache-dir", default="/tmp/captioning-quality")
    parser.add_argument("--features", default=None, help="FLICKR-A head_conv feature folder (default: extract into "
                                                         "the cache)")
    parser.add_argument("--xe-model", default=None, help="cross-entropy model folder (default: train one)")
    parser.add_argument("--augment", choices=list(train_bench.AUGMENTATIONS), default="none",
                        help="flickr: both stages train on these views of the training photos (extract_features "
                             "--augment; with --features, a folder extracted so)")
    parser.add_argument("--sc-updates", type=int, default=1000)
    parser.add_argument("--sc-learning-rate", type=float, default=2e-5)
    parser.add_argument("--sc-batch-size", type=int, default=16,
                        help="self-critical: training lines per batch (each distinct image gets --samples samples)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--xe-checkpoint", type=int, default=None,
                        help="self-critical starts from the cross-entropy model's params.NNNNN of this checkpoint "
                             "(default: params.best)")
    parser.add_argument("--sc-top-k", type=int, default=0,
                        help="self-critical: sample each word from the K most likely (0: the whole softmax)")
    parser.add_argument("--sc-sample-dropout", action="store_true",
                        help="self-critical: sample with dropout active")
    parser.add_argument("--baseline", choices=["mean", "greedy"], default="mean")
    parser.add_argument("--checkpoint-interval", type=int, default=100)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--updates", type=int, default=12, help="speed: timed updates")
    parser.add_argument("--batch-size", type=int, default=64, help="speed: training lines per batch")
    args = parser.parse_args()
    {"flickr": flickr, "speed": speed, "scenes": scenes}[args.stage](args)


if __name__ == "__main__":
    main()
