"""python -m captioning.captioner --models EXPORT in a process where MXNet cannot be imported: the same captions as
the MXNet captioner on the exported models, from features and from images, with the search's options, ensembles,
search processes, and the refusals that apply to exports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "model_format_2"

# the captioner's command line, run where `import mxnet` raises ImportError
NO_MXNET = ("import sys\nsys.modules['mxnet'] = None\nfrom captioning import captioner\ncaptioner.main(sys.argv[1:])\n"
            "assert sys.modules.get('mxnet') is None\n")


def run(argv, mxnet: bool, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "captioning.captioner"] if mxnet else [sys.executable, "-c", NO_MXNET]
    proc = subprocess.run(command + [str(a) for a in argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def export(model: Path, output: Path, *extra: str) -> Path:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "captioning.export_onnx", "--models", str(model), "--output",
                           str(output), *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output


def assert_same_outputs(got: str, expected: str) -> None:
    """The same captions line by line; scores (JSON numbers, tab-separated numbers) equal to 1e-4 (float32 sums in
    another order)."""
    def parts(line):
        try:
            value = json.loads(line)
        except ValueError:
            value = line.split("\t")
        return value

    def same(a, b):
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        try:
            return abs(float(a) - float(b)) <= 1e-4 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return a == b

    got_lines, expected_lines = got.splitlines(), expected.splitlines()
    assert len(got_lines) == len(expected_lines) and expected.strip()
    for a, b in zip(got_lines, expected_lines):
        assert same(parts(a), parts(b)), (a, b)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    return {name: export(DATA / name, folder / name) for name in ("rnn", "transformer")}


FEATURES = ["--input", DATA / "test.features", "--source-root", DATA / "features", "--batch-size", "3"]


@pytest.mark.parametrize("options", [
    ["--beam-size", "3"],
    ["--beam-size", "4", "--nbest-size", "3", "--output-type", "json"],
    ["--beam-size", "3", "--length-penalty-alpha", "0.6", "--no-repeat-ngram-size", "2", "--no-dangling-words",
     "--output-type", "translation_with_score"],
    ["--beam-size", "1", "--batch-size", "1"],
])
@pytest.mark.parametrize("name", ["rnn", "transformer"])
def test_exported_models_caption_features_as_the_mxnet_models(exports, name, options):
    expected = run(["--models", DATA / name] + FEATURES + options, mxnet=True).stdout
    got = run(["--models", exports[name]] + FEATURES + options, mxnet=False)
    assert_same_outputs(got.stdout, expected)
    assert "Loaded exported model" in got.stderr


def test_constraints_ensembles_and_search_processes_on_exports(exports, tmp_path):
    names = (DATA / "test.features").read_text().split()
    words = [w for w in json.loads((DATA / "rnn" / "vocab.trg.0.json").read_text()) if not w.startswith("<")]
    lines = [json.dumps({"text": n, "constraints": [words[i % 6]], "avoid": [words[6 + i % 6]]})
             for i, n in enumerate(names)]
    (tmp_path / "in.json").write_text("\n".join(lines) + "\n")
    common = ["--input", tmp_path / "in.json", "--json-input", "--source-root", DATA / "features", "--beam-size", "3"]
    expected = run(["--models", DATA / "rnn"] + common, mxnet=True).stdout
    assert_same_outputs(run(["--models", exports["rnn"]] + common, mxnet=False).stdout, expected)
    both = ["--beam-size", "3", "--ensemble-mode", "log_linear"]
    expected = run(["--models", DATA / "rnn", DATA / "transformer"] + FEATURES + both, mxnet=True).stdout
    assert_same_outputs(run(["--models", exports["rnn"], exports["transformer"]] + FEATURES + both,
                            mxnet=False).stdout, expected)
    processes = run(["--models", exports["rnn"], "--search-processes", "2"] + FEATURES + ["--beam-size", "3"],
                    mxnet=False).stdout
    assert_same_outputs(processes, run(["--models", DATA / "rnn"] + FEATURES + ["--beam-size", "3"], mxnet=True).stdout)
    sampled = [run(["--models", exports["rnn"], "--sample", "--seed", "5", "--nbest-size", "2"] + FEATURES,
                   mxnet=False).stdout for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0].strip()


def test_refusals_that_apply_to_exports(exports):
    cases = [(["--models", exports["rnn"], DATA / "transformer"], "cannot mix exported (ONNX) folders"),
             (["--models", exports["rnn"], "--checkpoints", "3"], "holds one set of parameters"),
             (["--models", exports["rnn"], "--extract-image-features"], "holds no image encoder")]
    for argv, message in cases:
        proc = run(argv + FEATURES, mxnet=False, check=False)
        lines = [line for line in proc.stderr.splitlines() if "ERROR" in line]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


def test_an_export_with_its_cnn_captions_images_as_the_mxnet_captioner(synthetic_features, tmp_path):
    """A model trained on the synthetic features (its CNN recorded), exported with the CNN: captions of the test
    images straight from the pictures, without MXNet, equal the MXNet captioner's."""
    from .test_train import run_train, train_args
    model = tmp_path / "model"
    run_train(train_args(synthetic_features, model, "--max-updates", "30", "--checkpoint-interval", "30"))
    exported = export(model, tmp_path / "model.onnx", "--include-image-encoder")
    images = ["--input", synthetic_features.test_images, "--source-root", synthetic_features.image_root,
              "--extract-image-features", "--beam-size", "3", "--batch-size", "16"]
    expected = run(["--models", model] + images, mxnet=True).stdout
    got = run(["--models", exported] + images, mxnet=False).stdout
    assert got == expected and len(expected.splitlines()) == len(Path(synthetic_features.test_images).read_text()
                                                                 .splitlines())
    # a damaged image costs its line only, as with MXNet
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "black.png")
    (tmp_path / "list").write_text("%s\n%s\n" % (broken, tmp_path / "black.png"))
    proc = run(["--models", exported, "--input", tmp_path / "list", "--extract-image-features",
                "--allow-absolute-paths", "--beam-size", "2"], mxnet=False, check=False)
    assert proc.returncode == 1 and proc.stdout.split("\n")[0] == "" and proc.stdout.split("\n")[1].strip()
