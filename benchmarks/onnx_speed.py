"""Captioning speed of an ONNX export (onnxruntime) against the MXNet model it was exported from, through the same
captioner (`benchmarks.caption` with the MXNet folder as the baseline's model).

    python -m captioning.export_onnx --models MODEL --output MODEL.onnx [--quantize int8]
    python -m benchmarks.onnx_speed --mxnet-model MODEL --export MODEL.onnx [--batch-sizes 1 64] [--threads 1]

The same feature list (default: the FLICKR-A dev features), beam and length bound for both sides, each run a fresh
process, in the order MXNet, ONNX, ONNX, MXNet (``--rounds``); captions/s, CPU time per caption, peak RSS, and
whether both wrote the same captions. Any other `benchmarks.caption` option is passed on. One record,
``benchmarks/results/onnx-speed-<time>.json``.
"""
import argparse
import sys
from typing import List, Optional, Sequence

from benchmarks import caption, harness


def caption_argv(argv: Optional[Sequence[str]] = None) -> List[str]:
    """The `benchmarks.caption` command line of ours: the export is ours' model, the MXNet folder the baseline's."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mxnet-model", default="/work/bench/quality", help="the trained MXNet model folder")
    parser.add_argument("--export", default="/work/bench/quality.onnx", help="its export (captioning.export_onnx)")
    parser.add_argument("--batch-sizes", default=["1", "64"], nargs="+")
    parser.add_argument("--name", default="onnx-speed", help="the record's benchmark name")
    args, rest = parser.parse_known_args(argv)
    return ["--model", args.export, "--baseline-model", args.mxnet_model, "--batch-sizes", *args.batch_sizes,
            "--name", args.name] + list(rest)


def main(argv: Optional[Sequence[str]] = None) -> None:
    caption.main(caption_argv(argv))


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.onnx_speed: %s" % e)
