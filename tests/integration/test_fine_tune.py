"""train --image-encoder-fine-tune-from: the CNN's layers after the features' layer trained with the captioner,
through the command line: the saved model, captions from images equal to captions from features, holding the layers
for N updates, exact resume after kill -9, and the one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from .test_train import REPO, assert_same_metrics, assert_same_params, kill_after_two_checkpoints, read_metrics

START, END = "stage4_unit1_plus", "stage4_unit2_conv2"
TINY = ["--rnn-num-hidden", "16", "--num-embed", "16", "--image-encoder-num-hidden", "16", "--batch-size", "8",
        "--bucket-width", "10", "--decode-and-evaluate", "0", "--use-cpu", "--seed", "3",
        "--max-num-checkpoint-not-improved", "-1"]


@pytest.fixture(scope="module")
def start_features(synthetic_data, tmp_path_factory):
    """The synthetic train/val/test features at layer S (and the folder they are in)."""
    import mxnet as mx
    from captioning import cnn, extract_features
    root = tmp_path_factory.mktemp("fine_tune_features")
    config = cnn.CNNConfig(model_path=synthetic_data.cnn_prefix, layer=START, epoch=0,
                           image_size=tuple(synthetic_data.image_size))
    lists = {}
    for split in ("train", "val", "test"):
        lists[split] = str(root / (split + ".features"))
        extract_features.extract(extract_features.ExtractionConfig(
            image_root=synthetic_data.image_root, input=synthetic_data.splits[split]["images"],
            output_root=str(root / "features"), output=lists[split], cnn=config, batch_size=64, num_workers=0,
            progress=False), mx.cpu())
    return synthetic_data, str(root / "features"), lists


def _args(start_features, output, *extra):
    data, feature_root, lists = start_features
    return ["--source-root", feature_root, "--source", lists["train"], "--target", data.splits["train"]["captions"][0],
            "--validation-source", lists["val"], "--validation-target", data.splits["val"]["captions"][0],
            "--output", str(output), "--image-encoder-fine-tune-from", START, "--image-encoder-layer", END] + \
        TINY + list(extra)


def _run(module, args, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", module] + args, cwd=str(REPO), env=env, capture_output=True,
                            text=True, timeout=240)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _cnn_params(data):
    import mxnet as mx
    return {k.split(":", 1)[1]: v.asnumpy() for k, v in mx.nd.load(data.cnn_prefix + "-0000.params").items()}


def _layer_params(path):
    import mxnet as mx
    return {k.split(".", 1)[1]: v.asnumpy() for k, v in mx.nd.load(str(path)).items()
            if k.startswith("image_layers.")}


def test_fine_tuned_model_trains_saves_its_layers_and_captions_images_as_their_features(start_features, tmp_path):
    data, feature_root, lists = start_features
    out = tmp_path / "model"
    _run("captioning.train", _args(start_features, out, "--checkpoint-interval", "6", "--max-updates", "6",
                                   "--image-encoder-learning-rate-multiplier", "1.0"))
    config = yaml.safe_load((out / "config").read_text())
    assert config["fine_tune"]["from_layer"] == START and config["fine_tune"]["cnn"]["layer"] == END
    assert config["image_cnn"]["layer"] == START              # the captioner runs the CNN up to S
    cnn, layers = _cnn_params(data), _layer_params(out / "params.00001")
    assert layers and all(name.startswith("stage4_unit2_") for name in layers)
    for name, value in layers.items():
        moved = not np.array_equal(value, cnn[name])
        assert moved == (not name.endswith(("_moving_mean", "_moving_var"))), name
    common = ["--models", str(out), "--beam-size", "3", "--batch-size", "7", "--max-output-length", "8"]
    from_features = _run("captioning.captioner", common + ["--input", lists["test"], "--source-root", feature_root])
    from_images = _run("captioning.captioner", common + ["--input", data.splits["test"]["images"], "--source-root",
                                                         data.image_root, "--extract-image-features"])
    assert from_images.stdout == from_features.stdout and from_images.stdout.strip()
    # the whole CNN with the fine-tuned layers, as a checkpoint; never over existing files
    import mxnet as mx
    prefix = str(tmp_path / "exported" / "cnn")
    _run("captioning.extract_features", ["--export-fine-tuned-cnn", str(out), prefix])
    exported = {k.split(":", 1)[1]: v.asnumpy() for k, v in mx.nd.load(prefix + "-0000.params").items()}
    best = _layer_params(out / "params.best")
    assert set(exported) == set(cnn)
    for name, value in exported.items():
        np.testing.assert_array_equal(value, best[name] if name in best else cnn[name])
    again = _run("captioning.extract_features", ["--export-fine-tuned-cnn", str(out), prefix], check=False)
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    # a model without fine-tuning keeps its config as before
    plain = tmp_path / "plain"
    args = _args(start_features, plain, "--max-updates", "2", "--checkpoint-interval", "2")
    args = args[:args.index("--image-encoder-fine-tune-from")] + args[args.index(END) + 1:]
    _run("captioning.train", args)
    assert "fine_tune" not in yaml.safe_load((plain / "config").read_text())


def test_layers_held_for_n_updates_then_resume_after_kill_is_exact(start_features, tmp_path):
    extra = ["--checkpoint-interval", "2", "--max-updates", "8", "--image-encoder-fine-tune-after", "3",
             "--image-encoder-learning-rate-multiplier", "1.0"]
    straight = tmp_path / "straight"
    result = _run("captioning.train", _args(start_features, straight, *extra))
    assert "Update 4: the CNN layers learn" in result.stderr
    cnn = _cnn_params(start_features[0])
    for checkpoint, moved in ((1, False), (2, True), (4, True)):
        layers = _layer_params(straight / ("params.%05d" % checkpoint))
        assert any(not np.array_equal(v, cnn[k]) for k, v in layers.items()) == moved, checkpoint
    killed = tmp_path / "killed"
    args = _args(start_features, killed, *extra)
    kill_after_two_checkpoints(args, killed, timeout=180)
    assert len(read_metrics(killed)) < 4
    _run("captioning.train", args)
    assert_same_metrics(read_metrics(killed), read_metrics(straight))
    assert_same_params(straight / "params.00004", killed / "params.00004")


def test_two_processes_train_the_layers(start_features, tmp_path):
    out = tmp_path / "procs"
    result = _run("captioning.train", _args(start_features, out, "--processes", "2", "--max-updates", "4",
                                            "--checkpoint-interval", "4", "--image-encoder-fine-tune-after", "2",
                                            "--image-encoder-learning-rate-multiplier", "1.0"))
    assert "Training in 2 processes" in result.stderr
    cnn = _cnn_params(start_features[0])
    layers = _layer_params(out / "params.00001")
    assert any(not np.array_equal(v, cnn[k]) for k, v in layers.items() if not k.endswith(("_mean", "_var")))


def test_bad_fine_tuning_options_are_one_line_errors(start_features, synthetic_data, tiny_cnn, tmp_path):
    cases = [
        (["--image-encoder-layer", "stage4_unit1_conv1"], "does not come before layer 'stage4_unit1_conv1'"),
        (["--image-encoder-layer", "stage4_unit9_conv2"], "has no layer 'stage4_unit9_conv2'"),
        (["--image-encoder-model-path", tiny_cnn.prefix], "is another CNN"),
        (["--image-encoder-fine-tune-from", "stage3_unit2_plus"], "come from layer 'stage4_unit1_plus'"),
    ]
    for extra, message in cases:
        out = tmp_path / ("out%d" % len(os.listdir(tmp_path)))
        args = _args(start_features, out, "--max-updates", "2")
        for flag, value in zip(extra[::2], extra[1::2]):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        result = _run("captioning.train", args, check=False)
        lines = [line for line in result.stderr.splitlines() if "ERROR" in line or "Error" in line]
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
        assert not Path(out / "params.00001").exists()
