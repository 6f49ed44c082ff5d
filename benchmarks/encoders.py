"""Image encoders on FLICKR-A (BENCHMARKS.md): extraction speed and peak memory of EfficientNet-Lite0/1/2 (imported
with captioning.import_cnn from the PyPI weight wheels) at their native sizes, layer head_relu6, and the MXNet and
onnxruntime backends on the same network; optionally the caption quality each encoder gives.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/encoders.py [--limit 256] [--batch-size 32] [--repeats 2]
        [--encoders lite0 lite1 lite2] [--cache-dir /tmp/captioning-encoders] [--quality]

Each measurement runs in a fresh process (so that one encoder's memory does not count against the next): the whole
extraction (decode workers + CNN + .npy files) of the first ``--limit`` training photos, median images/s of
``--repeats`` runs, and the peak resident memory of the process and its decode workers (sampled every 50 ms, as in
benchmarks/extract.py). ``onnx`` rows run the Lite0 checkpoint exported with ``mx.onnx.export_model`` (cut at
head_relu6) through onnxruntime.

``--quality`` also trains the tutorial model with benchmarks/train.py's regularised recipe for ``--quality-updates``
updates on each encoder's head_relu6 features and scores dev captions (BLEU-4, CIDEr-D against 5 references): three
trainings of ~1 hour each on 2 cores; run it on an idle machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NATIVE = {"lite0": 224, "lite1": 240, "lite2": 260}
LAYER = "head_relu6"


def import_encoders(names, cache: Path) -> dict:
    """Import each EfficientNet-Lite once into the cache; the ONNX export of Lite0 too."""
    sys.path.insert(0, str(REPO))
    from captioning import import_cnn
    prefixes = {}
    for name in names:
        prefix = cache / ("efficientnet-%s" % name)
        if not Path(str(prefix) + "-symbol.json").exists():
            import_cnn.import_efficientnet("efficientnet-%s" % name, str(prefix))
        prefixes[name] = str(prefix)
    onnx_path = cache / "efficientnet-lite0-head_relu6.onnx"
    if "lite0" in prefixes and not onnx_path.exists():
        import mxnet as mx
        import numpy as np
        from captioning import cnn
        symbol, args, auxs = cnn.load_checkpoint(prefixes["lite0"], 0)
        head = symbol.get_internals()[LAYER + "_output"]
        wanted = set(head.list_arguments()) | set(head.list_auxiliary_states())
        mx.onnx.export_model(head, {k: v for k, v in {**args, **auxs}.items() if k in wanted}, [(1, 3, 224, 224)],
                             [np.float32], str(onnx_path), dynamic=True, dynamic_input_shapes=[(None, 3, 224, 224)])
    if onnx_path.exists():
        prefixes["lite0-onnx"] = str(onnx_path)
    return prefixes


def measure_one(model: str, size: int, image_list: str, image_root: str, batch_size: int, repeats: int) -> dict:
    """Runs in its own process: extraction images/s (median of ``repeats``) and the peak memory of the first run."""
    import statistics
    import shutil
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import captioning  # noqa: F401
    import mxnet as mx
    from captioning import cnn, extract_features
    from extract import PeakMemory   # benchmarks/extract.py
    config = cnn.CNNConfig(model_path=model, layer=LAYER, image_size=(3, size, size))
    rates, peak = [], 0.0
    for repeat in range(repeats):
        out = tempfile.mkdtemp(prefix="bench_encoders_")
        try:
            memory = PeakMemory().__enter__()
            result = extract_features.extract(extract_features.ExtractionConfig(
                image_root=image_root, input=image_list, output_root=out, output=os.path.join(out, "list"),
                cnn=config, batch_size=batch_size, copy_cnn=False, progress=False), mx.cpu())
            memory.__exit__()
            peak = max(peak, memory.peak_total)
            rates.append(result.computed / result.seconds)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return {"images_per_s": statistics.median(rates), "runs": rates, "peak_mb": peak,
            "features": list(result.features_shape)}


def quality_runs(prefixes: dict, shared: Path, cache: Path, updates: int) -> None:
    """Extract head_relu6 features of train and dev with each encoder, train the tutorial model (regularised
    recipe, benchmarks/train.py) and score dev captions."""
    sys.path.insert(0, str(HERE))
    import train as train_bench   # benchmarks/train.py
    data = shared / "data" / "flickr8k-sample"
    for name in ("lite0", "lite1", "lite2"):
        if name not in prefixes:
            continue
        size = NATIVE[name]
        feats = cache / ("features-%s" % name)
        for split in ("train", "dev"):
            if not (feats / ("%s.features" % split)).exists():
                train_bench.run([sys.executable, "-m", "captioning.extract_features", "--image-root", str(data),
                                 "--input", str(data / ("%s.images" % split)), "--output-root", str(feats),
                                 "--output", str(feats / ("%s.features" % split)), "--image-encoder-model-path",
                                 prefixes[name], "--image-encoder-layer", LAYER, "--source-image-size", "3",
                                 str(size), str(size), "--use-cpu"], cache / ("extract-%s-%s.log" % (name, split)))
        work = cache / ("quality-%s" % name)
        work.mkdir(exist_ok=True)
        paths = train_bench.make_lists(shared, feats, work)
        model = work / "model"
        seconds, rss = train_bench.run(train_bench.train_command(paths, model, train_bench.REGULARISED + [
            "--max-updates", str(updates), "--checkpoint-interval", "200", "--load-all-features-to-memory"]),
            work / "train.log")
        scores = train_bench.quality(paths, shared, model, work)
        print("quality %s (head_relu6 %s, %d updates, %.0f s, peak %d MB): %s" % (
            name, "x".join(map(str, json.loads((feats / "image_feature_sizes.json").read_text())["features_shape"])),
            updates, seconds, rss, ", ".join("%s %.1f" % (k, v) for k, v in sorted(scores.items()))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    parser.add_argument("--cache-dir", default="/tmp/captioning-encoders")
    parser.add_argument("--encoders", nargs="+", default=["lite0", "lite1", "lite2"], choices=sorted(NATIVE))
    parser.add_argument("--limit", type=int, default=256, help="Training photos extracted per run.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true", help="Skip the onnxruntime row.")
    parser.add_argument("--quality", action="store_true", help="Also train and score one model per encoder (slow).")
    parser.add_argument("--quality-updates", type=int, default=1600)
    parser.add_argument("--single", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--image-list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shared = Path(args.shared)
    data = shared / "data" / "flickr8k-sample"
    if args.single:
        print(json.dumps(measure_one(args.single[0], int(args.single[1]), args.image_list, str(data),
                                     args.batch_size, args.repeats)))
        return
    if not (data / "train.images").exists():
        print("missing %s: nothing measured" % data)
        return
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    prefixes = import_encoders(args.encoders, cache)
    if args.no_onnx:
        prefixes.pop("lite0-onnx", None)
    image_list = cache / ("train-%d.images" % args.limit)
    image_list.write_text("".join(line + "\n" for line in (data / "train.images").read_text().splitlines()
                                  [:args.limit]))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    print("command: OMP_NUM_THREADS=%s %s %s" % (os.environ.get("OMP_NUM_THREADS"), sys.executable,
                                                 " ".join(sys.argv)))
    print("CPU: %s, %d cores visible; load average at start %s" % (cpu, os.cpu_count() or 0,
                                                                     " ".join("%.1f" % v for v in os.getloadavg())))
    print("%d photos of %s, layer %s, batch %d, median of %d runs each, one process per row"
          % (args.limit, data / "train.images", LAYER, args.batch_size, args.repeats))
    for name, model in prefixes.items():
        size = NATIVE[name.split("-")[0]]
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--single", model, str(size), "--image-list", str(image_list),
                               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats), "--shared",
                               str(shared)], capture_output=True, text=True, env=dict(os.environ,
                                                                                       PYTHONPATH=str(REPO)))
        if proc.returncode != 0:
            print("%-11s failed: %s" % (name, proc.stderr.strip().splitlines()[-1:]))
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print("%-11s %s %dx%d -> %s: %.1f images/s (%s), peak RSS %.0f MB; %.0f s in all"
              % (name, "onnxruntime" if name.endswith("onnx") else "mxnet      ", size, size,
                 "x".join(map(str, row["features"])), row["images_per_s"],
                 ", ".join("%.1f" % r for r in row["runs"]), row["peak_mb"], time.time() - start))
    print("load average at the end %s" % " ".join("%.1f" % v for v in os.getloadavg()))
    if args.quality:
        quality_runs(prefixes, shared, cache, args.quality_updates)


if __name__ == "__main__":
    main()
