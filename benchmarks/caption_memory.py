"""Captioner peak memory against the input length: it should stay flat from a thousand to a hundred thousand lines,
because features are read a batch at a time and captions are written as soon as they are ready.

    python -m benchmarks.caption_memory [--lines 1000 10000 100000] [--baseline-tree PATH] [--threads 1]

A tiny random model (LSTM 16, MLP attention, 16 words, ``--max-output-length`` 4) captions ``--lines`` input lines
that cycle over ``--distinct`` feature files of shape ``--feature-shape``, through ``python -m captioning.captioner``
(default chunk size, ``--batch-size``), one fresh process per run. With ``--baseline-tree`` the ``captioning``
package of that tree (e.g. a ``git worktree`` of an older commit) runs the same inputs, alternating with ours.
Figures per input length: peak RSS of the process and lines/s of the whole process. One record,
``benchmarks/results/caption-memory-<time>.json``.
"""
import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks.harness import Job, Session


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.caption_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beam-size", type=int, default=2)
    parser.add_argument("--max-output-length", type=int, default=4, help="words per caption")
    parser.add_argument("--distinct", type=int, default=50, help="distinct feature files the lines cycle over")
    parser.add_argument("--feature-shape", type=int, nargs=3, default=[64, 7, 7])
    parser.add_argument("--baseline-tree", default=None, help="tree whose captioning package is the baseline")
    parser.add_argument("--ours", default=str(harness.REPO), help="tree whose captioning package is ours")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of every run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work-dir", default=None, help="where the model and inputs go (default: a temporary "
                                                         "folder)")
    harness.add_record_args(parser)
    args = harness.parse_recorded_args(parser, argv)
    return args


def make_inputs(work: Path, lines: int, distinct: int) -> Path:
    """An input list of ``lines`` lines cycling over the ``distinct`` feature files."""
    path = work / ("input.%d" % lines)
    if not path.exists():
        names = ["img%03d.jpg.npy" % i for i in range(distinct)]
        with open(path, "w", encoding="utf-8") as f:
            for k in range(lines):
                f.write(names[k % distinct] + "\n")
    return path


def command(args: argparse.Namespace, model: Path, inputs: Path, feats: Path) -> List[str]:
    return [sys.executable, "-m", "captioning.captioner", "--models", str(model), "--input", str(inputs),
            "--source-root", str(feats), "--use-cpu", "--beam-size", str(args.beam_size), "--batch-size",
            str(args.batch_size), "--max-output-length", str(args.max_output_length), "--quiet", "--output",
            str(inputs) + ".captions"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    from tests.integration.test_captioner import make_features, make_model_folder

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="caption_memory."))
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.feature_shape)
    model = work / "model"
    if not model.exists():
        make_model_folder(model, seed=0, feature_shape=shape)
    make_features(work / "feats", args.distinct, seed=1, shape=shape)
    trees = {"ours": Path(args.ours), "baseline": Path(args.baseline_tree or args.ours)}
    session = Session(benchmark="caption-memory",
                      reproduce=harness.reproduce_command("benchmarks.caption_memory", args.argv),
                      description="captioner peak memory against the input length (tiny random model)",
                      baseline=None if args.baseline_tree is None else "captioning at %s" % args.baseline_tree,
                      ours="captioning at %s" % args.ours, threads=args.threads, ours_tree=trees["ours"],
                      rounds=args.rounds, settle_s=args.settle, results_dir=Path(args.results_dir))
    for lines in args.lines:
        inputs = make_inputs(work, lines, args.distinct)

        def measure(side: str, k: int, lines: int = lines, inputs: Path = inputs) -> Dict[str, float]:
            job = Job(command(args, model, inputs, work / "feats"),
                      harness.ours_environment(trees[side], args.threads), str(trees[side]),
                      work / ("captioner-%s-%d-%d.log" % (side, lines, k)))
            run = session.run(side, k, job, "%d lines" % lines)
            written = len(Path(str(inputs) + ".captions").read_text().splitlines())
            if written != lines:
                raise harness.BenchmarkError("%s wrote %d captions for %d lines" % (side, written, lines))
            return {"rss": run.peak_rss_mb, "rate": lines / run.wall_s}
        results = session.alternate(measure)
        session.figure_from("peak RSS, %d input lines" % lines, "MB", False, results, "rss")
        session.figure_from("lines/s of the whole process, %d input lines" % lines, "lines/s", True, results, "rate")
    session.finish()


if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.caption_memory: %s" % e)
