"""Captioner peak memory against the input length (issue 11 item 8): peak RSS must stay flat from 1,000 to 100,000
input lines, because features are loaded a batch at a time and outputs are written as soon as they are ready.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/caption_memory.py [--lines 1000 10000 100000] [--baseline REV]

A tiny random model (LSTM 16, MLP attention, 16 words, ``--max-output-length`` 4) captions ``--lines`` input lines
that cycle over ``--distinct`` feature files of shape ``--feature-shape`` (default 64x7x7, 12.5 kB each, so that
holding a chunk of features shows), through the real CLI (``python -m captioning.captioner``, default chunk size,
``--batch-size``, default 64: Sockeye's default chunk would then be 32,000 lines), one fresh process per run; peak
RSS is the process' maximum resident set (``wait4``).
``--baseline REV`` runs the same inputs with the ``captioning`` package of git revision REV too (exported to a
temporary folder), e.g. the commit before the fix, for a before/after table.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_inputs(work: Path, lines: int, distinct: int) -> Path:
    """An input list of ``lines`` lines cycling over the ``distinct`` feature files."""
    path = work / ("input.%d" % lines)
    if not path.exists():
        names = ["img%03d.jpg.npy" % i for i in range(distinct)]
        with open(path, "w", encoding="utf-8") as f:
            for k in range(lines):
                f.write(names[k % distinct] + "\n")
    return path


def run(package: Path, argv: List[str]) -> Tuple[float, float, int]:
    """``python -m captioning.captioner argv`` with the ``captioning`` package found in ``package``: (peak RSS in
    MB, wall seconds, output lines)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPATH=str(package))
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "captioning.captioner", *argv], cwd=str(package), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    output_lines = sum(1 for _ in proc.stdout)  # type: ignore[union-attr]
    stderr = proc.stderr.read().decode("utf-8", "replace")  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("captioner failed:\n" + stderr[-3000:])
    return usage.ru_maxrss / 1024.0, time.time() - start, output_lines


def format_1_copy(model: Path, target: Path) -> Path:
    """A copy of a model folder whose config is in format 1 (``cnn_config``), for revisions before format 2."""
    import shutil
    import yaml
    if not target.exists():
        shutil.copytree(model, target)
        config = yaml.safe_load((model / "config").read_text(encoding="utf-8"))
        config["cnn_config"] = config.pop("image_cnn", None)
        config["format_version"] = 1
        (target / "config").write_text(yaml.safe_dump(config), encoding="utf-8")
    return target


def export_revision(revision: str, target: Path) -> Path:
    """The ``captioning`` package of git ``revision``, exported under ``target``."""
    archive = subprocess.run(["git", "archive", revision, "captioning"], cwd=str(REPO), check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beam-size", type=int, default=2)
    parser.add_argument("--max-output-length", type=int, default=4, help="Words per caption (speed only).")
    parser.add_argument("--distinct", type=int, default=50, help="Distinct feature files the lines cycle over.")
    parser.add_argument("--feature-shape", type=int, nargs=3, default=[64, 7, 7])
    parser.add_argument("--baseline", type=str, default=None, metavar="REV",
                        help="Also run the captioning package of this git revision (before/after).")
    parser.add_argument("--baseline-only", action="store_true", help="Run --baseline only (not this tree).")
    parser.add_argument("--work-dir", type=str, default=None, help="Where the model and inputs go (default: a "
                                                                    "temporary folder).")
    args = parser.parse_args()

    from tests.integration.test_captioner import make_features, make_model_folder

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="caption_memory."))
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.feature_shape)
    model = work / "model"
    if not model.exists():
        make_model_folder(model, seed=0, feature_shape=shape)
    make_features(work / "feats", args.distinct, seed=1, shape=shape)
    packages: Dict[str, Path] = {} if args.baseline_only else {"this tree": REPO}
    models = {"this tree": model}
    if args.baseline:
        packages[args.baseline] = export_revision(args.baseline, Path(tempfile.mkdtemp(prefix="baseline.")))
        models[args.baseline] = format_1_copy(model, work / "model-format-1")
    rows: List[str] = []
    for label, package in packages.items():
        for lines in args.lines:
            inputs = make_inputs(work, lines, args.distinct)
            rss, wall, output_lines = run(package, [
                "--models", str(models[label]), "--input", str(inputs), "--source-root", str(work / "feats"),
                "--use-cpu",
                "--beam-size", str(args.beam_size), "--batch-size", str(args.batch_size),
                "--max-output-length", str(args.max_output_length), "--quiet"])
            assert output_lines == lines, (output_lines, lines)
            rows.append("| %s | %d | %.0f | %.0f | %.0f |" % (label, lines, rss, wall, lines / wall))
            print(rows[-1], flush=True)
    print("\n| code | input lines | peak RSS (MB) | wall (s) | lines/s (whole process) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
