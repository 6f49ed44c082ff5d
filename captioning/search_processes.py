"""Captioning in several processes at once (``captioner --search-processes N``).

A beam-search step on CPU is a chain of small dependent operators: a second OpenMP thread speeds up its matrix
products but the rest of the step waits on it, so a second thread in one search helps little. N processes, each
searching its own batches with 1/N of the threads, use the cores fully (Marian's ``--cpu-threads`` works the same
way). The parent reads and parses the input, hands out batches of ``--batch-size`` lines (at most two per process
ahead), and writes the outputs in input order; each process loads the models once and captions with the same
`inference.Captioner` as a single process, so the captions are the same (a batch's captions do not depend on the
batch it is in; tested).

Messages between the parent and its processes are pickled by `multiprocessing`: they are our own objects (parsed
input lines, outputs), never a file from elsewhere.
"""
import argparse
import itertools
import logging
import multiprocessing
import os
import queue
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import log, utils

if TYPE_CHECKING:   # not imported at run time: a process must set its thread count before MXNet loads
    from .inference import CaptionInput, CaptionOutput

logger = logging.getLogger(__name__)

_STOP = None            # the task that ends a process
# messages from the processes: ("ready", process, grid), ("done", chunk, outputs, search seconds),
# ("error", process, message)
_POLL_SECONDS = 1.0


def threads_per_process(processes: int) -> int:
    """OpenMP threads of each of ``processes`` search processes: the process's thread budget (OMP_NUM_THREADS, set
    by the package to every core unless the user set it) shared out, at least 1."""
    total = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    return max(1, total // processes)


def _worker(index: int, threads: int, args: argparse.Namespace, build: Callable[..., Any],
            tasks: "multiprocessing.Queue[Any]", results: "multiprocessing.Queue[Any]") -> None:
    """One search process: set its thread count before MXNet loads, build the captioner (``build(args)`` ->
    (captioner, feature grid)), then caption chunks until told to stop. Errors go back to the parent as messages."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)         # Ctrl-C is the parent's to handle
    os.environ["OMP_NUM_THREADS"] = str(threads)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel, prefix="[search %d] " % index)
    try:
        captioner, grid = build(args)
        results.put(("ready", index, grid))
        while True:
            task = tasks.get()
            if task is _STOP:
                return
            chunk, seed, inputs, where = task
            if seed is not None:
                captioner.backend.seed(seed)
            before = captioner.search_seconds
            outputs = list(captioner.caption_chunk(inputs, where))
            results.put(("done", chunk, outputs, captioner.search_seconds - before))
    except utils.CaptioningError as e:
        results.put(("error", index, str(e)))
    except Exception as e:  # noqa: BLE001 (anything else still ends the run, with its message, not a hang)
        import traceback
        results.put(("error", index, "search process %d failed: %s\n%s" % (index, e, traceback.format_exc())))


class SearchPool:
    """``processes`` search processes, each running ``build(args)``'s captioner; `caption` yields the outputs of
    parsed inputs in order. Use as a context manager (the processes stop on exit, also after an error)."""

    def __init__(self, processes: int, args: argparse.Namespace, build: Callable[..., Any],
                 batch_size: int) -> None:
        self.processes = processes
        self.batch_size = batch_size
        self.seed: Optional[int] = args.seed
        self.num_captioned = 0
        self.num_failed = 0
        self.search_seconds = 0.0
        context = multiprocessing.get_context("spawn")   # MXNet's engine threads do not survive a fork
        self._tasks = context.Queue()
        self._results = context.Queue()
        threads = threads_per_process(processes)
        self._workers = [context.Process(target=_worker, args=(i, threads, args, build, self._tasks, self._results),
                                         daemon=True) for i in range(processes)]
        logger.info("Captioning in %d processes of %d thread(s) each", processes, threads)
        for worker in self._workers:
            worker.start()
        self.grid: Tuple[int, int] = (0, 0)
        try:
            for _ in range(processes):
                self.grid = self._next()[2]
        except BaseException:
            self.close(wait=False)
            raise

    def __enter__(self) -> "SearchPool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(wait=exc_type is None)

    def close(self, wait: bool = True) -> None:
        """Stop the processes: after the work handed out (ended after 10 s), or at once with ``wait`` False (an
        error or Ctrl-C in the parent: the chunks in flight are of no use any more)."""
        for _ in self._workers:
            self._tasks.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=10 if wait else 0)
            if worker.is_alive():
                worker.terminate()
                worker.join()

    def _next(self) -> Tuple[Any, ...]:
        """The next message of a process; a process's error is raised here, and a process that died without a
        word (killed, out of memory) is an error too instead of a wait without end."""
        while True:
            try:
                message = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                dead = [i for i, w in enumerate(self._workers) if not w.is_alive()]
                if dead:
                    raise utils.CaptioningError("search process %d ended unexpectedly (exit code %s); captioning "
                                                "stopped" % (dead[0], self._workers[dead[0]].exitcode)) from None
                continue
            if message[0] == "error":
                raise utils.CaptioningError(message[2])
            return message

    def caption(self, inputs: Iterable["CaptionInput"], where: str) -> Iterator["CaptionOutput"]:
        """Outputs of ``inputs`` in order: chunks of ``batch_size`` inputs go to whichever process is free, at most
        two per process in flight. With a seed, chunk k samples with seed + k, whatever process takes it."""
        pending: Dict[int, List["CaptionOutput"]] = {}
        sent = received = 0
        source = iter(inputs)
        exhausted = False
        while True:
            while not exhausted and sent - received < 2 * self.processes:
                chunk = list(itertools.islice(source, self.batch_size))
                if not chunk:
                    exhausted = True
                    break
                seed = None if self.seed is None else self.seed + sent
                self._tasks.put((sent, seed, chunk, where))
                sent += 1
            if received == sent:
                return
            message = self._next()
            pending[message[1]] = message[2]
            self.search_seconds += message[3]
            while received in pending:
                for output in pending.pop(received):
                    if output.failed:
                        self.num_failed += 1
                    else:
                        self.num_captioned += 1
                    yield output
                received += 1

