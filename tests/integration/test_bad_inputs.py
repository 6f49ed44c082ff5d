"""The bad-input catalogue (SPEC section 4, issue 11): every tool against inputs a careless or hostile user gives it.

Each `Case` runs ``captioning.<tool>.main(argv)`` in this process (a few run through ``python -m``) and asserts:
the exit code; standard error holds exactly the expected number of non-empty lines (one for a fatal error), one of
them the error, naming the file (and line where there is one); no "Traceback"; and no partial output: no file
appears in the case's folder but those the case allows (a run that fails writes nothing).

To add a case, append a `Case` to `CASES`: ``argv`` and ``setup`` get the `Env` of the test (paths of a tiny
model, features, images and a scratch folder). ``mount`` cases need a small tmpfs (root, or skipped): ``"full"``
is a file system with no space left, ``"readonly"`` one mounted read-only.
"""
import contextlib
import fnmatch
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet

from .test_captioner import FEATURE_SHAPE, make_features, make_model_folder

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """Paths a case builds on. ``tmp``: the case's scratch folder (the only place outputs may appear)."""
    tmp: Path
    model: Path            # a tiny random model folder (read-only: copy it to corrupt it)
    feats: Path            # its feature folder (img000.jpg.npy ...)
    features_list: Path    # 5 feature names, one per line
    cnn_prefix: str        # a tiny CNN checkpoint
    cnn_layer: str
    images: Path           # 3 images a.png, b.png, sub/c.png
    mount: Optional[Path] = None   # the tmpfs of a ``mount`` case

    def write(self, name: str, content) -> str:
        """``tmp/name`` with ``content`` (str lines joined with newlines, or bytes); returns its path."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text("".join(line + "\n" for line in content), encoding="utf-8")
        return str(path)

    def folder(self, name: str) -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)

    def model_copy(self, name: str = "model") -> Path:
        target = self.tmp / name
        shutil.copytree(self.model, target)
        return target

    def captioner(self, *args: str) -> List[str]:
        return ["--models", str(self.model), "--source-root", str(self.feats), "--use-cpu", "--quiet",
                "--beam-size", "2", *args]

    def train(self, source: str, target: str, *args: str) -> List[str]:
        return ["--source-root", str(self.feats), "--source", source, "--target", target,
                "--validation-source-root", str(self.feats), "--validation-source", source,
                "--validation-target", target, "--output", str(self.tmp / "trained"), "--use-cpu", "--quiet",
                "--batch-size", "2", "--rnn-num-hidden", "8", "--num-embed", "8", "--max-updates", "1",
                "--checkpoint-interval", "1", *args]

    def extract(self, image_list: str, *args: str) -> List[str]:
        return ["--image-root", str(self.images), "--input", image_list, "--output-root", str(self.tmp / "out"),
                "--output", str(self.tmp / "out" / "list.features"), "--image-encoder-model-path", self.cnn_prefix,
                "--image-encoder-layer", self.cnn_layer, "--source-image-size", "3", "64", "64", "--use-cpu",
                "--num-workers", "0", "--quiet", "--batch-size", "2", *args]


@dataclass
class Case:
    """One bad input: ``python -m captioning.<tool> argv`` must exit ``code`` with an error line containing
    ``error`` (and ``where``, the file and line, when given)."""
    id: str
    tool: str
    argv: Callable[[Env], List[str]]
    code: int
    error: str
    where: Optional[Callable[[Env], str]] = None
    setup: Optional[Callable[[Env], None]] = None
    stderr_lines: Optional[int] = 1           # non-empty lines on stderr (all of them errors); None: argparse's
                                              # usage lines come first
    outputs: Sequence[str] = ()               # files (relative to tmp, fnmatch patterns) the run may leave
    mount: Optional[str] = None               # "full" | "almost-full" | "readonly"
    subprocess: bool = False                  # run through python -m (stdout/stderr of a real process)
    stdout_file: Optional[str] = None         # standard output goes to this file (e.g. /dev/full)
    waiting_for: Optional[str] = None         # xfail(strict) until another engineer's fix lands
    check: Optional[Callable[[Env, str], None]] = None   # more assertions on (env, stdout)
    closed: Sequence[int] = ()                # standard streams (0, 1) the process starts without (subprocess)
    not_in_stderr: Sequence[str] = ()         # text the error must not hold (a wrong hint)
    replaced: Sequence[str] = ()              # files (relative to tmp) that were there and a run may replace


def _line(name: str, number: int) -> Callable[[Env], str]:
    return lambda e: "%s, line %d" % (e.tmp / name, number)


def _file(name: str) -> Callable[[Env], str]:
    return lambda e: str(e.tmp / name)


def _corrupt(name: str, content) -> Callable[[Env], None]:
    """A copy of the model folder (tmp/model) with ``name`` replaced by ``content`` (bytes or text)."""
    def setup(e: Env) -> None:
        folder = e.model_copy()
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return setup


def _checkpoints(files: dict) -> Callable[[Env], None]:
    """A folder tmp/model with ``files``: text (``metrics``), ``"model"`` (the tiny model's parameters) or
    ``{name: size}`` (a parameter file of zero vectors)."""
    def setup(e: Env) -> None:
        import mxnet as mx
        folder = e.tmp / "model"
        folder.mkdir()
        for name, content in files.items():
            if content == "model":
                shutil.copy(e.model / "params.best", folder / name)
            elif isinstance(content, dict):
                mx.nd.save(str(folder / name), {k: mx.nd.zeros((n,)) for k, n in content.items()})
            else:
                (folder / name).write_text(content)
    return setup


def _fill(path: Path) -> None:
    """Fill the file system of ``path`` until no byte is left."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def _not_run(path: Path) -> None:
    assert not path.exists() and not (REPO / path.name).exists() and not Path(path.name).exists()


def _no_output_lines(e: Env, stdout: str) -> None:
    assert stdout == ""


CASES: List[Case] = [
    # --- captioner ---------------------------------------------------------------------------------------------
    Case("captioner-missing-model", "captioner", lambda e: ["--models", str(e.tmp / "nope"), "--input",
                                                            str(e.features_list), "--use-cpu", "--quiet"],
         1, "no such model folder", where=_file("nope")),
    Case("captioner-missing-input", "captioner", lambda e: e.captioner("--input", str(e.tmp / "nope.list")),
         1, "no such input file", where=_file("nope.list")),
    Case("captioner-input-is-folder", "captioner", lambda e: e.captioner("--input", e.folder("dir")),
         1, "is a folder", where=_file("dir")),
    Case("captioner-output-is-folder", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", e.folder("out")),
         1, "is a folder", where=_file("out")),
    Case("captioner-output-folder-missing", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", str(e.tmp / "no" / "out.txt")),
         1, "does not exist", where=_file("no/out.txt")),
    Case("captioner-nbest-larger-than-beam", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--nbest-size", "3"), 1, "--nbest-size 3"),
    Case("captioner-wrong-typed-config", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "vocab_size", where=_file("model/config"),
         setup=lambda e: (e.model_copy(), (e.tmp / "model" / "config").write_text(
             (e.model / "config").read_text().replace("vocab_size: 20", "vocab_size: eighty")))),
    Case("captioner-config-not-yaml", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "cannot read the model config", where=_file("model/config"), setup=_corrupt("config", "a: [b\n")),
    Case("captioner-config-not-utf8", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "cannot read the model config", where=_file("model/config"),
         setup=_corrupt("config", b"encoder:\n  num_hidden: \xca16\n")),
    Case("captioner-vocab-not-json", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "vocab", where=_file("model/vocab.trg.0.json"), setup=_corrupt("vocab.trg.0.json", b"\xff{")),
    Case("captioner-empty-params", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "params.best", where=_file("model/params.best"), setup=_corrupt("params.best", b"")),
    Case("captioner-params-not-mxnet", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "params.best", where=_file("model/params.best"),
         setup=_corrupt("params.best", b"cos\nsystem\n(S'touch pwned-by-params'\ntR."),
         check=lambda e, out: _not_run(e.tmp / "pwned-by-params")),
    Case("captioner-bad-json-line", "captioner",
         lambda e: e.captioner("--json-input", "--input", e.write("in.json", [
             json.dumps({"text": "img000.jpg.npy"}), "[" * 50000 + "]" * 50000, json.dumps({"text": 5})]),
             "--output", str(e.tmp / "out.txt")), 1, "nested too deeply", where=_line("in.json", 2),
         stderr_lines=3, outputs=["in.json", "out.txt"],
         check=lambda e, out: _lines_are(e.tmp / "out.txt", [True, False, False])),
    Case("captioner-non-utf8-line", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", b"img000.jpg.npy\nimg\xff1.npy\nimg002.jpg.npy\n"),
                               "--output", str(e.tmp / "out.txt")), 1, "not UTF-8", where=_line("in.list", 2),
         stderr_lines=2, outputs=["in.list", "out.txt"],
         check=lambda e, out: _lines_are(e.tmp / "out.txt", [True, False, True])),
    Case("captioner-path-escapes-root", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", ["../escape.npy"]), "--output",
                               str(e.tmp / "out.txt")), 1, "leaves the root folder", where=_line("in.list", 1),
         stderr_lines=2, outputs=["in.list", "out.txt"]),
    Case("captioner-bad-image-line", "captioner",
         lambda e: ["--models", str(e.model), "--source-root", str(e.images), "--use-cpu", "--quiet",
                    "--extract-image-features", "--image-encoder-model-path", e.cnn_prefix, "--image-encoder-layer",
                    e.cnn_layer, "--source-image-size", "3", "64", "64", "--num-workers", "0", "--batch-size", "2",
                    "--input", e.write("in.images", ["a.png", "broken.png", "sub/c.png"]),
                    "--output", str(e.tmp / "out.txt"), "--output-type", "json"], 1, "broken.png",
         where=_line("in.images", 2),
         setup=lambda e: (e.images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"),
         stderr_lines=2, outputs=["out.txt"], check=lambda e, out: _lines_are(e.tmp / "out.txt", [True, False, True])),
    Case("captioner-output-read-only", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", str(e.mount / "out.txt")), 1,
         "cannot write", where=lambda e: str(e.mount / "out.txt"), mount="readonly"),
    Case("captioner-output-disk-full", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", str(e.mount / "out.txt")), 1,
         "No space left on device", where=lambda e: str(e.mount / "out.txt"), mount="full"),
    Case("captioner-stdout-disk-full", "captioner", lambda e: e.captioner("--input", str(e.features_list)), 1,
         "standard output: cannot write (No space left on device)", stdout_file="/dev/full"),
    # --- lexical_constraints -----------------------------------------------------------------------------------
    Case("lexical-empty-path", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", ["a.npy\tdog", "\tcat"]), "--output", str(e.tmp / "c.json")], 1,
         "empty path", where=_line("c.tsv", 2), outputs=["c.tsv"]),
    Case("lexical-non-utf8", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", b"a.npy\tdog\nb.npy\tc\xe9t\n"), "--output", str(e.tmp / "c.json")],
         1, "not UTF-8", where=_line("c.tsv", 2), outputs=["c.tsv"]),
    Case("lexical-output-is-folder", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", ["a.npy\tdog"]), "--output", e.folder("c.json")], 1, "is a folder",
         where=_file("c.json"), outputs=["c.tsv"]),
    Case("lexical-output-read-only", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", ["a.npy\tdog"]), "--output", str(e.mount / "c.json")], 1,
         "cannot write", where=lambda e: str(e.mount / "c.json"), mount="readonly", outputs=["c.tsv"]),
    Case("lexical-output-disk-full", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", ["a%05d.npy\tdog runs" % i for i in range(2000)]),
                    "--output", str(e.mount / "c.json")], 1, "No space left on device",
         where=lambda e: str(e.mount / "c.json"), mount="full", outputs=["c.tsv"]),
    # --- visualize ---------------------------------------------------------------------------------------------
    Case("visualize-missing-image", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", ["a.png", "nope.png"]),
                    "--prediction", e.write("v.pred", ["a dog", "a cat"]), "--save-to-folder", str(e.tmp / "pages"),
                    "--quiet"], 1, "not found", where=_line("v.images", 2), outputs=["v.images", "v.pred"]),
    Case("visualize-path-escapes-root", "visualize",
         lambda e: ["--image-root", str(e.images / "sub"), "--source", e.write("v.images", ["c.png", "../a.png"]),
                    "--prediction", e.write("v.pred", ["a dog", "a cat"]), "--save-to-folder", str(e.tmp / "pages"),
                    "--quiet"], 1, "leaves the root folder", where=_line("v.images", 2),
         outputs=["v.images", "v.pred"]),
    Case("visualize-symlink-out-of-root", "visualize",
         lambda e: ["--image-root", str(e.tmp / "root"), "--source", e.write("v.images", ["link.png"]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", str(e.tmp / "pages"),
                    "--quiet"], 1, "points out of the root folder", where=_line("v.images", 1),
         setup=lambda e: (e.folder("root"), os.symlink(e.images / "a.png", e.tmp / "root" / "link.png"))),
    Case("visualize-absolute-path", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", [str(e.images / "a.png")]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", str(e.tmp / "pages"),
                    "--quiet"], 1, "absolute path", where=_line("v.images", 1), outputs=["v.images", "v.pred"]),
    Case("visualize-non-utf8-prediction", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", ["a.png", "b.png"]),
                    "--prediction", e.write("v.pred", b"a dog\na c\xe0t\n"), "--save-to-folder",
                    str(e.tmp / "pages"), "--quiet"], 1, "not UTF-8", where=_line("v.pred", 2),
         outputs=["v.images", "v.pred"]),
    Case("visualize-folder-is-a-file", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", ["a.png"]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", e.write("pages", ["x"]),
                    "--quiet"], 1, "is not a folder", where=_file("pages"), outputs=["v.images", "v.pred", "pages"]),
    Case("visualize-folder-read-only", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", ["a.png"]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", str(e.mount), "--quiet"],
         1, "cannot write", where=lambda e: str(e.mount), mount="readonly", outputs=["v.images", "v.pred"]),
    Case("visualize-disk-full", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", ["a.png", "b.png"]),
                    "--prediction", e.write("v.pred", ["a dog", "a cat"]), "--save-to-folder", str(e.mount),
                    "--quiet"], 1, "No space left on device", where=lambda e: str(e.mount / "page_0001.png"),
         mount="full", outputs=["v.images", "v.pred"]),
    Case("visualize-empty-input", "visualize",
         lambda e: ["--image-root", str(e.images), "--source", e.write("v.images", []),
                    "--prediction", e.write("v.pred", []), "--save-to-folder", str(e.tmp / "pages"),
                    "--html", str(e.tmp / "report"), "--quiet"], 0, "", stderr_lines=0,
         outputs=["v.images", "v.pred"], check=_no_output_lines),
    # --- evaluate ----------------------------------------------------------------------------------------------
    Case("evaluate-line-mismatch", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", ["a dog", "a cat"]), "--references", e.write("r.txt", ["a dog"]),
                    "--metrics", "bleu", "--quiet"], 1, "line-aligned", where=_file("r.txt"),
         outputs=["h.txt", "r.txt"], check=_no_output_lines),
    Case("evaluate-non-utf8", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", b"a dog\n\x93a cat\x94\n"), "--references",
                    e.write("r.txt", ["a dog", "a cat"]), "--metrics", "bleu", "--quiet"], 1, "not UTF-8",
         where=_line("h.txt", 2), outputs=["h.txt", "r.txt"], check=_no_output_lines),
    Case("evaluate-empty-reference-line", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", ["a dog", "a cat"]), "--references",
                    e.write("r.txt", ["a dog", ""]), "--metrics", "bleu", "--quiet"], 1, "no reference caption",
         where=_line("r.txt", 2), outputs=["h.txt", "r.txt"], check=_no_output_lines),
    Case("evaluate-empty-input", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", []), "--references", e.write("r.txt", []), "--quiet"], 0, "",
         stderr_lines=0, outputs=["h.txt", "r.txt"], check=_no_output_lines),
    Case("evaluate-stdout-disk-full", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", ["a dog"]), "--references", e.write("r.txt", ["a dog"]),
                    "--metrics", "bleu", "--quiet"], 1, "standard output: cannot write (No space left on device)",
         subprocess=True, stdout_file="/dev/full", outputs=["h.txt", "r.txt"]),
    # --- average ----------------------------------------------------------------------------------------------
    Case("average-metric-not-recorded", "average",
         lambda e: [str(e.tmp / "model"), "--metric", "cider", "--output", str(e.tmp / "avg.params"), "--quiet"], 1,
         "no checkpoint with both a cider-val value", where=_file("model/metrics"),
         setup=_checkpoints({"metrics": "1\tperplexity-val=30.5\n", "params.00001": "model"}), outputs=["model/*"]),
    Case("average-bad-metrics-line", "average",
         lambda e: [str(e.tmp / "model"), "--output", str(e.tmp / "avg.params"), "--quiet"], 1, "not key=value",
         where=_line("model/metrics", 2), outputs=["model/*"],
         setup=_checkpoints({"metrics": "1\tperplexity-val=30.5\n2\tperplexity-val\n", "params.00001": "model"})),
    Case("average-corrupt-params", "average",
         lambda e: [str(e.tmp / "model/params.00001"), e.write("junk.params", b"\x12\x01" * 40), "--output",
                    str(e.tmp / "avg.params"), "--quiet"], 1, "cannot load the parameters",
         where=_file("junk.params"), setup=_checkpoints({"params.00001": "model"}), outputs=["model/*", "junk.params"]),
    Case("average-different-shapes", "average",
         lambda e: [str(e.tmp / "model/params.00001"), str(e.tmp / "model/params.00002"), "--output",
                    str(e.tmp / "avg.params"), "--quiet"], 1, "has shape (3,)", where=_file("model/params.00002"),
         setup=_checkpoints({"params.00001": {"w": 2}, "params.00002": {"w": 3}}), outputs=["model/*"]),
    Case("average-output-is-an-input", "average",
         lambda e: [str(e.tmp / "model/params.00001"), str(e.tmp / "model/params.00002"), "--output",
                    str(e.tmp / "model/params.00002"), "--quiet"], 1, "is the same file as the checkpoint",
         setup=_checkpoints({"params.00001": "model", "params.00002": "model"}), outputs=["model/*"]),
    # --- extract_features (H2's fixes) ------------------------------------------------------------------------
    # extraction is resumable: complete files of a failed run (CNN copy, sidecar, features) may stay
    Case("extract-missing-image", "extract_features", lambda e: e.extract(e.write("x.images", ["a.png", "nope.png"])),
         1, "nope.png", where=_line("x.images", 2), outputs=["x.images", "out/*"]),
    Case("extract-path-escapes-root", "extract_features",
         lambda e: e.extract(e.write("x.images", ["a.png", "../a.png"])), 1, "leaves the root folder",
         where=_line("x.images", 2), outputs=["x.images"]),
    Case("extract-non-utf8-list", "extract_features", lambda e: e.extract(e.write("x.images", b"a.png\nb\xff.png\n")),
         1, "not UTF-8", where=_line("x.images", 2), outputs=["x.images"]),
    Case("extract-unknown-layer", "extract_features",
         lambda e: e.extract(e.write("x.images", ["a.png"]), "--image-encoder-layer", "stage4_unit2_conv9"), 1,
         "stage4_unit2_conv2", outputs=["x.images"]),
    Case("extract-name-collision", "extract_features",
         lambda e: e.extract(e.write("x.images", ["sub/c.png", "sub_c.png"])), 1, "sub_c.png",
         where=_line("x.images", 2), outputs=["x.images"],
         setup=lambda e: shutil.copy(e.images / "sub" / "c.png", e.images / "sub_c.png")),
    Case("extract-output-is-folder", "extract_features",
         lambda e: _replace(e.extract(e.write("x.images", ["a.png"])), "--output", e.folder("out/list.features")),
         1, "is a folder", where=_file("out/list.features"), outputs=["x.images"]),
    Case("extract-output-read-only", "extract_features",
         lambda e: _replace(_replace(e.extract(e.write("x.images", ["a.png"])), "--output-root", str(e.mount / "o")),
                            "--output", str(e.mount / "o" / "list.features")), 1, "cannot",
         where=lambda e: str(e.mount / "o"), mount="readonly", outputs=["x.images"]),
    Case("extract-output-disk-full", "extract_features",
         lambda e: _replace(_replace(e.extract(e.write("x.images", ["a.png", "b.png"])), "--output-root",
                                     str(e.mount)), "--output", str(e.mount / "list.features")), 1,
         "No space left on device", where=lambda e: str(e.mount), mount="full", outputs=["x.images"]),
    # --- train (H1's fixes) ------------------------------------------------------------------------------------
    Case("train-length-mismatch", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", ["a dog"] * 4)), 1, "t.captions",
         outputs=["t.captions"]),
    Case("train-empty-caption", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", ["a dog", "a cat", "", "a man", "a ball"])),
         1, "empty", where=_line("t.captions", 3), outputs=["t.captions"]),
    Case("train-non-utf8-captions", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", b"a dog\na cat\na m\xe4n\na\nb\n")), 1,
         "not UTF-8", where=_line("t.captions", 3), outputs=["t.captions"]),
    Case("train-path-escapes-root", "train",
         lambda e: e.train(e.write("t.features", ["img000.jpg.npy", "../img001.jpg.npy"]),
                           e.write("t.captions", ["a dog", "a cat"])), 1, "leaves the root",
         where=_line("t.features", 2), outputs=["t.features", "t.captions"]),
    Case("train-bad-optimizer-params", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", ["a dog", "a cat", "a man", "a b", "a c"]),
                           "--optimizer-params", "beta1:zero"), 1, "optimizer", outputs=["t.captions"]),
]


# --- data safety: outputs that are inputs, folders that are not ours, closed streams, partial output ---------------
FIVE_CAPTIONS = ["a dog", "a cat", "a man", "a b", "a c"]


def _feature_copy(e: Env) -> str:
    """tmp/feats: a copy of the feature folder (a --source-root the case may try to destroy)."""
    shutil.copytree(e.feats, e.tmp / "feats")
    return str(e.tmp / "feats")


def _train_into(e: Env, output: str, *args: str) -> List[str]:
    """``train`` writing into ``output`` (features of tmp/feats, captions tmp/t.captions)."""
    root = str(e.tmp / "feats") if (e.tmp / "feats").is_dir() else str(e.feats)
    argv = e.train(str(e.features_list), e.write("t.captions", FIVE_CAPTIONS), *args)
    for flag, value in (("--output", output), ("--source-root", root), ("--validation-source-root", root)):
        argv = _replace(argv, flag, value)
    return argv


def _foreign_folder(e: Env) -> None:
    e.write("trained/precious.txt", ["a user's notes"])
    e.write("trained/sub/kept.txt", ["more"])


def _huge_features(e: Env) -> None:
    """tmp/hf: two good feature files and one of finite but huge values (1e38)."""
    import numpy as np
    from .test_captioner import FEATURE_SHAPE as shape
    (e.tmp / "hf").mkdir()
    for name in ("img000.jpg.npy", "img001.jpg.npy"):
        shutil.copy(e.feats / name, e.tmp / "hf" / name)
    np.save(e.tmp / "hf" / "huge.npy", np.full(shape, 1e38, dtype=np.float32))
    nan = np.ones(shape, dtype=np.float32)
    nan[0, 0, 0] = np.nan
    np.save(e.tmp / "hf" / "nan.npy", nan)


def _strict_json_lines(path: Path, captioned: Sequence[bool]) -> None:
    """Every line is JSON without NaN or Infinity (Python would accept them; JSON does not)."""
    def refuse(constant: str) -> None:
        raise AssertionError("%s in %s" % (constant, path))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [bool(line) and bool(json.loads(line, parse_constant=refuse).get("translation")) for line in lines] \
        == list(captioned)


def _non_cnn_onnx(e: Env) -> None:
    """tmp/flat.onnx: a graph without feature maps (it flattens its input)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Flatten", ["data"], ["flat"])], "flat",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 3 * 64 * 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(e.tmp / "flat.onnx"))


def _permuted_vocab(e: Env, changes: dict) -> None:
    """tmp/model with some ids of its vocabulary changed."""
    folder = e.model_copy()
    vocab = json.loads((folder / "vocab.trg.0.json").read_text(encoding="utf-8"))
    vocab.update(changes)
    (folder / "vocab.trg.0.json").write_text(json.dumps(vocab), encoding="utf-8")


def _absent(*names: str) -> Callable[[Env, str], None]:
    def check(e: Env, stdout: str) -> None:
        assert not [n for n in names if (e.tmp / n).exists()], sorted(_files(e.tmp))
    return check


SAFETY_CASES: List[Case] = [
    Case("train-overwrite-output-is-source-root", "train",
         lambda e: _train_into(e, _feature_copy(e), "--overwrite-output"), 1, "--source-root",
         where=_file("feats"), outputs=["t.captions"], not_in_stderr=["pass --overwrite-output"]),
    Case("train-overwrite-output-holds-params", "train",
         lambda e: _train_into(e, str(e.model_copy()), "--overwrite-output", "--params",
                               str(e.tmp / "model" / "params.best")), 1, "holds inputs of this run",
         where=_file("model"), outputs=["t.captions"]),
    Case("train-overwrite-foreign-folder", "train",
         lambda e: _train_into(e, str(e.tmp / "trained"), "--overwrite-output"), 1,
         "holds files training did not write (precious.txt, sub)", where=_file("trained"), setup=_foreign_folder,
         outputs=["t.captions"]),
    Case("train-foreign-folder-no-overwrite-hint", "train",
         lambda e: _train_into(e, str(e.tmp / "trained")), 1, "nothing in it is removed or replaced",
         where=_file("trained"), setup=_foreign_folder, outputs=["t.captions"], not_in_stderr=["--overwrite-output"]),
    Case("captioner-output-is-input", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", ["img000.jpg.npy"]), "--output", str(e.tmp / "in.list")),
         1, "is the same file as --input", where=_file("in.list")),
    Case("captioner-output-is-input-by-link", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", ["img000.jpg.npy"]), "--output", str(e.tmp / "link")),
         1, "is the same file as --input", where=_file("link"),
         setup=lambda e: os.symlink("in.list", e.tmp / "link")),
    Case("captioner-output-is-input-by-hard-link", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", ["img000.jpg.npy"]), "--output",
                               str(e.tmp / "sub" / ".." / "hard")), 1, "is the same file as --input",
         setup=lambda e: (e.folder("sub"), os.link(e.write("in.list", ["img000.jpg.npy"]), e.tmp / "hard"))),
    Case("captioner-output-is-a-model-file", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", str(e.tmp / "model" / "vocab.trg.0.json"))
         + ["--models", str(e.tmp / "model")], 1, "is the same file as --models",
         setup=lambda e: e.model_copy(), outputs=["model/*"]),
    Case("captioner-output-into-the-model-folder-again", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--output", str(e.tmp / "model" / "dev.hyp"))
         + ["--models", str(e.tmp / "model")], 0, "", stderr_lines=0, setup=lambda e: (e.model_copy(), e.write("model/dev.hyp", ["old"])),
         outputs=["model/*"], replaced=["model/dev.hyp"],
         check=lambda e, out: _lines_are(e.tmp / "model" / "dev.hyp", [True] * 5)),
    Case("extract-output-is-input", "extract_features",
         lambda e: _replace(e.extract(e.write("x.images", ["a.png"])), "--output", str(e.tmp / "x.images")), 1,
         "is the same file as --input", where=_file("x.images"), check=_absent("out")),
    Case("extract-output-folder-not-created", "extract_features",
         lambda e: _replace(e.extract(e.write("x.images", ["a.png"])), "--output", e.folder("listdir")), 1,
         "is a folder", where=_file("listdir"), check=_absent("out")),
    Case("lexical-output-is-input", "lexical_constraints",
         lambda e: ["--input", e.write("c.tsv", ["a.npy\tdog"]), "--output", str(e.tmp / "." / "c.tsv")], 1,
         "is the same file as --input", where=_file("c.tsv")),
    Case("average-output-is-a-hard-link-to-an-input", "average",
         lambda e: [str(e.tmp / "model/params.00001"), str(e.tmp / "model/params.00002"), "--output",
                    str(e.tmp / "avg.params")], 1, "is the same file as", where=_file("avg.params"),
         setup=lambda e: (_checkpoints({"params.00001": "model", "params.00002": "model"})(e),
                          os.link(e.tmp / "model" / "params.00002", e.tmp / "avg.params"))),
    Case("captioner-huge-features", "captioner",
         lambda e: _replace(e.captioner("--input", e.write("in.list", ["img000.jpg.npy", "huge.npy",
                                                                        "img001.jpg.npy"]),
                                        "--output", str(e.tmp / "out.json"), "--output-type", "json"),
                            "--source-root", str(e.tmp / "hf")), 1, "not finite", where=_line("in.list", 2),
         setup=_huge_features, stderr_lines=2, outputs=["out.json"],
         check=lambda e, out: _strict_json_lines(e.tmp / "out.json", [True, False, True])),
    Case("captioner-nan-features", "captioner",
         lambda e: _replace(e.captioner("--input", e.write("in.list", ["nan.npy", "img001.jpg.npy"]), "--batch-size",
                                        "2", "--output", str(e.tmp / "out.json"), "--output-type", "json"),
                            "--source-root", str(e.tmp / "hf")), 1, "NaN or infinite", where=_line("in.list", 1),
         setup=_huge_features, stderr_lines=2, outputs=["out.json"],
         check=lambda e, out: _strict_json_lines(e.tmp / "out.json", [False, True])),
    Case("captioner-length-penalty-nan", "captioner",
         lambda e: e.captioner("--input", str(e.features_list), "--length-penalty-alpha", "nan"), 2,
         "not a finite number", stderr_lines=None),
    Case("train-learning-rate-inf", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", FIVE_CAPTIONS), "--initial-learning-rate",
                           "inf"), 2, "not a finite number", stderr_lines=None, outputs=["t.captions"]),
    Case("train-optimizer-params-nan", "train",
         lambda e: e.train(str(e.features_list), e.write("t.captions", FIVE_CAPTIONS), "--optimizer-params",
                           "beta1:nan"), 2, "not a finite number", stderr_lines=None, outputs=["t.captions"]),
    Case("captioner-stdout-closed", "captioner", lambda e: e.captioner("--input", str(e.features_list)), 1,
         "standard output is closed", closed=[1]),
    Case("captioner-stdin-closed", "captioner", lambda e: e.captioner(), 1, "standard input is closed",
         closed=[0]),
    Case("evaluate-stdout-closed", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", ["a dog"]), "--references", e.write("r.txt", ["a dog"]),
                    "--metrics", "bleu", "--quiet"], 1, "standard output is closed", closed=[1],
         outputs=["h.txt", "r.txt"]),
    Case("evaluate-empty-hypotheses", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", []), "--references", e.write("r.txt", ["a dog", "a cat"]),
                    "--quiet"], 1, "no hypotheses", where=_file("h.txt"), outputs=["h.txt", "r.txt"],
         check=_no_output_lines),
    Case("extract-disk-full-during-cnn-copy", "extract_features",
         lambda e: _replace(_replace(e.extract(e.write("x.images", ["a.png"])), "--output-root", str(e.mount)),
                            "--output", str(e.mount / "list.features")), 1, "No space left on device",
         where=lambda e: str(e.mount / "cnn"), mount="almost-full", outputs=["x.images"]),
    Case("visualize-page-would-replace-an-image", "visualize",
         lambda e: ["--image-root", str(e.tmp / "pics"), "--source", e.write("v.images", ["page_0001.png"]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", str(e.tmp / "pics"),
                    "--quiet"], 1, "is the same file as --image-root", where=_file("pics/page_0001.png"),
         setup=lambda e: (e.folder("pics"), shutil.copy(e.images / "a.png", e.tmp / "pics" / "page_0001.png")),
         outputs=["v.images", "v.pred"]),
    Case("visualize-refused-leaves-no-folder", "visualize",
         lambda e: ["--image-root", str(e.tmp / "pics"), "--source", e.write("v.images", ["broken.png"]),
                    "--prediction", e.write("v.pred", ["a dog"]), "--save-to-folder", str(e.tmp / "new" / "pages"),
                    "--html", str(e.tmp / "new" / "report"), "--quiet"], 1, "cannot read image",
         where=_line("v.images", 1), setup=lambda e: e.write("pics/broken.png", b"\x89PNG\r\n\x1a\n broken"),
         outputs=["v.images", "v.pred"], check=_absent("new")),
    Case("import-onnx-not-a-cnn", "import_cnn",
         lambda e: ["--onnx", str(e.tmp / "flat.onnx"), "--output", str(e.tmp / "enc" / "flat"), "--image-size", "64",
                    "--quiet"], 1, "not a CNN image encoder", where=_file("flat.onnx"), setup=_non_cnn_onnx,
         check=_absent("enc")),
    Case("import-onnx-in-place-normalisation", "import_cnn",
         lambda e: ["--onnx", str(e.tmp / "flat.onnx"), "--output", str(e.tmp / "flat"), "--image-size", "64",
                    "--input-mean", "1", "2", "3", "--layers", "flat", "--quiet"], 1, "it is kept",
         where=_file("flat.onnx"), setup=_non_cnn_onnx),
    Case("import-bad-pth", "import_cnn",
         lambda e: [e.write("junk.pth", b"not a pth file"), "--output", str(e.tmp / "enc" / "sub" / "x"), "--quiet"],
         1, "junk.pth", outputs=["junk.pth"], check=_absent("enc")),
    Case("import-unknown-gluon", "import_cnn",
         lambda e: ["--gluon", "resnet9000", "--output", str(e.tmp / "enc" / "x"), "--quiet"], 1, "resnet9000",
         check=_absent("enc")),
    Case("config-yaml-error", "evaluate",
         lambda e: ["--config", e.write("c.yaml", ["metrics: [bleu", ""]), "--hypotheses", e.write("h.txt", ["a"]),
                    "--references", e.write("r.txt", ["a"])], 1, "cannot read", where=_file("c.yaml"),
         outputs=["c.yaml", "h.txt", "r.txt"], subprocess=True),
    Case("evaluate-nul-in-list", "evaluate",
         lambda e: ["--hypotheses", e.write("h.txt", b"a dog\na \x00cat\n"), "--references",
                    e.write("r.txt", ["a dog", "a cat"]), "--quiet"], 1, "NUL byte", where=_line("h.txt", 2),
         outputs=["h.txt", "r.txt"]),
    Case("captioner-nul-in-list", "captioner",
         lambda e: e.captioner("--input", e.write("in.list", b"img000.jpg.npy\nimg\x00001.jpg.npy\n"), "--output",
                               str(e.tmp / "out.txt")), 1, "NUL byte", where=_line("in.list", 2), stderr_lines=2,
         outputs=["out.txt"], check=lambda e, out: _lines_are(e.tmp / "out.txt", [True, False])),
    # a vocabulary whose special symbols moved, or whose ids are not 0..V-1 each once (SPEC section 2)
    Case("captioner-vocab-specials-permuted", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "<unk> must have id 1", where=_file("model/vocab.trg.0.json"),
         setup=lambda e: _permuted_vocab(e, {"<unk>": 4, "a": 1}), outputs=["model/*"]),
    Case("captioner-vocab-ids-not-a-permutation", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "the ids must be 0..", where=_file("model/vocab.trg.0.json"),
         setup=lambda e: _permuted_vocab(e, {"a": 5}), outputs=["model/*"]),
    Case("captioner-missing-version", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1, "missing",
         where=_file("model/version"), setup=lambda e: os.remove(e.model_copy() / "version"), outputs=["model/*"]),
    Case("captioner-bad-version", "captioner",
         lambda e: e.captioner("--input", str(e.features_list)) + ["--models", str(e.tmp / "model")], 1,
         "expected the captioning version", where=_file("model/version"),
         setup=_corrupt("version", b"made by hand\n"), outputs=["model/*"]),
]
CASES.extend(SAFETY_CASES)


def _replace(argv: List[str], flag: str, value: str) -> List[str]:
    """``argv`` with the value after ``flag`` replaced."""
    index = argv.index(flag)
    return argv[:index + 1] + [value] + argv[index + 2:]


def _lines_are(path: Path, captioned: Sequence[bool]) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and [bool(line) for line in lines[:-1]] == list(captioned)


# ---------------------------------------------------------------------------------------------------------------
# fixtures and the runner
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_env(tmp_path_factory, tiny_cnn) -> Tuple[Path, Path, Path, Path]:
    from PIL import Image
    base = tmp_path_factory.mktemp("bad_inputs")
    model = make_model_folder(base / "model")
    names = make_features(base / "feats", 5, shape=FEATURE_SHAPE)
    listing = base / "list.features"
    listing.write_text("".join(n + "\n" for n in names))
    images = base / "images"
    (images / "sub").mkdir(parents=True)
    for k, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        Image.new("RGB", (40 + 10 * k, 30), (200, 40 * k, 20)).save(images / name)
    return model, base / "feats", listing, images


@contextlib.contextmanager
def tmpfs(path: Path, kind: str) -> Iterator[Path]:
    """A small tmpfs at ``path``: full (``kind="full"``) or read-only; skips the test where mounting is not
    allowed (not root)."""
    path.mkdir()
    options = "size=256k" + (",ro" if kind == "readonly" else "")
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the %s-disk case is skipped" % kind)
    try:
        if kind == "full":
            _fill(path)
        elif kind == "almost-full":   # 48 KiB left: room for the tiny CNN's graph (38 KB), not its parameters
            _fill(path)
            os.truncate(path / "filler", os.path.getsize(path / "filler") - 48 * 1024)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def run_tool(tool: str, argv: List[str], stdout_file: Optional[str] = None) -> Tuple[Optional[int], str, str]:
    """``captioning.<tool>.main(argv)`` in this process: (exit code or None after an exception, stdout,
    stderr with any traceback). ``stdout_file``: standard output goes to that file instead (e.g. /dev/full)."""
    module = importlib.import_module("captioning." + tool)
    out, err = io.StringIO(), io.StringIO()
    code: Optional[int] = 0
    with contextlib.ExitStack() as stack:
        stdout = stack.enter_context(open(stdout_file, "w")) if stdout_file else out
        stack.enter_context(contextlib.redirect_stdout(stdout))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            module.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - a crash is what this suite looks for
            code = None
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue()


def run_subprocess(tool: str, argv: List[str], stdout_file: Optional[str],
                   closed: Sequence[int] = ()) -> Tuple[int, str, str]:
    """``python -m captioning.<tool> argv``; ``closed``: the standard streams it starts without (as ``<&-`` and
    ``>&-`` in a shell)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

    def close_streams() -> None:
        for fd in closed:
            os.close(fd)
    with open(stdout_file or os.devnull, "w") as stdout:
        proc = subprocess.run([sys.executable, "-m", "captioning." + tool] + argv, cwd=REPO, env=env,
                              stdout=stdout if stdout_file or 1 in closed else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              preexec_fn=close_streams if closed else None)
    return proc.returncode, proc.stdout or "", proc.stderr


def _files(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _checksums(*folders: Optional[Path]) -> Dict[str, str]:
    """sha256 of every file (links followed) under ``folders``, by absolute path: the inputs and the files that
    were there before a run, which it must leave byte-identical."""
    return {str(folder / name): _checksum(folder / name) for folder in folders if folder is not None
            for name in _files(folder)}


def _checksum(path: Path) -> str:
    if not path.is_symlink() and not path.exists():
        return "removed"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "a dangling link"


def _changed(before: Dict[str, str]) -> List[str]:
    return sorted("%s (%s)" % (path, _checksum(Path(path))) for path, sum_ in before.items()
                  if _checksum(Path(path)) != sum_)


def _params(cases: Sequence[Case]) -> List:
    marks = {c.id: [pytest.mark.xfail(strict=True, reason=c.waiting_for)] if c.waiting_for else [] for c in cases}
    return [pytest.param(c, id=c.id, marks=marks[c.id]) for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input(case: Case, shared_env, tiny_cnn, tmp_path):
    model, feats, listing, images = shared_env
    env = Env(tmp=tmp_path / "case", model=model, feats=feats, features_list=listing, cnn_prefix=tiny_cnn.prefix,
              cnn_layer=tiny_cnn.layer, images=images)
    env.tmp.mkdir()
    with contextlib.ExitStack() as stack:
        if case.mount:
            env.mount = stack.enter_context(tmpfs(tmp_path / "mnt", case.mount))
        if case.setup:
            case.setup(env)
        argv = case.argv(env)   # writes the case's input files
        before = set(_files(env.tmp))
        mounted_before = set(_files(env.mount)) if env.mount else set()
        sums = _checksums(env.tmp, env.mount, listing.parent)   # the case's files and the shared inputs
        if case.subprocess or case.closed:
            code, stdout, stderr = run_subprocess(case.tool, argv, case.stdout_file, case.closed)
        else:
            code, stdout, stderr = run_tool(case.tool, argv, case.stdout_file)
        assert "Traceback" not in stderr, stderr
        assert code == case.code, stderr
        for name in case.replaced:
            sums.pop(str(env.tmp / name), None)
        assert not _changed(sums), "inputs or pre-existing files changed: %s" % _changed(sums)
        for text in case.not_in_stderr:
            assert text not in stderr, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        if case.stderr_lines is None:   # argparse: its usage, then one error line
            lines = lines[-1:]
        assert len(lines) == (1 if case.stderr_lines is None else case.stderr_lines), stderr
        if case.error:
            matching = [line for line in lines if case.error in line]
            assert matching, stderr
            if case.where is not None:
                assert any(case.where(env) in line for line in matching), (case.where(env), stderr)
        after = set(_files(env.tmp))
        assert not [f for f in after if f.endswith(".tmp")], "temporary files left behind: %s" % sorted(after)
        new = [f for f in after - before if not any(fnmatch.fnmatch(f, pattern) for pattern in case.outputs)]
        assert not new, "partial output left behind: %s" % sorted(new)
        if env.mount:
            assert set(_files(env.mount)) == mounted_before, "partial output left on the tmpfs"
        if case.check:
            case.check(env, stdout)


def test_catalogue_covers_every_tool():
    tools = {c.tool for c in CASES}
    assert tools >= {"extract_features", "train", "captioner", "visualize", "evaluate", "lexical_constraints",
                     "average"}
