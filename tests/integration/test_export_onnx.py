"""python -m captioning.export_onnx end to end: small trained models (tests/data/model_format_2) exported and decoded
in a process where MXNet cannot be imported give the MXNet model's words; a folder exported with its CNN turns
images into the features the MXNet CNN gives; the CLI's errors are one line, with nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
from captioning import cnn
from captioning import constants as C
from captioning import onnx_model as O
from captioning.model import load_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "model_format_2"
STEPS = 8

# runs in a fresh interpreter where `import mxnet` fails: greedy decoding of the feature files over an export
NO_MXNET = r"""
import json, sys
sys.modules["mxnet"] = None            # any import of mxnet now raises ImportError
import numpy as np
from captioning import onnx_model
folder, features = sys.argv[1], np.load(sys.argv[2])
model = onnx_model.OnnxCaptionModel(folder, threads=1)
states = model.encode(features)
words = np.full(len(features), 2, dtype=np.float32)
out = []
for _ in range(%d):
    logits, attention, states = model.decode_step(words, states)
    words = logits.argmax(axis=1).astype(np.float32)
    out.append(words.astype(int).tolist())
extractor = onnx_model.image_extractor(folder, 2, threads=1)
images = None if extractor is None else extractor.extract(np.load(sys.argv[3])).tolist()
assert "mxnet" not in sys.modules or sys.modules["mxnet"] is None
print(json.dumps({"words": out, "images": images, "vocab": len(onnx_model.load_vocab(folder))}))
""" % STEPS


def cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "captioning.export_onnx", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True)


def without_mxnet(folder: Path, features: np.ndarray, images: np.ndarray = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    arrays = folder.parent / (folder.name + ".inputs")
    arrays.mkdir(exist_ok=True)
    np.save(arrays / "features.npy", features)
    np.save(arrays / "images.npy", np.zeros((0,)) if images is None else images)
    proc = subprocess.run([sys.executable, "-c", NO_MXNET, str(folder), str(arrays / "features.npy"),
                           str(arrays / "images.npy")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def mxnet_greedy(folder: Path, features: np.ndarray) -> list:
    model, _ = load_model(str(folder))
    model.fix_parameters()
    states = model.encode(mx.nd.array(features))
    words = mx.nd.full((len(features),), C.BOS_ID)
    out = []
    for _ in range(STEPS):
        logits, _, states = model.decode_step(words, states)
        words = mx.nd.argmax(logits, axis=1)
        out.append(words.asnumpy().astype(int).tolist())
    return out


def fixture_features() -> np.ndarray:
    names = (DATA / "test.features").read_text().split()
    return np.stack([np.load(DATA / "features" / name) for name in names]).astype(np.float32)


@pytest.mark.parametrize("name", ["rnn", "transformer"])
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_trained_model_decodes_without_mxnet_as_with_it(name, quantize, tmp_path):
    out = tmp_path / "export"
    proc = cli("--models", str(DATA / name), "--output", str(out), *(["--quantize", quantize] if quantize else []))
    assert proc.returncode == 0, proc.stderr
    assert O.is_export(str(out))
    features = fixture_features()
    got = without_mxnet(out, features)
    assert got["images"] is None and got["vocab"] == json.loads((out / O.MANIFEST_NAME).read_text())["vocab_size"]
    expected = mxnet_greedy(DATA / name, features)
    if quantize is None:
        assert got["words"] == expected
    else:   # int8 may change a word here and there, not most of them
        same = np.mean(np.asarray(got["words"]) == np.asarray(expected))
        assert same >= 0.8, same


def _model_for_cnn(tmp_path: Path, tiny_cnn, record: bool) -> Path:
    from captioning.decoder import RecurrentDecoderConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig, save_model_config
    from captioning.vocab import build_vocab, save_vocab
    vocab = build_vocab(["a dog runs"])
    recorded = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=tiny_cnn.layer, epoch=tiny_cnn.epoch,
                             image_size=tiny_cnn.image_size) if record else None
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=tiny_cnn.feature_shape, num_hidden=8),
                         vocab_size=len(vocab), num_embed=8, rnn=RecurrentDecoderConfig(num_hidden=8),
                         image_cnn=recorded)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier())
    model(mx.nd.zeros((1,) + tuple(tiny_cnn.feature_shape)), mx.nd.zeros((1, 1)))
    folder = tmp_path / "model"
    folder.mkdir()
    save_model_config(config, str(folder))
    save_vocab(vocab, str(folder / C.VOCAB_TRG_NAME))
    model.save_parameters(str(folder / C.PARAMS_BEST_NAME))
    return folder


def test_an_export_with_its_cnn_turns_images_into_the_models_features(tmp_path, tiny_cnn):
    model = _model_for_cnn(tmp_path, tiny_cnn, record=True)
    images = np.random.RandomState(4).uniform(0, 255, (3,) + tiny_cnn.image_size).astype(np.float32)
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=tiny_cnn.layer, image_size=tiny_cnn.image_size)
    expected = cnn.create_feature_extractor(config, mx.cpu(), 3).extract(images)
    # the CNN recorded in the model's config
    proc = cli("--models", str(model), "--output", str(tmp_path / "recorded"), "--include-image-encoder")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "recorded" / O.MANIFEST_NAME).read_text())
    assert manifest["image_encoder"] == {"file": "cnn.onnx", "layer": tiny_cnn.layer, "image_size": [64, 64]}
    got = without_mxnet(tmp_path / "recorded", expected, images)
    np.testing.assert_allclose(np.asarray(got["images"]), expected, rtol=1e-4, atol=1e-4)
    # an ONNX CNN given on the command line: the export's own cnn.onnx, cut at its output
    proc = cli("--models", str(model), "--output", str(tmp_path / "from_onnx"), "--image-encoder-model-path",
               str(tmp_path / "recorded" / "cnn.onnx"), "--image-encoder-layer", "features",
               "--source-image-size", "3", "64", "64")
    assert proc.returncode == 0, proc.stderr
    got = without_mxnet(tmp_path / "from_onnx", expected, images)
    np.testing.assert_allclose(np.asarray(got["images"]), expected, rtol=1e-4, atol=1e-4)


def test_a_cnn_layer_of_another_shape_is_refused(tmp_path, tiny_cnn):
    model = _model_for_cnn(tmp_path, tiny_cnn, record=False)
    proc = cli("--models", str(model), "--output", str(tmp_path / "export"), "--image-encoder-model-path",
               tiny_cnn.prefix, "--image-encoder-layer", "stage2_unit2_conv2", "--source-image-size", "3", "64", "64",
               "--quiet")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "layer 'stage2_unit2_conv2' gives features" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("setup, argv, message", [
    (lambda tmp: (tmp / "out").mkdir(), ["--output", "{tmp}/out", "--overwrite-output"],
     "holds no manifest.json of captioning.export_onnx"),
    (lambda tmp: (tmp / "out").mkdir(), ["--output", "{tmp}/out"], "exists; give another --output"),
    (lambda tmp: None, ["--output", "{tmp}/out", "--checkpoint", "7"], "params.00007: missing"),
    (lambda tmp: (tmp / "out").write_text("x"), ["--output", "{tmp}/out", "--overwrite-output"],
     "exists and is not a folder"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, setup, argv, message):
    setup(tmp_path)
    before = sorted(os.listdir(tmp_path))
    proc = cli("--models", str(DATA / "rnn"), *[a.format(tmp=tmp_path) for a in argv])
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(os.listdir(tmp_path)) == before
