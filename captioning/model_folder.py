"""`ModelFolder`: the files training writes into ``--output`` and the lock that keeps one training per folder.

A model folder holds ``args.yaml``, ``config``, ``version``, ``vocab.trg.0.json``, ``params.NNNNN`` (one per
checkpoint; ``params.00000`` is the initialisation), ``params.best`` (a relative symbolic link to the best
checkpoint's file, or a copy where links are impossible), ``metrics`` (one line per checkpoint), ``log``,
``training_state/`` (`training_state.TrainingStateStore`) and ``.lock``.

The lock: ``.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) for as long as a training runs, and
holds its process id. The kernel releases the lock when the process dies, however it dies; a ``.lock`` that is not
locked but still names a process is a stale lock of a run that did not end cleanly, and is taken over with a
message. The file is never deleted (deleting a lock file while others may open it would let two runs lock two
different files).
"""
import fcntl
import glob
import logging
import math
import os
import re
import shutil
from typing import Any, Callable, Dict, Iterable, List, Optional

from . import constants as C
from . import utils

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def read_metrics(path: str) -> List[Dict[str, float]]:
    """A model folder's ``metrics`` file (``N<TAB>key=value<TAB>...`` per checkpoint) as one dict per line with
    ``checkpoint`` and every finite numeric value (``None``, nan and inf are left out)."""
    lines = utils.read_lines(path)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        where = utils.location(path, number)
        try:
            record: Dict[str, float] = {"checkpoint": float(int(fields[0]))}
        except (ValueError, OverflowError):
            raise utils.CaptioningError("%s: %r is not a checkpoint number; expected 'N<TAB>key=value<TAB>...'"
                                        % (where, fields[0])) from None
        for item in fields[1:]:
            utils.check_condition("=" in item, "%s: field %r is not key=value" % (where, item))
            key, value = item.split("=", 1)
            try:
                number_value = float(value)
            except ValueError:
                continue
            if math.isfinite(number_value):
                record[key.strip()] = number_value
        records.append(record)
    utils.check_condition(bool(records), "%s: no checkpoints in the metrics file" % path)
    return records


class FolderLock:
    """An exclusive lock on a model folder (see the module docstring). ``acquire`` raises `CaptioningError` if
    another process holds it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise utils.CaptioningError("--output %s: cannot create the lock file %s (%s); choose a writable "
                                        "--output" % (self.folder, self.path, e.strerror or e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read(fd)
            os.close(fd)
            raise utils.CaptioningError("--output %s is in use by another training (process %s); wait for it to "
                                        "end or choose another --output" % (self.folder, owner or "unknown")) \
                from None
        previous = _read(fd)
        if previous and previous != str(os.getpid()):
            logger.info("%s: recovered the stale lock of process %s, which is no longer running", self.path,
                        previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the file stays, empty: a clean end)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


class ModelFolder:
    """Params files, ``params.best``, the metrics file and their clean-up in one model folder."""

    def __init__(self, path: str) -> None:
        self.path = path

    # -- set-up ---------------------------------------------------------------------------------------------------
    def contents(self) -> List[str]:
        """Names in the folder, the lock file left out (an empty list if the folder does not exist)."""
        if not os.path.isdir(self.path):
            return []
        return sorted(n for n in os.listdir(self.path) if n != LOCK_NAME)

    def foreign(self) -> List[str]:
        """Names in the folder that training does not write (a user's files and folders)."""
        return [name for name in self.contents() if not is_training_file(name)]

    def is_model_folder(self) -> bool:
        """Recognisably a model folder of this toolkit: its ``args.yaml`` (the first file a run writes, after its
        log) and nothing but what training writes."""
        names = self.contents()
        return not self.foreign() and (C.ARGS_NAME in names or set(names) <= {C.LOG_NAME})

    def empty(self) -> None:
        """Remove everything but the lock file (``--overwrite-output``; call it with the lock held)."""
        for name in self.contents():
            path = os.path.join(self.path, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def create(self) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise utils.CaptioningError("--output %s: cannot write the model folder (%s); choose a writable "
                                        "--output" % (self.path, e.strerror or e)) from None

    def write_setup(self, model_config: Any, vocab: Dict[str, int]) -> None:
        """The files that make the folder loadable (`model.load_model`): ``config``, ``version`` and the
        vocabulary (the folder is created if needed)."""
        from .model import save_model_config
        from .vocab import save_vocab
        self.create()
        save_model_config(model_config, self.path)
        save_vocab(vocab, os.path.join(self.path, C.VOCAB_TRG_NAME))

    def check_writable(self) -> None:
        """The model folder, or the nearest existing folder above it, must be a writable folder."""
        utils.check_condition(not os.path.exists(self.path) or os.path.isdir(self.path),
                              "--output %s: exists and is not a folder; choose another --output" % self.path)
        path = os.path.abspath(self.path)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        utils.check_condition(os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK),
                              "--output %s: cannot write the model folder (%s is not a writable folder); choose "
                              "a writable --output" % (self.path, path))

    # -- params -----------------------------------------------------------------------------------------------------
    def params_path(self, checkpoint: int) -> str:
        return os.path.join(self.path, C.PARAMS_NAME % checkpoint)

    def write_params(self, save: Callable[[str], None], checkpoint: int) -> None:
        """``save(path)`` (e.g. ``model.save_parameters``) into ``params.NNNNN``, atomically."""
        path = self.params_path(checkpoint)
        with utils.atomic_path(path) as tmp:
            save_file(save, tmp, path)

    def link_best(self, checkpoint: int) -> None:
        """``params.best`` -> ``params.NNNNN`` (a relative symbolic link, replaced atomically; a copy where links
        are not possible)."""
        best = os.path.join(self.path, C.PARAMS_BEST_NAME)
        tmp = best + ".tmp-link"
        try:
            if os.path.lexists(tmp):
                os.remove(tmp)
            os.symlink(C.PARAMS_NAME % checkpoint, tmp)
            os.replace(tmp, best)
        except OSError:
            with utils.atomic_path(best) as tmp_copy:
                shutil.copyfile(self.params_path(checkpoint), tmp_copy)

    def checkpoints(self) -> List[int]:
        """Numbers of the ``params.NNNNN`` files present, ascending."""
        suffixes = (p.rsplit(".", 1)[1] for p in glob.glob(os.path.join(self.path, C.PARAMS_PREFIX + "*")))
        return sorted(int(s) for s in suffixes if s.isdigit())

    def cleanup_params(self, keep_last: int, protected: Iterable[int]) -> None:
        """Keep the last ``keep_last`` params files (all if negative) and the ``protected`` ones."""
        if keep_last < 0:
            return
        numbers = self.checkpoints()
        keep = set(numbers[-keep_last:]) if keep_last > 0 else set()
        keep.update(protected)
        for number in numbers:
            if number not in keep:
                os.remove(self.params_path(number))

    # -- metrics ----------------------------------------------------------------------------------------------------
    def write_metrics(self, lines: List[str]) -> None:
        """The whole metrics file (one line per checkpoint), atomically."""
        utils.atomic_write_text(os.path.join(self.path, C.METRICS_NAME), "".join(row + "\n" for row in lines))


# files training writes into a model folder (besides the fixed names): params.NNNNN, a params.best link being
# replaced, the temporary files of atomic writes, training_state/'s swap folders
TRAINING_FILE_PATTERNS = (r"params\.\d+", r"params\.best\.tmp-link", r"\..+\.tmp", r"\.write-test\..+",
                          re.escape(C.TRAINING_STATE_DIRNAME) + r"\.(old|tmp-.+)")
TRAINING_FILE_NAMES = frozenset({C.ARGS_NAME, C.CONFIG_NAME, C.VERSION_NAME, C.VOCAB_TRG_NAME, C.PARAMS_BEST_NAME,
                                 C.METRICS_NAME, C.LOG_NAME, C.TRAINING_STATE_DIRNAME, LOCK_NAME})


def is_training_file(name: str) -> bool:
    """Whether ``name`` is one training writes into a model folder."""
    return name in TRAINING_FILE_NAMES or any(re.fullmatch(p, name) for p in TRAINING_FILE_PATTERNS)


def save_file(save: Callable[[str], None], tmp: str, path: str) -> None:
    """``save(tmp)`` by a writer that reports a failed write as MXNet's ``MXNetError`` (a ``RuntimeError``, e.g.
    "FileStream.Write incomplete" on a full disk): a one-line error naming ``path``."""
    try:
        save(tmp)
    except RuntimeError as e:
        text = " ".join(str(e).split())
        if not any(s in text for s in WRITE_FAILURES):
            raise
        raise utils.CaptioningError("%s: cannot write (the disk is full, or the file system refuses the write)"
                                    % path) from None


# what MXNet's file streams say when a write fails
WRITE_FAILURES = ("Write incomplete", "No space left", "Read-only file system", "Permission denied",
                  "Disk quota", "File too large", "Check failed: fp_")


def metrics_line(checkpoint: int, metrics: Dict[str, float]) -> str:
    """``N<TAB>name=value<TAB>...`` (floats with 6 significant digits)."""
    return "%d\t%s" % (checkpoint, "\t".join("%s=%s" % (k, _format(v)) for k, v in metrics.items()))


def _format(value: float) -> str:
    return "%.6g" % value if isinstance(value, float) else str(value)
