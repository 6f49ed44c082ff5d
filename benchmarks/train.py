"""Training benchmark on FLICKR-A (BENCHMARKS.md): speed, peak memory, validation perplexity and caption quality.

    .venv/bin/python benchmarks/train.py [--shared ../shared] [--cache-dir /tmp/captioning-bench] [--short]
        [--layer head_conv|head_relu6] [--recipe regularised|...] [--augment none|flip|ten-crop] [--beam-size 3]
        [--checkpoint best|last] [--score-all-checkpoints]

1. Extracts EfficientNet-Lite0 ``--layer`` features (1280x7x7; default ``head_conv``, the peer's) of flickr8k-sample's
   train and dev photos into the cache folder (outside the repository; done once per layer).
2. Training pairs: train.images repeated 5 times, block k with train.captions.k (with ``--augment``: the same for
   every view of the photos, extract_features --augment); validation: dev.images + dev.captions.0.
3. Speed: the tutorial configuration (1-layer LSTM-512, MLP attention, state init zero, image projection 512,
   embedding 512, weight normalisation, batch 64 captions, Adam 0.0003, clipping abs 1.0, bucket width 5, max length
   60) for ``--speed-updates`` updates with each feature store (lazy, memory, mmap): median of the logged
   samples/s, peak RSS, validation perplexity at the end.
4. Quality: the same configuration with the ``--recipe``'s regularisation (RECIPES; dropout, label smoothing 0.1 or
   none in ``no-smoothing``, weight decay, early stopping) for ``--quality-updates`` updates; the ``--checkpoint``
   (params.best by validation perplexity, or the last one) captions dev (``--beam-size``, length penalty alpha 1.0)
   and is scored against the 5 references (BLEU-4, METEOR, ROUGE-L, CIDEr-D via captioning.evaluate /
   pycocoevalcap). The validation split is the dev split: ``--score-all-checkpoints`` scores every checkpoint (for
   reports; choosing by it tunes on dev).
Prints one line per figure.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
sys.path.insert(0, str(REPO))
from captioning.image_io import AUGMENTATIONS  # noqa: E402  (no MXNet)

TUTORIAL = ["--encoder", "image-pretrain-cnn", "--decoder", "rnn", "--num-layers", "1:1", "--rnn-num-hidden", "512",
            "--rnn-decoder-state-init", "zero", "--rnn-attention-type", "mlp", "--image-encoder-num-hidden", "512",
            "--num-embed", "512", "--batch-type", "sentence", "--batch-size", "64", "--initial-learning-rate",
            "0.0003", "--gradient-clipping-type", "abs", "--gradient-clipping-threshold", "1.0", "--bucket-width",
            "5", "--max-seq-len", "1:60", "--weight-normalization", "--seed", "13", "--use-cpu"]
# our additions for caption quality (the peer overfits after ~12 epochs)
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
# REGULARISED without label smoothing: self-critical training samples from this model's own softmax, where label
# smoothing puts ~10% of every step's probability on stray words (docs/training.md, "Self-critical training")
NO_SMOOTHING = with_values(REGULARISED, {"--label-smoothing": "0"})
RECIPES = {"regularised": REGULARISED, "dropout5": DROPOUT5, "no-smoothing": NO_SMOOTHING}
LAYERS = ("head_conv", "head_relu6")


def run(cmd: List[str], log_path: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> Tuple[float, int]:
    """Run a command; returns (wall seconds, peak RSS in MB of the process)."""
    start = time.time()
    with open(log_path, "w") if log_path else open(os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:] if log_path else ""
        raise SystemExit("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), tail))
    return time.time() - start, usage.ru_maxrss // 1024


def extract(shared: Path, cache: Path, layer: str = "head_conv", augment: str = "none") -> Path:
    """Features of the train and dev photos (train with ``augment``'s views, extract_features --augment)."""
    data = shared / "data" / "flickr8k-sample"
    feats = cache / ("features-%s%s" % (layer, augment_suffix(augment)))
    if (feats / "train.features").exists() and (feats / "dev.features").exists():
        return feats
    feats.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        seconds, rss = run([PYTHON, "-m", "captioning.extract_features", "--image-root", str(data), "--input",
                            str(data / ("%s.images" % split)), "--output-root", str(feats), "--output",
                            str(feats / ("%s.features" % split)), "--image-encoder-model-path",
                            str(shared / "models" / "efficientnet-lite0" / "efficientnet-lite0"),
                            "--image-encoder-layer", layer, "--source-image-size", "3", "224", "224",
                            "--batch-size", "128", "--device-id", "0", "--use-cpu", "--mmap-store",
                            "--augment", augment if split == "train" else "none"],
                           cache / ("extract-%s-%s.log" % (layer, split)))
        print("extraction %s (%s, %s): %.1f s, peak RSS %d MB" % (split, layer, augment, seconds, rss))
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


def speeds(log: Path) -> List[float]:
    return [float(m) for m in re.findall(r"([0-9.]+) samples/s", log.read_text())]


def metrics(folder: Path) -> List[Dict[str, float]]:
    rows = []
    for line in (folder / "metrics").read_text().splitlines():
        n, *pairs = line.split("\t")
        row = {k: float(v) for k, v in (p.split("=") for p in pairs)}
        row["checkpoint"] = int(n)
        rows.append(row)
    return rows


def quality(paths: Dict[str, str], shared: Path, model: Path, cache: Path, beam_size: int = 3,
            checkpoint: Optional[int] = None) -> Dict[str, float]:
    """Caption dev with params.best (or params.NNNNN of ``checkpoint``; length penalty alpha 1.0) and score against the
    5 references."""
    data = shared / "data" / "flickr8k-sample"
    predictions = cache / "dev.predictions"
    chosen = [] if checkpoint is None else ["--checkpoints", str(checkpoint)]
    seconds, _ = run([PYTHON, "-m", "captioning.captioner", "--models", str(model), "--input",
                      paths["validation_source"], "--source-root", paths["root"], "--beam-size", str(beam_size),
                      "--length-penalty-alpha", "1.0", "--batch-size", "64", "--max-output-length", "60", "--use-cpu",
                      "--output", str(predictions)] + chosen, cache / "captioner.log")
    from captioning import evaluate
    hyps = predictions.read_text().splitlines()
    refs = list(zip(*[(data / ("dev.captions.%d" % k)).read_text().splitlines() for k in range(5)]))
    return evaluate.evaluate(hyps, [list(r) for r in refs], ["coco"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    parser.add_argument("--cache-dir", default="/tmp/captioning-bench")
    parser.add_argument("--speed-updates", type=int, default=200, help="0: no speed runs")
    parser.add_argument("--quality-updates", type=int, default=1600)
    parser.add_argument("--stores", nargs="+", default=["memory", "lazy", "mmap"])
    parser.add_argument("--short", action="store_true", help="60 speed updates per store, 800 quality updates")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--threads", default=None, help="OMP_NUM_THREADS for the runs (default: the package's)")
    parser.add_argument("--layer", choices=LAYERS, default="head_conv",
                        help="CNN layer of the features (head_conv: the peer's, for like-for-like timing)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="regularised",
                        help="regularisation flags of the quality run (RECIPES)")
    parser.add_argument("--augment", choices=list(AUGMENTATIONS), default="none",
                        help="train on these views of the training photos (extract_features --augment)")
    parser.add_argument("--beam-size", type=int, default=3, help="beam of the dev captions of the quality run")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best",
                        help="checkpoint scored: params.best (validation perplexity) or the last one")
    parser.add_argument("--score-all-checkpoints", action="store_true",
                        help="also score every checkpoint on dev (= the validation split: choosing by it tunes on dev)")
    args = parser.parse_args()
    if args.short:
        args.speed_updates, args.quality_updates = 60, 800
    shared, cache = Path(args.shared).resolve(), Path(args.cache_dir)
    if not (shared / "data" / "flickr8k-sample").is_dir():
        raise SystemExit("%s: no data/flickr8k-sample" % shared)
    cache.mkdir(parents=True, exist_ok=True)
    env = {"OMP_NUM_THREADS": args.threads} if args.threads else {}
    feats = extract(shared, cache, args.layer, args.augment)
    paths = make_lists(shared, feats, cache, args.augment)

    for store in args.stores if args.speed_updates > 0 else []:
        out = cache / ("speed-%s" % store)
        log = cache / ("speed-%s.log" % store)
        extra = ["--feature-store", store, "--max-updates", str(args.speed_updates), "--checkpoint-interval",
                 str(args.speed_updates), "--decode-and-evaluate", "0"]
        seconds, rss = run(train_command(paths, out, extra), log, env)
        values = speeds(log)[1:] or speeds(log)     # the first interval includes graph building
        ppl = metrics(out)[-1]["perplexity-val"]
        print("train speed (%s store): median %.1f samples/s over %d logs; %d updates in %.1f s wall; peak RSS %d MB; "
              "perplexity-val after %d updates %.2f" % (store, statistics.median(values), len(values),
                                                         args.speed_updates, seconds, rss, args.speed_updates, ppl))
    if args.skip_quality:
        return
    name = "quality" if (args.layer, args.recipe) == ("head_conv", "regularised") else \
        "quality-%s-%s" % (args.layer, args.recipe)
    name += augment_suffix(args.augment)
    out = cache / name
    log = cache / ("%s.log" % name)
    extra = ["--load-all-features-to-memory", "--max-updates", str(args.quality_updates), "--checkpoint-interval",
             "200", "--decode-and-evaluate", "0"] + RECIPES[args.recipe]
    seconds, rss = run(train_command(paths, out, extra), log, env)
    rows = metrics(out)
    best = min(rows, key=lambda r: r["perplexity-val"])
    print("quality run: %d updates in %.1f s wall, peak RSS %d MB, median %.1f samples/s; perplexity-val by "
          "checkpoint: %s; best %.2f at update %d" % (rows[-1]["checkpoint"] * 200, seconds, rss,
                                                       statistics.median(speeds(log)[1:] or speeds(log)),
                                                       " ".join("%.1f" % r["perplexity-val"] for r in rows),
                                                       best["perplexity-val"], best["checkpoint"] * 200))
    def line(scores: Dict[str, float]) -> str:
        return ", ".join("%s %.1f" % (k, v) for k, v in sorted(scores.items()))

    last = rows[-1]["checkpoint"]
    scores = quality(paths, shared, out, cache, args.beam_size, last if args.checkpoint == "last" else None)
    print("dev caption quality (%s: %s, recipe %s, %s features, beam %d, 5 references): %s"
          % ("last checkpoint" if args.checkpoint == "last" else "best checkpoint by perplexity",
             "update %d" % ((last if args.checkpoint == "last" else best["checkpoint"]) * 200), args.recipe,
             args.layer, args.beam_size, line(scores)))
    for row in rows if args.score_all_checkpoints else []:
        print("  checkpoint %d (update %d, perplexity-val %.2f), beam %d: %s"
              % (row["checkpoint"], row["checkpoint"] * 200, row["perplexity-val"], args.beam_size,
                 line(quality(paths, shared, out, cache, args.beam_size, row["checkpoint"]))))


if __name__ == "__main__":
    main()
