"""Data-parallel training in several processes of one machine (``train --processes N``).

One process with two OpenMP threads gains little over one thread on the decoder's small elementwise operators; N
processes with 1/N of the threads each run those on N cores (the captioner's ``--search-processes`` works the same
way). Every process reads the same batches in the same order (the same seed, the whole plan) and computes the
gradient of its own part of each batch's rows; the processes' kvstore (`create_kvstore`) sums the parts' gradients
through shared memory at every update, so each process applies the same summed gradient to the same parameters: the
training is that of one process whose batch is split over N devices. Process 0 validates, decodes and writes the
model folder, as rank 0 of a distributed run does. What it gains on a machine is measured on the benchmarks page.

The parent process (the command line's) imports no MXNet: it starts the N training processes (``spawn``), waits for
them, and stops them all as soon as one fails or it is interrupted. Messages to the processes are the parsed
arguments (our own objects, pickled by `multiprocessing`), never a file from elsewhere.
"""
import contextlib
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

KVSTORE_TYPE = "processes"
_SHM_ROOT = "/dev/shm"          # Linux's shared-memory file system; elsewhere the temporary folder (page cache)
_STOP_SECONDS = 5.0             # after SIGTERM, how long a process may take before SIGKILL


class ProcessGroup:
    """What the training processes share: their number, a barrier, and the name prefix of the shared arrays' files
    (on ``/dev/shm``; no folder, so that nothing is left behind when the parent is killed: every file is removed as
    soon as all processes have mapped it). Picklable (spawn)."""

    def __init__(self, size: int, barrier: Any, prefix: str) -> None:
        self.size, self.barrier, self.prefix = size, barrier, prefix

    @classmethod
    def create(cls, context: Any, size: int) -> "ProcessGroup":
        root = _SHM_ROOT if os.path.isdir(_SHM_ROOT) and os.access(_SHM_ROOT, os.W_OK) else tempfile.gettempdir()
        prefix = "captioning-processes-%d-%s-" % (os.getpid(), secrets.token_hex(4))
        return cls(size, context.Barrier(size), os.path.join(root, prefix))


class _SharedSlots:
    """Two alternating sets of one array per process, in one shared file: ``slots[parity, rank]``. A process
    writes its own array, waits at the barrier, then reads all of them; the next call uses the other set, so
    nobody overwrites an array that a slower process may still be reading (reaching the next call's barrier needs
    every process to have finished this one)."""

    def __init__(self, path: str, size: int, shape: Sequence[int], dtype: Any) -> None:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        nbytes = 2 * size * count * dtype.itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != nbytes:
                os.ftruncate(fd, nbytes)     # every process sets the same size: the data of the others is kept
        finally:
            os.close(fd)
        self.slots = np.memmap(path, dtype=dtype, mode="r+", shape=(2, size) + tuple(shape))
        self.path: Optional[str] = path
        self.calls = 0

    def next_set(self) -> np.ndarray:
        current = self.slots[self.calls % 2]
        self.calls += 1
        return current

    def mapped_by_all(self, rank: int) -> None:
        """Called after the first barrier: every process has the file mapped, so process 0 removes its name
        (the memory lives as long as a mapping does, and nothing is left behind even after kill -9)."""
        if self.path is not None:
            if rank == 0:
                os.unlink(self.path)
            self.path = None


def create_kvstore(group: ProcessGroup, rank: int) -> Any:
    """The kvstore of process ``rank``: a `mxnet.kvstore.KVStoreBase` that sums gradients over the processes
    (`pushpull`) and initialises parameters with process 0's values (`broadcast`). It keeps no optimizer: each
    process updates its own copy of the parameters with the summed gradients."""
    import mxnet as mx

    class ProcessKVStore(_ProcessKVStoreMethods, mx.kvstore.KVStoreBase):
        pass

    return ProcessKVStore(group, rank)


class _ProcessKVStoreMethods:
    """The methods of `create_kvstore`'s class (MXNet's base class is only importable once MXNet may load).

    `pushpull` takes one key or a list of keys: a list (all of an update's gradients, as `training.Trainer` passes
    them) is one exchange through one shared array, so the processes meet once per update, not once per parameter."""

    def __init__(self, group: ProcessGroup, rank: int) -> None:
        self.group, self._rank = group, rank
        self._slots: Dict[str, _SharedSlots] = {}

    @property
    def type(self) -> str:
        return KVSTORE_TYPE

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def num_workers(self) -> int:
        return self.group.size

    def is_capable(self, capability: str) -> bool:
        return False                        # no optimizer on the store, no compression, no sparse arrays

    def _slots_of(self, name: str, count: int, dtype: Any) -> _SharedSlots:
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = _SharedSlots(self.group.prefix + name, self.group.size, (count,), dtype)
        return slots

    def _barrier(self) -> None:
        """Wait for every process (the name of MXNet's distributed kvstore method that `train` calls)."""
        self.group.barrier.wait()

    def _wait_for_all(self, slots: _SharedSlots) -> None:
        """Wait until every process has written its array of the current set."""
        self._barrier()
        slots.mapped_by_all(self._rank)

    def pushpull(self, key: Any, value: Any, out: Any = None, priority: int = 0) -> None:
        keys = list(key) if isinstance(key, (list, tuple)) else [key]
        values = list(value) if isinstance(key, (list, tuple)) else [value]
        outs = values if out is None else (list(out) if isinstance(key, (list, tuple)) else [out])
        mine = [_device_sum(v) for v in values]
        sizes = [int(np.prod(a.shape)) for a in mine]
        starts = np.cumsum([0] + sizes)
        slots = self._slots_of("sum-%s-%s-%d" % (keys[0], keys[-1], len(keys)), sum(sizes), mine[0].dtype)
        arrays = slots.next_set()
        for array, start, size in zip(mine, starts, sizes):
            arrays[self._rank, start:start + size] = array.asnumpy().reshape(-1)
        self._wait_for_all(slots)
        total = arrays.sum(axis=0)          # row by row, in rank order: the same bits in every process
        for targets, array, start, size in zip(outs, mine, starts, sizes):
            for target in _as_list(targets):
                target[:] = total[start:start + size].reshape(array.shape)

    def broadcast(self, key: Any, value: Any, out: Any, priority: int = 0) -> None:
        slots = self._slots_of("broadcast-%s" % (key,), int(np.prod(value.shape)), value.dtype)
        arrays = slots.next_set()
        if self._rank == 0:
            arrays[0] = value.asnumpy().reshape(-1)
        self._wait_for_all(slots)
        for target in _as_list(out):
            target[:] = arrays[0].reshape(value.shape)

    def set_optimizer(self, optimizer: Any) -> None:
        raise NotImplementedError("the processes' kvstore keeps no optimizer")

    def save_optimizer_states(self, fname: str, dump_optimizer: bool = False) -> None:
        raise NotImplementedError("the processes' kvstore keeps no optimizer")

    def load_optimizer_states(self, fname: str) -> None:
        raise NotImplementedError("the processes' kvstore keeps no optimizer")


def _device_sum(values: Any) -> Any:
    """One NDArray: the array, or the sum of a parameter's per-device arrays (on the first one's device)."""
    import mxnet as mx
    arrays = _as_list(values)
    if len(arrays) == 1:
        return arrays[0]
    return mx.nd.add_n(*[a.as_in_context(arrays[0].context) for a in arrays])


def _as_list(arrays: Any) -> List[Any]:
    return list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]


def _child(target: Callable[[Any, ProcessGroup, int], None], payload: Any, group: ProcessGroup, rank: int,
           threads: int) -> None:
    """One training process: its thread count before MXNet loads, SIGTERM when the parent dies, then
    ``target(payload, group, rank)``; a user error is one logged line and exit status 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)             # Ctrl-C is the parent's to handle
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from . import launch, utils
    launch.set_parent_death_signal()
    try:
        target(payload, group, rank)
    except utils.CaptioningError as e:
        utils.report_error(str(e))
        sys.exit(1)


def run(target: Callable[[Any, ProcessGroup, int], None], payload: Any, size: int, threads: int) -> int:
    """Run ``target(payload, group, rank)`` in ``size`` spawned processes of ``threads`` OpenMP threads each; wait
    for all of them. Returns 0, or the status of the first process that failed (the others are stopped then)."""
    context = multiprocessing.get_context("spawn")
    group = ProcessGroup.create(context, size)
    processes = [context.Process(target=_child, args=(target, payload, group, rank, threads),
                                 name="training process %d" % rank) for rank in range(size)]
    try:
        for process in processes:
            process.start()
        running: Dict[Any, Any] = {process.sentinel: process for process in processes}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                process = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    logger.error("%s ended with status %s: stopping the others", process.name, process.exitcode)
                    return _exit_status(process.exitcode)
        return 0
    finally:
        _stop(processes)     # (the barrier is not aborted: a process stopped inside it may hold its lock)
        for path in glob.glob(glob.escape(group.prefix) + "*"):   # files of processes stopped before all mapped them
            with contextlib.suppress(OSError):
                os.remove(path)


def _exit_status(exitcode: Optional[int]) -> int:
    """A process's exit code as a shell reports it (128 + N for a signal)."""
    if exitcode is None:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode


def _stop(processes: Sequence[Any]) -> None:
    """SIGTERM to every process still running, SIGKILL to any still there after `_STOP_SECONDS`."""
    alive = [p for p in processes if p.pid is not None and p.is_alive()]
    for process in alive:
        process.terminate()
    for process in alive:
        process.join(_STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
