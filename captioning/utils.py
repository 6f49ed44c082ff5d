"""Small helpers shared by every module: user-facing errors, atomic file writes, device selection."""
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import stat
import sys
import tempfile
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover - MXNet is imported where it is used (after OMP_NUM_THREADS is set)
    import mxnet as mx

logger = logging.getLogger(__name__)


class CaptioningError(Exception):
    """An error caused by the user's input or environment. The CLIs print its message as one line (no traceback)
    and exit non-zero. Messages name the file, the line and, where there is one, the fix."""


def check_condition(condition: bool, message: str) -> None:
    """Raise `CaptioningError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CaptioningError(message)


def error_cause(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message that is not part of a stack trace (MXNet's errors carry the C++
    and Python traces in their text), cut to ``limit`` characters; the exception's type name if none."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    cause = next((line for line in lines if not line.startswith(("Traceback", "File ", "[bt]", "Stack"))),
                 type(error).__name__)
    return cause[:limit]


def location(path: str, line: Optional[int] = None) -> str:
    """'path' or 'path, line N' (1-based), the prefix of error messages about input files."""
    return path if line is None else "%s, line %d" % (path, line)


def num_cpus() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, else all cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# errors of a write that are about the target, not the program: full disk, quota, file too large, read-only fs
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def write_error(path: str, error: OSError) -> CaptioningError:
    """The one-line error for an OS error while writing ``path``."""
    return CaptioningError("%s: cannot write (%s)" % (path, error.strerror or error))


def check_output_file(path: str, flag: str = "--output") -> None:
    """Fail early, before any long work, unless ``path`` can be written as a file: it is not a folder, its folder
    exists and is writable (checked by creating and removing a temporary file there, which also catches
    read-only file systems and root's bypass of permission bits)."""
    check_condition(not os.path.isdir(path), "%s: is a folder; %s needs a file name" % (path, flag))
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        return  # a device or pipe such as /dev/null or /dev/stdout: written in place
    folder = os.path.dirname(os.path.abspath(path))
    check_condition(os.path.isdir(folder), "%s: folder %s does not exist (%s)" % (path, folder, flag))
    probe_folder(folder, path)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same existing file or folder (same device and inode: links and other spellings
    of one path are caught)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_an_input(output: str, output_flag: str, inputs: Iterable[Tuple[str, Optional[str]]],
                       replaces_links: bool = False) -> None:
    """Refuse, before any work, an output that is the same file as one of the run's inputs (``(flag, path)``
    pairs; None paths are skipped). Devices and pipes (``/dev/stdout``) are not files an output replaces.
    ``replaces_links``: an output that is a symbolic link is replaced as a link (its target untouched), as
    ``average --output MODEL/params.best`` does by design; it is then not compared."""
    if not os.path.exists(output) or (not os.path.isdir(output) and not stat.S_ISREG(os.stat(output).st_mode)):
        return
    if replaces_links and os.path.islink(output):
        return
    for flag, path in inputs:
        if path is not None and same_file(output, path):
            raise CaptioningError("%s %s is the same file as %s %s; it is kept: write the output elsewhere"
                                  % (output_flag, output, flag, path))


def inputs_within(folder: str, inputs: Iterable[Tuple[str, Optional[str]]]) -> List[Tuple[str, str]]:
    """The ``(flag, path)`` inputs that are ``folder`` itself or lie inside it (paths compared after resolving
    links)."""
    if not os.path.isdir(folder):
        return []
    root = os.path.realpath(folder)
    found = []
    for flag, path in inputs:
        if path is None:
            continue
        real = os.path.realpath(path)
        if same_file(folder, path) or real.startswith(root.rstrip(os.sep) + os.sep):
            found.append((flag, path))
    return found


def missing_folders(folder: str) -> List[str]:
    """``folder`` and those above it that do not exist yet, deepest first (what `os.makedirs` would create)."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_empty_folders(folders: Sequence[str]) -> None:
    """Remove those of ``folders`` (deepest first, as `missing_folders` lists them) that are empty: the folders a
    refused run created, and only those."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def check_output_folder(path: str, flag: str) -> None:
    """Fail early unless ``path`` is (or can be made as) a writable folder; it is created if missing."""
    check_condition(not os.path.exists(path) or os.path.isdir(path),
                    "%s: exists and is not a folder; %s needs a folder" % (path, flag))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CaptioningError("%s: cannot create the folder (%s) for %s" % (path, e.strerror, flag)) from None
    probe_folder(path, path)


def probe_folder(folder: str, name: str) -> None:
    """Create and remove a temporary file in ``folder``; a one-line error naming ``name`` if that fails."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise CaptioningError("%s: cannot write there (%s)" % (name, e.strerror or e)) from None


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one rename, on any
    error (or Ctrl-C) it is removed, so ``path`` is either the old file or the complete new one."""
    with atomic_path(path) as tmp:
        kwargs: Dict[str, Any] = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary file name beside ``path`` for a writer that wants a name (``np.save``, ``save_parameters``).
    Renamed to ``path`` when the block ends without error, removed otherwise.
    Errors of the file system (full disk, read-only, ``path`` a folder) become a one-line `CaptioningError`
    naming ``path``; nothing partial is left behind."""
    directory = os.path.dirname(os.path.abspath(path))
    check_condition(not os.path.isdir(path), "%s: is a folder, cannot write a file there" % path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        os.close(fd)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would have
        os.chmod(tmp, 0o666 & ~current_umask())
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS and e.filename in (None, tmp, path):
            raise write_error(path, e) from None
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a device or pipe such as ``/dev/stdout`` is written in place)."""
    with open_output(path) as f:
        f.write(text)


@contextlib.contextmanager
def open_output(path: str) -> Iterator[IO[str]]:
    """A text output file: written atomically (`atomic_open`) when ``path`` is, or will be, a regular file; a
    device or pipe that exists (``/dev/stdout``, ``/dev/null``, a FIFO) is opened and written in place. Write
    errors are one-line `CaptioningError` s naming ``path``."""
    if os.path.exists(path) and not os.path.isdir(path) and not stat.S_ISREG(os.stat(path).st_mode):
        try:
            with open(path, "w", encoding="utf-8") as f:
                yield f
        except OSError as e:
            if e.errno in WRITE_ERRNOS and e.filename in (None, path):
                raise write_error(path, e) from None
            raise
    else:
        with atomic_open(path, "w") as f:
            yield f


def read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 text file (or a pipe such as ``/dev/fd/N`` from ``<(...)``) without their line
    ends; a clear error when it cannot be read, naming the line that is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CaptioningError("%s: no such file" % path) from None
    except IsADirectoryError:
        raise CaptioningError("%s: is a folder, expected a text file" % path) from None
    except OSError as e:
        raise CaptioningError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaptioningError("%s: not UTF-8 text (%s at byte %d of the line); save the file as UTF-8"
                              % (location(path, data.count(b"\n", 0, e.start) + 1), e.reason,
                                 e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1)) from None
    # a byte-order mark (as some Windows editors write) is not part of the first line
    text = text[1:] if text.startswith(BOM) else text
    check_no_nul(text, path)
    # universal newlines, as text-mode open(): \r\n and a lone \r end a line too
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


BOM = "\ufeff"


def check_no_nul(text: str, path: str) -> None:
    """A text file holds no NUL character (a binary file, or one saved as UTF-16): an error naming its line."""
    index = text.find("\0")
    if index >= 0:
        raise CaptioningError("%s: holds a NUL byte (a binary file, or text not saved as UTF-8)"
                              % location(path, text.count("\n", 0, index) + 1))


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's contents (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str, what: str) -> Any:
    """The JSON value in ``path``; any unreadable file (missing, not UTF-8, malformed, nested too deeply to parse)
    is a `CaptioningError` naming the path and ``what`` the file should hold."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise CaptioningError("%s: cannot read %s (%s)" % (path, what, reason)) from None


def decode_line(raw: bytes, where: str) -> str:
    """One line read in binary, as text without its line end; a `CaptioningError` naming ``where`` if it is not
    UTF-8 (streaming readers use it so that a bad line costs only itself)."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise CaptioningError("%s: not UTF-8 text (%s at byte %d)" % (where, e.reason, e.start + 1)) from None
    if "\0" in text:
        raise CaptioningError("%s: holds a NUL byte (a binary file, or text not saved as UTF-8)" % where)
    return text[1:] if text.startswith(BOM) else text


def open_input(path: str, flag: str = "--input") -> IO[bytes]:
    """``path`` opened for reading in binary (a regular file or a pipe such as ``/dev/fd/N``); one-line errors."""
    check_condition(not os.path.isdir(path), "%s: is a folder; %s needs a file" % (path, flag))
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CaptioningError("%s: no such input file (%s)" % (path, flag)) from None
    except OSError as e:
        raise CaptioningError("%s: cannot read (%s)" % (path, e.strerror or e)) from None


def get_context(use_cpu: bool, device_ids: Sequence[int]) -> List["mx.Context"]:
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
    """Run a CLI's main: user errors become one logged line and exit status 1; Ctrl-C exits 130. Standard output is
    flushed here, so that a full disk or a closed pipe behind it is one line too, not a traceback at exit. The
    memory allocator is set up first (`allocator.set_up`: the process may start again with tcmalloc), then closed
    standard streams are held open on /dev/null (`guard_standard_streams`)."""
    from . import allocator
    allocator.set_up()
    guard_standard_streams()
    try:
        code = main(argv)
        sys.stdout.flush()
    except CaptioningError as e:
        report_error(str(e))
        sys.exit(1)
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): nothing more to say to it; keep Python from failing at exit too
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS or e.filename is not None:
            raise
        # a write to standard output failed (its file is on a full disk, ...): drop what is left in its buffer
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        report_error("standard output: cannot write (%s)" % (e.strerror or e))
        sys.exit(1)
    except KeyboardInterrupt:
        logging.getLogger("captioning").error("interrupted")
        sys.exit(130)
    sys.exit(code or 0)


STREAM_NAMES = {0: "standard input", 1: "standard output", 2: "standard error"}


class ClosedStream:
    """Stands for a standard stream the process was started without (``<&-``, ``>&-``): using it is a one-line
    `CaptioningError`, not Python's AttributeError on ``None``."""

    def __init__(self, fd: int) -> None:
        self.name = STREAM_NAMES[fd]

    def _closed(self, *args: Any, **kwargs: Any) -> Any:
        hint = "give --input FILE" if self.name == "standard input" else "redirect it to a file or give --output"
        raise CaptioningError("%s is closed; %s" % (self.name, hint))

    write = read = readline = readlines = __iter__ = __next__ = _closed

    def fileno(self) -> int:
        raise io.UnsupportedOperation("%s is closed" % self.name)

    @property
    def buffer(self) -> "ClosedStream":
        return self

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def check_stream_open(stream: Any) -> None:
    """Fail early, before any work, if ``stream`` (``sys.stdin`` / ``sys.stdout``) is a `ClosedStream`."""
    if isinstance(stream, ClosedStream):
        stream.write()


def guard_standard_streams() -> None:
    """A closed standard stream (fd 0, 1 or 2) is held on ``/dev/null`` (so that no file this process opens gets
    its number and receives, or is read as, another stream's data), and its ``sys`` object becomes a
    `ClosedStream`. Called by `run_cli`."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        with contextlib.suppress(OSError):
            placeholder = os.open(os.devnull, os.O_RDWR)
            if placeholder != fd:
                os.dup2(placeholder, fd)
                os.close(placeholder)
        if name != "stderr" or getattr(sys, name) is None:
            setattr(sys, name, ClosedStream(fd) if name != "stderr" else open(os.devnull, "w"))


def report_error(message: str) -> None:
    """Log a fatal error as one line (messages quoting a parser's multi-line report are joined)."""
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if logging.getLogger().handlers:
        logging.getLogger("captioning").error("%s", message)
    else:  # before the CLI set up logging (Python's last-resort handler would print it a second time)
        print("error: %s" % message, file=sys.stderr)
