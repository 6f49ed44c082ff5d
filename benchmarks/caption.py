"""Captioning speed of this project against a baseline of its own: another source tree or another option set.

    python -m benchmarks.caption --model MODEL [--baseline-tree /path/to/snapshot] [--baseline-args "..."]
        [--ours-args "--search-processes 2"] [--baseline-model OTHER] [--batch-sizes 64 1] [--threads 1] [--rounds 2]

Both sides run ``python -m captioning.captioner`` on the same trained model (``--model``) and feature list (default:
the FLICKR-A dev features), beam ``--beam-size``, ``--max-output-length``, each run a fresh process, in the order
baseline, ours, ours, baseline (``--rounds``). The baseline is the ``captioning`` package of ``--baseline-tree``
(default: this tree) with ``--baseline-args`` added (and ``--baseline-model`` instead of ``--model`` when given: an
MXNet model folder against its ONNX export, `benchmarks.onnx_speed`); ours is ``--ours`` (default: this tree) with
``--ours-args``.
Figures per batch size: the captioner's own captions/s (model loading excluded), CPU time per caption (user + sys of
the whole process), peak RSS of the process and its search workers, words per caption; and whether both sides wrote
the same captions. One record, ``benchmarks/results/caption-<time>.json`` (``--name`` changes ``caption``).
"""
import argparse
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks.harness import Job, Session


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.caption", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/work/bench/quality", help="trained model folder")
    parser.add_argument("--input", default="/work/bench/features-head_conv/dev.features", help="feature list")
    parser.add_argument("--source-root", default=None, help="folder of the features (default: the list's folder)")
    parser.add_argument("--ours", default=str(harness.REPO), help="tree whose captioning package is ours")
    parser.add_argument("--ours-args", default="", help="extra captioner flags for ours (one string)")
    parser.add_argument("--baseline-tree", default=None, help="tree whose captioning package is the baseline "
                                                              "(default: --ours)")
    parser.add_argument("--baseline-args", default="", help="extra captioner flags for the baseline (one string)")
    parser.add_argument("--baseline-model", default=None, help="the baseline's model folder (default: --model)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-output-length", type=int, default=30)
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of both sides")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--name", default="caption", help="the record's benchmark name")
    parser.add_argument("--work-dir", default=str(harness.OUTPUT / "caption"))
    harness.add_record_args(parser)
    args = harness.parse_recorded_args(parser, argv)
    if args.baseline_tree is None:
        args.baseline_tree = args.ours
    if args.baseline_model is None:
        args.baseline_model = args.model
    if args.source_root is None:
        args.source_root = str(Path(args.input).parent)
    return args


def command(args: argparse.Namespace, side: str, batch: int, output: Path) -> List[str]:
    """One side's captioner command line."""
    extra = shlex.split(args.baseline_args if side == "baseline" else args.ours_args)
    model = args.baseline_model if side == "baseline" else args.model
    return [sys.executable, "-m", "captioning.captioner", "--models", model, "--input", args.input,
            "--source-root", args.source_root, "--beam-size", str(args.beam_size), "--batch-size", str(batch),
            "--max-output-length", str(args.max_output_length), "--use-cpu", "--output", str(output)] + extra


def describe(args: argparse.Namespace, side: str) -> str:
    tree = args.baseline_tree if side == "baseline" else args.ours
    flags = args.baseline_args if side == "baseline" else args.ours_args
    model = args.baseline_model if side == "baseline" else args.model
    return "captioning at %s%s%s" % (tree, " with %s" % flags if flags else "",
                                     " on %s" % model if args.baseline_model != args.model else "")


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    for path in (Path(args.model), Path(args.baseline_model), Path(args.input)):
        if not path.exists():
            print("skipped: no %s (train a model and extract features first: python -m benchmarks.train)" % path)
            return
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    trees = {"baseline": Path(args.baseline_tree), "ours": Path(args.ours)}
    session = Session(benchmark=args.name, reproduce=harness.reproduce_command("benchmarks.caption", args.argv),
                      description="captioning speed, beam %d, max length %d, OMP_NUM_THREADS=%s"
                                  % (args.beam_size, args.max_output_length, args.threads),
                      baseline=describe(args, "baseline"), ours=describe(args, "ours"), threads=args.threads,
                      ours_tree=trees["ours"], rounds=args.rounds, settle_s=args.settle,
                      results_dir=Path(args.results_dir))
    for batch in args.batch_sizes:
        outputs: Dict[str, List[str]] = {}

        def measure(side: str, k: int, batch: int = batch, outputs: Dict[str, List[str]] = outputs
                    ) -> Dict[str, float]:
            output = work / ("captions-%s-b%d-%d" % (side, batch, k))
            job = Job(command(args, side, batch, output), harness.ours_environment(trees[side], args.threads),
                      str(trees[side]), work / ("caption-%s-b%d-%d.log" % (side, batch, k)))
            run = session.run(side, k, job, "caption batch %d" % batch, sample_tree=True)
            speeds = harness.figures_in(harness.OURS_CAPTION_SPEED, run.output)
            if not speeds:
                raise harness.BenchmarkError("%s: no speed line in its log:\n%s" % (side, run.output[-2000:]))
            captions = output.read_text().splitlines()
            outputs[side] = captions
            words = sum(len(c.split()) for c in captions) / max(1, len(captions))
            return {"speed": speeds[0], "cpu_ms": 1000.0 * (run.user_s + run.sys_s) / max(1, len(captions)),
                    "rss": run.peak_tree_rss_mb / 1024.0, "words": words}
        results = session.alternate(measure)
        session.figure_from("captioning speed, batch %d" % batch, "captions/s", True, results, "speed")
        session.figure_from("CPU time per caption (whole process), batch %d" % batch, "ms", False, results, "cpu_ms")
        session.figure_from("peak RSS (process and workers), batch %d" % batch, "GB", False, results, "rss")
        session.figure_from("words per caption, batch %d" % batch, "words", True, results, "words",
                            note="not a speed: a batch costs as many steps as its longest caption")
        same = outputs.get("baseline") == outputs.get("ours")
        session.notes.append("batch %d: the two sides' captions are %s" % (batch, "identical" if same else
                                                                           "DIFFERENT"))
    session.finish()


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.caption: %s" % e)
