"""The C memory allocator of the command-line tools.

MXNet 1.9.1 pools no CPU memory: every operator's output is a fresh ``malloc`` and every freed array goes back to
the C allocator, thousands of times per training update. glibc's allocator then either keeps the freed blocks as
holes in its heaps (its default: RSS grows with every new caption length) or, with a small fixed mmap threshold,
returns each large block to the kernel and faults it in again on the next update (low RSS, a quarter of the
speed spent in the kernel). tcmalloc (gperftools) reuses freed blocks from its own size classes and returns idle
memory gradually: the RSS of the small threshold at the speed of the default.

So every tool starts itself again with tcmalloc preloaded (``LD_PRELOAD``) where the library is installed
(Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``) and the tool was started as a program (``python -m
captioning.X`` or a ``captioning-*`` script), unless ``CAPTIONING_ALLOCATOR=glibc``. Without tcmalloc, glibc keeps its
defaults but for at most two malloc arenas (MXNet's and OpenMP's threads would each grow one); a user's own
``MALLOC_*`` settings rule. docs/training.md ("Memory") says what each costs; the figures are on the benchmarks page.
"""
import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Dict, Mapping, Optional, Sequence

ALLOCATOR_VARIABLE = "CAPTIONING_ALLOCATOR"   # tcmalloc (the default where installed) | glibc
TCMALLOC = "tcmalloc"
GLIBC = "glibc"
TCMALLOC_LIBRARY = "tcmalloc_minimal"         # gperftools' malloc without its profiler
_TRIED_VARIABLE = "CAPTIONING_ALLOCATOR_PRELOADED"   # set on the restart: never restart twice

# glibc's mallopt parameter (malloc.h)
M_ARENA_MAX = -8
ARENA_MAX = 2


def in_use(maps: Optional[str] = None) -> str:
    """``tcmalloc`` when this process's malloc is tcmalloc (it is mapped), else ``glibc`` (or whatever the C library
    is). ``maps``: the text of /proc/self/maps (read when None)."""
    if maps is None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                maps = f.read()
        except OSError:
            return GLIBC
    return TCMALLOC if "libtcmalloc" in maps else GLIBC


def restart_environment(environ: Mapping[str, str], library: Optional[str], current: str,
                        started_as_program: bool) -> Optional[Dict[str, str]]:
    """The environment to start this command again with tcmalloc preloaded, or None to go on as is: when the user
    did not choose glibc, tcmalloc (``library``, its file name for the dynamic loader) is installed but not in use,
    the process was started as a program, and this is not already the restart."""
    if environ.get(ALLOCATOR_VARIABLE, TCMALLOC) != TCMALLOC or current == TCMALLOC or library is None:
        return None
    if not started_as_program or _TRIED_VARIABLE in environ:
        return None
    preload = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
    return dict(environ, LD_PRELOAD=preload, **{_TRIED_VARIABLE: "1"})


def started_as_program(main_module: Optional[object], argv: Sequence[str]) -> bool:
    """Was this process started as one of the tools (``python -m captioning.X``, a ``captioning-*`` script)? Only
    then may it be started again: a tool called from someone's own Python program never is."""
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and str(getattr(spec, "name", "")).startswith("captioning."):
        return True
    return bool(argv) and os.path.basename(argv[0]).startswith("captioning-")


def preload_tcmalloc() -> None:
    """Start this command again with tcmalloc preloaded when `restart_environment` says so (the process is replaced:
    nothing has been read or written yet)."""
    if not sys.platform.startswith("linux"):
        return
    current = in_use()
    environ = restart_environment(os.environ, ctypes.util.find_library(TCMALLOC_LIBRARY) if current != TCMALLOC
                                  else None, current, started_as_program(sys.modules.get("__main__"), sys.argv))
    if environ is None:
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:          # None: the stream was closed when Python started
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os.execve(sys.executable, list(getattr(sys, "orig_argv", [sys.executable] + sys.argv)), environ)


def tune_glibc() -> bool:
    """With glibc's malloc: at most `ARENA_MAX` arenas, unless the user set ``MALLOC_ARENA_MAX`` (their value
    rules). Returns whether it was applied. Process-wide: called by the command-line tools, never on import."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux") or in_use() == TCMALLOC:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):     # musl and other C libraries: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENA_MAX))


def set_up() -> str:
    """What every command-line tool does first (`utils.run_cli`): tcmalloc where it can, else glibc tuned.
    Returns the allocator in use."""
    preload_tcmalloc()
    tune_glibc()
    return in_use()
