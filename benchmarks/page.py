"""Write docs/benchmarks.md from the records in benchmarks/results/: per benchmark, its latest valid record.

    python -m benchmarks.page            # rewrite docs/benchmarks.md
    python -m benchmarks.page --check    # exit 1 when docs/benchmarks.md differs from what the records give

tests/unit/test_docs.py checks that the page equals `render`'s output, so no figure on it lacks its record.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import harness

DOC = harness.REPO / "docs" / "benchmarks.md"
TEMPLATE = harness.HERE / "page_template.md"

# the benchmarks a user runs, in the page's order: (record name, title, command to produce its record)
KNOWN: List[Tuple[str, str, str]] = [
    ("peer-train-t1", "Training against the original, 1 thread",
     "python -m benchmarks.peer --parts train --threads 1 --train-updates 100"),
    ("peer-train-t2", "Training on 2 cores against the original with 2 threads (ours: 2 processes)",
     "python -m benchmarks.peer --parts train --threads 2 --train-updates 100 --ours-train-args \"--processes 2\""),
    ("peer-train-t2-threads", "Training on 2 cores against the original with 2 threads (ours: 1 process, 2 threads)",
     "python -m benchmarks.peer --parts train --threads 2 --train-updates 100 --record-suffix threads"),
    ("peer-models-t1", "Training each tool's model for captioning (1,600 updates), 1 thread",
     "python -m benchmarks.peer --parts models --threads 1"),
    ("peer-caption-t1", "Captioning against the original, 1 thread",
     "python -m benchmarks.peer --parts caption --threads 1   # after the models part"),
    ("peer-processes-t2", "Captioning in 2 processes against the original",
     "python -m benchmarks.peer --parts processes --processes 2 --threads 2   # after the models part"),
    ("peer-extract-t2", "Feature extraction against the original, 2 threads",
     "python -m benchmarks.peer --parts extract --threads 2"),
    ("train-quality-regularised", "Caption quality of the regularised recipe (FLICKR-A dev)",
     "python -m benchmarks.train --speed-updates 0 --recipe regularised"),
    ("quality-flickr", "Self-critical training (FLICKR-A dev)", "python -m benchmarks.quality flickr"),
    ("quality-scenes", "Self-critical training (synthetic scenes, test)",
     "python -m benchmarks.quality scenes --scenes-model tutorial --scenes-seed 202 --scenes-train 2000 "
     "--scenes-val 200 --scenes-test 200 --scenes-captions 4 --xe-references one --sc-references all"),
    ("train-speed", "Training speed per feature store", "python -m benchmarks.train --skip-quality"),
    ("caption", "Captioning speed against a baseline tree or option set",
     "python -m benchmarks.caption --model MODEL --baseline-tree OTHER_TREE"),
    ("caption-memory", "Captioner memory against the input length", "python -m benchmarks.caption_memory"),
    ("train-profile", "Where a training update goes: time and memory", "OMP_NUM_THREADS=1 python -m benchmarks.train_profile"),
    ("train-quality-regularised-finetune-stage6_unit4_add",
     "Fine-tuning the CNN's last stage: caption quality (FLICKR-A dev; frozen: the regularised recipe above)",
     "python -m benchmarks.train --speed-updates 0 --recipe regularised --fine-tune-from stage6_unit4_add"),
    ("train-speed-finetune-stage6_unit4_add", "Fine-tuning the CNN's last stage: cost of an update",
     "python -m benchmarks.train --skip-quality --stores memory --fine-tune-from stage6_unit4_add"),
    ("export-quality", "Exported models (onnxruntime): captions against the MXNet captioner's",
     "python -m benchmarks.export --flickr-model MODEL"),
    ("caption-onnx-fp32-t1", "Exported models (onnxruntime): float32 export against the MXNet captioner, 1 thread",
     "python -m benchmarks.caption --model MODEL --ours-model MODEL.onnx --threads 1 --name caption-onnx-fp32-t1"),
    ("caption-onnx-int8-t1", "Exported models (onnxruntime): int8 export against the MXNet captioner, 1 thread",
     "python -m benchmarks.caption --model MODEL --ours-model MODEL.int8 --threads 1 --name caption-onnx-int8-t1"),
    ("caption-onnx-fp32-t2", "Exported models (onnxruntime): float32 export against the MXNet captioner, 2 threads",
     "python -m benchmarks.caption --model MODEL --ours-model MODEL.onnx --threads 2 --name caption-onnx-fp32-t2"),
    ("caption-onnx-int8-t2", "Exported models (onnxruntime): int8 export against the MXNet captioner, 2 threads",
     "python -m benchmarks.caption --model MODEL --ours-model MODEL.int8 --threads 2 --name caption-onnx-int8-t2"),
    ("peer-caption-t1-onnx-int8", "Exported models (onnxruntime): int8 export against the original, 1 thread",
     "python -m benchmarks.peer --parts caption --threads 1 --ours-model MODEL.int8 --record-suffix onnx-int8"),
    ("peer-caption-t2-onnx-int8", "Exported models (onnxruntime): int8 export against the original, 2 threads",
     "python -m benchmarks.peer --parts caption --threads 2 --ours-model MODEL.int8 --record-suffix onnx-int8"),
]


def number(value: Optional[float]) -> str:
    """A figure with three significant digits (no more precision than a benchmark has)."""
    if value is None:
        return "-"
    size = abs(value)
    return "%.0f" % value if size >= 100 else "%.1f" % value if size >= 10 else "%.2f" % value


def latest_valid(records: Sequence[Dict[str, object]]) -> Dict[str, Dict[str, object]]:
    """The latest valid record of each benchmark (by date, then file name)."""
    chosen: Dict[str, Dict[str, object]] = {}
    for record in sorted(records, key=lambda r: (str(r.get("date")), str(r["file"]))):
        if record.get("valid") is True:
            chosen[str(record["benchmark"])] = record
    return chosen


def table(record: Dict[str, object]) -> List[str]:
    lines = ["| figure | ours | baseline | ratio (> 1: ours better) | record |", "|---|---|---|---|---|"]
    for row in record.get("figures", []):
        unit = (" " + row["unit"]) if row.get("unit") else ""

        def side(key: str, row: Dict[str, Any] = row, unit: str = unit) -> str:
            values = row.get(key) or []
            if not values:
                return "-"
            runs = " (%s)" % " / ".join(number(v) for v in values) if len(values) > 1 else ""
            return "%s%s%s" % (number(row.get(key + "_median")), unit, runs)
        ratio = row.get("ratio")
        name = row["figure"] + (" (%s)" % row["note"] if row.get("note") else "")
        lines.append("| %s | %s | %s | %s | `%s` |" % (name, side("ours"), side("baseline"),
                                                        "-" if ratio is None else "%.2fx" % ratio, record["file"]))
    return lines


def section(name: str, title: str, command: str, record: Optional[Dict[str, object]]) -> List[str]:
    lines = ["### %s" % title, ""]
    if record is None:
        return lines + ["No recorded result yet (record `%s`). To record one on an idle machine:" % name, "",
                        "    " + command, ""]
    machine = record.get("machine", {})
    git = record.get("git", {})
    flags = ", ".join(machine.get("flags") or []) or "none of AVX2/AVX-512/AMX"
    commit = (git.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if git.get("dirty") else "")
    lines += [str(record.get("description") or ""), ""] if record.get("description") else []
    lines += table(record) + [""]
    lines += ["- ours: %s; baseline: %s" % (record.get("ours"), record.get("baseline") or "none"),
              "- machine: %s (%s), %s cores, %s GB; OMP_NUM_THREADS %s; load average %s before, %s after" % (
                  machine.get("cpu"), flags, machine.get("cores"), machine.get("memory_gb"),
                  record.get("threads") or "unset", number((machine.get("load_before") or [None])[0]),
                  number((machine.get("load_after") or [None])[0])),
              "- date %s, commit %s, record `benchmarks/results/%s`" % (record.get("date"), commit, record["file"])]
    lines += ["- %s" % note for note in record.get("notes") or []]
    lines += ["- reproduce: `%s`" % record.get("reproduce"), ""]
    return lines


def render(results: Path = harness.RESULTS, template: Path = TEMPLATE) -> str:
    """The page for the records in ``results``."""
    chosen = latest_valid(harness.read_records(results))
    known = {name for name, _, _ in KNOWN}
    entries = list(KNOWN) + [(name, name, str(chosen[name].get("reproduce"))) for name in sorted(chosen)
                             if name not in known]
    parts = ["## Results", ""]
    for name, title, command in entries:
        parts += section(name, title, command, chosen.get(name))
    return template.read_text(encoding="utf-8").replace("{results}", "\n".join(parts))


def write(text: str, path: Path = DOC) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".benchmarks.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.page", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = parser.parse_args(argv)
    try:
        text = render()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.page: %s" % e)
    if args.check:
        if DOC.read_text(encoding="utf-8") != text:
            sys.exit("%s is out of date: run python -m benchmarks.page" % DOC)
        return
    write(text)
    print("wrote %s" % DOC)


if __name__ == "__main__":
    main()
