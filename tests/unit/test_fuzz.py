"""Fuzzing the readers (issue 11): a seeded generator throws random bytes, random JSON and random corruptions of a
model folder (config, vocabulary, metrics, args.yaml, training_state/state.json, params) at every function that
reads a file a user may have been sent, and at the captioner's line parser. The only exception allowed is
`utils.CaptioningError` (a one-line message for the user); anything else is a traceback and fails the test, which
prints the seed and the input that caused it.

Each target runs for at most `BUDGET_S` seconds (and `ITERATIONS` inputs), so the whole file takes a few seconds;
``FUZZ_SEED=N`` and ``FUZZ_ITERATIONS=N`` run another or a longer campaign.
"""
import importlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, List

import numpy as np
import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
from captioning import utils
from captioning.utils import CaptioningError

SEED = int(os.environ.get("FUZZ_SEED", "20261129"))
ITERATIONS = int(os.environ.get("FUZZ_ITERATIONS", "60"))
BUDGET_S = 1.0


# ---------------------------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------------------------

def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: nested containers, strings with odd characters, huge and tiny numbers."""
    kinds = ["str", "int", "float", "bool", "null", "huge"] + (["list", "dict"] * 2 if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(["a", "dog", " ", "\t", "\n", "\u00e9", "\u2028", "\\", '"', "../", "/", "\x00",
                                   "<unk>", "</s>", "{", "]"]) for _ in range(rng.randint(0, 6)))
    if kind == "int":
        return rng.choice([0, -1, 1, 3, 2 ** 31, -2 ** 63, 10 ** 30])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e-320, 3.0, float(rng.random())])
    if kind == "huge":
        return rng.choice([10 ** 400, -10 ** 400, 1e308 * 10])   # 1e309 is inf: written as Infinity
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["text", "constraints", "avoid", "vocab_size", "features_shape", "image_shape", "cnn",
                        "format_version", "num_updates", "a", ""]): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def json_text(rng: random.Random, value: Any, deep: bool = True) -> str:
    """``value`` as JSON; sometimes (``deep``) wrapped in more brackets than Python's recursion limit. YAML
    readers get ``deep=False``: PyYAML needs seconds for such a line before it fails (cleanly)."""
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
    if deep and rng.random() < 0.1:
        depth = rng.randint(1000, 3000)   # past Python's recursion limit
        text = "[" * depth + text + "]" * rng.choice([0, depth])
    return text


def random_bytes(rng: random.Random) -> bytes:
    """Random bytes: binary noise, text with odd line ends, invalid UTF-8, NUL bytes."""
    choice = rng.random()
    if choice < 0.3:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    words = ["a", "dog", "img.png", "x.npy", "../up", "/abs", "\t", "\r", "\n", "\r\n", "\x00", "\xff", "=", "1",
             "nan", "-3", "key=value", "|||", "\u00e9"]
    text = "".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
    data = text.encode("utf-8", errors="surrogatepass")
    if choice < 0.6:
        position = rng.randint(0, len(data))
        data = data[:position] + bytes([rng.choice([0x80, 0xc3, 0xff, 0xfe, 0xed])]) + data[position:]
    return data


def mutate(rng: random.Random, data: bytes, deep: bool = True) -> bytes:
    """A corruption of ``data``: truncated, bytes flipped or inserted, emptied, replaced by noise or random JSON."""
    choice = rng.randrange(7)
    if choice == 0 or not data:
        return b""
    if choice == 1:
        return data[:rng.randrange(len(data))]
    if choice == 2:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.getrandbits(8)
        return bytes(out)
    if choice == 3:
        position = rng.randrange(len(data))
        return data[:position] + random_bytes(rng) + data[position:]
    if choice == 4:
        return random_bytes(rng)
    if choice == 5:
        return json_text(rng, random_json(rng), deep).encode("utf-8")
    lines = data.split(b"\n")   # swap a value for another type (YAML and JSON alike)
    k = rng.randrange(len(lines))
    if b":" in lines[k]:
        key = lines[k].split(b":", 1)[0]
        lines[k] = key + b": " + json.dumps(random_json(rng)).encode("utf-8")
    return b"\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------------------------

def fuzz(name: str, make_input: Callable[[random.Random], Any], target: Callable[[Any], Any]) -> int:
    """Run ``target`` on generated inputs for at most `BUDGET_S` seconds; any exception other than
    `CaptioningError` fails with the seed, iteration and input."""
    rng = random.Random("%d:%s" % (SEED, name))
    start = time.monotonic()
    done = 0
    for iteration in range(ITERATIONS):
        if done and time.monotonic() - start > BUDGET_S and "FUZZ_ITERATIONS" not in os.environ:
            break
        value = make_input(rng)
        try:
            target(value)
        except CaptioningError:   # a message for the user (utils.run_cli prints it as one line)
            pass
        except BaseException as e:  # noqa: BLE001 - this is what the test looks for
            shown = repr(value)
            raise AssertionError("%s: %s on iteration %d (FUZZ_SEED=%d) with input %s"
                                 % (name, type(e).__name__, iteration, SEED, shown[:300] + "..." * (len(shown) > 300))
                                 ) from e
        done += 1
    return done


def lookup(module: str, name: str) -> Callable:
    """``captioning.<module>.<name>``; the test is skipped (not failed) while another engineer renames it."""
    target = getattr(importlib.import_module("captioning." + module), name, None)
    if target is None:
        pytest.skip("captioning.%s.%s is gone: update the fuzz target" % (module, name))
    return target


def file_target(tmp_path: Path, reader: Callable[[str], Any], name: str = "input") -> Callable[[bytes], Any]:
    path = tmp_path / name

    def run(data: bytes) -> Any:
        path.write_bytes(data)
        return reader(str(path))
    return run


# ---------------------------------------------------------------------------------------------------------------
# line and text readers
# ---------------------------------------------------------------------------------------------------------------

def test_parse_input_random_json_and_text():
    from captioning.inference import parse_input

    def make(rng: random.Random) -> str:
        if rng.random() < 0.7:
            return json_text(rng, random_json(rng) if rng.random() < 0.5 else
                             {"text": random_json(rng), "constraints": random_json(rng), "avoid": random_json(rng),
                              "id": random_json(rng)})
        return random_bytes(rng).decode("utf-8", errors="replace")

    def target(line: str) -> None:
        for json_input in (True, False):
            item = parse_input(line, 3, json_input, "in, line 3")
            assert item.error is None or item.error.startswith("in, line 3: ")
            if item.error is None:
                assert isinstance(item.text, str) and item.text
                assert all(isinstance(p, str) for p in item.constraints + item.avoid)
                json.dumps(item.extra)   # the json output type can write it back
    assert fuzz("parse_input", make, target) > 5


def test_captioner_stream_random_bytes():
    """Random lines through the captioner's stream reader: every line gives exactly one output, in order."""
    from tests.unit.test_inference import make_captioner
    captioner = make_captioner(batch_size=3, chunk_size=5)

    def make(rng: random.Random) -> List[bytes]:
        lines = [random_bytes(rng) + b"\n" for _ in range(rng.randint(1, 4))]
        lines += [json_text(rng, {"text": "f%d" % rng.randrange(40), "avoid": random_json(rng)}).encode() + b"\n"]
        return lines

    def target(lines: List[bytes]) -> None:
        outputs = list(captioner.caption_stream(lines, "in", json_input=True))
        assert [o.sentence_id for o in outputs] == list(range(1, len(lines) + 1))
    assert fuzz("caption_stream", make, target) > 2


def test_read_lines_random_bytes(tmp_path):
    def target(data: bytes) -> None:
        path = tmp_path / "lines.txt"
        path.write_bytes(data)
        try:
            lines = utils.read_lines(str(path))
        except CaptioningError as e:
            assert str(e).startswith(str(path) + ", line ") and ("not UTF-8" in str(e) or "NUL byte" in str(e))
            raise
        assert all("\n" not in line and "\r" not in line for line in lines)
    assert fuzz("read_lines", random_bytes, target) > 5


@pytest.mark.parametrize("module,name,call", [
    ("visualize", "read_metrics", lambda f, p: f(p)),
    ("visualize", "parse_alignment", lambda f, p: f(Path(p).read_bytes().decode("utf-8", "replace"), "a, line 1")),
    ("evaluate", "read_evaluation_inputs", lambda f, p: f(p, [p])),
    ("lexical_constraints", "make_json_line", lambda f, p: f(Path(p).read_bytes().decode("utf-8", "replace"), False)),
    ("vocab", "load_vocab", lambda f, p: f(p)),
    ("features", "read_feature_list", lambda f, p: f(p)),
    ("train", "read_args", lambda f, p: f(p)),
    ("training_state", "read_json", lambda f, p: f(p)),
])
def test_file_readers_random_bytes_and_json(module, name, call, tmp_path):
    function = lookup(module, name)

    def make(rng: random.Random) -> bytes:
        return random_bytes(rng) if rng.random() < 0.5 else \
            json_text(rng, random_json(rng), deep=name != "read_args").encode("utf-8")
    assert fuzz(name, make, file_target(tmp_path, lambda p: call(function, p))) > 5


def test_feature_files_random_bytes(tmp_path):
    from captioning import features
    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 3, 3), dtype=np.float32))
    data = good.read_bytes()
    target = file_target(tmp_path, lambda p: features.load_feature(p, (2, 3, 3), "list, line 1"), "f.npy")
    assert fuzz("load_feature", lambda rng: mutate(rng, data), target) > 5


def test_feature_sidecars_random_bytes(tmp_path):
    from captioning import constants as C
    from captioning import features
    root = tmp_path / "feats"
    root.mkdir()

    def target(case) -> None:
        name, data = case
        for other in (C.IMAGE_FEATURE_SIZES_JSON, C.IMAGE_FEATURE_SIZES_PKL):
            if (root / other).exists():
                (root / other).unlink()
        (root / name).write_bytes(data)
        features.read_feature_sizes(str(root))

    def make(rng: random.Random):
        if rng.random() < 0.5:
            return C.IMAGE_FEATURE_SIZES_JSON, json_text(rng, {"image_shape": random_json(rng),
                                                               "features_shape": random_json(rng),
                                                               "cnn": random_json(rng)}).encode("utf-8")
        import pickle
        legit = pickle.dumps({"image_shape": (3, 224, 224), "features_shape": (2048, 7, 7)}, protocol=2)
        return C.IMAGE_FEATURE_SIZES_PKL, mutate(rng, legit)
    assert fuzz("read_feature_sizes", make, target) > 5


# ---------------------------------------------------------------------------------------------------------------
# model folders
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny model folder with the files a training run writes beside the model (metrics, args.yaml,
    training_state/state.json), made once."""
    from tests.integration.test_captioner import make_model_folder
    folder = make_model_folder(tmp_path_factory.mktemp("fuzz") / "model")
    (folder / "metrics").write_text("1\tperplexity-train=20.5\tperplexity-val=19.0\tlearning-rate=0.0003\n"
                                    "2\tperplexity-train=15.1\tperplexity-val=14.2\tlearning-rate=0.0003\n")
    (folder / "args.yaml").write_text("batch_size: 64\nsource_root: feats\noutput: model\n")
    (folder / "training_state").mkdir()
    (folder / "training_state" / "state.json").write_text(json.dumps(
        {"num_updates": 2, "epoch": 0, "checkpoint": 2, "best_checkpoint": 2, "best_metric": 14.2,
         "num_not_improved": 0, "samples": 128}))
    return folder


CORRUPTIBLE = ["config", "version", "vocab.trg.0.json", "params.best", "metrics", "args.yaml",
               "training_state/state.json"]


def _load_everything(folder: Path) -> None:
    """Every reader of a model folder a user may have been sent."""
    from captioning import model as model_module
    from captioning import training_state, visualize
    from captioning.train import read_args
    model_module.load_model(str(folder))
    visualize.read_metrics(str(folder / "metrics"))
    read_args(str(folder / "args.yaml"))
    training_state.read_json(str(folder / "training_state" / "state.json"))


def test_model_folder_corruptions(model_folder, tmp_path):
    lookup("train", "read_args")
    lookup("training_state", "read_json")
    original = {name: (model_folder / name).read_bytes() for name in CORRUPTIBLE}
    work = tmp_path / "model"
    shutil.copytree(model_folder, work)
    _load_everything(work)   # the intact folder loads

    def make(rng: random.Random):
        name = rng.choice(CORRUPTIBLE)
        data = original[name]
        if name == "params.best":   # never flip bytes inside an array header: MXNet would try the allocation
            data = rng.choice([b"", data[:rng.randrange(len(data))], random_bytes(rng),
                               b"cos\nsystem\n(S'touch pwned-by-fuzz'\ntR.", data + random_bytes(rng)])
        else:
            data = mutate(rng, data, deep=name.endswith(".json"))
        return name, data

    def target(case) -> None:
        name, data = case
        for other in CORRUPTIBLE:
            (work / other).write_bytes(original[other])
        (work / name).write_bytes(data)
        _load_everything(work)
    assert fuzz("model folder", make, target) > 5
    assert not Path("pwned-by-fuzz").exists()


# ---------------------------------------------------------------------------------------------------------------
# file-system shapes: outputs that are inputs, folders where files are expected, closed standard streams
# ---------------------------------------------------------------------------------------------------------------

def _fs_argv(tool: str, model: Path, tmp: Path, inp: str, out: str) -> List[str]:
    """A command of ``tool`` reading ``inp`` and writing ``out``."""
    if tool == "lexical_constraints":
        return ["--input", inp, "--output", out, "--quiet"]
    if tool == "captioner":
        return ["--models", str(model), "--input", inp, "--output", out, "--use-cpu", "--quiet"]
    if tool == "extract_features":
        return ["--image-root", str(tmp), "--input", inp, "--output-root", str(tmp / "features"), "--output", out,
                "--image-encoder-model-path", str(tmp / "no-cnn"), "--image-encoder-layer", "x", "--use-cpu",
                "--quiet"]
    return [str(model / "params.best"), inp, "--output", out, "--quiet"]    # average


def _fs_case(rng: random.Random, tmp: Path) -> tuple:
    """(tool, input path, output path): the output is the input under another name, or a folder; or the input
    is a folder."""
    tool = rng.choice(["lexical_constraints", "captioner", "extract_features", "average"])
    inp = tmp / "input.txt"
    shape = rng.choice(["same", "dot", "symlink", "hardlink", "relative-link", "output-folder", "input-folder"])
    out = {"same": inp, "dot": tmp / "." / "input.txt", "symlink": tmp / "link", "hardlink": tmp / "hard",
           "relative-link": tmp / "sub" / ".." / "link", "output-folder": tmp / "folder",
           "input-folder": tmp / "out.txt"}[shape]
    return tool, shape, str(tmp / "folder" if shape == "input-folder" else inp), str(out)


def test_file_system_shapes(model_folder, tmp_path):
    """Same-file outputs (spelt with ./, .., symbolic and hard links) and folders given as files: every tool
    refuses with a one-line error, before any work, and the input stays byte-identical. (``average`` replaces a
    symbolic link given as --output, as ``--output MODEL/params.best`` does, and leaves its target alone.)"""
    import contextlib
    import io

    def make(rng: random.Random):
        return _fs_case(rng, tmp_path)

    def target(case) -> None:
        tool, shape, inp, out = case
        for name in ("input.txt", "link", "hard", "out.txt"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_path / name)
        for name in ("folder", "sub", "features"):
            (tmp_path / name).mkdir(exist_ok=True)
        data = b"a.png\tdog\n" if tool != "average" else (model_folder / "params.best").read_bytes()
        (tmp_path / "input.txt").write_bytes(data)
        os.symlink("input.txt", tmp_path / "link")
        os.link(tmp_path / "input.txt", tmp_path / "hard")
        module = importlib.import_module("captioning." + tool)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
            module.main(_fs_argv(tool, model_folder, tmp_path, inp, out))
        replaces_link = tool == "average" and shape in ("symlink", "relative-link")
        assert info.value.code == (0 if replaces_link else 1), (case, err.getvalue())
        assert (tmp_path / "input.txt").read_bytes() == data, case
        assert not (tmp_path / "features").exists() or not os.listdir(tmp_path / "features"), case
    assert fuzz("file-system shapes", make, target) > 5


@pytest.mark.parametrize("argv,closed,error", [
    (["lexical_constraints"], 0, "standard input is closed"),
    (["lexical_constraints", "--input", "{list}"], 1, "standard output is closed"),
    (["evaluate", "--hypotheses", "{list}", "--references", "{list}", "--metrics", "bleu"], 1,
     "standard output is closed"),
])
def test_closed_standard_streams(argv, closed, error, tmp_path):
    """A tool started without standard input or output (``<&-``, ``>&-``) says so in one line, exit status 1."""
    import subprocess
    import sys
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\tdog\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "captioning." + argv[0]] + [a.format(list=listing) for a in argv[1:]],
                          cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=lambda: os.close(closed))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and error in lines[0], proc.stderr
    assert listing.read_text() == "a.png\tdog\n"
