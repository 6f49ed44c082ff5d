"""captioning.allocator: when a tool starts itself again with tcmalloc, and that it does so for real."""
import ctypes.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from captioning import allocator

REPO = Path(__file__).resolve().parents[2]
TCMALLOC = ctypes.util.find_library(allocator.TCMALLOC_LIBRARY)


def test_restart_only_as_a_program_with_tcmalloc_installed_and_not_chosen_away():
    lib = "libtcmalloc_minimal.so.4"
    env = allocator.restart_environment({"PATH": "/bin"}, lib, allocator.GLIBC, True)
    assert env is not None and env["LD_PRELOAD"] == lib and env["PATH"] == "/bin"
    # another preload is kept, after ours
    env = allocator.restart_environment({"LD_PRELOAD": "libother.so"}, lib, allocator.GLIBC, True)
    assert env["LD_PRELOAD"] == lib + " libother.so"
    for environ, library, current, program in [
            ({allocator.ALLOCATOR_VARIABLE: "glibc"}, lib, allocator.GLIBC, True),    # the user's choice
            ({}, None, allocator.GLIBC, True),                                         # not installed
            ({}, lib, allocator.TCMALLOC, True),                                       # already in use
            ({}, lib, allocator.GLIBC, False),                                         # called from Python
    ]:
        assert allocator.restart_environment(environ, library, current, program) is None
    # the restart itself never restarts again, even if the loader ignored the preload
    env = allocator.restart_environment({}, lib, allocator.GLIBC, True)
    assert allocator.restart_environment(env, lib, allocator.GLIBC, True) is None


def test_started_as_program():
    def module(name):
        return types.SimpleNamespace(__spec__=types.SimpleNamespace(name=name))
    assert allocator.started_as_program(module("captioning.train"), ["/x/train.py"])
    assert allocator.started_as_program(None, ["/venv/bin/captioning-train", "-h"])
    assert not allocator.started_as_program(module("mytool"), ["mytool.py"])
    assert not allocator.started_as_program(types.SimpleNamespace(__spec__=None), ["script.py"])


def test_in_use_reads_the_mapped_libraries():
    assert allocator.in_use("7f00-7f01 r-xp 0 fd:01 1 /usr/lib/libtcmalloc_minimal.so.4.5\n") == allocator.TCMALLOC
    assert allocator.in_use("7f00-7f01 r-xp 0 fd:01 1 /usr/lib/libc.so.6\n") == allocator.GLIBC


def _tool_allocator(**env):
    """Which allocator ``python -m captioning.evaluate`` (a tool started as a program) ends up with, as its
    process's own /proc/self/maps says (printed by a sitecustomize hook at exit)."""
    hook = ("import atexit, sys\n"
            "def _report():\n"
            "    from captioning import allocator\n"
            "    sys.stderr.write('ALLOCATOR=%s\\n' % allocator.in_use())\n"
            "atexit.register(_report)\n")
    folder = Path(env.pop("hook_dir"))
    (folder / "sitecustomize.py").write_text(hook)
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ALLOCATOR_VARIABLE)}
    environ.update(env, PYTHONPATH="%s:%s" % (folder, REPO))
    result = subprocess.run([sys.executable, "-m", "captioning.evaluate", "--help"], env=environ,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout and result.stdout.count("usage:") == 1   # the help is printed once
    return [line for line in result.stderr.splitlines() if line.startswith("ALLOCATOR=")][-1].split("=")[1]


@pytest.mark.skipif(TCMALLOC is None or not sys.platform.startswith("linux"),
                    reason="tcmalloc (libtcmalloc-minimal4) is not installed")
def test_a_tool_runs_on_tcmalloc_where_installed_unless_told_glibc(tmp_path):
    assert _tool_allocator(hook_dir=str(tmp_path)) == allocator.TCMALLOC
    assert _tool_allocator(hook_dir=str(tmp_path), CAPTIONING_ALLOCATOR="glibc") == allocator.GLIBC
