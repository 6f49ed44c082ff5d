"""Speed side by side with the original Sockeye 1.18.115 image captioner, in one run on one machine (BENCHMARKS.md).

    .venv/bin/python benchmarks/peer.py --peer /tmp/sockeye-peer [--ours /work/snap] [--threads 1 2]
        [--ours-model /work/bench/quality] [--peer-model /work/bench/peer-model]
        [--parts train caption processes extract] [--processes 2]

``--peer`` is the folder ``../shared/peer/setup.sh`` made (``venv/``, ``sk.py``, ``sockeye-1.18.115/``); without it,
or without ``../shared`` (data and CNN), the script says so and exits 0. ``--ours`` is the tree whose ``captioning``
package is run (default: this checkout; a snapshot of the last commit gives stable figures while others edit).

Every figure is measured for the original and for ours in the order original, ours, ours, original (drift of the
machine's load cancels), with the same ``OMP_NUM_THREADS`` for both, each run a fresh process; the printed value of
each is the median (here the mean) of its two runs, and the ratio is ours / original (for time and memory: original /
ours, so > 1 always means ours is better).

- train (``--simultaneous``: both tools at the same time, ``--rounds`` times, instead of the alternating order):
  the tutorial model (BENCHMARKS.md's flags for the original, the same model's flags for ours), FLICKR-A
  head_conv features in memory, ``--train-updates`` updates from scratch, one checkpoint at the end, no decoding:
  the median of the speeds each tool logs (every 50 updates), the process' peak RSS, the validation perplexity at
  the end.
- caption: each tool's own trained model (``--peer-model``, ``--ours-model``; train them with the same flags, see
  docs/benchmarks.md) captions the 113 dev photos' features at beam 3, batch 64 and batch 1, ``--max-output-length
  30`` (ours also at its default, from the model folder): the captions/s each tool reports (model loading excluded
  by both), words per caption, captions that hit the length limit, peak RSS.
- processes (``--processes N``): the same captioning with the threads in N processes of OMP_NUM_THREADS / N threads
  each: ours as ``captioner --search-processes N``, the original (no such option) as N processes started together
  on N interleaved parts of the input; its captions/s are all lines over the longest part's processing time.
- extract: EfficientNet-Lite0 head_conv features of ``--extract-split``'s photos, batch 32: process wall time (CNN
  loading included) and peak RSS of the main process.
Prints the CPU model and the load average, then one line per figure; ``--json`` also writes them to a file.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from train import TUTORIAL  # noqa: E402  (the tutorial model's flags for ours)

# the original needs these to train the same model (its defaults differ; BENCHMARKS.md)
TUTORIAL_PEER = ["--encoder", "image-pretrain-cnn", "--decoder", "rnn", "--num-layers", "1:1", "--rnn-num-hidden",
                 "512", "--rnn-decoder-state-init", "zero", "--rnn-attention-type", "mlp",
                 "--image-encoder-num-hidden", "512", "--num-embed", "512", "--batch-type", "sentence",
                 "--batch-size", "64", "--initial-learning-rate", "0.0003", "--gradient-clipping-type", "abs",
                 "--gradient-clipping-threshold", "1.0", "--bucket-width", "5", "--max-seq-len", "1:60",
                 "--weight-normalization", "--load-all-features-to-memory", "--seed", "13", "--use-cpu"]
ORDER = ("original", "ours", "ours", "original")

PEER_TRAIN_SPEED = re.compile(r"Speed: ([\d.]+) samples/sec")
OURS_TRAIN_SPEED = re.compile(r"([\d.]+) samples/s \(captions\)")
PEER_CAPTION_SPEED = re.compile(r"Processed \d+ lines.*sent/sec: ([\d.]+)")
OURS_CAPTION_SPEED = re.compile(r"Processed \d+ lines \(\d+ failed\) in [\d.]+s: ([\d.]+) captions/s")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


class Run:
    """One process' result: wall seconds, peak RSS (MB) and its combined output."""

    def __init__(self, wall: float, rss: float, output: str) -> None:
        self.wall, self.rss, self.output = wall, rss, output


def run(cmd: Sequence[str], env: Dict[str, str], cwd: str, log: Path) -> Run:
    return finish(start(cmd, env, cwd, log))


def start(cmd: Sequence[str], env: Dict[str, str], cwd: str, log: Path) -> Tuple[subprocess.Popen, float, Path,
                                                                                   List[str]]:
    with open(log, "w") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, time.time(), log, list(cmd)


def finish(started: Tuple[subprocess.Popen, float, Path, List[str]], waited: Optional[Tuple[int, object]] = None,
           end: Optional[float] = None) -> Run:
    """Wait for a started process (or take ``waited``: its status and usage, and ``end``, when it ended)."""
    proc, start_time, log, cmd = started
    status, usage = waited if waited is not None else os.wait4(proc.pid, 0)[1:]
    wall = (end or time.time()) - start_time
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("failed (%d): %s\n%s" % (os.waitstatus_to_exitcode(status), " ".join(cmd), text[-3000:]))
    return Run(wall, usage.ru_maxrss / 1024.0, text)


def finish_all(started: List[Tuple[subprocess.Popen, float, Path, List[str]]]) -> List[Run]:
    """Wait for several started processes, each timed to its own end."""
    pending = {s[0].pid: k for k, s in enumerate(started)}
    waited: Dict[int, Tuple[Tuple[int, object], float]] = {}
    while pending:
        pid, status, usage = os.wait4(-1, 0)
        if pid in pending:
            waited[pending.pop(pid)] = ((status, usage), time.time())
    return [finish(s, *waited[k]) for k, s in enumerate(started)]


class Tools:
    """How to run each tool."""

    def __init__(self, args: argparse.Namespace, threads: str) -> None:
        self.args = args
        self.peer = Path(args.peer)
        self.ours = Path(args.ours)
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
        self.env = {"original": dict(base, OMP_NUM_THREADS=threads,
                                     PYTHONPATH=str(self.peer / "sockeye-1.18.115")),
                    "ours": dict(base, OMP_NUM_THREADS=threads, PYTHONPATH=str(self.ours))}
        self.python = {"original": str(self.peer / "venv" / "bin" / "python"), "ours": sys.executable}
        self.cwd = {"original": str(self.peer), "ours": str(self.ours)}

    def command(self, tool: str, cli: str, rest: List[str]) -> List[str]:
        if tool == "original":
            if cli == "extract_features":
                return [self.python[tool], "-m", "sockeye.image_captioning.extract_features"] + rest
            return [self.python[tool], str(self.peer / "sk.py"), cli] + rest
        return [self.python[tool], "-m", "captioning.%s" % cli] + rest

    def run(self, tool: str, cli: str, rest: List[str], log: Path) -> Run:
        return run(self.command(tool, cli, rest), self.env[tool], self.cwd[tool], log)

    def start(self, tool: str, cli: str, rest: List[str], log: Path):
        return start(self.command(tool, cli, rest), self.env[tool], self.cwd[tool], log)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(measure: Callable[[str, int], Dict[str, float]]) -> Dict[str, List[Dict[str, float]]]:
    """``measure(tool, k)`` in the order original, ours, ours, original; results by tool."""
    results: Dict[str, List[Dict[str, float]]] = {"original": [], "ours": []}
    for k, tool in enumerate(ORDER):
        results[tool].append(measure(tool, k))
    return results


def line(figure: str, results: Dict[str, List[Dict[str, float]]], key: str, unit: str, higher_is_better: bool,
         extra: Callable[[str], str] = lambda tool: "", out: Optional[List[Dict]] = None) -> None:
    values = {tool: [r[key] for r in rs] for tool, rs in results.items()}
    med = {tool: median(v) for tool, v in values.items()}
    if med["original"] and med["ours"]:
        ratio = med["ours"] / med["original"] if higher_is_better else med["original"] / med["ours"]
    else:
        ratio = float("nan")
    text = "  ".join("%s %s %s (%s)%s" % (tool, "%.1f" % med[tool], unit, " / ".join("%.1f" % v for v in values[tool]),
                                          extra(tool)) for tool in ("original", "ours"))
    print("%-58s %s  ratio %.2fx" % (figure, text, ratio), flush=True)
    if out is not None:
        out.append({"figure": figure, "unit": unit, "original": values["original"], "ours": values["ours"],
                    "ratio": ratio})


def words_per_caption(path: Path, limit: Optional[int]) -> Tuple[float, int]:
    lines = path.read_text().splitlines()
    lengths = [len(l.split()) for l in lines]
    at_limit = sum(1 for n in lengths if limit is not None and n >= limit - 1)
    return (sum(lengths) / max(1, len(lengths))), at_limit


def train_part(tools: Tools, paths: Dict[str, Path], work: Path, updates: int, rows: List[Dict],
               simultaneous: bool = False, rounds: int = 2) -> None:
    def command(tool: str, k: int) -> Tuple[List[str], Path, "re.Pattern[str]"]:
        out = work / ("train-%s-%d" % (tool, k))
        common = ["--source-root", str(paths["feats"]), "--source", str(paths["train_list"]), "--target",
                  str(paths["train_captions"]), "--validation-source", str(paths["dev_list"]),
                  "--validation-target", str(paths["dev_captions"]), "--output", str(out),
                  "--max-updates", str(updates), "--checkpoint-interval", str(updates), "--decode-and-evaluate", "0"]
        if tool == "original":
            rest = common + ["--validation-source-root", str(paths["feats"])] + TUTORIAL_PEER
            pattern = PEER_TRAIN_SPEED
        else:
            rest = common + ["--load-all-features-to-memory"] + TUTORIAL
            pattern = OURS_TRAIN_SPEED
        return rest, out, pattern

    def measure(tool: str, k: int, started: Optional[Run] = None) -> Dict[str, float]:
        rest, out, pattern = command(tool, k)
        if started is None:
            shutil.rmtree(out, ignore_errors=True)
            result = tools.run(tool, "train", rest, work / ("train-%s-%d.log" % (tool, k)))
        else:
            result = started
        speeds = [float(v) for v in pattern.findall(result.output)]
        metrics = (out / "metrics").read_text().splitlines()
        ppl = float(re.search(r"perplexity-val=([\d.]+)", metrics[-1]).group(1))
        shutil.rmtree(out, ignore_errors=True)
        return {"speed": median(speeds), "rss": result.rss / 1024.0, "ppl": ppl, "wall": result.wall}

    if simultaneous:
        # both tools at once (the same load for both over the same minutes), ``rounds`` times
        results: Dict[str, List[Dict[str, float]]] = {"original": [], "ours": []}
        for k in range(rounds):
            runs = {}
            for tool in ("original", "ours"):
                rest, out, _ = command(tool, k)
                shutil.rmtree(out, ignore_errors=True)
                runs[tool] = tools.start(tool, "train", rest, work / ("train-%s-%d.log" % (tool, k)))
            finished = finish_all(list(runs.values()))
            for tool, done in zip(runs, finished):
                results[tool].append(measure(tool, k, done))
    else:
        results = alternate(measure)
    line("training samples/s (median of logged, %d updates)" % updates, results, "speed", "", True, out=rows)
    line("training peak RSS (%d updates, no decoding)" % updates, results, "rss", "GB", False, out=rows)
    line("validation perplexity after %d updates" % updates, results, "ppl", "", False, out=rows)
    line("training process wall (%d updates, start-up included)" % updates, results, "wall", "s", False, out=rows)


def caption_part(tools: Tools, paths: Dict[str, Path], work: Path, args: argparse.Namespace,
                 rows: List[Dict]) -> None:
    words: Dict[Tuple[str, int, Optional[int]], List[Tuple[float, int]]] = {}
    listing = paths["dev_list"]
    if args.caption_images:
        listing = work / ("dev-first-%d.features" % args.caption_images)
        names = paths["dev_list"].read_text().splitlines()[:args.caption_images]
        listing.write_text("".join(n + "\n" for n in names))

    def measure_config(batch: int, max_len: Optional[int], tools_to_run: Sequence[str]):
        def measure(tool: str, k: int) -> Dict[str, float]:
            if tool not in tools_to_run:
                return {"speed": float("nan"), "rss": float("nan")}
            output = work / ("captions-%s-%d-%s-%d" % (tool, batch, max_len, k))
            rest = ["--input", str(listing), "--source-root", str(paths["feats"]), "--beam-size",
                    str(args.beam_size), "--batch-size", str(batch), "--use-cpu", "--output", str(output)]
            if max_len is not None:
                rest += ["--max-output-length", str(max_len)]
            if tool == "original":
                rest += ["--models", str(args.peer_model)]
                rest += ["--checkpoints", str(args.peer_checkpoint)] if args.peer_checkpoint is not None else []
                pattern = PEER_CAPTION_SPEED
            else:
                rest += ["--models", str(args.ours_model)]
                rest += ["--checkpoints", str(args.ours_checkpoint)] if args.ours_checkpoint is not None else []
                pattern = OURS_CAPTION_SPEED
            result = tools.run(tool, "captioner", rest, work / ("caption-%s-%d-%s-%d.log" % (tool, batch, max_len, k)))
            match = pattern.search(result.output)
            if match is None:
                raise SystemExit("%s captioner: no speed line in its log:\n%s" % (tool, result.output[-2000:]))
            words.setdefault((tool, batch, max_len), []).append(words_per_caption(output, max_len))
            return {"speed": float(match.group(1)), "rss": result.rss / 1024.0}
        return alternate(measure)

    def describe(batch: int, max_len: Optional[int]) -> Callable[[str], str]:
        def extra(tool: str) -> str:
            found = words.get((tool, batch, max_len))
            if not found:
                return ""
            return ", %.1f words/caption, %d at the limit" % (found[0][0], found[0][1])
        return extra

    for batch in args.batch_sizes:
        results = measure_config(batch, 30, ("original", "ours"))
        line("captioning captions/s, beam %d, batch %d, max length 30" % (args.beam_size, batch), results, "speed",
             "", True, describe(batch, 30), out=rows)
        line("captioning peak RSS, batch %d" % batch, results, "rss", "GB", False, out=rows)
        if args.ours_default_length:
            results = measure_config(batch, None, ("ours",))
            ours = [r["speed"] for r in results["ours"]]
            found = words.get(("ours", batch, None), [(float("nan"), 0)])
            print("%-58s ours %.1f (%s), %.1f words/caption (the original at max length 30: see above)"
                  % ("captioning captions/s, batch %d, ours at its default length" % batch, median(ours),
                     " / ".join("%.1f" % v for v in ours), found[0][0]), flush=True)
            rows.append({"figure": "captioning, batch %d, ours at its default max length" % batch, "ours": ours})


PEER_CAPTION_TIME = re.compile(r"Processed (\d+) lines\. Total time: ([\d.]+)")


def processes_part(tools: Tools, paths: Dict[str, Path], work: Path, args: argparse.Namespace, threads: str,
                   rows: List[Dict]) -> None:
    """Both tools with the threads in ``--processes`` processes: ours as ``captioner --search-processes N``; the
    original (which has no such option) as N processes started together on N interleaved parts of the input, its
    speed the lines of all parts over the longest part's processing time (from its log). Each process gets
    OMP_NUM_THREADS / N threads; max length 30."""
    n = args.processes
    per = str(max(1, int(threads) // n))
    names = paths["dev_list"].read_text().splitlines()[:args.caption_images or None]
    listing = work / ("dev-first-%d.features" % len(names))       # ours: the whole input, in one command
    listing.write_text("".join(name + "\n" for name in names))
    parts = []
    for i in range(n):
        part = work / ("dev-part-%d-of-%d.features" % (i + 1, n))
        part.write_text("".join(name + "\n" for name in names[i::n]))
        parts.append(part)

    def measure(batch: int) -> Callable[[str, int], Dict[str, float]]:
        def one(tool: str, k: int) -> Dict[str, float]:
            common = ["--source-root", str(paths["feats"]), "--beam-size", str(args.beam_size), "--batch-size",
                      str(batch), "--use-cpu", "--max-output-length", "30"]
            if tool == "ours":
                rest = common + ["--models", str(args.ours_model), "--input", str(listing), "--output",
                                 str(work / ("captions-processes-ours-%d-%d" % (batch, k))), "--search-processes",
                                 str(n)]
                rest += ["--checkpoints", str(args.ours_checkpoint)] if args.ours_checkpoint is not None else []
                result = tools.run(tool, "captioner", rest, work / ("caption-processes-ours-%d-%d.log" % (batch, k)))
                match = OURS_CAPTION_SPEED.search(result.output)
                if match is None:
                    raise SystemExit("ours: no speed line in its log:\n%s" % result.output[-2000:])
                return {"speed": float(match.group(1)), "rss": result.rss / 1024.0}
            started = []
            for i, part in enumerate(parts):
                rest = common + ["--models", str(args.peer_model), "--input", str(part), "--output",
                                 str(work / ("captions-processes-original-%d-%d-%d" % (batch, k, i)))]
                rest += ["--checkpoints", str(args.peer_checkpoint)] if args.peer_checkpoint is not None else []
                started.append(start(tools.command(tool, "captioner", rest), dict(tools.env[tool],
                                                                                  OMP_NUM_THREADS=per),
                                     tools.cwd[tool], work / ("caption-processes-original-%d-%d-%d.log"
                                                              % (batch, k, i))))
            results = finish_all(started)
            times = []
            for result in results:
                match = PEER_CAPTION_TIME.search(result.output)
                if match is None:
                    raise SystemExit("original: no time line in its log:\n%s" % result.output[-2000:])
                times.append(float(match.group(2)))
            return {"speed": len(names) / max(times), "rss": max(r.rss for r in results) / 1024.0}
        return one

    for batch in args.batch_sizes:
        results = alternate(measure(batch))
        line("captioning captions/s, %d processes x %s thread(s), batch %d, max length 30" % (n, per, batch),
             results, "speed", "", True, out=rows)
        line("  peak RSS of one process, batch %d" % batch, results, "rss", "GB", False, out=rows)


def extract_part(tools: Tools, paths: Dict[str, Path], work: Path, args: argparse.Namespace,
                 rows: List[Dict]) -> None:
    images = paths["data"] / ("%s.images" % args.extract_split)
    count = len([l for l in images.read_text().splitlines() if l.strip()])

    def measure(tool: str, k: int) -> Dict[str, float]:
        out = work / ("extract-%s-%d" % (tool, k))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rest = ["--image-root", str(paths["data"]), "--input", str(images), "--output-root", str(out), "--output",
                str(out / "list"), "--image-encoder-model-path", str(paths["cnn"]), "--image-encoder-layer",
                "head_conv", "--source-image-size", "3", "224", "224", "--batch-size", "32", "--use-cpu"]
        result = tools.run(tool, "extract_features", rest, work / ("extract-%s-%d.log" % (tool, k)))
        shutil.rmtree(out, ignore_errors=True)
        return {"wall": result.wall, "rss": result.rss / 1024.0}

    results = alternate(measure)
    line("extraction wall, %d %s photos, batch 32 (CNN loading incl.)" % (count, args.extract_split), results,
         "wall", "s", False, out=rows)
    line("extraction peak RSS (main process)", results, "rss", "GB", False, out=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default="/tmp/sockeye-peer", help="the folder ../shared/peer/setup.sh made")
    parser.add_argument("--ours", default=str(REPO), help="tree whose captioning package is run")
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    parser.add_argument("--bench", default="/work/bench",
                        help="features-head_conv/ and lists/ (benchmarks/train.py makes them)")
    parser.add_argument("--work-dir", default="/tmp/peer-bench")
    parser.add_argument("--threads", nargs="+", default=["1", "2"], help="OMP_NUM_THREADS values, both tools")
    parser.add_argument("--parts", nargs="+", choices=["train", "caption", "processes", "extract"],
                        default=["train", "caption", "extract"])
    parser.add_argument("--train-updates", type=int, default=100)
    parser.add_argument("--simultaneous", action="store_true",
                        help="train both tools at the same time (twice) instead of one after the other: on a "
                             "machine whose load moves a lot, both then see the same load")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --simultaneous training")
    parser.add_argument("--peer-model", default="/work/bench/peer-model")
    parser.add_argument("--peer-checkpoint", type=int, default=None, help="default: its params.best")
    parser.add_argument("--ours-model", default="/work/bench/quality")
    parser.add_argument("--ours-checkpoint", type=int, default=None, help="default: its params.best")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--caption-images", type=int, default=None,
                        help="caption only the first N dev images (default: all 113)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--no-ours-default-length", dest="ours_default_length", action="store_false",
                        help="skip ours at its default --max-output-length")
    parser.add_argument("--extract-split", choices=["train", "dev"], default="train")
    parser.add_argument("--processes", type=int, default=2,
                        help="the processes part: ours with --search-processes N, the original as N processes")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    peer = Path(args.peer)
    if not (peer / "sk.py").is_file() or not (peer / "venv" / "bin" / "python").exists():
        print("skipped: no original Sockeye at %s (run ../shared/peer/setup.sh %s)" % (peer, peer))
        return
    shared = Path(args.shared)
    data = shared / "data" / "flickr8k-sample"
    cnn = shared / "models" / "efficientnet-lite0" / "efficientnet-lite0"
    if not data.is_dir() or not Path(str(cnn) + "-symbol.json").exists():
        print("skipped: no %s or %s (../shared)" % (data, cnn))
        return
    bench = Path(args.bench)
    paths = {"data": data, "cnn": cnn, "feats": bench / "features-head_conv",
             "train_list": bench / "lists" / "train.features", "train_captions": bench / "lists" / "train.captions",
             "dev_list": bench / "features-head_conv" / "dev.features", "dev_captions": data / "dev.captions.0"}
    needs = ["feats", "train_list", "train_captions", "dev_list"]
    if any(not paths[k].exists() for k in needs):
        print("skipped: no FLICKR-A features in %s (benchmarks/train.py --cache-dir %s extracts them)"
              % (bench, bench))
        return
    if "caption" in args.parts or "processes" in args.parts:
        for model in (args.peer_model, args.ours_model):
            if not (Path(model) / "params.best").exists() and not list(Path(model).glob("params.0*")):
                print("skipped captioning: no trained model in %s (see docs/benchmarks.md)" % model)
                args.parts = [p for p in args.parts if p not in ("caption", "processes")]
                break
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []
    print("CPU: %s, %d cores; original: %s; ours: %s; %s" % (cpu_model(), os.cpu_count() or 0, peer, args.ours,
                                                              load()), flush=True)
    for threads in args.threads:
        tools = Tools(args, threads)
        print("== OMP_NUM_THREADS=%s (both tools); %s" % (threads, load()), flush=True)
        logs = work / ("threads-%s" % threads)      # every run's log and outputs stay for inspection
        logs.mkdir(exist_ok=True)
        if "extract" in args.parts:
            extract_part(tools, paths, logs, args, rows)
        if "train" in args.parts:
            train_part(tools, paths, logs, args.train_updates, rows, args.simultaneous, args.rounds)
        if "caption" in args.parts:
            caption_part(tools, paths, logs, args, rows)
        if "processes" in args.parts:
            processes_part(tools, paths, logs, args, threads, rows)
        for row in rows:
            row.setdefault("threads", threads)
        print("== end of OMP_NUM_THREADS=%s; %s" % (threads, load()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
