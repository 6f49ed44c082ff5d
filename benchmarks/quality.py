"""Caption quality of the full recipe: cross-entropy training, then self-critical training (CIDEr-D rewards).

    python -m benchmarks.quality flickr [--shared ../shared] [--cache-dir /tmp/captioning-quality] [--features DIR]
        [--xe-model DIR] [--sc-updates 1000] [--sc-learning-rate 0.00002] [--sc-batch-size 16] [--samples 5]
        [--baseline mean] [--checkpoint-interval 100] [--beam-size 3] [--augment none|flip|ten-crop]
    python -m benchmarks.quality scenes [--cache-dir ...] --sc-updates 200 --sc-learning-rate 0.0001 \
        --sc-batch-size 32 --checkpoint-interval 50

``flickr`` (record ``quality-flickr``; FLICKR-A: flickr8k-sample's 753 training photos x 5 captions, dev 113 photos
with 5 references):
1. cross-entropy: `benchmarks.train`'s tutorial model with its regularised recipe for 1,600 updates (or the model
   folder ``--xe-model``);
2. self-critical: ``--params XE/params.best --loss self-critical`` with the same network options, ``--samples`` K,
   ``--baseline``, a constant learning rate ``--sc-learning-rate``, ``--sc-updates`` updates (no early stopping);
3. each stage's model (cross-entropy: params.best by validation perplexity; self-critical: the LAST checkpoint, so
   nothing is chosen on dev) captions dev at ``--beam-size`` (length penalty alpha 1.0) and is scored against the 5
   references with captioning.evaluate (BLEU-4, METEOR where Java exists, ROUGE-L, CIDEr-D), with the number of
   distinct captions, the vocabulary used and the captions that end with a dangling word.
In the record the cross-entropy model is the baseline and the self-critical one is ours.
``scenes`` (record ``quality-scenes``): the synthetic scenes (1,000 training images x 5 captions, 100 test images)
with a small RNN model: cross-entropy, then self-critical; test scores of each stage.
"""
import argparse
import logging
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks import train as train_bench
from benchmarks.harness import Session

logger = logging.getLogger("benchmarks")
PYTHON = sys.executable
SCORES = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "distinct captions", "vocabulary used", "dangling endings",
          "mean length")


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
    train_bench.run(train_bench.caption_command(model, features_list, root, out, beam_size, checkpoint),
                    out.with_suffix(".log"))
    hypotheses = out.read_text().splitlines()
    scores = evaluate.evaluate(hypotheses, references, ["coco"])
    scores.update(caption_stats(hypotheses))
    return scores


def add_scores(record: Session, split: str, baseline: Dict[str, float], ours: Dict[str, float]) -> None:
    """The two stages' scores as figures: self-critical (ours) against cross-entropy (baseline)."""
    for key in SCORES:
        if key in ours and key in baseline:
            record.figure("%s %s" % (split, key), "", key not in ("dangling endings",), [float(ours[key])],
                          [float(baseline[key])])


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


def session(args: argparse.Namespace, benchmark: str, description: str) -> Session:
    return Session(benchmark=benchmark, reproduce=harness.reproduce_command("benchmarks.quality", args.argv),
                   description=description, baseline="the cross-entropy model self-critical training starts from",
                   ours="after self-critical training", threads=args.threads, rounds=1, settle_s=args.settle,
                   results_dir=Path(args.results_dir))


def flickr(args: argparse.Namespace) -> None:
    shared, cache = Path(args.shared).resolve(), Path(args.cache_dir)
    data = shared / "data" / "flickr8k-sample"
    if not data.is_dir():
        print("skipped: %s has no data/flickr8k-sample" % shared)
        return
    cache.mkdir(parents=True, exist_ok=True)
    record = session(args, "quality-flickr", "FLICKR-A dev caption quality, 5 references: cross-entropy, then "
                                             "self-critical training")
    env = harness.ours_environment(harness.REPO, args.threads)
    feats = Path(args.features) if args.features else train_bench.extract(shared, cache, "head_conv", args.augment)
    paths = train_bench.make_lists(shared, feats, cache, args.augment)
    dev_targets = [str(data / ("dev.captions.%d" % k)) for k in range(5)]
    references = [list(r) for r in zip(*[Path(t).read_text().splitlines() for t in dev_targets])]

    suffix = train_bench.augment_suffix(args.augment)
    xe = Path(args.xe_model) if args.xe_model else cache / ("xe" + suffix)
    if not (xe / "params.best").exists():
        extra = train_bench.quality_extra("regularised", 1600)
        record.run("baseline", 0, harness.Job(train_bench.train_command(paths, xe, extra), env, str(harness.REPO),
                                              cache / "xe.log"), "cross-entropy training")
    xe_name = ("xe" if args.xe_checkpoint is None else "xe-%d" % args.xe_checkpoint) + suffix
    xe_scores = score(xe, paths["validation_source"], paths["root"], references, cache / (xe_name + ".dev.predictions"),
                      args.beam_size, args.xe_checkpoint)
    logger.info("cross-entropy (%s), dev beam %d: %s", xe, args.beam_size, xe_scores)
    sc = cache / sc_name(args, suffix)
    cmd = train_bench.train_command(paths, sc, ["--load-all-features-to-memory"] + train_bench.REGULARISED +
                                    self_critical_flags(xe, args))
    done = record.run("ours", 0, harness.Job(with_validation_targets(cmd, dev_targets), env, str(harness.REPO),
                                             cache / (sc.name + ".log")), "self-critical training")
    sc_scores = score(sc, paths["validation_source"], paths["root"], references, cache / (sc.name + ".dev.predictions"),
                      args.beam_size, last_checkpoint(sc))
    add_scores(record, "dev (beam %d)" % args.beam_size, xe_scores, sc_scores)
    record.figure("self-critical updates per second", "updates/s", True, [args.sc_updates / done.wall_s])
    record.figure("self-critical training peak RSS", "GB", False, [done.peak_rss_mb / 1024.0])
    record.finish()


def sc_name(args: argparse.Namespace, suffix: str = "") -> str:
    start = "" if args.xe_checkpoint is None else "-from%d" % args.xe_checkpoint
    return "sc-%s-k%d-b%d-lr%g-top%d%s%s%s" % (args.baseline, args.samples, args.sc_batch_size, args.sc_learning_rate,
                                               args.sc_top_k, "-dropout" if args.sc_sample_dropout else "", start,
                                               suffix)


# ---------------------------------------------------------------------------------------------------------------
SCENES_MODEL = ["--rnn-num-hidden", "64", "--num-embed", "32", "--image-encoder-num-hidden", "64", "--batch-size",
                "32", "--no-rnn-input-feeding", "--rnn-decoder-hidden-dropout", "0.1", "--use-cpu", "--seed", "5"]


def scenes(args: argparse.Namespace) -> None:
    cache = Path(args.cache_dir) / "scenes"
    data, feats = cache / "data", cache / "features"
    cache.mkdir(parents=True, exist_ok=True)
    record = session(args, "quality-scenes", "synthetic scenes, test caption quality, 5 references: cross-entropy, "
                                             "then self-critical training")
    env = harness.ours_environment(harness.REPO, args.threads)
    if not (data / "train.images").exists():
        train_bench.run([PYTHON, "-m", "captioning.synthetic", str(data), "--train", "1000", "--val", "100",
                         "--test", "100", "--seed", "1"], cache / "scenes-data.log")
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
        record.run("baseline", 0, harness.Job(command(xe, ["--checkpoint-interval", "50", "--max-updates", "400",
                                                           "--initial-learning-rate", "0.003",
                                                           "--decode-and-evaluate", "0"]), env, str(harness.REPO),
                                              cache / "xe.log"), "cross-entropy training")
    xe_scores = score(xe, str(feats / "test.features"), str(feats), references, cache / "xe.test.predictions",
                      args.beam_size)
    sc = cache / sc_name(args)
    record.run("ours", 0, harness.Job(command(sc, self_critical_flags(xe, args)), env, str(harness.REPO),
                                      cache / (sc.name + ".log")), "self-critical training")
    sc_scores = score(sc, str(feats / "test.features"), str(feats), references, cache / (sc.name + ".test.predictions"),
                      args.beam_size, last_checkpoint(sc))
    add_scores(record, "test (beam %d)" % args.beam_size, xe_scores, sc_scores)
    record.finish()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["flickr", "scenes"])
    parser.add_argument("--shared", default=str(harness.REPO.parent / "shared"))
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
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for every run")
    harness.add_record_args(parser)
    args = harness.parse_recorded_args(parser, argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    {"flickr": flickr, "scenes": scenes}[args.stage](args)


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.quality: %s" % e)
