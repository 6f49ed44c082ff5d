"""Caption quality of exported models (``captioning.export_onnx``, run by onnxruntime) against the MXNet models.

    python -m benchmarks.export [--flickr-model MODEL] [--cache-dir /tmp/captioning-bench] [--demo-updates 600]

Models:
- ``--flickr-model``: a FLICKR-A tutorial model (``benchmarks.peer --parts models`` or ``benchmarks.train`` trains
  one), captioning the dev photos' ``head_conv`` features from ``--cache-dir``, scored against their 5 references;
- a transformer and a convolutional decoder trained here on the demo data (``captioning.synthetic`` seed 1: 1000
  training, 100 test images; ``make demo``'s training flags with the decoder's), captioning the test images, scored
  against their 5 references. Trained once into ``--work-dir``.
Each model is exported twice (fp32 and ``--quantize int8``). The MXNet captioner and each export caption the same
features (beam 3, ``--max-output-length`` 30, batch 64, ``--threads``). Figures per model and export: the share of
captions identical to the MXNet captioner's and corpus CIDEr-D (baseline: the MXNet captioner); the notes list the
captions that differ. One record, ``benchmarks/results/export-quality-<time>.json``. Speed: ``benchmarks.caption
--model MODEL --ours-model EXPORT`` and ``benchmarks.peer --parts caption --ours-model EXPORT``.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks import harness
from benchmarks.harness import Job, Session

PYTHON = sys.executable
REPO = harness.REPO
DEMO_FLAGS = ["--batch-size", "64", "--initial-learning-rate", "0.001", "--gradient-clipping-threshold", "1.0",
              "--bucket-width", "5", "--max-seq-len", "1:60", "--fill-up", "replicate", "--encoder",
              "image-pretrain-cnn", "--num-embed", "128", "--image-encoder-num-hidden", "128", "--checkpoint-interval",
              "200", "--load-all-features-to-memory", "--decode-and-evaluate", "0", "--use-cpu", "--seed", "1"]
DECODERS = {"transformer": ["--decoder", "transformer", "--num-layers", "1:2", "--transformer-model-size", "128",
                            "--transformer-attention-heads", "4", "--transformer-feed-forward-num-hidden", "256"],
            "cnn": ["--decoder", "cnn", "--num-layers", "1:3", "--cnn-num-hidden", "128"]}
EXPORTS = {"fp32": [], "int8": ["--quantize", "int8"]}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flickr-model", default="/work/bench/ours-model", help="a FLICKR-A tutorial model folder")
    parser.add_argument("--cache-dir", default="/tmp/captioning-bench", help="benchmarks.train's cache (features)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--work-dir", default=str(harness.OUTPUT / "export"))
    parser.add_argument("--demo-updates", type=int, default=600)
    parser.add_argument("--max-output-length", type=int, default=30)
    parser.add_argument("--threads", default="1")
    harness.add_record_args(parser)
    return harness.parse_recorded_args(parser, argv)


def _run(cmd: List[str], log: Path, threads: str) -> harness.Run:
    return harness.run_process(Job(cmd, harness.ours_environment(REPO, threads), str(REPO), log))


def demo_models(work: Path, updates: int, threads: str) -> Dict[str, Tuple[Path, str, str, List[str]]]:
    """The demo data's transformer and CNN-decoder models, trained once: name -> (model, features list, feature
    root, reference files)."""
    data, feats = work / "demo-data", work / "demo-features"
    if not (data / "test.images").exists():
        _run([PYTHON, "-m", "captioning.synthetic", str(data), "--train", "1000", "--val", "100", "--test", "100",
              "--seed", "1"], work / "synthetic.log", threads)
    for split in ("train", "val", "test"):
        if not (feats / ("%s.features" % split)).exists():
            _run([PYTHON, "-m", "captioning.extract_features", "--image-root", str(data), "--input",
                  str(data / ("%s.images" % split)), "--output-root", str(feats), "--output",
                  str(feats / ("%s.features" % split)), "--use-cpu", "--source-image-size", "3", "128", "128",
                  "--image-encoder-model-path", str(data / "cnn" / "synthetic-cnn"), "--image-encoder-layer",
                  "stage4_unit2_conv2"], work / ("extract-%s.log" % split), threads)
    references = [str(data / "test.captions")] + [str(data / ("test.captions.%d" % k)) for k in range(1, 5)]
    models = {}
    for name, flags in DECODERS.items():
        model = work / ("demo-%s" % name)
        if not (model / "params.best").exists():
            _run([PYTHON, "-m", "captioning.train", "--source-root", str(feats), "--source",
                  str(feats / "train.features"), "--target", str(data / "train.captions"), "--validation-source",
                  str(feats / "val.features"), "--validation-target", str(data / "val.captions"), "--output",
                  str(model), "--overwrite-output", "--max-updates", str(updates)] + DEMO_FLAGS + flags,
                 work / ("train-%s.log" % name), threads)
        models[name] = (model, str(feats / "test.features"), str(feats), references)
    return models


def captions(model: Path, features: str, root: str, output: Path, args: argparse.Namespace) -> List[str]:
    _run([PYTHON, "-m", "captioning.captioner", "--models", str(model), "--input", features, "--source-root", root,
          "--beam-size", "3", "--batch-size", "64", "--max-output-length", str(args.max_output_length), "--use-cpu",
          "--output", str(output)], output.with_suffix(".log"), args.threads)
    return output.read_text().splitlines()


def compare(session: Session, name: str, model: Path, features: str, root: str, references: List[str],
            args: argparse.Namespace) -> None:
    """Export ``model`` each way, caption with it and with the MXNet model, and record how they compare."""
    from captioning import evaluate
    work = Path(args.work_dir)
    refs = [list(r) for r in zip(*[Path(f).read_text().splitlines() for f in references])]
    base = captions(model, features, root, work / ("%s-mxnet.txt" % name), args)
    base_cider = evaluate.evaluate(base, refs, ["coco"])["CIDEr-D"]
    for kind, flags in EXPORTS.items():
        export = work / ("%s-%s.onnx" % (name, kind))
        _run([PYTHON, "-m", "captioning.export_onnx", "--models", str(model), "--output", str(export),
              "--overwrite-output"] + flags, work / ("export-%s-%s.log" % (name, kind)), args.threads)
        ours = captions(export, features, root, work / ("%s-%s.txt" % (name, kind)), args)
        same = [a == b for a, b in zip(base, ours)]
        session.figure("%s %s: captions identical to the MXNet captioner's" % (name, kind), "%", True,
                       [100.0 * sum(same) / len(same)])
        session.figure("%s %s: corpus CIDEr-D" % (name, kind), "CIDEr-D", True,
                       [evaluate.evaluate(ours, refs, ["coco"])["CIDEr-D"]], [base_cider])
        for line, (a, b) in enumerate(zip(base, ours), 1):
            if a != b:
                session.notes.append("%s %s line %d: MXNet %r, export %r" % (name, kind, line, a, b))


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    session = Session(benchmark="export-quality", reproduce=harness.reproduce_command("benchmarks.export", args.argv),
                      description="captions of exported models (onnxruntime) against the MXNet captioner's: beam "
                                  "3, max length %d, batch 64" % args.max_output_length,
                      baseline="the MXNet captioner", ours="the export (onnxruntime)", threads=args.threads,
                      rounds=1, settle_s=args.settle, results_dir=Path(args.results_dir), timed=False)
    flickr = Path(args.flickr_model)
    dev = Path(args.cache_dir) / "features-head_conv"
    data = Path(args.shared) / "data" / "flickr8k-sample"
    if (flickr / "params.best").exists() and (dev / "dev.features").exists():
        compare(session, "FLICKR-A tutorial model", flickr, str(dev / "dev.features"), str(dev),
                [str(data / ("dev.captions.%d" % k)) for k in range(5)], args)
    else:
        session.notes.append("no FLICKR-A model (%s) or dev features (%s): left out" % (flickr, dev))
    for name, (model, features, root, references) in demo_models(work, args.demo_updates, args.threads).items():
        compare(session, "demo %s" % name, model, features, root, references, args)
    session.finish()


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.export: %s" % e)
