"""captioning.extract_features end to end: through `python -m` for exit codes and messages, in-process for the
many input cases (same code path: ``_main``)."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import constants as C
from captioning import extract_features, features, image_io, utils

REPO = Path(__file__).resolve().parents[2]


def _run_cli(*argv, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "captioning.extract_features", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def image_set(tmp_path, image_factory):
    """Images of every mode, one in a sub-folder, and a list with a duplicate line."""
    names = ["grey.png", "palette.png", "rgba.png", "cmyk.jpg", "deep.png", "sub/rgb.jpg"]
    modes = ["L", "P", "RGBA", "CMYK", "I;16", "RGB"]
    for i, (name, mode) in enumerate(zip(names, modes)):
        image_factory(name, mode=mode, size=(50 + 7 * i, 40), seed=i)
    lines = names + ["grey.png"]
    list_path = tmp_path / "set.images"
    list_path.write_text("".join(line + "\n" for line in lines))
    return tmp_path / "images", list_path, lines


def _args(image_root, list_path, out_root, out_list, cnn, *extra):
    return ["--image-root", str(image_root), "--input", str(list_path), "--output-root", str(out_root),
            "--output", str(out_list), "--image-encoder-model-path", cnn.prefix, "--image-encoder-layer", cnn.layer,
            "--source-image-size", *map(str, cnn.image_size), "--batch-size", "4", "--num-workers", "0",
            "--use-cpu", *extra]


def _module_forward(prefix, layer, images):
    import mxnet as mx
    symbol, args, auxs = mx.model.load_checkpoint(prefix, 0)
    module = mx.mod.Module(symbol.get_internals()[layer + "_output"], data_names=["data"], label_names=None)
    module.bind(data_shapes=[("data", images.shape)], for_training=False)
    module.set_params(args, auxs, allow_extra=True)
    module.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    return module.get_outputs()[0].asnumpy()


def test_cli_writes_features_equal_to_a_direct_forward(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    args = _args(image_root, list_path, out_root, out_list, tiny_cnn)
    args[args.index("--use-cpu")] = "--device-id"
    args.insert(args.index("--device-id") + 1, "0")
    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "No GPU available" in result.stderr and "using the CPU" in result.stderr
    assert result.stdout == ""
    names = out_list.read_text().splitlines()
    assert names == [features.feature_file_name(line) for line in lines]
    assert names[-1] == names[0] == "grey.png.npy" and "sub_rgb.jpg.npy" in names
    # equal to MXNet's Module forward of the same checkpoint on the same preprocessed images
    size = tiny_cnn.image_size[1:]
    images = np.stack([image_io.load_image(str(image_root / line), size) for line in lines[:-1]])
    expected = _module_forward(tiny_cnn.prefix, tiny_cnn.layer, images)
    saved = np.stack([np.load(out_root / name) for name in names[:-1]])
    assert saved.dtype == np.float32 and saved.shape == (6,) + tiny_cnn.feature_shape
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # sidecars: JSON with the CNN copy's prefix relative to the folder, and Sockeye's pickle
    sidecar = json.loads((out_root / C.IMAGE_FEATURE_SIZES_JSON).read_text())
    assert sidecar["image_shape"] == list(tiny_cnn.image_size)
    assert sidecar["features_shape"] == list(tiny_cnn.feature_shape)
    assert sidecar["cnn"]["model_path"] == "cnn/tiny-cnn" and sidecar["cnn"]["layer"] == tiny_cnn.layer
    assert (out_root / "cnn" / "tiny-cnn-symbol.json").read_bytes() == Path(tiny_cnn.prefix +
                                                                             "-symbol.json").read_bytes()
    assert (out_root / "cnn" / "tiny-cnn-0000.params").exists()
    with open(out_root / C.IMAGE_FEATURE_SIZES_PKL, "rb") as f:
        assert pickle.load(f) == {"image_shape": tiny_cnn.image_size, "features_shape": tiny_cnn.feature_shape}
    assert not [n for n in os.listdir(out_root) if n.endswith(".tmp")]


def test_rerun_skips_complete_files_and_overwrite_recomputes(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    args = _args(image_root, list_path, out_root, out_list, tiny_cnn)
    extract_features._main(args)
    target = out_root / "grey.png.npy"
    before = target.read_bytes()
    os.utime(target, (1, 1))
    # a truncated feature file (e.g. from a foreign tool) is recomputed, complete ones are kept
    partial = out_root / "rgba.png.npy"
    partial.write_bytes(partial.read_bytes()[:100])
    config = extract_features.config_from_args(extract_features.build_parser().parse_args(args))
    result = extract_features.extract(config)
    assert (result.computed, result.skipped) == (1, 5)
    assert os.path.getmtime(target) == 1 and target.read_bytes() == before
    assert features.is_complete_feature(str(partial), tiny_cnn.feature_shape)
    result = extract_features.extract(config.copy(overwrite=True))
    assert (result.computed, result.skipped) == (6, 0)
    assert os.path.getmtime(target) > 1 and target.read_bytes() == before


def test_features_of_another_layer_are_not_mixed_in(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    args = _args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn)
    extract_features._main(args)
    other = list(args)
    other[other.index("--image-encoder-layer") + 1] = "relu1_output"     # same shape, other layer
    with pytest.raises(utils.CaptioningError, match=r"image_feature_sizes.json: the features in this folder were "
                                                    r"made with layer stage4_unit2_conv2; this run uses layer relu1"):
        extract_features._main(other)
    before = (tmp_path / "f" / "grey.png.npy").read_bytes()
    extract_features._main(other + ["--overwrite"])
    assert (tmp_path / "f" / "grey.png.npy").read_bytes() != before
    extract_features._main(other)                                         # same layer again: fine


def test_three_shards_give_byte_identical_features_and_list(synthetic_data, tmp_path):
    from captioning.cnn import CNNConfig
    images = tmp_path / "some.images"
    lines = Path(synthetic_data.splits["val"]["images"]).read_text().splitlines()[:11]
    images.write_text("".join(line + "\n" for line in lines + lines[:2]))
    cnn = CNNConfig(model_path=synthetic_data.cnn_prefix, layer=synthetic_data.layer,
                    image_size=tuple(synthetic_data.image_size))
    base = extract_features.ExtractionConfig(image_root=synthetic_data.image_root, input=str(images),
                                             output_root=str(tmp_path / "whole"), output=str(tmp_path / "whole.list"),
                                             cnn=cnn, batch_size=4, num_workers=0, progress=False)
    extract_features.extract(base)
    sharded = base.copy(output_root=str(tmp_path / "shards"), output=str(tmp_path / "shards.list"))
    for k in (1, 3):
        result = extract_features.extract(sharded.copy(shard=(k, 3)))
        assert not result.list_written and not os.path.exists(sharded.output)
    with pytest.raises(utils.CaptioningError, match=r"some.images, line 5: feature file .* is missing or "
                                                    r"incomplete .3 line.s. in all.; run the remaining shards"):
        extract_features.extract(sharded.copy(merge_shards=True))
    result = extract_features.extract(sharded.copy(shard=(2, 3)))   # the last shard writes the list
    assert result.list_written
    assert Path(sharded.output).read_text() == Path(base.output).read_text()
    names = Path(base.output).read_text().splitlines()
    assert len(names) == 13 and len(set(names)) == 11
    for name in set(names):
        assert (tmp_path / "shards" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    os.remove(sharded.output)
    extract_features.extract(sharded.copy(merge_shards=True))
    assert Path(sharded.output).read_text() == Path(base.output).read_text()


def test_bad_image_stops_with_list_line_or_is_skipped_with_zeros(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    data = (image_root / "palette.png").read_bytes()
    (image_root / "palette.png").write_bytes(data[: len(data) // 2])
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    result = _run_cli(*_args(image_root, list_path, out_root, out_list, tiny_cnn))
    assert result.returncode == 1
    assert "set.images, line 2: " in result.stderr and "palette.png: not a readable image" in result.stderr
    assert "--skip-bad-images" in result.stderr and "Traceback" not in result.stderr
    assert not out_list.exists()
    args = _args(image_root, list_path, out_root, out_list, tiny_cnn, "--skip-bad-images")
    extract_features._main(args)
    assert not np.load(out_root / "palette.png.npy").any()
    assert np.load(out_root / "grey.png.npy").any()
    assert len(out_list.read_text().splitlines()) == len(lines)


def test_missing_image_names_list_file_and_line(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    list_path.write_text("grey.png\nnot_there.jpg\n")
    with pytest.raises(utils.CaptioningError, match=r"set.images, line 2: .*not_there.jpg: no such image file"):
        extract_features._main(_args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn))


@pytest.mark.parametrize("line", ["../outside.png", "/abs/outside.png"])
def test_paths_escaping_the_root_are_refused_unless_allowed(image_set, tiny_cnn, tmp_path, line):
    image_root, list_path, _ = image_set
    outside = tmp_path / "outside.png"
    Image.new("RGB", (10, 10), (200, 10, 10)).save(outside)
    line = line if not line.startswith("/abs") else str(outside)
    list_path.write_text("grey.png\n%s\n" % line)
    args = _args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn)
    with pytest.raises(utils.CaptioningError, match=r"set.images, line 2: .*--allow-absolute-paths"):
        extract_features._main(args)
    extract_features._main(args + ["--allow-absolute-paths"])
    names = (tmp_path / "l").read_text().splitlines()
    assert len(names) == 2 and all((tmp_path / "f" / n).exists() for n in names)


def test_unknown_layer_and_missing_checkpoint(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    args = _args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn)
    bad_layer = list(args)
    bad_layer[bad_layer.index("--image-encoder-layer") + 1] = "stage4_unit3_conv3"
    with pytest.raises(utils.CaptioningError, match=r"no layer 'stage4_unit3_conv3' \(closest names: stage4_unit"):
        extract_features._main(bad_layer)
    missing = list(args)
    missing[missing.index("--image-encoder-model-path") + 1] = str(tmp_path / "resnet-152")
    result = _run_cli(*missing)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "resnet-152-symbol.json: CNN symbol file not found" in result.stderr
    unreadable = tmp_path / "bad"
    Path(str(unreadable) + "-symbol.json").write_text(Path(tiny_cnn.prefix + "-symbol.json").read_text())
    Path(str(unreadable) + "-0000.params").write_bytes(b"junk")
    missing[missing.index("--image-encoder-model-path") + 1] = str(unreadable)
    with pytest.raises(utils.CaptioningError, match="bad-0000.params: not a readable MXNet parameters file"):
        extract_features._main(missing)


def test_empty_list_writes_an_empty_feature_list(tiny_cnn, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "empty.images").write_text("")
    extract_features._main(_args(tmp_path / "imgs", tmp_path / "empty.images", tmp_path / "f", tmp_path / "e.list",
                                 tiny_cnn))
    assert (tmp_path / "e.list").read_text() == ""
    assert json.loads((tmp_path / "f" / C.IMAGE_FEATURE_SIZES_JSON).read_text())["features_shape"] == [8, 4, 4]


def test_output_root_that_is_a_file(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    (tmp_path / "afile").write_text("x")
    with pytest.raises(utils.CaptioningError, match="afile: --output-root exists and is not a folder"):
        extract_features._main(_args(image_root, list_path, tmp_path / "afile", tmp_path / "l", tiny_cnn))


def test_mmap_store_option(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    out_root = tmp_path / "feats"
    extract_features._main(_args(image_root, list_path, out_root, tmp_path / "l", tiny_cnn, "--mmap-store",
                                 "--mmap-dtype", "float16"))
    store = np.load(out_root / features.MMAP_STORE_NAME, mmap_mode="r")
    assert store.shape == (6,) + tiny_cnn.feature_shape and store.dtype == np.float16
    names = (tmp_path / "l").read_text().splitlines()
    mmap = features.open_feature_store(str(out_root), names, "mmap", str(tmp_path / "l"))
    lazy = features.open_feature_store(str(out_root), names, "lazy", str(tmp_path / "l"))
    np.testing.assert_allclose(mmap.get_batch(range(7)), lazy.get_batch(range(7)), rtol=2e-3, atol=1e-2)


def test_a_crash_leaves_only_complete_files(image_set, tiny_cnn, tmp_path, monkeypatch):
    image_root, list_path, _ = image_set
    out_root = tmp_path / "feats"
    calls = []
    original = features.save_feature

    def crash_on_third(path, feature):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(path, feature)

    monkeypatch.setattr(features, "save_feature", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract_features._main(_args(image_root, list_path, out_root, tmp_path / "l", tiny_cnn))
    assert not (tmp_path / "l").exists()
    npys = [n for n in os.listdir(out_root) if n.endswith(".npy")]
    assert len(npys) == 2 and not [n for n in os.listdir(out_root) if n.endswith(".tmp")]
    monkeypatch.setattr(features, "save_feature", original)
    config = extract_features.config_from_args(extract_features.build_parser().parse_args(
        _args(image_root, list_path, out_root, tmp_path / "l", tiny_cnn)))
    result = extract_features.extract(config)       # resumes: the two complete files are kept
    assert (result.computed, result.skipped, result.list_written) == (4, 2, True)


def test_help_lists_every_option():
    text = extract_features.build_parser().format_help()
    for option in ("--image-root", "--shard", "--merge-shards", "--mmap-store", "--skip-bad-images",
                   "--allow-absolute-paths", "--num-workers", "--device-id", "--overwrite"):
        assert option in text


@pytest.mark.shared
def test_efficientnet_features_give_plausible_imagenet_classes(shared_dir, tmp_path):
    """head_relu6 (1280x7x7) features of real photos, pooled and put through the checkpoint's own fc layer, give
    the top-1 classes the model README reports for such photos."""
    prefix = shared_dir / "models" / "efficientnet-lite0" / "efficientnet-lite0"
    data = shared_dir / "data" / "flickr8k-sample"
    if not (Path(str(prefix) + "-symbol.json").exists() and data.is_dir()):
        pytest.skip("efficientnet-lite0 or flickr8k-sample missing from ../shared")
    photos = {"images/107318069_e9f2ef32de.jpg": "balloon", "images/1397923690_d3bf1f799e.jpg": "ski",
              "images/106514190_bae200f463.jpg": "alp", "images/1001773457_577c3a7d70.jpg": "<dog>"}
    (tmp_path / "photos.images").write_text("".join(p + "\n" for p in photos))
    extract_features._main(["--image-root", str(data), "--input", str(tmp_path / "photos.images"),
                            "--output-root", str(tmp_path / "f"), "--output", str(tmp_path / "photos.features"),
                            "--image-encoder-model-path", str(prefix), "--image-encoder-layer", "head_relu6",
                            "--source-image-size", "3", "224", "224", "--batch-size", "4", "--num-workers", "0",
                            "--use-cpu"])
    import mxnet as mx
    params = mx.nd.load(str(prefix) + "-0000.params")
    weight, bias = params["arg:fc_weight"].asnumpy(), params["arg:fc_bias"].asnumpy()
    synset = (prefix.parent / "synset.txt").read_text().splitlines()
    names = (tmp_path / "photos.features").read_text().splitlines()
    for (photo, expected), name in zip(photos.items(), names):
        feature = np.load(tmp_path / "f" / name)
        assert feature.shape == (1280, 7, 7)
        top1 = int(np.argmax(feature.mean(axis=(1, 2)) @ weight.T + bias))
        if expected == "<dog>":
            assert 151 <= top1 <= 268, (photo, synset[top1])     # the ImageNet dog breeds
        else:
            assert synset[top1].split(" ", 1)[1].split(",")[0] == expected, (photo, synset[top1])


def test_two_images_sharing_a_feature_file_are_refused_naming_both_lines(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    (image_root / "sub_rgb.jpg").write_bytes((image_root / "sub" / "rgb.jpg").read_bytes())
    list_path.write_text("grey.png\nsub/rgb.jpg\ngrey.png\nsub_rgb.jpg\n")
    with pytest.raises(utils.CaptioningError, match=r"set.images, line 2: image 'sub/rgb.jpg' and .*set.images, "
                                                    r"line 4: image 'sub_rgb.jpg' would share the feature file "
                                                    r"sub_rgb.jpg.npy"):
        extract_features._main(_args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn))
    assert not (tmp_path / "f").exists()


def test_outputs_are_checked_before_any_feature_is_computed(image_set, tiny_cnn, tmp_path, monkeypatch):
    image_root, list_path, _ = image_set
    (tmp_path / "l").mkdir()
    computed = []
    monkeypatch.setattr(extract_features, "_run", lambda *args: computed.append(args))
    with pytest.raises(utils.CaptioningError, match=r"/l: is a folder; --output needs a file name"):
        extract_features._main(_args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn))
    assert not computed


def test_a_full_disk_is_a_one_line_error_naming_the_file(image_set, tiny_cnn, tmp_path, monkeypatch):
    import errno
    image_root, list_path, _ = image_set
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    saved = []
    original = np.save

    def fill_up(file, array, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(1)
        original(file, array, **kwargs)
    monkeypatch.setattr(features.np, "save", fill_up)
    result = pytest.raises(SystemExit, extract_features.main, _args(image_root, list_path, out_root, out_list,
                                                                     tiny_cnn, "--quiet"))
    assert result.value.code == 1
    with pytest.raises(utils.CaptioningError, match=r"feats/\w+\.(png|jpg)\.npy: cannot write \(No space left on "
                                                    r"device\)"):
        extract_features._main(_args(image_root, list_path, out_root, out_list, tiny_cnn))
    assert not out_list.exists()
    leftovers = [n for n in os.listdir(out_root) if n.endswith(".tmp")]
    assert not leftovers
    assert all(features.is_complete_feature(str(out_root / n), tiny_cnn.feature_shape)
               for n in os.listdir(out_root) if n.endswith(".npy"))


def test_skipped_bad_images_are_recomputed_once_fixed(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    good = (image_root / "palette.png").read_bytes()
    (image_root / "palette.png").write_bytes(good[: len(good) // 2])
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    args = _args(image_root, list_path, out_root, out_list, tiny_cnn, "--skip-bad-images")
    extract_features._main(args)
    assert not np.load(out_root / "palette.png.npy").any()
    assert features.is_placeholder(str(out_root / "palette.png.npy"))
    extract_features._main(args)                                   # still broken: still a placeholder
    assert features.is_placeholder(str(out_root / "palette.png.npy"))
    (image_root / "palette.png").write_bytes(good)
    config = extract_features.config_from_args(extract_features.build_parser().parse_args(args))
    result = extract_features.extract(config)
    assert (result.computed, result.skipped) == (1, 5)
    fixed = np.load(out_root / "palette.png.npy")
    expected = _module_forward(tiny_cnn.prefix, tiny_cnn.layer,
                               image_io.load_image(str(image_root / "palette.png"), tiny_cnn.image_size[1:])[None])
    np.testing.assert_allclose(fixed, expected[0], rtol=1e-4, atol=1e-4)
    assert fixed.any() and not features.is_placeholder(str(out_root / "palette.png.npy"))


def test_nan_features_from_the_cnn_stop_naming_the_line(image_set, tiny_cnn, tmp_path, monkeypatch):
    from captioning import cnn
    image_root, list_path, _ = image_set
    original = cnn.MXNetFeatureExtractor.extract

    def poisoned(self, images):
        out = original(self, images)
        out[-1, 0, 0, 0] = np.nan
        return out
    monkeypatch.setattr(cnn.MXNetFeatureExtractor, "extract", poisoned)
    with pytest.raises(utils.CaptioningError, match=r"set.images, line 4: the CNN gives NaN or infinite features"):
        extract_features._main(_args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn))


def test_list_layers_needs_no_other_io_option(tiny_cnn, capsys):
    extract_features._main(["--list-layers", "--image-encoder-model-path", tiny_cnn.prefix, "--source-image-size",
                            *map(str, tiny_cnn.image_size), "--quiet"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [tiny_cnn.layer, "8x4x4"] in lines and ["fc1", "5"] in lines
    assert not any(line[0].endswith(("_weight", "_label")) or line[0] == "data" for line in lines)


def test_a_size_other_than_the_encoders_native_one_is_warned_about(image_set, tiny_cnn, tmp_path, caplog):
    image_root, list_path, _ = image_set
    Path(tiny_cnn.prefix + "-encoder.json").write_text(json.dumps({"native_size": [3, 96, 96]}))
    try:
        with caplog.at_level("WARNING"):
            extract_features.extract(extract_features.config_from_args(extract_features.build_parser().parse_args(
                _args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn))))
    finally:
        os.remove(tiny_cnn.prefix + "-encoder.json")
    assert "was made for input 3x96x96; --source-image-size is 3x64x64 (pass --source-image-size 3 96 96" in \
        caplog.text


def test_augment_writes_every_view_with_its_own_list(image_set, tiny_cnn, tmp_path):
    image_root, list_path, lines = image_set
    out_root, out_list = tmp_path / "feats", tmp_path / "set.features"
    plain_root, plain_list = tmp_path / "plain", tmp_path / "plain.features"
    extract_features._main(_args(image_root, list_path, plain_root, plain_list, tiny_cnn))
    extract_features._main(_args(image_root, list_path, out_root, out_list, tiny_cnn, "--augment", "ten-crop",
                                 "--mmap-store"))
    # the centre view is the plain extraction, byte for byte, listed in --output
    assert out_list.read_text() == plain_list.read_text()
    for name in out_list.read_text().splitlines():
        assert (out_root / name).read_bytes() == (plain_root / name).read_bytes()
    size = tiny_cnn.image_size[1:]
    for view in image_io.VIEWS[1:]:
        names = Path("%s.%s" % (out_list, view)).read_text().splitlines()
        assert names == [features.feature_file_name(line)[:-4] + ".%s.npy" % view for line in lines]
        # each file is the CNN's features of that view of the image
        images = np.stack([image_io.load_image_uint8(str(image_root / line), size, view) for line in lines[:-1]])
        expected = _module_forward(tiny_cnn.prefix, tiny_cnn.layer, images.astype(np.float32))
        saved = np.stack([np.load(out_root / name) for name in names[:-1]])
        np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    index = json.loads((out_root / "features.mmap.json").read_text())
    assert len(index["names"]) == 6 * 10
    # a re-run keeps all 60 files; a flip-only run on the same folder computes nothing either
    config = extract_features.config_from_args(extract_features.build_parser().parse_args(
        _args(image_root, list_path, out_root, out_list, tiny_cnn, "--augment", "ten-crop")))
    result = extract_features.extract(config)
    assert (result.computed, result.skipped) == (0, 60)
    assert result.view_names["top-left"][0] == "grey.png.top-left.npy"
    assert extract_features.extract(config.copy(augment="flip")).computed == 0


def test_augment_refuses_a_view_file_that_is_another_images(image_set, tiny_cnn, tmp_path):
    image_root, list_path, _ = image_set
    (image_root / "grey.png.centre-flip").write_bytes((image_root / "grey.png").read_bytes())
    list_path.write_text("grey.png\nsub/rgb.jpg\ngrey.png.centre-flip\n")
    with pytest.raises(utils.CaptioningError, match=r"set.images, line 1: the centre-flip view's feature file "
                                                    r"grey.png.centre-flip.npy is that of the image on .*set.images, "
                                                    r"line 3"):
        extract_features._main(_args(image_root, list_path, tmp_path / "f", tmp_path / "l", tiny_cnn,
                                     "--augment", "flip"))
    assert not (tmp_path / "f").exists()
