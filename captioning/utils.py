"""Small helpers shared by every module: user-facing errors, atomic file writes, device selection."""
import contextlib
import logging
import os
import sys
import tempfile
from typing import IO, Callable, Iterator, List, Optional, Sequence

logger = logging.getLogger(__name__)


class CaptioningError(Exception):
    """An error caused by the user's input or environment. The CLIs print its message as one line (no traceback)
    and exit non-zero. Messages name the file, the line and, where there is one, the fix."""


def check_condition(condition: bool, message: str) -> None:
    """Raise `CaptioningError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CaptioningError(message)


def location(path: str, line: Optional[int] = None) -> str:
    """'path' or 'path, line N' (1-based), the prefix of error messages about input files."""
    return path if line is None else "%s, line %d" % (path, line)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one rename, on any
    error (or Ctrl-C) it is removed, so ``path`` is either the old file or the complete new one."""
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary file name beside ``path`` for a writer that wants a name (``np.save``, ``save_parameters``).
    Renamed to ``path`` when the block ends without error, removed otherwise."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would have
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file without their line ends; a clear error when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f]
    except FileNotFoundError:
        raise CaptioningError("%s: no such file" % path) from None
    except IsADirectoryError:
        raise CaptioningError("%s: is a folder, expected a text file" % path) from None
    except UnicodeDecodeError as e:
        raise CaptioningError("%s: not UTF-8 text (%s)" % (path, e.reason)) from None
    except OSError as e:
        raise CaptioningError("%s: cannot read (%s)" % (path, e.strerror)) from None


def get_context(use_cpu: bool, device_ids: Sequence[int]) -> List["mx.Context"]:  # noqa: F821
    """MXNet contexts for ``--use-cpu`` / ``--device-ids``. Negative ids mean 'that many GPUs' as in Sockeye
    (-1: one GPU). On an MXNet build without CUDA (or with no GPU), warn and use the CPU."""
    import mxnet as mx
    if use_cpu:
        count = max(1, len(device_ids)) if device_ids and all(d >= 0 for d in device_ids) else 1
        return [mx.cpu(i) for i in range(count)]
    num_gpus = num_gpus_available()
    if num_gpus == 0:
        logger.warning("No GPU available (this MXNet build has no CUDA, or no GPU is visible): using the CPU. "
                       "Pass --use-cpu to silence this warning.")
        return [mx.cpu()]
    ids: List[int] = []
    for d in device_ids or [-1]:
        if d < 0:
            ids.extend([i for i in range(num_gpus) if i not in ids][:-d])
        else:
            check_condition(d < num_gpus, "--device-ids: GPU %d requested but only %d visible" % (d, num_gpus))
            ids.append(d)
    return [mx.gpu(i) for i in ids]


def num_gpus_available() -> int:
    """Number of GPUs MXNet can use (0 on a CPU-only build)."""
    import mxnet as mx
    try:
        if not mx.runtime.Features().is_enabled("CUDA"):
            return 0
        return mx.context.num_gpus()
    except Exception:  # noqa: BLE001 - a broken driver means no GPU to us
        return 0


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> None:
    """Run a CLI's main: user errors become one logged line and exit status 1; Ctrl-C exits 130."""
    try:
        code = main(argv)
    except CaptioningError as e:
        logging.getLogger("captioning").error("%s", e)
        if not logging.getLogger().handlers:
            print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        logging.getLogger("captioning").error("interrupted")
        sys.exit(130)
    sys.exit(code or 0)
