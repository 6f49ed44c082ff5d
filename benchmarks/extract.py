"""Feature-extraction speed and memory (BENCHMARKS.md, FLICKR-A): the 753 flickr8k-sample training photos through
efficientnet-lite0 at layer head_conv, batch 32, images decoded in worker processes.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/extract.py [--batch-size 32] [--num-workers 2] [--repeats 3]

Prints images/s of the whole extraction (decode + CNN + writing .npy files; median of --repeats runs, each into a
fresh folder), the wall time of one run including start-up (loading the CNN), the CNN-only rate on images decoded
beforehand (to show that decoding is hidden behind the CNN), and peak memory (this process plus its decode workers,
sampled; and ru_maxrss of this process). MXNet is imported inside main(): the spawned decode workers re-import this
script.
"""
import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))


class PeakMemory:
    """Samples the resident memory of this process plus all its child processes (the decode workers) every 50 ms
    and keeps the peak of the sum (ru_maxrss cannot: a spawned child's ru_maxrss starts at its parent's size)."""

    def __init__(self) -> None:
        import threading
        self.peak_total = 0.0
        self.peak_children = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_mb(pid: int) -> float:
        try:
            with open("/proc/%d/statm" % pid) as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, IndexError, ValueError):
            return 0.0

    def _children(self) -> list:
        me, pids = os.getpid(), []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                            pids.append(int(name))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            children = sum(self._rss_mb(pid) for pid in self._children())
            self.peak_children = max(self.peak_children, children)
            self.peak_total = max(self.peak_total, self._rss_mb(os.getpid()) + children)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-root", default=os.path.join(SHARED, "data", "flickr8k-sample"))
    parser.add_argument("--input", default=None, help="Image list (default: IMAGE_ROOT/train.images).")
    parser.add_argument("--model", default=os.path.join(SHARED, "models", "efficientnet-lite0", "efficientnet-lite0"))
    parser.add_argument("--layer", default="head_conv")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="Decode processes (default: cores).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cnn-only-images", type=int, default=256,
                        help="Images decoded beforehand for the CNN-only rate.")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    import captioning  # noqa: F401  (sets OMP_NUM_THREADS before MXNet loads)
    import mxnet as mx
    import numpy as np
    from captioning import cnn, extract_features, image_io, utils

    input_list = args.input or os.path.join(args.image_root, "train.images")
    if not os.path.exists(input_list) or not os.path.exists(args.model + "-symbol.json"):
        print("missing data or model (%s, %s): nothing measured" % (input_list, args.model))
        return
    count = len(utils.read_lines(input_list))
    config = cnn.CNNConfig(model_path=args.model, layer=args.layer, image_size=(3, 224, 224))
    # CNN only: the same batches on images decoded beforehand (measured between the pipeline runs, so both see the
    # same machine load; the pipeline's memory is sampled before these images exist)
    paths = [image_io.resolve_path(args.image_root, line, False, input_list)
             for line in utils.read_lines(input_list)[:args.cnn_only_images]]
    rates, walls, cnn_rates = [], [], []
    memory = PeakMemory().__enter__()
    images = None
    extractor = None
    for repeat in range(args.repeats):
        out = tempfile.mkdtemp(prefix="bench_extract_")
        try:
            start = time.time()
            result = extract_features.extract(extract_features.ExtractionConfig(
                image_root=args.image_root, input=input_list, output_root=out, output=os.path.join(out, "list"),
                cnn=config, batch_size=args.batch_size, num_workers=args.num_workers, copy_cnn=False,
                progress=False), mx.cpu())
            walls.append(time.time() - start)
            rates.append(result.computed / result.seconds)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if repeat == 0:
            memory.__exit__()
            self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            images = np.stack([image_io.load_image(p, (224, 224)) for p in paths])
            extractor = cnn.create_feature_extractor(config, mx.cpu(), args.batch_size)
            extractor.extract(images[:args.batch_size])          # warm-up
        start = time.time()
        for s in range(0, len(images), args.batch_size):
            extractor.extract(images[s:s + args.batch_size])
        cnn_rates.append(len(images) / (time.time() - start))
    decode_start = time.time()
    for p in paths[:64]:
        image_io.load_image(p, (224, 224))
    decode_rate = min(64, len(paths)) / (time.time() - decode_start)

    print("command: OMP_NUM_THREADS=%s %s %s" % (os.environ.get("OMP_NUM_THREADS"), sys.executable,
                                                 " ".join(sys.argv)))
    print("images: %d (%s), model %s layer %s, batch %d, decode workers %s, CNN chunks of %d on CPU, OMP threads %s"
          % (count, input_list, os.path.basename(args.model), args.layer, args.batch_size,
             args.num_workers if args.num_workers is not None else cnn.default_num_workers(),
             min(args.batch_size, 16), os.environ.get("OMP_NUM_THREADS")))
    print("extraction (decode + CNN + write): median %.1f images/s over %d runs (%s)"
          % (statistics.median(rates), len(rates), ", ".join("%.1f" % r for r in rates)))
    print("wall per run incl. CNN loading: median %.1f s (peer Sockeye: 23.0 s at batch 128, ~33 images/s)"
          % statistics.median(walls))
    ratio = statistics.median([a / b for a, b in zip(rates, cnn_rates)])
    print("CNN only on pre-decoded images: median %.1f images/s (%s); pipeline / CNN-only: median %.2f; decoding "
          "alone in one process: %.0f images/s"
          % (statistics.median(cnn_rates), ", ".join("%.1f" % r for r in cnn_rates), ratio, decode_rate))
    print("peak RSS during the first extraction: %.0f MB in all (this process + decode workers, sampled every 50 "
          "ms; the workers together at most %.0f MB); this process alone (ru_maxrss) %.0f MB (peer Sockeye: 1.0 GB)"
          % (memory.peak_total, memory.peak_children, self_peak))


if __name__ == "__main__":
    main()
