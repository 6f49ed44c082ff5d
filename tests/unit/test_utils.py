"""utils: line reading (UTF-8 errors name the line, pipes), output checks, atomic writes on a failing disk, run_cli."""
import errno
import logging
import os
import sys

import pytest

from captioning import utils
from captioning.utils import CaptioningError


def test_read_lines_names_the_bad_line_and_keeps_universal_newlines(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"a\r\nb\rc\nd")
    assert utils.read_lines(str(path)) == ["a", "b", "c", "d"]
    path.write_bytes(b"ok\nstill ok\nbad \xe9 here\n")
    with pytest.raises(CaptioningError, match=r"list.txt, line 3: not UTF-8 text \(.* at byte 5 of the line\)"):
        utils.read_lines(str(path))
    path.write_bytes(b"")
    assert utils.read_lines(str(path)) == []


def test_read_lines_from_a_pipe():
    read, write = os.pipe()
    os.write(write, "x\ny\n".encode())
    os.close(write)
    try:
        assert utils.read_lines("/dev/fd/%d" % read) == ["x", "y"]
    finally:
        os.close(read)


def test_check_output_file(tmp_path):
    utils.check_output_file(str(tmp_path / "out.txt"))
    assert os.listdir(tmp_path) == []   # the probe leaves nothing
    with pytest.raises(CaptioningError, match="is a folder"):
        utils.check_output_file(str(tmp_path))
    with pytest.raises(CaptioningError, match="does not exist"):
        utils.check_output_file(str(tmp_path / "no" / "out.txt"))
    utils.check_output_file(os.devnull)   # devices are written in place
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaptioningError, match="is not a folder"):
        utils.check_output_folder(str(tmp_path / "file"), "--save-to-folder")
    utils.check_output_folder(str(tmp_path / "new" / "pages"), "--save-to-folder")
    assert (tmp_path / "new" / "pages").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the tmpfs cases cover root)")
def test_check_output_file_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CaptioningError, match="cannot write there"):
            utils.check_output_file(str(folder / "out.txt"))
    finally:
        folder.chmod(0o755)


def test_atomic_write_on_a_full_disk_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """A disk that fills up while writing (simulated: fsync fails with ENOSPC)."""
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CaptioningError, match=r"out.txt: cannot write \(No space left on device\)"):
        utils.atomic_write_text(str(target), "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_into_a_folder_is_an_error(tmp_path):
    with pytest.raises(CaptioningError, match="is a folder"):
        with utils.atomic_path(str(tmp_path)):
            pass


def test_run_cli_one_line_errors_and_full_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])

    def fails(argv):
        raise CaptioningError("x.txt: cannot read the config (while parsing\n  in line 3\nexpected ':')")
    with pytest.raises(SystemExit) as info:
        utils.run_cli(fails, [])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: x.txt: cannot read the config (while parsing in line 3 expected ':')"

    def writes(argv):
        print("caption")
        return 0
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        with pytest.raises(SystemExit) as info:
            utils.run_cli(writes, [])
    assert info.value.code == 1
    assert "standard output: cannot write (No space left on device)" in capsys.readouterr().err


def test_num_cpus():
    assert utils.num_cpus() >= 1


def test_open_output_writes_devices_in_place(tmp_path):
    utils.atomic_write_text(os.devnull, "nothing\n")   # no temporary file in /dev
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        utils.check_output_file(str(fifo))
        with utils.open_output(str(fifo)) as f:
            f.write("caption\n")
        assert os.read(read, 100) == b"caption\n"
    finally:
        os.close(read)
    assert sorted(os.listdir(tmp_path)) == ["fifo"]
    with pytest.raises(CaptioningError, match="No space left on device"):
        with utils.open_output("/dev/full") as f:
            f.write("x" * 10000)


def test_read_json_names_the_file_for_every_kind_of_damage(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert utils.read_json(str(good), "a test file") == {"a": [1, 2]}
    for name, data in [("deep.json", b"[" * 100000), ("latin1.json", b'{"a": "\xe9"}'), ("bad.json", b"{a:")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(utils.CaptioningError) as e:
            utils.read_json(str(path), "a test file")
        assert str(e.value).startswith("%s: cannot read a test file (" % path)
    with pytest.raises(utils.CaptioningError, match="missing.json: cannot read a test file"):
        utils.read_json(str(tmp_path / "missing.json"), "a test file")


def test_read_lines_skips_a_bom_and_refuses_nul_bytes(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfa.png\nb.png\n")
    assert utils.read_lines(str(path)) == ["a.png", "b.png"]
    path.write_bytes(b"a.png\nb\x00.png\n")
    with pytest.raises(CaptioningError, match=r"list.txt, line 2: holds a NUL byte"):
        utils.read_lines(str(path))
    assert utils.decode_line(b"\xef\xbb\xbfa.png\n", "x, line 1") == "a.png"
    with pytest.raises(CaptioningError, match="x, line 1: holds a NUL byte"):
        utils.decode_line(b"a\x00\n", "x, line 1")


def test_check_not_an_input_compares_devices_and_inodes(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    os.symlink("in.txt", tmp_path / "soft")
    os.link(source, tmp_path / "hard")
    for spelling in (source, tmp_path / "." / "in.txt", tmp_path / "soft", tmp_path / "hard"):
        with pytest.raises(CaptioningError, match="is the same file as --input"):
            utils.check_not_an_input(str(spelling), "--output", [("--input", str(source))])
    utils.check_not_an_input(str(tmp_path / "new.txt"), "--output", [("--input", str(source))])
    utils.check_not_an_input(os.devnull, "--output", [("--input", os.devnull)])   # devices are written in place
    assert utils.inputs_within(str(tmp_path), [("--input", str(source)), ("--other", "/etc/hostname")]) == \
        [("--input", str(source))]


def test_finite_float_refuses_nan_and_inf():
    import argparse
    from captioning import arguments
    assert arguments.finite_float("1e-3") == 1e-3
    for value in ("nan", "inf", "-inf", "NaN"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
            arguments.finite_float(value)
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.float_greater_or_equal(0.0)("nan")
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.simple_dict("beta1:nan")
