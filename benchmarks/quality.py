"""Caption quality of the full recipe: cross-entropy training, then self-critical training (CIDEr-D rewards).

    python -m benchmarks.quality flickr [--shared ../shared] [--cache-dir /tmp/captioning-quality] [--features DIR]
        [--xe-model DIR] [--sc-updates 200] [--sc-learning-rate 0.00002] [--sc-batch-size 32] [--samples 5]
        [--baseline mean] [--checkpoint-interval 25] [--sc-not-improved 4] [--beam-size 3] [--augment ...]
    python -m benchmarks.quality scenes [--scenes-model small|tutorial] [--scenes-seed 1] [--scenes-train 1000] \
        [--scenes-val 100] [--scenes-test 100] [--scenes-captions 5] [--xe-references one|all] \
        [--sc-references one|all] [self-critical options as for flickr]

The self-critical options default to the recipe of docs/training.md (``--sc-top-k``: train's default).
``flickr`` (record ``quality-flickr``; FLICKR-A: flickr8k-sample's 753 training photos x 5 captions, dev 113 photos
with 5 references):
1. cross-entropy: `benchmarks.train`'s tutorial model with its regularised recipe for 1,600 updates (or the model
   folder ``--xe-model``);
2. self-critical: ``--params XE/params.best --loss self-critical`` with the same network options, ``--samples`` K,
   ``--baseline``, a constant learning rate ``--sc-learning-rate``, up to ``--sc-updates`` updates, a checkpoint
   every ``--checkpoint-interval`` updates, stopping after ``--sc-not-improved`` checkpoints without a better dev
   CIDEr-D;
3. each stage's params.best (cross-entropy: by validation perplexity; self-critical: by dev CIDEr-D, as the recipe
   chooses, so its dev scores are those of the checkpoint dev chose: FLICKR-A has no test split) captions dev at
   ``--beam-size`` (length penalty alpha 1.0) and is scored against the 5 references with captioning.evaluate
   (BLEU-4, METEOR where Java exists, ROUGE-L, CIDEr-D), with the number of distinct captions, the vocabulary used
   and the captions that end with a dangling word.
In the record the cross-entropy model is the baseline and the self-critical one is ours.
``scenes`` (record ``quality-scenes``): synthetic scenes (`captioning.synthetic` with the ``--scenes-*`` settings;
cached per setting), cross-entropy on one caption per image (reference 0) or all of them, then self-critical with
rewards against one or all; test scores of each stage's params.best (self-critical: by validation CIDEr-D against
all references of every validation image), against all references of the test images. Nothing is chosen on test.
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


def with_validation_targets(cmd: List[str], targets: Sequence[str]) -> List[str]:
    i = cmd.index("--validation-target")
    return cmd[:i + 1] + list(targets) + cmd[i + 2:]


def self_critical_flags(xe: Path, args: argparse.Namespace) -> List[str]:
    start = "params.best" if args.xe_checkpoint is None else "params.%05d" % args.xe_checkpoint
    return ["--params", str(xe / start), "--loss", "self-critical", "--self-critical-samples",
            str(args.samples), "--self-critical-baseline", args.baseline, "--initial-learning-rate",
            str(args.sc_learning_rate), "--learning-rate-scheduler-type", "none", "--max-updates",
            str(args.sc_updates), "--checkpoint-interval", str(args.checkpoint_interval),
            "--max-num-checkpoint-not-improved", str(args.sc_not_improved), "--optimized-metric", "cider",
            "--decode-and-evaluate", "-1",
            "--batch-size", str(args.sc_batch_size)] + \
        ([] if args.sc_top_k is None else ["--self-critical-top-k", str(args.sc_top_k)]) + \
        (["--self-critical-sample-dropout"] if args.sc_sample_dropout else [])


def session(args: argparse.Namespace, benchmark: str, description: str) -> Session:
    return Session(benchmark=benchmark, reproduce=harness.reproduce_command("benchmarks.quality", args.argv),
                   description=description, baseline="the cross-entropy model self-critical training starts from",
                   ours="after self-critical training", threads=args.threads, rounds=1, settle_s=args.settle,
                   results_dir=Path(args.results_dir), timed=False)     # scores only: speed is not measured here


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
                      args.beam_size)
    add_scores(record, "dev (beam %d)" % args.beam_size, xe_scores, sc_scores)
    record.figure("self-critical training peak RSS", "GB", False, [done.peak_rss_mb / 1024.0])
    record.finish()


def sc_name(args: argparse.Namespace, suffix: str = "") -> str:
    start = "" if args.xe_checkpoint is None else "-from%d" % args.xe_checkpoint
    top = "" if args.sc_top_k is None else "-top%d" % args.sc_top_k
    return "sc-%s-k%d-b%d-lr%g%s%s%s%s" % (args.baseline, args.samples, args.sc_batch_size, args.sc_learning_rate, top,
                                           "-dropout" if args.sc_sample_dropout else "", start, suffix)


# ---------------------------------------------------------------------------------------------------------------
SCENES_MODEL = ["--rnn-num-hidden", "64", "--num-embed", "32", "--image-encoder-num-hidden", "64", "--batch-size",
                "32", "--no-rnn-input-feeding", "--rnn-decoder-hidden-dropout", "0.1", "--use-cpu", "--seed", "5"]
# the cross-entropy stage of ``scenes``: (network and training flags, updates)
SCENES_XE = {"small": (SCENES_MODEL + ["--initial-learning-rate", "0.003"], 400),
             "tutorial": (train_bench.TUTORIAL + ["--load-all-features-to-memory"], 300)}


def scenes_data(args: argparse.Namespace, cache: Path) -> Path:
    """The synthetic data set and its features (generated and extracted once per setting) in ``cache``."""
    data, feats = cache / "data", cache / "features"
    if not (data / "train.images").exists():
        train_bench.run([PYTHON, "-m", "captioning.synthetic", str(data), "--train", str(args.scenes_train), "--val",
                         str(args.scenes_val), "--test", str(args.scenes_test), "--seed", str(args.scenes_seed),
                         "--captions-per-image", str(args.scenes_captions)], cache / "scenes-data.log")
    for split in ("train", "val", "test"):
        if not (feats / ("%s.features" % split)).exists():
            feats.mkdir(parents=True, exist_ok=True)
            train_bench.run([PYTHON, "-m", "captioning.extract_features", "--image-root", str(data), "--input",
                             str(data / ("%s.images" % split)), "--output-root", str(feats), "--output",
                             str(feats / ("%s.features" % split)), "--source-image-size", "3", "128", "128",
                             "--image-encoder-model-path", str(data / "cnn" / "synthetic-cnn"),
                             "--image-encoder-layer", "stage4_unit2_conv2", "--use-cpu"],
                            cache / ("extract-%s.log" % split))
    k = args.scenes_captions
    for name, folder in (("features", feats), ("captions", data)):     # one caption per image: reference 0
        lines = (folder / ("train.%s" % name)).read_text().splitlines()
        (folder / ("train.one.%s" % name)).write_text("".join(line + "\n" for line in lines[::k]))
    return cache


def reference_files(data: Path, split: str, count: int) -> List[str]:
    return [str(data / ("%s.captions" % split))] + [str(data / ("%s.captions.%d" % (split, k)))
                                                     for k in range(1, count)]


def scenes_name(args: argparse.Namespace) -> str:
    return "scenes-%s-seed%d-%dx%d" % (args.scenes_model, args.scenes_seed, args.scenes_train, args.scenes_captions)


def scenes(args: argparse.Namespace) -> None:
    cache = scenes_data(args, Path(args.cache_dir) / scenes_name(args))
    data, feats = cache / "data", cache / "features"
    record = session(args, "quality-scenes", "synthetic scenes (%s), test caption quality, %d references: "
                                             "cross-entropy on %s caption(s) per image, then self-critical training "
                                             "with rewards against %s" % (scenes_name(args), args.scenes_captions,
                                                                          args.xe_references, args.sc_references))
    env = harness.ours_environment(harness.REPO, args.threads)
    references = [list(r) for r in zip(*[Path(t).read_text().splitlines()
                                         for t in reference_files(data, "test", args.scenes_captions)])]

    def command(output: Path, captions: str, extra: List[str]) -> List[str]:
        infix = "one." if captions == "one" else ""
        return with_validation_targets(
            [PYTHON, "-m", "captioning.train", "--source-root", str(feats), "--source",
             str(feats / ("train.%sfeatures" % infix)), "--target", str(data / ("train.%scaptions" % infix)),
             "--validation-source", str(feats / "val.features"), "--validation-target", "VAL", "--output",
             str(output), "--overwrite-output"] + extra, reference_files(data, "val", args.scenes_captions))

    network, updates = SCENES_XE[args.scenes_model]
    xe = cache / ("xe-%s" % args.xe_references)
    if not (xe / "params.best").exists():
        record.run("baseline", 0, harness.Job(command(xe, args.xe_references, network + [
            "--checkpoint-interval", "100", "--max-updates", str(updates), "--decode-and-evaluate", "0"]), env,
            str(harness.REPO), cache / (xe.name + ".log")), "cross-entropy training")
    xe_scores = score(xe, str(feats / "test.features"), str(feats), references, cache / (xe.name + ".predictions"),
                      args.beam_size)
    sc = cache / ("%s-%s" % (sc_name(args), args.sc_references))
    record.run("ours", 0, harness.Job(command(sc, args.sc_references, network + self_critical_flags(xe, args)), env,
                                      str(harness.REPO), cache / (sc.name + ".log")), "self-critical training")
    sc_scores = score(sc, str(feats / "test.features"), str(feats), references, cache / (sc.name + ".predictions"),
                      args.beam_size)
    add_scores(record, "test (beam %d, params.best)" % args.beam_size, xe_scores, sc_scores)
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
    parser.add_argument("--sc-updates", type=int, default=200)
    parser.add_argument("--sc-learning-rate", type=float, default=2e-5)
    parser.add_argument("--sc-not-improved", type=int, default=4,
                        help="self-critical: stop after this many checkpoints without a better validation CIDEr-D "
                             "(negative: never)")
    parser.add_argument("--sc-batch-size", type=int, default=32,
                        help="self-critical: training lines per batch (each distinct image gets --samples samples)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--xe-checkpoint", type=int, default=None,
                        help="self-critical starts from the cross-entropy model's params.NNNNN of this checkpoint "
                             "(default: params.best)")
    parser.add_argument("--sc-top-k", type=int, default=None,
                        help="self-critical: sample each word from the K most likely (0: the whole softmax; default: "
                             "train's --self-critical-top-k)")
    parser.add_argument("--sc-sample-dropout", action="store_true",
                        help="self-critical: sample with dropout active")
    parser.add_argument("--baseline", choices=["mean", "greedy"], default="mean")
    parser.add_argument("--checkpoint-interval", type=int, default=25)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for every run")
    scenes_group = parser.add_argument_group("scenes: the synthetic data set and the models")
    scenes_group.add_argument("--scenes-seed", type=int, default=1, help="captioning.synthetic --seed")
    scenes_group.add_argument("--scenes-train", type=int, default=1000, help="training images")
    scenes_group.add_argument("--scenes-val", type=int, default=100, help="validation images")
    scenes_group.add_argument("--scenes-test", type=int, default=100, help="test images")
    scenes_group.add_argument("--scenes-captions", type=int, default=5, help="captions (references) per image")
    scenes_group.add_argument("--scenes-model", choices=sorted(SCENES_XE), default="small",
                              help="small: a 64-unit RNN, 400 cross-entropy updates; tutorial: the tutorial model, "
                                   "300 updates")
    scenes_group.add_argument("--xe-references", choices=["one", "all"], default="all",
                              help="cross-entropy trains on one caption per image (reference 0) or on all")
    scenes_group.add_argument("--sc-references", choices=["one", "all"], default="all",
                              help="self-critical rewards against one caption per image (reference 0) or all")
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
