"""The one way every benchmark runs and records: fresh processes in alternating order, the machine, one JSON record.

A benchmark opens a `Session`, runs each side of a comparison (``baseline`` and ``ours``) through `Session.run` in
the order `order` gives (baseline, ours, ours, baseline, ...), turns the measured values into figures with
`Session.figure`, and ends with `Session.finish`, which writes ``benchmarks/results/<benchmark>-<UTC time>.json``.

A record is valid only when the machine was idle: the 1-minute load average before the first run and after the last
one (read after ``settle_s`` seconds, so that the benchmark's own load has decayed) is at most half the cores. An
invalid record is written with ``"valid": false`` and its reason, and is never shown as a result
(``python -m benchmarks.page``).
"""
import argparse
import datetime
import json
import logging
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("benchmarks")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"      # committed records
OUTPUT = HERE / "output"        # scratch space (ignored by git)
SIDES = ("baseline", "ours")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
PACKAGES = ("mxnet", "numpy", "onnxruntime", "onnx", "Pillow", "captioning")
ENV_PREFIXES = ("OMP_", "MALLOC_", "MXNET_", "KMP_", "OPENBLAS_", "MKL_", "LD_PRELOAD", "PYTHONPATH")

# the figures each tool reports in its own log (the original Sockeye 1.18.115 and this project)
PEER_TRAIN_SPEED = re.compile(r"Speed: ([\d.]+) samples/sec")
OURS_TRAIN_SPEED = re.compile(r"([\d.]+) samples/s \(captions\)")
PEER_CAPTION_SPEED = re.compile(r"Processed \d+ lines.*sent/sec: ([\d.]+)")
OURS_CAPTION_SPEED = re.compile(r"Processed \d+ lines \(\d+ failed\) in [\d.]+s: ([\d.]+) captions/s")
PEER_CAPTION_TIME = re.compile(r"Processed (\d+) lines\. Total time: ([\d.]+)")

LoadReader = Callable[[], Tuple[float, float, float]]


class BenchmarkError(Exception):
    """A benchmark cannot go on (a command failed, a figure is missing from a log)."""


@dataclass
class Run:
    """One finished process: times in seconds, memory in MB, its combined stdout and stderr."""
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float              # the process' own high-water mark (sampled VmHWM)
    peak_tree_rss_mb: Optional[float]  # sampled sum over the process and its descendants (``sample_tree``)
    returncode: int
    output: str


@dataclass
class Job:
    """A command to run: argument list, full environment, working directory, log file."""
    argv: List[str]
    env: Dict[str, str]
    cwd: str
    log: Path


# ---------------------------------------------------------------------------------------------------------- processes
def _children() -> Dict[int, List[int]]:
    tree: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, from /proc (0 for a process that is gone)."""
    tree, total, todo = _children(), 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/statm" % p) as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            pass
        todo.extend(tree.get(p, []))
    return total / 2 ** 20


def high_water_mb(pid: int) -> Optional[float]:
    """The peak resident memory of ``pid`` since it started its program (``VmHWM``), or None once it has exited."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run_together(jobs: Sequence[Job], sample_tree: bool = False, interval_s: float = 0.02,
                 tree_interval_s: float = 0.2, check: bool = True) -> List[Run]:
    """Start ``jobs`` at once, each a fresh process, and wait for all; each is timed to its own end.

    Peak memory is the process' own high-water mark, read every ``interval_s`` (``ru_maxrss`` would count the
    memory of this process, which the child's program image replaces: Linux keeps the larger of the two). With
    ``sample_tree`` the summed RSS of each process and all its descendants is sampled every ``tree_interval_s`` (a
    scan of /proc: sampled less often, so that measuring costs the measured processes little CPU)."""
    procs, begun, done = [], [], {}

    def wait(k: int, pid: int) -> None:
        _, status, usage = os.wait4(pid, 0)
        done[k] = (status, usage, time.monotonic())
    threads = []
    for k, job in enumerate(jobs):
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "w") as out:
            begun.append(time.monotonic())
            procs.append(subprocess.Popen(job.argv, cwd=job.cwd, env=job.env, stdout=out, stderr=subprocess.STDOUT))
        threads.append(threading.Thread(target=wait, args=(k, procs[-1].pid), daemon=True))
        threads[-1].start()
    peaks: Dict[int, float] = {}
    trees: Dict[int, float] = {}
    next_tree = 0.0
    while any(t.is_alive() for t in threads):
        scan_tree = sample_tree and time.monotonic() >= next_tree
        if scan_tree:
            next_tree = time.monotonic() + tree_interval_s
        for k, proc in enumerate(procs):
            if k in done:
                continue
            peak = high_water_mb(proc.pid)
            if peak is not None:
                peaks[k] = max(peaks.get(k, 0.0), peak)
            if scan_tree:
                trees[k] = max(trees.get(k, 0.0), tree_rss_mb(proc.pid))
        time.sleep(interval_s)
    for thread in threads:
        thread.join()
    for k, proc in enumerate(procs):
        proc.returncode = os.waitstatus_to_exitcode(done[k][0])     # reaped by wait4 above
    runs = []
    for k, job in enumerate(jobs):
        status, usage, end = done[k]
        code = os.waitstatus_to_exitcode(status)
        text = job.log.read_text(errors="replace")
        if code != 0 and check:
            raise BenchmarkError("command failed (exit %d): %s\n%s" % (code, shlex.join(job.argv), text[-3000:]))
        runs.append(Run(wall_s=end - begun[k], user_s=usage.ru_utime, sys_s=usage.ru_stime,
                        peak_rss_mb=peaks.get(k, usage.ru_maxrss / 1024.0),
                        peak_tree_rss_mb=trees.get(k) if sample_tree else None, returncode=code, output=text))
    return runs


def run_process(job: Job, sample_tree: bool = False, check: bool = True) -> Run:
    """Run one command as a fresh process: wall time, CPU time and peak RSS from ``os.wait4``, output from its log."""
    return run_together([job], sample_tree=sample_tree, check=check)[0]


# ------------------------------------------------------------------------------------------------------------- figures
def order(rounds: int, sides: Sequence[str] = SIDES) -> List[Tuple[str, int]]:
    """(side, round) in the order baseline, ours, ours, baseline, baseline, ours, ...: drift of the machine cancels.
    With one side, that side ``rounds`` times."""
    sequence: List[Tuple[str, int]] = []
    for k in range(rounds):
        pair = list(sides) if k % 2 == 0 else list(reversed(sides))
        sequence += [(side, k) for side in pair]
    return sequence


def median(values: Sequence[float]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(ours: Optional[float], baseline: Optional[float], higher_is_better: bool) -> Optional[float]:
    """> 1 means ours is better: ours / baseline for a speed, baseline / ours for a time or memory."""
    if not ours or not baseline:
        return None
    return ours / baseline if higher_is_better else baseline / ours


def figures_in(pattern: "re.Pattern[str]", text: str) -> List[float]:
    """Every number the pattern's first group matches in a log."""
    return [float(v) for v in pattern.findall(text)]


def validation_perplexities(model_dir: Path) -> List[float]:
    """Every checkpoint's ``perplexity-val`` in a model folder's ``metrics`` file (both tools write it)."""
    path = Path(model_dir) / "metrics"
    values = [float(m.group(1)) for m in (re.search(r"perplexity-val=([\d.eE+-]+)", line)
                                          for line in path.read_text().splitlines()) if m]
    if not values:
        raise BenchmarkError("%s: no perplexity-val in it" % path)
    return values


def validation_perplexity(model_dir: Path) -> float:
    """The last checkpoint's validation perplexity."""
    return validation_perplexities(model_dir)[-1]


# ------------------------------------------------------------------------------------------------------------- machine
def machine(cpuinfo: str = "/proc/cpuinfo", meminfo: str = "/proc/meminfo") -> Dict[str, object]:
    """CPU model, the CPU flags that matter for MXNet's kernels, cores and total memory."""
    model, flags = None, set()
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return {"cpu": model or platform.processor() or "unknown", "flags": [f for f in CPU_FLAGS if f in flags], "cores": os.cpu_count() or 0,
            "memory_gb": memory_gb, "python": platform.python_version()}


def git_state(tree: Path) -> Dict[str, object]:
    """The commit checked out in ``tree`` and whether tracked files differ from it (None where it is no git tree)."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=str(tree), capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"tree": str(tree), "commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(python: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Versions of the packages that decide speed, in this interpreter or in ``python`` (another environment)."""
    code = ("import importlib.metadata as m, json\nv = {}\nfor p in %r:\n    try: v[p] = m.version(p)\n"
            "    except Exception: v[p] = None\nprint(json.dumps(v))" % (PACKAGES,))
    try:
        done = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def relevant_env(env: Dict[str, str]) -> Dict[str, str]:
    """The environment variables that change what a run measures (threads, allocator, MXNet settings)."""
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES)}


def load_problem(load: Sequence[float], cores: int, when: str) -> Optional[str]:
    """Why a 1-minute load average makes figures meaningless (above half the cores), or None."""
    limit = cores / 2.0
    if load[0] > limit:
        return "1-minute load average %.2f %s the runs is above %.1f (%d cores)" % (load[0], when, limit, cores)
    return None


def add_record_args(parser: "argparse.ArgumentParser") -> None:
    """The flags every recording benchmark takes: ``--settle`` and ``--results-dir``."""
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait after the last run before reading the load average again")
    parser.add_argument("--results-dir", default=str(RESULTS))


def parse_recorded_args(parser: "argparse.ArgumentParser", argv: Optional[Sequence[str]]) -> "argparse.Namespace":
    """``parser``'s arguments, with ``argv``: the command line as given (the record's command to reproduce)."""
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


# ------------------------------------------------------------------------------------------------------------- session
@dataclass
class Session:
    """One record in the making: the sides' commands, every run, the figures, the machine before and after."""
    benchmark: str
    reproduce: str
    description: str = ""
    baseline: Optional[str] = None          # what the baseline is, in words (None: ours only)
    ours: str = "captioning"
    threads: Optional[str] = None
    ours_tree: Path = REPO
    rounds: int = 2
    settle_s: float = 60.0
    results_dir: Path = RESULTS
    load_reader: LoadReader = os.getloadavg
    sleep: Callable[[float], None] = time.sleep
    baseline_python: Optional[str] = None
    # False: no figure depends on time (caption scores, identical outputs): a busy machine is noted, not disqualifying
    timed: bool = True
    figures: List[Dict[str, object]] = field(default_factory=list)
    runs: List[Dict[str, object]] = field(default_factory=list)
    commands: Dict[str, List[str]] = field(default_factory=dict)
    environment: Dict[str, Dict[str, str]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = utc_now()
        self.machine = machine()
        self.load_before = tuple(round(v, 2) for v in self.load_reader())
        problem = load_problem(self.load_before, self.machine["cores"], "before")
        if problem and self.timed:
            warn(self.benchmark, problem)

    @property
    def sides(self) -> Tuple[str, ...]:
        return SIDES if self.baseline is not None else ("ours",)

    def order(self) -> List[Tuple[str, int]]:
        return order(self.rounds, self.sides)

    def _note_command(self, side: str, job: Job) -> None:
        line = shlex.join(job.argv)
        listed = self.commands.setdefault(side, [])
        if line not in listed:
            listed.append(line)
        self.environment.setdefault(side, relevant_env(job.env))

    def _note_run(self, side: str, k: int, run: Run, what: str) -> None:
        self.runs.append({"side": side, "round": k, "what": what, "wall_s": round(run.wall_s, 3),
                          "user_s": round(run.user_s, 3), "sys_s": round(run.sys_s, 3),
                          "peak_rss_mb": round(run.peak_rss_mb, 1),
                          "peak_tree_rss_mb": None if run.peak_tree_rss_mb is None else round(run.peak_tree_rss_mb,
                                                                                                1)})

    def run(self, side: str, k: int, job: Job, what: str = "", sample_tree: bool = False) -> Run:
        """Run one side's command (round ``k``) and note its command line, environment and usage in the record."""
        self._note_command(side, job)
        logger.info("%s round %d: %s", side, k, shlex.join(job.argv))
        result = run_process(job, sample_tree=sample_tree)
        self._note_run(side, k, result, what)
        return result

    def run_together(self, side: str, k: int, jobs: Sequence[Job], what: str = "",
                     sample_tree: bool = False) -> List[Run]:
        for job in jobs:
            self._note_command(side, job)
        results = run_together(jobs, sample_tree=sample_tree)
        for result in results:
            self._note_run(side, k, result, what)
        return results

    def alternate(self, measure: Callable[[str, int], Dict[str, float]]) -> Dict[str, List[Dict[str, float]]]:
        """``measure(side, round)`` in `order`; the values by side."""
        results: Dict[str, List[Dict[str, float]]] = {side: [] for side in self.sides}
        for side, k in self.order():
            results[side].append(measure(side, k))
        return results

    def figure(self, name: str, unit: str, higher_is_better: bool, ours: Sequence[Optional[float]],
               baseline: Sequence[Optional[float]] = (), note: str = "") -> Dict[str, object]:
        """A figure from every run's value of each side: medians and the ratio (> 1: ours better)."""
        ours_median, baseline_median = median(ours), median(baseline)
        row = {"figure": name, "unit": unit, "higher_is_better": higher_is_better, "ours": list(ours),
               "baseline": list(baseline), "ours_median": ours_median, "baseline_median": baseline_median,
               "ratio": ratio(ours_median, baseline_median, higher_is_better), "note": note}
        self.figures.append(row)
        logger.info("%s: ours %s, baseline %s, ratio %s", name, format_value(ours_median),
                    format_value(baseline_median), format_value(row["ratio"], 2))
        return row

    def figure_from(self, name: str, unit: str, higher_is_better: bool, results: Dict[str, List[Dict[str, float]]],
                    key: str, note: str = "") -> Dict[str, object]:
        """`figure` from `alternate`'s results: every run's ``key``."""
        return self.figure(name, unit, higher_is_better, [r.get(key) for r in results.get("ours", [])],
                           [r.get(key) for r in results.get("baseline", [])], note)

    def record(self, load_after: Sequence[float]) -> Dict[str, object]:
        cores = int(self.machine["cores"])
        problems = [p for p in (load_problem(self.load_before, cores, "before"),
                                load_problem(load_after, cores, "after")) if p]
        versions = {"ours": package_versions()}
        if self.baseline is not None and self.baseline_python:
            versions["baseline"] = package_versions(self.baseline_python)
        if problems and not self.timed:
            self.notes.append("no figure here depends on time; the machine was busy (%s)" % "; ".join(problems))
            problems = []
        return {
            "benchmark": self.benchmark, "description": self.description, "date": self.started.isoformat(),
            "valid": not problems, "invalid_reason": "; ".join(problems) or None, "timed": self.timed,
            "machine": dict(self.machine, load_before=list(self.load_before), load_after=list(load_after),
                            settle_s=self.settle_s),
            "threads": self.threads, "ours": self.ours, "baseline": self.baseline,
            "git": git_state(self.ours_tree), "packages": versions, "order": [s for s, _ in self.order()],
            "commands": self.commands, "environment": self.environment, "reproduce": self.reproduce,
            "figures": self.figures, "runs": self.runs, "notes": self.notes,
        }

    def finish(self) -> Path:
        """Wait ``settle_s``, read the load again, and write the record; warns loudly when it is invalid."""
        if self.settle_s > 0:
            logger.info("waiting %.0f s for the load average to settle", self.settle_s)
            self.sleep(self.settle_s)
        load_after = tuple(round(v, 2) for v in self.load_reader())
        record = self.record(load_after)
        path = write_record(record, self.results_dir, self.started)
        if not record["valid"]:
            warn(self.benchmark, "%s: the record %s is marked INVALID and will not be shown as a result"
                 % (record["invalid_reason"], path.name))
        else:
            logger.info("wrote %s", path)
        return path


def warn(benchmark: str, text: str) -> None:
    banner = "!" * 100
    logger.warning("\n%s\n%s: %s\n%s", banner, benchmark, text, banner)


def format_value(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else ("%.*f" % (digits, value))


def record_name(benchmark: str, when: datetime.datetime) -> str:
    return "%s-%s.json" % (benchmark, when.strftime("%Y%m%dT%H%M%SZ"))


def write_record(record: Dict[str, object], folder: Path, when: datetime.datetime) -> Path:
    """Write a record as ``<benchmark>-<UTC time>.json`` through a temporary name (never over another record)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / record_name(str(record["benchmark"]), when)
    if path.exists():
        raise BenchmarkError("%s exists: one record per benchmark and second" % path)
    fd, tmp = tempfile.mkstemp(dir=str(folder), prefix=".record.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_records(folder: Path = RESULTS) -> List[Dict[str, object]]:
    """Every record in ``folder`` with its file name under ``"file"``; a record that is not valid JSON is an error
    naming the file."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise BenchmarkError("%s: not a JSON record (%s)" % (path, e)) from None
        if not isinstance(record, dict) or "benchmark" not in record:
            raise BenchmarkError("%s: no \"benchmark\" in the record" % path)
        record["file"] = path.name
        records.append(record)
    return records


def ours_environment(tree: Path, threads: Optional[str]) -> Dict[str, str]:
    """This process' environment for running ``tree``'s ``captioning`` package with ``threads`` OpenMP threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(tree)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def reproduce_command(module: str, argv: Sequence[str]) -> str:
    """The command line that repeats this benchmark, from the repository root."""
    return shlex.join(["python", "-m", module, *argv])


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
