"""Start a job on MXNet's parameter-server KVStore (ps-lite): one scheduler, S servers and N workers.

    python -m captioning.launch -n 2 -s 1 -- python -m captioning.train --kvstore dist_sync ...

ps-lite needs no tracker of its own: every process learns its role and where the scheduler listens from the
``DMLC_*`` environment, and a server or scheduler is any Python that imports MXNet with ``DMLC_ROLE=server`` /
``scheduler`` (``mxnet.kvstore.kvstore_server`` runs the server loop at import and exits when the workers are done).
This module is the small launcher MXNet's ``tools/launch.py`` was, rewritten for Python >= 3.9: it starts the
processes (here, or over ssh), forwards their output line by line behind a role prefix (``[worker 0] ...``), exits
with the workers' status, and tears the whole job down (process groups, SIGTERM then SIGKILL) as soon as a worker
or server fails or the launcher itself is interrupted.
"""
import argparse
import contextlib
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from . import arguments, log, utils
from .config import Config
from .utils import CaptioningError, check_condition

if TYPE_CHECKING:  # pragma: no cover - MXNet is imported by the worker that needs it
    import mxnet as mx

logger = logging.getLogger(__name__)

ROLE_SCHEDULER = "scheduler"
ROLE_SERVER = "server"
ROLE_WORKER = "worker"
LAUNCHER_LOCAL = "local"
LAUNCHER_SSH = "ssh"

# What a scheduler or server runs: importing MXNet with DMLC_ROLE=scheduler|server runs that role's loop and exits.
# `captioning` is imported first when it is importable, so a server can unpickle an optimizer class of ours that a
# worker sends it (Gluon's Trainer updates on the kvstore servers with dist_* kvstores).
SERVER_CODE = ("import importlib.util as u; u.find_spec('captioning') and __import__('captioning'); "
               "import mxnet")

POLL_SECONDS = 0.05


@dataclass
class LaunchConfig(Config):
    """What to start and where."""
    command: List[str]                       # what every worker runs
    num_workers: int
    num_servers: int
    launcher: str = LAUNCHER_LOCAL           # local | ssh
    hosts: List[str] = field(default_factory=list)   # ssh: workers and servers go round-robin over these
    port: int = 0                            # scheduler port; 0: a free one
    interface: Optional[str] = None          # DMLC_INTERFACE
    scheduler_host: Optional[str] = None     # default: 127.0.0.1 locally, this host's address with ssh
    workdir: Optional[str] = None            # ssh: folder every remote command runs in (default: this one)
    grace_seconds: float = 5.0               # SIGTERM -> SIGKILL delay on teardown
    finish_seconds: float = 15.0             # how long servers/scheduler may take to stop after the workers


@dataclass
class ProcessSpec:
    """One process of the job: its role, its index within the role, where it runs and what it runs."""
    role: str
    index: int
    argv: List[str]
    env: Dict[str, str]                      # DMLC_* and friends, added to (local) or sent with (ssh) the command
    host: Optional[str] = None               # None: this machine

    @property
    def label(self) -> str:
        return self.role if self.role == ROLE_SCHEDULER else "%s %d" % (self.role, self.index)


# ---------------------------------------------------------------------------------------------------------------
# planning (pure functions)
# ---------------------------------------------------------------------------------------------------------------

def read_hostfile(path: str) -> List[str]:
    """Hosts, one per line (``host``, ``user@host`` or an address); blank lines and ``#`` comments are skipped."""
    hosts = []
    for number, line in enumerate(utils.read_lines(path), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        check_condition(len(text.split()) == 1 and re.fullmatch(r"[A-Za-z0-9_.@:\[\]-]+", text) is not None,
                        "%s: %r is not a host name; write one host (or user@host) per line"
                        % (utils.location(path, number), text))
        hosts.append(text)
    check_condition(bool(hosts), "%s: no hosts; write one host name per line" % path)
    return hosts


def find_free_port(host: str = "") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def default_scheduler_host(launcher: str) -> str:
    """127.0.0.1 for a job on this machine; for ssh, this machine's address as its name resolves."""
    if launcher == LAUNCHER_LOCAL:
        return "127.0.0.1"
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return name
    if address.startswith("127."):
        logger.warning("This host's name %s resolves to %s, which the other hosts cannot reach: pass "
                       "--scheduler-host with an address they can.", name, address)
    return address


def dmlc_environment(role: str, config: LaunchConfig, scheduler_host: str, port: int) -> Dict[str, str]:
    """The environment ps-lite reads: role, where the scheduler listens, how many servers and workers."""
    env = {
        "DMLC_ROLE": role,
        "DMLC_PS_ROOT_URI": scheduler_host,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_SERVER": str(config.num_servers),
        "DMLC_NUM_WORKER": str(config.num_workers),
    }
    if config.interface:
        env["DMLC_INTERFACE"] = config.interface
    elif config.launcher == LAUNCHER_LOCAL:
        # every process is here: bind to the scheduler's (loopback) address, not to whatever interface ps-lite
        # would pick (containers without a network have none that works)
        env["DMLC_NODE_HOST"] = scheduler_host
    return env


def local_thread_environment(role: str, num_workers: int, cores: int) -> Dict[str, str]:
    """Locally, N workers share this machine's cores: each worker gets its share and servers/scheduler (which only
    add and apply updates) one thread each. An OMP_NUM_THREADS of the user's is kept; the package sets it to every
    core when the user did not (``captioning/__init__.py``), so that value counts as unset here."""
    if os.environ.get("OMP_NUM_THREADS", str(cores)) != str(cores):
        return {}
    threads = max(1, cores // num_workers) if role == ROLE_WORKER else 1
    return {"OMP_NUM_THREADS": str(threads)}


def remote_python(command: Sequence[str]) -> str:
    """The Python a remote server runs: the worker command's own interpreter when it starts with one."""
    program = os.path.basename(command[0]) if command else ""
    return command[0] if re.fullmatch(r"python[0-9.]*", program) else "python3"


def ssh_argv(host: str, env: Dict[str, str], command: Sequence[str], workdir: str) -> List[str]:
    """``ssh HOST 'cd DIR && env K=V ... COMMAND'``. ``-tt`` gives the remote command a terminal, so that when the
    launcher ends the ssh client the remote processes get SIGHUP instead of living on; ``BatchMode`` makes a
    missing key an error rather than a password prompt nobody answers."""
    assignments = " ".join("%s=%s" % (key, shlex.quote(value)) for key, value in sorted(env.items()))
    remote = "cd %s && env %s %s" % (shlex.quote(workdir), assignments, " ".join(shlex.quote(c) for c in command))
    return ["ssh", "-tt", "-o", "BatchMode=yes", host, remote]


def plan_processes(config: LaunchConfig, scheduler_host: str, port: int,
                   cores: Optional[int] = None) -> List[ProcessSpec]:
    """Every process of the job: the scheduler (always on this machine), then the servers, then the workers.
    With ssh, worker i and server i run on host i mod H."""
    cores = cores or utils.num_cpus()
    local = config.launcher == LAUNCHER_LOCAL
    server_local = [sys.executable, "-c", SERVER_CODE]
    specs = []
    roles = [(ROLE_SCHEDULER, 1), (ROLE_SERVER, config.num_servers), (ROLE_WORKER, config.num_workers)]
    for role, count in roles:
        for index in range(count):
            env = dmlc_environment(role, config, scheduler_host, port)
            env["PYTHONUNBUFFERED"] = "1"   # lines reach the launcher as they are written
            command = list(config.command) if role == ROLE_WORKER else None
            if local or role == ROLE_SCHEDULER:
                env.update(local_thread_environment(role, config.num_workers, cores) if local else
                           {"OMP_NUM_THREADS": "1"})
                specs.append(ProcessSpec(role, index, command or server_local, env))
            else:
                host = config.hosts[index % len(config.hosts)]
                command = command or [remote_python(config.command), "-c", SERVER_CODE]
                workdir = config.workdir or os.getcwd()
                specs.append(ProcessSpec(role, index, ssh_argv(host, env, command, workdir), env, host))
    return specs


def exit_status(returncode: int) -> int:
    """A child's ``returncode`` as a shell exit status (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def skip_exit_barrier(kvstore: "mx.kv.KVStore") -> None:
    """Let this worker exit without waiting for the others: call it on the way out of a failed run.

    A dist_* kvstore waits at exit (when it is freed) until every worker reaches the same point. A worker that dies
    of an error while the others train on would wait there forever, the others would wait for its gradients, and
    the launcher would never see anything fail. With the barrier off, the failing worker exits at once with its
    status, and the launcher stops the rest of the job."""
    import ctypes

    from mxnet.base import _LIB, check_call
    if kvstore is not None and kvstore.type.startswith("dist"):
        check_call(_LIB.MXKVStoreSetBarrierBeforeExit(kvstore.handle, ctypes.c_int(0)))


# ---------------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------------

def set_parent_death_signal() -> None:
    """(Linux, in a child process) SIGTERM this process when its parent dies without tearing it down."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _forward_lines(stream: IO[bytes], prefix: bytes, out: Any, lock: threading.Lock) -> None:
    """Copy ``stream`` to ``out`` line by line, each line behind ``prefix``."""
    binary = hasattr(out, "buffer")
    for line in iter(stream.readline, b""):
        line = prefix + line.rstrip(b"\r\n").replace(b"\r", b"") + b"\n"
        with lock:
            try:
                if binary:
                    out.buffer.write(line)
                else:
                    out.write(line.decode("utf-8", "replace"))
                out.flush()
            except (OSError, ValueError):  # our own output went away: keep draining the pipe
                pass
    stream.close()


class Job:
    """The running processes of one launch. ``run()`` starts them, waits, tears down and returns the exit status."""

    def __init__(self, specs: List[ProcessSpec], grace_seconds: float = 5.0, finish_seconds: float = 15.0) -> None:
        self.specs = specs
        self.grace_seconds = grace_seconds
        self.finish_seconds = finish_seconds
        self.processes: List[subprocess.Popen] = []
        self.threads: List[threading.Thread] = []
        self.lock = threading.Lock()
        self.received_signal: Optional[int] = None

    # -- start ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every process in its own session (so a teardown reaches its children too)."""
        for spec in self.specs:
            env = dict(os.environ)
            if spec.host is None:   # an ssh process carries its environment in its remote command
                env.update(spec.env)
            try:
                process = subprocess.Popen(
                    spec.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    # ssh keeps its stdin open (an EOF would end a -tt session); local processes read nothing
                    stdin=subprocess.PIPE if spec.host is not None else subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=set_parent_death_signal if sys.platform.startswith("linux") else None)
            except OSError as e:   # run() tears down what was started
                raise CaptioningError("%s: cannot run %r (%s); check the command after '--'"
                                      % (spec.label, spec.argv[0], e.strerror)) from None
            self.processes.append(process)
            logger.info("started %s (pid %d%s): %s", spec.label, process.pid,
                        ", on " + spec.host if spec.host else "", " ".join(shlex.quote(a) for a in spec.argv))
        for spec, process in zip(self.specs, self.processes):
            prefix = ("[%s] " % spec.label).encode()
            for stream, out in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                thread = threading.Thread(target=_forward_lines, args=(stream, prefix, out, self.lock), daemon=True)
                thread.start()
                self.threads.append(thread)

    # -- wait ----------------------------------------------------------------------------------------------------
    def wait(self) -> int:
        """Wait for the workers; tear down on the first failure or signal. Returns the exit status."""
        workers = [p for s, p in zip(self.specs, self.processes) if s.role == ROLE_WORKER]
        others = [(s, p) for s, p in zip(self.specs, self.processes) if s.role != ROLE_WORKER]
        status = 0
        while True:
            if self.received_signal is not None:
                logger.error("received %s: stopping every process", signal.Signals(self.received_signal).name)
                status = 128 + self.received_signal
                break
            failed = [(s, p) for s, p in zip(self.specs, self.processes) if p.poll() not in (None, 0)]
            if failed:
                spec, process = failed[0]
                logger.error("%s failed with exit status %d: stopping every process", spec.label,
                             exit_status(process.returncode))
                status = exit_status(process.returncode) if spec.role == ROLE_WORKER else 1
                break
            if all(p.poll() is not None for p in workers):
                logger.info("all %d workers finished", len(workers))
                self._wait_for_others(others)
                break
            time.sleep(POLL_SECONDS)
        self.teardown()
        return status

    def _wait_for_others(self, others: List) -> None:
        """After the workers, servers and scheduler stop by themselves; give them a moment."""
        deadline = time.monotonic() + self.finish_seconds
        while time.monotonic() < deadline and self.received_signal is None:
            if all(p.poll() is not None for _, p in others):
                return
            time.sleep(POLL_SECONDS)
        running = [s.label for s, p in others if p.poll() is None]
        if running:
            logger.warning("%s still running %.0f s after the workers finished: stopping them",
                           ", ".join(running), self.finish_seconds)

    # -- teardown ------------------------------------------------------------------------------------------------
    def _signal_groups(self, sig: int, only_running: bool) -> None:
        for process in self.processes:
            if only_running and process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)   # start_new_session: the group id is the leader's pid

    def teardown(self) -> None:
        """SIGTERM every process group still running, SIGKILL after the grace period, and SIGKILL any group member
        left behind by a finished leader (a data loader, a shell's child)."""
        if any(p.poll() is None for p in self.processes):
            self._signal_groups(signal.SIGTERM, only_running=True)
            for process in self.processes:
                if process.stdin:
                    with contextlib.suppress(OSError):
                        process.stdin.close()   # ends an ssh -tt session: the remote side gets SIGHUP
            deadline = time.monotonic() + self.grace_seconds
            while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
                time.sleep(POLL_SECONDS)
            stubborn = [s.label for s, p in zip(self.specs, self.processes) if p.poll() is None]
            if stubborn:
                logger.warning("%s did not stop within %.0f s of SIGTERM: killing", ", ".join(stubborn),
                               self.grace_seconds)
        self._signal_groups(signal.SIGKILL, only_running=False)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.grace_seconds)
        for thread in self.threads:
            thread.join(timeout=1.0)

    def run(self) -> int:
        """Start, wait, tear down; SIGINT, SIGTERM and SIGHUP to the launcher stop the whole job."""
        def on_signal(signum: int, _frame: object) -> None:
            self.received_signal = signum

        handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            self.start()
            return self.wait()
        finally:
            if any(p.poll() is None for p in self.processes):  # an error in start() or wait()
                self.teardown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def launch(config: LaunchConfig) -> int:
    """Run a job to its end; returns the exit status (0 when every worker succeeded)."""
    scheduler_host = config.scheduler_host or default_scheduler_host(config.launcher)
    port = config.port or find_free_port("127.0.0.1" if config.launcher == LAUNCHER_LOCAL else "")
    logger.info("scheduler at %s:%d, %d server(s), %d worker(s), %s launcher", scheduler_host, port,
                config.num_servers, config.num_workers, config.launcher)
    specs = plan_processes(config, scheduler_host, port)
    return Job(specs, config.grace_seconds, config.finish_seconds).run()


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def create_launch_config(args: argparse.Namespace) -> LaunchConfig:
    """Check the arguments and turn them into a `LaunchConfig`."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    check_condition(bool(command), "no command to launch; give it after '--', e.g. "
                                   "python -m captioning.launch -n 2 -- python -m captioning.train ...")
    hosts: List[str] = []
    if args.launcher == LAUNCHER_SSH:
        check_condition(args.hostfile is not None, "--launcher ssh needs --hostfile (one host per line)")
        hosts = read_hostfile(args.hostfile)
    else:
        check_condition(args.hostfile is None, "--hostfile is for --launcher ssh; the local launcher runs every "
                                               "process on this machine")
    check_condition(args.port is None or 1 <= args.port <= 65535, "--port must be in 1..65535, got %s" % args.port)
    if "captioning.train" in " ".join(command) and not any(a.startswith("dist") for a in command):
        logger.warning("The command does not pass --kvstore dist_sync/dist_device_sync/dist_async: each worker "
                       "would train on its own.")
    return LaunchConfig(command=command, num_workers=args.num_workers,
                        num_servers=args.num_servers or args.num_workers, launcher=args.launcher, hosts=hosts,
                        port=args.port or 0, interface=args.interface, scheduler_host=args.scheduler_host,
                        workdir=args.sync_dir)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = arguments.ConfigArgumentParser(
        prog="python -m captioning.launch",
        description="Start a distributed job on MXNet's parameter-server KVStore: 1 scheduler, S servers and N "
                    "workers, here or over ssh. Output of every process is forwarded with a role prefix; the "
                    "exit status is the workers'.")
    arguments.add_launch_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel, prefix="[launch] ")
    return launch(create_launch_config(args))


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
