"""Captioning speed of two source trees side by side in one run (beam search whose cost follows the captions).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_speed.py --model /work/bench/quality \\
        --before /work/snap --after . --batch-sizes 64 1 --repeats 2

Each configuration runs a tree's own captioner CLI (``python -m captioning.captioner`` with the tree as working
directory, so that tree's package is imported) on the same feature list, the trees alternating within each repeat.
Printed per run: the captioner's own captions/s (model loading excluded) and its search-alone captions/s, the
child process' CPU seconds, words per caption and how many captions hit ``--max-output-length``; then whether the
trees' captions are identical line by line. Extra captioner flags for the after tree only: ``--after-args``.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
BENCH = Path("/work/bench")
RATE = re.compile(r"Processed (\d+) lines .*?: ([0-9.]+) captions/s \(search alone ([0-9.]+) captions/s\)")


def run_captioner(tree: Path, args: argparse.Namespace, batch_size: int, output: Path,
                  extra: List[str]) -> Tuple[float, float, float]:
    """(captions/s, search-alone captions/s, CPU seconds) of one captioner run of ``tree``."""
    command = [sys.executable, "-m", "captioning.captioner", "--models", str(args.model), "--input",
               str(args.features / "dev.features"), "--source-root", str(args.features), "--output", str(output),
               "--beam-size", str(args.beam_size), "--batch-size", str(batch_size), "--max-output-length",
               str(args.max_output_length), "--use-cpu"]
    if args.checkpoint is not None:
        command += ["--checkpoints", str(args.checkpoint)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command + extra, cwd=str(tree), env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (tree, done.stderr[-3000:]))
    match = RATE.search(done.stderr)
    assert match, done.stderr[-2000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(match.group(2)), float(match.group(3)), cpu


def caption_stats(path: Path, limit: int) -> Tuple[float, int]:
    lines = path.read_text().splitlines()
    lengths = [len(line.split()) for line in lines]
    return sum(lengths) / max(len(lengths), 1), sum(n >= limit for n in lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=BENCH / "quality")
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--features", type=Path, default=BENCH / "features-head_conv")
    parser.add_argument("--before", type=Path, default=Path("/work/snap"))
    parser.add_argument("--after", type=Path, default=REPO)
    parser.add_argument("--after-args", default="", help="extra captioner flags for the after tree")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-output-length", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    figures: Dict[Tuple[str, int], List[Tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        outputs = {}
        for repeat in range(args.repeats):
            for batch_size in args.batch_sizes:
                for name, tree in trees.items():
                    output = Path(work) / ("%s.%d.txt" % (name, batch_size))
                    extra = args.after_args.split() if name == "after" else []
                    result = run_captioner(tree, args, batch_size, output, extra)
                    figures.setdefault((name, batch_size), []).append(result)
                    outputs[(name, batch_size)] = output
                    words, at_limit = caption_stats(output, args.max_output_length)
                    print("repeat %d  batch %3d  %-6s  %6.1f captions/s  search %6.1f/s  CPU %6.1f s  "
                          "%.1f words/caption  %d at the limit" % (repeat, batch_size, name, result[0], result[1],
                                                                  result[2], words, at_limit), flush=True)
        print("\nmedians (OMP_NUM_THREADS=%s, beam %d, max length %d, %s):" % (
            os.environ.get("OMP_NUM_THREADS", "?"), args.beam_size, args.max_output_length, args.model))
        for batch_size in args.batch_sizes:
            row = {name: [statistics.median(v[i] for v in figures[(name, batch_size)]) for i in range(3)]
                   for name in trees}
            before_lines = outputs[("before", batch_size)].read_text().splitlines()
            after_lines = outputs[("after", batch_size)].read_text().splitlines()
            same = sum(a == b for a, b in zip(before_lines, after_lines))
            print("batch %3d: before %.1f captions/s (CPU %.1f s), after %.1f captions/s (CPU %.1f s): %.2fx "
                  "wall, %.2fx CPU; identical captions %d/%d" % (
                      batch_size, row["before"][0], row["before"][2], row["after"][0], row["after"][2],
                      row["after"][0] / row["before"][0], row["before"][2] / row["after"][2], same,
                      len(before_lines)))


if __name__ == "__main__":
    main()
