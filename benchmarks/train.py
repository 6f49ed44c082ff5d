"""Training on FLICKR-A: speed and memory per feature store, then caption quality of one of `RECIPES`.

    python -m benchmarks.train [--shared ../shared] [--cache-dir /tmp/captioning-bench] [--short]
        [--layer head_conv|head_relu6] [--recipe regularised|dropout5|no-smoothing] [--augment none|flip|ten-crop]
        [--beam-size 3] [--checkpoint best|last] [--score-all-checkpoints] [--threads 1]
        [--fine-tune-from stage6_unit4_add [--fine-tune-args "..."]]

1. Extracts EfficientNet-Lite0 ``--layer`` features (1280x7x7; default ``head_conv``, the layer the original
   Sockeye can use) of flickr8k-sample's train and dev photos into the cache folder (once per layer).
2. Training pairs: train.images repeated 5 times, block k with train.captions.k (with ``--augment``: the same for
   every view of the photos, extract_features --augment); validation: dev.images + dev.captions.0.
3. Speed (record ``train-speed``): the tutorial model (`TUTORIAL`) for ``--speed-updates`` updates with each
   feature store (``--stores``), ``--rounds`` fresh processes each: median of the logged samples/s, peak RSS, wall
   and CPU time, validation perplexity at the end.
4. Quality (record ``train-quality-RECIPE[-LAYER][-AUGMENT]``): the same model with the recipe's regularisation for
   ``--quality-updates`` updates; the ``--checkpoint`` (params.best by validation perplexity, or the last one)
   captions dev (``--beam-size``, length penalty alpha 1.0) and is scored against the 5 references (BLEU-4, METEOR,
   ROUGE-L, CIDEr-D via captioning.evaluate). The validation split is the dev split: ``--score-all-checkpoints``
   scores every checkpoint for the log only (choosing by it would tune on dev).

With ``--fine-tune-from S`` the features are extracted at the CNN layer S instead, and every run trains the CNN's
layers after S up to ``--layer`` with the captioner (``train --image-encoder-fine-tune-from S``, plus
``--fine-tune-args``); the records' names end in ``-finetune-S``. The speed record runs the frozen ``--layer``
features as its baseline in the same run; for quality, the same recipe, seed and updates without fine-tuning (the
record without the suffix) are the baseline.
"""
import argparse
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks.harness import Job, Session
from captioning.image_io import AUGMENTATIONS  # (no MXNet)

logger = logging.getLogger("benchmarks")
REPO = harness.REPO
PYTHON = sys.executable

TUTORIAL = ["--encoder", "image-pretrain-cnn", "--decoder", "rnn", "--num-layers", "1:1", "--rnn-num-hidden", "512",
            "--rnn-decoder-state-init", "zero", "--rnn-attention-type", "mlp", "--image-encoder-num-hidden", "512",
            "--num-embed", "512", "--batch-type", "sentence", "--batch-size", "64", "--initial-learning-rate",
            "0.0003", "--gradient-clipping-type", "abs", "--gradient-clipping-threshold", "1.0", "--bucket-width",
            "5", "--max-seq-len", "1:60", "--weight-normalization", "--seed", "13", "--use-cpu"]
# regularisation for caption quality: the tutorial model overfits FLICKR-A's 753 photos within a few epochs
REGULARISED = ["--rnn-decoder-hidden-dropout", "0.3", "--embed-dropout", "0.2", "--image-encoder-dropout", "0.2",
               "--label-smoothing", "0.1", "--weight-decay", "0.00001", "--learning-rate-reduce-num-not-improved",
               "2", "--learning-rate-reduce-factor", "0.5", "--max-num-checkpoint-not-improved", "4"]


def with_values(flags: List[str], values: Dict[str, str]) -> List[str]:
    """``flags`` (``--flag value`` pairs) with the values of the flags in ``values`` replaced."""
    changed = list(flags)
    for flag, value in values.items():
        changed[changed.index(flag) + 1] = value
    return changed


# stronger dropout (hidden 0.5, embedding and image 0.3), otherwise as REGULARISED
DROPOUT5 = with_values(REGULARISED, {"--rnn-decoder-hidden-dropout": "0.5", "--embed-dropout": "0.3",
                                     "--image-encoder-dropout": "0.3"})
# REGULARISED without label smoothing: a starting point for self-critical training, which samples from the model's
# own softmax (label smoothing moves probability onto words that do not fit)
NO_SMOOTHING = with_values(REGULARISED, {"--label-smoothing": "0"})
RECIPES = {"regularised": REGULARISED, "dropout5": DROPOUT5, "no-smoothing": NO_SMOOTHING}
LAYERS = ("head_conv", "head_relu6")
QUALITY_CHECKPOINT_INTERVAL = 200


def run(cmd: List[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> harness.Run:
    """Run a command of this tree as a fresh process (its output in ``log_path``)."""
    full = dict(harness.ours_environment(REPO, None), **(env or {}))
    return harness.run_process(Job(list(cmd), full, str(REPO), log_path))


def extract(shared: Path, cache: Path, layer: str = "head_conv", augment: str = "none") -> Path:
    """Features of the train and dev photos (train with ``augment``'s views, extract_features --augment)."""
    data = shared / "data" / "flickr8k-sample"
    feats = cache / ("features-%s%s" % (layer, augment_suffix(augment)))
    if (feats / "train.features").exists() and (feats / "dev.features").exists():
        return feats
    feats.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        done = run([PYTHON, "-m", "captioning.extract_features", "--image-root", str(data), "--input",
                            str(data / ("%s.images" % split)), "--output-root", str(feats), "--output",
                            str(feats / ("%s.features" % split)), "--image-encoder-model-path",
                            str(shared / "models" / "efficientnet-lite0" / "efficientnet-lite0"),
                            "--image-encoder-layer", layer, "--source-image-size", "3", "224", "224",
                            "--batch-size", "128", "--device-id", "0", "--use-cpu", "--mmap-store",
                            "--augment", augment if split == "train" else "none"],
                           cache / ("extract-%s-%s.log" % (layer, split)))
        logger.info("extraction %s (%s, %s): %.1f s, peak RSS %d MB", split, layer, augment, done.wall_s,
                    done.peak_rss_mb)
    return feats


def make_lists(shared: Path, feats: Path, cache: Path, augment: str = "none") -> Dict[str, str]:
    """Training pairs: for each view of ``augment`` (the centre square only by default), train.images repeated 5
    times, block k with train.captions.k (so every view of a photo has its 5 captions as references)."""
    from captioning import extract_features
    data = shared / "data" / "flickr8k-sample"
    lists = cache / "lists"
    lists.mkdir(exist_ok=True)
    captions = []
    for k in range(5):
        captions += (data / ("train.captions.%d" % k)).read_text().splitlines()
    sources, targets = [], []
    for view in AUGMENTATIONS[augment]:
        names = Path(extract_features.view_list_path(str(feats / "train.features"), view)).read_text().splitlines()
        sources += names * 5
        targets += captions
    stem = "train" if augment == "none" else "train.%s" % augment
    (lists / (stem + ".features")).write_text("\n".join(sources) + "\n")
    (lists / (stem + ".captions")).write_text("\n".join(targets) + "\n")
    return {"source": str(lists / (stem + ".features")), "target": str(lists / (stem + ".captions")),
            "validation_source": str(feats / "dev.features"), "validation_target": str(data / "dev.captions.0"),
            "root": str(feats)}


def augment_suffix(augment: str) -> str:
    """What the folders of an ``--augment`` run add to their names ("" without augmentation)."""
    return "" if augment == "none" else "-" + augment


def train_command(paths: Dict[str, str], output: Path, extra: List[str]) -> List[str]:
    return [PYTHON, "-m", "captioning.train", "--source-root", paths["root"], "--source", paths["source"],
            "--target", paths["target"], "--validation-source", paths["validation_source"], "--validation-target",
            paths["validation_target"], "--output", str(output), "--overwrite-output"] + TUTORIAL + extra


def speeds(text: str) -> List[float]:
    """The samples/s our trainer logs; the first interval (graph building) is left out where there are more."""
    values = harness.figures_in(harness.OURS_TRAIN_SPEED, text)
    return values[1:] or values


def metrics(folder: Path) -> List[Dict[str, float]]:
    rows = []
    for line in (folder / "metrics").read_text().splitlines():
        n, *pairs = line.split("\t")
        row = {k: float(v) for k, v in (p.split("=") for p in pairs)}
        row["checkpoint"] = int(n)
        rows.append(row)
    return rows


def caption_command(model: Path, features_list: str, root: str, output: Path, beam_size: int,
                    checkpoint: Optional[int] = None) -> List[str]:
    """Captions for scoring: beam ``beam_size``, length penalty alpha 1.0, up to 60 words."""
    chosen = [] if checkpoint is None else ["--checkpoints", str(checkpoint)]
    return [PYTHON, "-m", "captioning.captioner", "--models", str(model), "--input", features_list, "--source-root",
            root, "--beam-size", str(beam_size), "--length-penalty-alpha", "1.0", "--batch-size", "64",
            "--max-output-length", "60", "--use-cpu", "--output", str(output)] + chosen


def quality(paths: Dict[str, str], shared: Path, model: Path, cache: Path, beam_size: int = 3,
            checkpoint: Optional[int] = None) -> Dict[str, float]:
    """Caption dev with params.best (or params.NNNNN of ``checkpoint``) and score against the 5 references."""
    data = shared / "data" / "flickr8k-sample"
    predictions = cache / "dev.predictions"
    run(caption_command(model, paths["validation_source"], paths["root"], predictions, beam_size, checkpoint),
        cache / "captioner.log")
    from captioning import evaluate
    hyps = predictions.read_text().splitlines()
    refs = list(zip(*[(data / ("dev.captions.%d" % k)).read_text().splitlines() for k in range(5)]))
    return evaluate.evaluate(hyps, [list(r) for r in refs], ["coco"])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--cache-dir", default="/tmp/captioning-bench")
    parser.add_argument("--speed-updates", type=int, default=200, help="0: no speed runs")
    parser.add_argument("--quality-updates", type=int, default=1600)
    parser.add_argument("--stores", nargs="+", choices=["memory", "lazy", "mmap"], default=["memory", "lazy", "mmap"])
    parser.add_argument("--rounds", type=int, default=2, help="speed runs per store")
    parser.add_argument("--short", action="store_true", help="60 speed updates per store, 800 quality updates")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS for the runs")
    parser.add_argument("--layer", choices=LAYERS, default="head_conv",
                        help="CNN layer of the features (head_conv: the one the original can use too)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="regularised",
                        help="regularisation flags of the quality run (RECIPES)")
    parser.add_argument("--augment", choices=list(AUGMENTATIONS), default="none",
                        help="train on these views of the training photos (extract_features --augment)")
    parser.add_argument("--beam-size", type=int, default=3, help="beam of the dev captions of the quality run")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best",
                        help="checkpoint scored: params.best (validation perplexity) or the last one")
    parser.add_argument("--fine-tune-from", default=None, metavar="LAYER",
                        help="fine-tune the CNN's layers after LAYER up to --layer (features at LAYER)")
    parser.add_argument("--fine-tune-args", default="", help="more training flags of the fine-tuning (one string)")
    parser.add_argument("--reuse-model", action="store_true",
                        help="quality: score the model an earlier run of the same command trained (when complete)")
    parser.add_argument("--score-all-checkpoints", action="store_true",
                        help="also log every checkpoint's dev scores (= the validation split: not a result)")
    harness.add_record_args(parser)
    args = harness.parse_recorded_args(parser, argv)
    if args.short:
        args.speed_updates, args.quality_updates = 60, 800
    return args


def speed_extra(store: str, updates: int) -> List[str]:
    return ["--feature-store", store, "--max-updates", str(updates), "--checkpoint-interval", str(updates),
            "--decode-and-evaluate", "0"]


def quality_extra(recipe: str, updates: int) -> List[str]:
    return ["--load-all-features-to-memory", "--max-updates", str(updates), "--checkpoint-interval",
            str(QUALITY_CHECKPOINT_INTERVAL), "--decode-and-evaluate", "0"] + RECIPES[recipe]


def quality_name(args: argparse.Namespace) -> str:
    """The quality run's record name."""
    name = "train-quality-%s" % args.recipe
    name += "" if args.layer == "head_conv" else "-" + args.layer
    return name + augment_suffix(args.augment) + fine_tune_suffix(args)


def fine_tune_suffix(args: argparse.Namespace) -> str:
    """``-finetune-S`` (and the ``--fine-tune-args`` flags, as one word) with ``--fine-tune-from S``, else ''."""
    if args.fine_tune_from is None:
        return ""
    extra = re.sub(r"[^A-Za-z0-9.]+", "-", args.fine_tune_args.replace("--image-encoder-", "")).strip("-")
    return "-finetune-" + args.fine_tune_from + ("-" + extra if extra else "")


def fine_tune_extra(args: argparse.Namespace) -> List[str]:
    """The training flags that fine-tune the CNN's layers after ``--fine-tune-from`` (none without it)."""
    if args.fine_tune_from is None:
        return []
    return ["--image-encoder-fine-tune-from", args.fine_tune_from, "--image-encoder-layer", args.layer] + \
        shlex.split(args.fine_tune_args)


def model_folder(args: argparse.Namespace) -> str:
    """The quality run's model folder in the cache: ``quality`` for the default layer and recipe."""
    name = "quality" if (args.layer, args.recipe) == ("head_conv", "regularised") else \
        "quality-%s-%s" % (args.layer, args.recipe)
    return name + augment_suffix(args.augment) + fine_tune_suffix(args)


def session(args: argparse.Namespace, benchmark: str, description: str, timed: bool = True,
            baseline: Optional[str] = None) -> Session:
    return Session(benchmark=benchmark, reproduce=harness.reproduce_command("benchmarks.train", args.argv),
                   description=description, threads=args.threads, rounds=args.rounds, settle_s=args.settle,
                   results_dir=Path(args.results_dir), timed=timed, baseline=baseline)


def speed_part(args: argparse.Namespace, paths: Dict[str, str], cache: Path, env: Dict[str, str],
               frozen: Optional[Dict[str, str]] = None) -> None:
    """Training speed per feature store; with ``--fine-tune-from``, the fine-tuned layers (ours) against frozen
    features of ``--layer`` (``frozen``, the baseline) in the same run."""
    what = "training the tutorial model on FLICKR-A with each feature store"
    if frozen is not None:
        what += ", the CNN's layers after %s fine-tuned (baseline: frozen %s features)" % (args.fine_tune_from,
                                                                                         args.layer)
    record = session(args, "train-speed" + fine_tune_suffix(args), what,
                     baseline=None if frozen is None else "frozen %s features" % args.layer)
    for store in args.stores:
        def measure(side: str, k: int, store: str = store) -> Dict[str, float]:
            out = cache / ("speed-%s%s" % (store, "-baseline" if side == "baseline" else ""))
            side_paths = frozen if side == "baseline" and frozen is not None else paths
            extra = speed_extra(store, args.speed_updates) + ([] if side == "baseline" else fine_tune_extra(args))
            job = Job(train_command(side_paths, out, extra), dict(harness.ours_environment(REPO, args.threads), **env),
                      str(REPO), cache / ("speed-%s-%s-%d.log" % (store, side, k)))
            done = record.run(side, k, job, "train, %s store" % store)
            return {"speed": harness.median(speeds(done.output)), "rss": done.peak_rss_mb / 1024.0,
                    "ppl": metrics(out)[-1]["perplexity-val"], "wall": done.wall_s, "cpu": done.user_s + done.sys_s}
        results = record.alternate(measure)
        record.figure_from("training speed, %s store, %d updates" % (store, args.speed_updates), "samples/s", True,
                           results, "speed")
        record.figure_from("training peak RSS, %s store" % store, "GB", False, results, "rss")
        record.figure_from("validation perplexity after %d updates, %s store" % (args.speed_updates, store), "",
                           False, results, "ppl")
        record.figure_from("training CPU time (user + sys), %s store" % store, "s", False, results, "cpu")
    record.finish()


def quality_part(args: argparse.Namespace, paths: Dict[str, str], shared: Path, cache: Path,
                 env: Dict[str, str]) -> None:
    name = quality_name(args)
    record = session(args, name, "caption quality on the FLICKR-A dev photos: tutorial model, recipe %s, %s features"
                                 "%s%s" % (args.recipe, args.layer, "" if args.augment == "none" else
                                           ", %s views" % args.augment,
                                           "" if args.fine_tune_from is None else
                                           ", the CNN's layers after %s fine-tuned" % args.fine_tune_from),
                     timed=False)     # scores and perplexities: what training speed is, is train-speed's record
    out = cache / model_folder(args)
    job = Job(train_command(paths, out, quality_extra(args.recipe, args.quality_updates) + fine_tune_extra(args)),
              dict(harness.ours_environment(REPO, args.threads), **env), str(REPO), cache / ("%s.log" % out.name))
    log = out / "log"
    if args.reuse_model and log.exists() and "Training stopped" in log.read_text(errors="replace"):
        record.notes.append("the model trained by an earlier run of the same command (%s), scored again" % out)
    else:
        done = record.run("ours", 0, job, "train")
        record.figure("training peak RSS", "GB", False, [done.peak_rss_mb / 1024.0])
    rows = metrics(out)
    best = min(rows, key=lambda r: r["perplexity-val"])
    last = rows[-1]["checkpoint"]
    chosen = last if args.checkpoint == "last" else best["checkpoint"]
    scores = quality(paths, shared, out, cache, args.beam_size, last if args.checkpoint == "last" else None)
    what = "checkpoint %d (%s), beam %d, 5 references" % (chosen, "the last" if args.checkpoint == "last" else
                                                          "best validation perplexity", args.beam_size)
    for metric in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"):
        if metric in scores:
            record.figure("dev %s, %s" % (metric, what), "", True, [scores[metric]])
    record.figure("best validation perplexity", "", False, [best["perplexity-val"]])
    record.figure("checkpoints (of %d updates each)" % QUALITY_CHECKPOINT_INTERVAL, "", False, [float(len(rows))])
    for row in rows if args.score_all_checkpoints else []:
        logger.info("checkpoint %d (perplexity-val %.2f), beam %d: %s", row["checkpoint"], row["perplexity-val"],
                    args.beam_size, quality(paths, shared, out, cache, args.beam_size, row["checkpoint"]))
    record.finish()


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    shared, cache = Path(args.shared).resolve(), Path(args.cache_dir)
    if not (shared / "data" / "flickr8k-sample").is_dir():
        print("skipped: %s has no data/flickr8k-sample" % shared)
        return
    cache.mkdir(parents=True, exist_ok=True)
    env: Dict[str, str] = {}
    feats = extract(shared, cache, args.fine_tune_from or args.layer, args.augment)
    paths = make_lists(shared, feats, cache, args.augment)
    if args.speed_updates > 0:
        frozen = None
        if args.fine_tune_from is not None:
            frozen = make_lists(shared, extract(shared, cache, args.layer, args.augment), cache, args.augment)
        speed_part(args, paths, cache, env, frozen)
    if not args.skip_quality:
        quality_part(args, paths, shared, cache, env)


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.train: %s" % e)
