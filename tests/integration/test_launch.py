"""captioning.launch: a real ps-lite job on this machine (scheduler, server, two workers), failures and Ctrl-C tearing
the whole job down, and the ssh launcher's command lines (built, not run: no sshd here)."""
import argparse
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

from captioning import arguments, launch
from captioning.utils import CaptioningError

REPO = Path(__file__).resolve().parents[2]

# A worker: checks its rank, sums a tensor over the workers through the kvstore, and (depending on MODE) fails or
# hangs. It starts a grandchild (`sleep`) to check that a teardown reaches a worker's children too, and writes its
# own pid and the grandchild's into PID_DIR.
WORKER = r'''
import os, subprocess, sys, time
from captioning import launch   # first, as every program of the package: it sets the OpenMP threads
import mxnet as mx
mode, pid_dir = sys.argv[1], sys.argv[2]
child = subprocess.Popen(["sleep", "300"])
kv = mx.kv.create("dist_sync")
with open(os.path.join(pid_dir, "worker%d" % kv.rank), "w") as f:
    f.write("%d %d" % (os.getpid(), child.pid))
assert kv.num_workers == 2, kv.num_workers
assert 0 <= kv.rank < 2, kv.rank
print("rank %d of %d" % (kv.rank, kv.num_workers), flush=True)
print("to stderr from rank %d" % kv.rank, file=sys.stderr, flush=True)
kv.init(7, mx.nd.zeros((2, 3)))
if mode == "fail" and kv.rank == 1:
    launch.skip_exit_barrier(kv)   # without it, the exit would wait for rank 0 forever
    sys.exit(3)
if mode == "kill" and kv.rank == 1:
    os.kill(os.getpid(), 9)
if mode == "hang":
    print("ready", flush=True)
    time.sleep(300)
kv.push(7, mx.nd.ones((2, 3)) * (kv.rank + 1))
out = mx.nd.zeros((2, 3))
kv.pull(7, out=out)
total = out.asnumpy()
assert (total == 3).all(), total    # 1 + 2: rank 0 pushed ones, rank 1 twos
print("sum ok %s" % total[0, 0], flush=True)
child.kill()
'''


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Launcher:
    """``python -m captioning.launch -n 2 -s 1 -- python worker.py MODE PID_DIR``, output collected line by line."""

    def __init__(self, tmp_path: Path, mode: str) -> None:
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        self.pid_dir = tmp_path / "pids"
        self.pid_dir.mkdir()
        self.stderr_path = tmp_path / "launcher.stderr"
        command = [sys.executable, "-m", "captioning.launch", "-n", "2", "-s", "1", "--launcher", "local",
                   "--", sys.executable, str(script), mode, str(self.pid_dir)]
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=err)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.stdout: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.decode().rstrip("\n"))

    def wait_for_lines(self, pattern: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        found = 0
        while found < count:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("waited %.0f s for %d lines like %r; got %s\n%s" % (
                    timeout, count, pattern, self.stdout, self.stderr())) from None
            self.stdout.append(line)
            found += bool(re.search(pattern, line))

    def finish(self, timeout: float) -> int:
        start = time.monotonic()
        code = self.process.wait(timeout=timeout)
        self.seconds = time.monotonic() - start
        time.sleep(0.2)
        while not self.lines.empty():
            self.stdout.append(self.lines.get())
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def job_pids(self) -> List[int]:
        """Every process of the job: those the launcher started (from its log), the workers' children."""
        pids = [int(p) for p in re.findall(r"started \w+(?: \d+)? \(pid (\d+)", self.stderr())]
        for path in self.pid_dir.iterdir():
            pids.extend(int(p) for p in path.read_text().split())
        return pids


@pytest.fixture
def start_launcher(tmp_path):
    """Start a launcher; whatever happens in the test, nothing of its job outlives it."""
    started: List[Launcher] = []

    def start(mode: str) -> Launcher:
        started.append(Launcher(tmp_path, mode))
        return started[-1]
    yield start
    for launcher in started:
        if launcher.process.poll() is None:
            launcher.process.terminate()   # the launcher tears its job down on SIGTERM
            try:
                launcher.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                launcher.process.kill()
        for pid in launcher.job_pids():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _assert_nothing_left(launcher: Launcher) -> None:
    pids = launcher.job_pids()
    assert len(pids) >= 4, launcher.stderr()   # scheduler, server, 2 workers
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if _alive(p)] == [], "processes of the job left behind"


def test_two_workers_sum_through_dist_sync(start_launcher):
    launcher = start_launcher("ok")
    code = launcher.finish(timeout=60)
    out = launcher.stdout
    assert code == 0, (out, launcher.stderr())
    # every line of a worker comes behind its label; both sums are right
    assert sorted(line for line in out if "sum ok" in line) == ["[worker 0] sum ok 3.0", "[worker 1] sum ok 3.0"]
    assert sorted(re.sub(r"^\[worker \d\] ", "", line) for line in out if "rank" in line) == [
        "rank 0 of 2", "rank 1 of 2"]
    assert all(line.startswith("[worker ") for line in out), out
    err = launcher.stderr()
    assert re.search(r"^\[worker [01]\] to stderr from rank 0$", err, re.M), err
    assert re.search(r"^\[worker [01]\] to stderr from rank 1$", err, re.M), err
    assert "started scheduler" in err and "started server 0" in err
    assert len(list(launcher.pid_dir.iterdir())) == 2
    _assert_nothing_left(launcher)


@pytest.mark.parametrize("mode, status", [("fail", 3), ("kill", 128 + 9)])
def test_a_failing_worker_stops_the_job(start_launcher, mode, status):
    launcher = start_launcher(mode)
    code = launcher.finish(timeout=60)
    assert code == status, launcher.stderr()
    assert launcher.seconds < 30
    assert re.search(r"worker [01] failed with exit status %d: stopping every process" % status, launcher.stderr())
    assert len(list(launcher.pid_dir.iterdir())) == 2   # both workers had really started
    _assert_nothing_left(launcher)


def test_ctrl_c_tears_everything_down(start_launcher):
    launcher = start_launcher("hang")
    launcher.wait_for_lines(r"^\[worker [01]\] ready$", count=2, timeout=60)
    sent = time.monotonic()
    launcher.process.send_signal(signal.SIGINT)
    code = launcher.finish(timeout=30)
    assert code == 130, launcher.stderr()
    assert time.monotonic() - sent < 30
    assert "received SIGINT: stopping every process" in launcher.stderr()
    _assert_nothing_left(launcher)


# --- the CLI's checks and the ssh launcher's command lines (no processes started) ---------------------------------

def _args(argv: List[str]) -> argparse.Namespace:
    parser = arguments.ConfigArgumentParser()
    arguments.add_launch_args(parser)
    return parser.parse_args(argv)


def test_ssh_commands_go_round_robin_over_the_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the cluster\nnode-a\n\nuser@node-b   # second\n")
    config = launch.create_launch_config(_args(
        ["-n", "3", "-s", "2", "--launcher", "ssh", "-H", str(hostfile), "--interface", "eth0",
         "--sync-dir", "/shared/my job", "--", "/opt/venv/bin/python", "-m", "captioning.train", "--kvstore",
         "dist_sync", "--output", "model dir"]))
    assert config.hosts == ["node-a", "user@node-b"]
    specs = launch.plan_processes(config, scheduler_host="10.0.0.5", port=9000, cores=8)
    assert [(s.label, s.host) for s in specs] == [
        ("scheduler", None), ("server 0", "node-a"), ("server 1", "user@node-b"),
        ("worker 0", "node-a"), ("worker 1", "user@node-b"), ("worker 2", "node-a")]
    worker = specs[5]
    assert worker.argv[:4] == ["ssh", "-tt", "-o", "BatchMode=yes"] and worker.argv[4] == "node-a"
    assert len(worker.argv) == 6
    remote = shlex.split(worker.argv[5])
    assert remote[:4] == ["cd", "/shared/my job", "&&", "env"]
    assignments = dict(a.split("=", 1) for a in remote[4:] if re.match(r"^[A-Z_]+=", a))
    assert assignments == {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "10.0.0.5", "DMLC_PS_ROOT_PORT": "9000",
                           "DMLC_NUM_SERVER": "2", "DMLC_NUM_WORKER": "3", "DMLC_INTERFACE": "eth0",
                           "PYTHONUNBUFFERED": "1"}
    assert remote[4 + len(assignments):] == ["/opt/venv/bin/python", "-m", "captioning.train", "--kvstore",
                                             "dist_sync", "--output", "model dir"]
    # a server runs the worker's Python, importing MXNet with DMLC_ROLE=server
    server = shlex.split(specs[2].argv[5])
    assert "DMLC_ROLE=server" in server and server[-3:-1] == ["/opt/venv/bin/python", "-c"]
    assert "import mxnet" in server[-1]
    # the scheduler runs here, on one thread
    assert specs[0].argv[0] == sys.executable and specs[0].env["DMLC_ROLE"] == "scheduler"
    assert specs[0].env["OMP_NUM_THREADS"] == "1"


def test_ssh_launcher_runs_a_job_through_ssh(tmp_path):
    """The whole ssh path with a stand-in `ssh` on PATH that runs the remote command here: quoting, cd, env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_ssh = bin_dir / "ssh"
    fake_ssh.write_text('#!/bin/sh\n# ssh -tt -o BatchMode=yes HOST COMMAND\necho "$4" >> "%s"\nexec /bin/sh -c "$5"\n'
                        % (tmp_path / "hosts.log"))
    fake_ssh.chmod(0o755)
    (tmp_path / "hosts").write_text("node-a\nnode-b\n")
    workdir = tmp_path / "shared dir"
    workdir.mkdir()
    (workdir / "worker.py").write_text(WORKER)
    (workdir / "pids").mkdir()
    env = _env()
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    result = subprocess.run([sys.executable, "-m", "captioning.launch", "-n", "2", "-s", "2", "--launcher", "ssh",
                             "-H", str(tmp_path / "hosts"), "--sync-dir", str(workdir), "--interface", "lo",
                             "--scheduler-host", "127.0.0.1", "--", sys.executable, "worker.py", "ok", "pids"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(line for line in result.stdout.splitlines() if "sum ok" in line) == [
        "[worker 0] sum ok 3.0", "[worker 1] sum ok 3.0"]
    assert sorted((tmp_path / "hosts.log").read_text().split()) == ["node-a", "node-a", "node-b", "node-b"]
    assert "started worker 1 (pid" in result.stderr and ", on node-b)" in result.stderr


def test_local_plan_splits_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")   # what the package sets on an 8-core machine
    config = launch.create_launch_config(_args(["-n", "2", "--", "python", "w.py"]))
    assert config.num_servers == 2   # default: as many as workers
    specs = launch.plan_processes(config, "127.0.0.1", 1234, cores=8)
    assert [s.label for s in specs] == ["scheduler", "server 0", "server 1", "worker 0", "worker 1"]
    assert all(s.host is None and s.env["DMLC_NODE_HOST"] == "127.0.0.1" for s in specs)
    assert [s.env["OMP_NUM_THREADS"] for s in specs] == ["1", "1", "1", "4", "4"]
    assert specs[3].argv == ["python", "w.py"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")   # the user's own choice is kept
    specs = launch.plan_processes(config, "127.0.0.1", 1234, cores=8)
    assert all("OMP_NUM_THREADS" not in s.env for s in specs)


@pytest.mark.parametrize("argv, message", [
    (["-n", "2"], "no command to launch"),
    (["-n", "2", "--"], "no command to launch"),
    (["-n", "2", "--launcher", "ssh", "--", "python"], "--launcher ssh needs --hostfile"),
    (["-n", "2", "-H", "hosts", "--", "python"], "--hostfile is for --launcher ssh"),
    (["-n", "2", "--port", "70000", "--", "python"], "--port must be in 1..65535"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(CaptioningError, match=re.escape(message)):
        launch.create_launch_config(_args(argv))


def test_bad_hostfile_names_the_line(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node-a\nnode-b slots=4\n")
    with pytest.raises(CaptioningError, match=re.escape("%s, line 2: 'node-b slots=4' is not a host name" % hostfile)):
        launch.read_hostfile(str(hostfile))
    hostfile.write_text("# nothing\n\n")
    with pytest.raises(CaptioningError, match="no hosts"):
        launch.read_hostfile(str(hostfile))


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "captioning.launch", "-n", "2", "--launcher", "ssh", "-H",
                             str(tmp_path / "missing"), "--", "python"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no such file" in result.stderr and str(tmp_path / "missing") in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_command_that_does_not_exist(tmp_path):
    result = subprocess.run([sys.executable, "-m", "captioning.launch", "-n", "1", "-s", "1", "--",
                             str(tmp_path / "no-such-program")], cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "worker 0: cannot run '%s' (No such file or directory)" % (tmp_path / "no-such-program") in result.stderr
    assert "Traceback" not in result.stderr
    # the scheduler and server started before it are gone
    pids = [int(p) for p in re.findall(r"started \w+(?: \d+)? \(pid (\d+)", result.stderr)]
    assert len(pids) == 2 and not [p for p in pids if _alive(p)]


def test_exit_status_of_signals():
    assert launch.exit_status(0) == 0 and launch.exit_status(2) == 2 and launch.exit_status(-15) == 143
