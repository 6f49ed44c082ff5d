import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import synthetic, utils

REPO = Path(__file__).resolve().parents[2]


def _small(tmp_path, name, seed=3, **kwargs):
    config = synthetic.SyntheticConfig(train=kwargs.get("train", 6), val=kwargs.get("val", 3),
                                       test=kwargs.get("test", 2), seed=seed, image_size=kwargs.get("size", 64),
                                       captions_per_image=kwargs.get("k", 3))
    return synthetic.generate(str(tmp_path / name), config)


def test_layout_and_line_counts(tmp_path):
    data = _small(tmp_path, "d")
    root = Path(data.root)
    train_images = (root / "train.images").read_text().splitlines()
    train_captions = (root / "train.captions").read_text().splitlines()
    assert len(train_images) == len(train_captions) == 6 * 3
    assert train_images[:3] == ["images/train_00000.png"] * 3 and train_images[3] == "images/train_00001.png"
    assert len(set(train_captions[:3])) == 3          # distinct references of one image
    for split, count in (("val", 3), ("test", 2)):
        images = (root / (split + ".images")).read_text().splitlines()
        assert images == ["images/%s_%05d.png" % (split, i) for i in range(count)]
        for suffix in ("", ".1", ".2"):
            assert len((root / (split + ".captions" + suffix)).read_text().splitlines()) == count
        assert not (root / (split + ".captions.3")).exists()
    for line in train_images:
        with Image.open(root / line) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    assert os.path.exists(data.cnn_prefix + "-symbol.json") and os.path.exists(data.cnn_prefix + "-0000.params")
    readme = (root / "README.txt").read_text()
    assert "ONE LINE PER (image, caption) PAIR" in readme and "stage4_unit2_conv2" in readme
    assert data.layer == "stage4_unit2_conv2" and data.image_size == (3, 64, 64)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = _small(tmp_path, "a"), _small(tmp_path, "b"), _small(tmp_path, "c", seed=4)
    for name in ("train.captions", "val.captions.2", "images/train_00004.png", "images/test_00001.png",
                 "cnn/synthetic-cnn-0000.params"):
        assert (Path(a.root) / name).read_bytes() == (Path(b.root) / name).read_bytes()
    assert (Path(a.root) / "train.captions").read_text() != (Path(c.root) / "train.captions").read_text()
    assert (Path(a.root) / "images/train_00000.png").read_bytes() != (Path(c.root) / "images/train_00000.png"
                                                                      ).read_bytes()


def test_captions_are_lowercase_tokens_that_name_the_scene():
    rng = np.random.RandomState(0)
    colour_words, shape_words = set(synthetic.COLOURS), {w for ws in synthetic.SHAPE_WORDS.values()
                                                         for pair in ws for w in " ".join(pair).split()}
    kinds = set()
    for _ in range(300):
        scene = synthetic.sample_scene(rng, 128)
        kinds.add(scene.kind)
        assert 1 <= len(scene.objects) <= 3
        assert all(o.colour != scene.background for o in scene.objects)
        captions = synthetic.make_captions(scene, rng, 5)
        assert len(captions) == 5
        for caption in captions:
            assert caption == caption.lower() and caption == " ".join(caption.split())
            assert all(token.isalpha() for token in caption.split()), caption
            tokens = set(caption.split())
            # a caption names at least one object's colour and shape, and only colours/shapes of the scene
            assert tokens & {o.colour for o in scene.objects} or tokens & {"shapes"}, caption
            named_colours = tokens & colour_words - {scene.background} - {"dark"}
            assert named_colours <= {o.colour for o in scene.objects}, (caption, scene)
            assert tokens & shape_words or "shapes" in tokens, caption
    assert kinds == {"single", "pair", "group", "group_other", "triple"}


def test_objects_do_not_overlap_and_stay_inside():
    rng = np.random.RandomState(1)
    for _ in range(200):
        scene = synthetic.sample_scene(rng, 128)
        for o in scene.objects:
            assert o.radius <= o.centre[0] <= 128 - o.radius and o.radius <= o.centre[1] <= 128 - o.radius
        assert synthetic.scenes._no_overlap(scene.objects) or all(o.size == "small" for o in scene.objects)


def test_relation_and_position_words_match_geometry():
    rng = np.random.RandomState(2)
    seen = 0
    while seen < 30:
        scene = synthetic.sample_scene(rng, 128)
        if scene.kind != "single":
            continue
        seen += 1
        o = scene.objects[0]
        for caption in synthetic.make_captions(scene, rng, 5):
            if "left" in caption.split():
                assert o.cell[1] == 0, (caption, o)
            if "top" in caption.split() or "upper" in caption.split():
                assert o.cell[0] == 0, (caption, o)


def test_cnn_checkpoint_gives_an_8x8_grid_at_128(tmp_path):
    import mxnet as mx
    from captioning import cnn
    prefix = synthetic.write_cnn(str(tmp_path / "cnn"), 128)
    extractor = cnn.FeatureExtractor(cnn.CNNConfig(model_path=prefix, layer=synthetic.CNN_LAYER,
                                                   image_size=(3, 128, 128)), mx.cpu(), batch_size=2)
    assert extractor.output_shape == (64, 8, 8)
    names = cnn.layer_names(mx.sym.load(prefix + "-symbol.json"))
    for name in ("conv0", "stage1_unit1_conv1", "stage4_unit2_conv2", "bn1", "relu1", "pool1", "fc1", "softmax"):
        assert name in names


@pytest.mark.skipif(not os.path.exists(synthetic.BUNDLED_PARAMS), reason="no bundled CNN weights")
def test_bundled_cnn_is_pretrained_on_the_scenes():
    """The bundled weights' gallery head (fc1) counts objects on fresh scenes far above chance (1/3)."""
    import mxnet as mx
    symbol = synthetic.build_symbol()
    saved = mx.nd.load(synthetic.BUNDLED_PARAMS)
    args = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    auxs = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    images, labels = synthetic.pretraining._training_arrays(90, seed=12345, image_size=128)
    module = mx.mod.Module(symbol.get_internals()["fc1_output"], data_names=["data"], label_names=None)
    module.bind(data_shapes=[("data", images.shape)], for_training=False)
    module.set_params(args, auxs, allow_extra=True)
    module.forward(mx.io.DataBatch([mx.nd.array(images.astype(np.float32))]), is_train=False)
    predicted = module.get_outputs()[0].asnumpy().argmax(axis=1)
    assert (predicted == labels["count"]).mean() > 0.75


@pytest.mark.skipif(not os.path.exists(synthetic.BUNDLED_SYMBOL), reason="no bundled CNN")
def test_bundled_symbol_is_the_one_the_code_builds():
    import json
    assert json.loads(Path(synthetic.BUNDLED_SYMBOL).read_text()) == json.loads(synthetic.build_symbol().tojson())


def test_attribute_labels_mark_object_cells():
    rng = np.random.RandomState(5)
    scene = synthetic.sample_scene(rng, 128)
    labels = synthetic.attribute_labels(scene, 128)
    assert labels["shape"].shape == (8, 8) and (labels["shape"] > 0).sum() >= len(scene.objects)
    assert (labels["size"] >= 0).sum() == len(scene.objects)
    assert labels["count"] == len(scene.objects) - 1


def test_cli_generates_and_rejects_a_file_as_out_dir(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "captioning.synthetic", str(out), "--train", "4", "--val", "2",
                             "--test", "1", "--seed", "9", "--image-size", "48", "--captions-per-image", "2"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len((out / "train.images").read_text().splitlines()) == 8
    assert (out / "val.captions.1").exists() and not (out / "val.captions.2").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(utils.CaptioningError, match="afile: exists and is not a folder"):
        synthetic.cli._main([str(tmp_path / "afile")])
    # a data set written before is written again; a folder of other files is kept untouched
    synthetic.cli._main([str(out), "--train", "2", "--val", "1", "--test", "1", "--image-size", "48", "--quiet"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.captions").write_text("my own captions\n")
    with pytest.raises(utils.CaptioningError, match="not a synthetic data set.*train.captions.*they are kept"):
        synthetic.cli._main([str(tmp_path / "mine"), "--train", "2", "--val", "1", "--test", "1", "--quiet"])
    assert (tmp_path / "mine" / "train.captions").read_text() == "my own captions\n"
    assert os.listdir(tmp_path / "mine") == ["train.captions"]


def test_session_fixtures_are_consistent(synthetic_features, tiny_cnn):
    f = synthetic_features
    train_names = Path(f.train_features).read_text().splitlines()
    assert len(train_names) == len(Path(f.train_images).read_text().splitlines()) == \
        len(Path(f.train_captions).read_text().splitlines()) == 300 * f.num_references
    assert len(set(train_names)) == 300
    for split in ("val", "test"):
        images, feats, captions = f.split(split)
        assert len(Path(feats).read_text().splitlines()) == len(Path(captions).read_text().splitlines()) == 50
        assert len(getattr(f, split + "_references")) == f.num_references
    feature = np.load(os.path.join(f.feature_root, train_names[0]))
    assert feature.shape == f.feature_shape == (64, 8, 8) and feature.dtype == np.float32
    assert f.image_size == (3, 128, 128) and f.layer == "stage4_unit2_conv2"
    assert os.path.exists(tiny_cnn.prefix + "-symbol.json") and tiny_cnn.feature_shape == (8, 4, 4)


def test_held_out_accuracy_scores_object_cells_only():
    import mxnet as mx
    from captioning.synthetic.pretraining import _held_out_accuracy
    labels = {"shape": np.array([[[0, 2]]]), "colour": np.array([[[0, 1]]]), "size": np.array([[[-1, 0]]]),
              "background": np.array([3]), "count": np.array([1])}

    def one_hot(classes, n, wrong_at=None):
        out = np.zeros((1, n) + classes.shape[1:], dtype=np.float32)
        picked = classes.copy().clip(0)
        if wrong_at is not None:
            picked[wrong_at] = (picked[wrong_at] + 1) % n
        np.put_along_axis(out, np.expand_dims(picked, 1), 1.0, axis=1)
        return mx.nd.array(out)

    def forward(_):   # right on every object cell, wrong on the empty cell (0, 0, 0) of shape: not counted
        return (one_hot(labels["shape"], 4, wrong_at=(0, 0, 0)), one_hot(labels["colour"], 3),
                one_hot(labels["size"], 2), one_hot(labels["background"], 4, wrong_at=0), one_hot(labels["count"], 3))
    accuracy = _held_out_accuracy(forward, np.zeros((1, 3, 2, 2)), labels)
    assert accuracy == {"shape": 1.0, "colour": 1.0, "size": 1.0, "background": 0.0, "count": 1.0}


def test_train_cnn_writes_a_checkpoint_of_the_bundled_layout(tmp_path):
    """--train-cnn's loop (two updates here): the saved params hold every parameter of the CNN's symbol up to fc1
    and none of the attribute heads; the symbol is written beside them."""
    import mxnet as mx
    from captioning.synthetic import pretraining
    out = tmp_path / "cnn" / "synthetic-cnn-0000.params"
    accuracy = pretraining.train_cnn(str(out), steps=2, num_scenes=40, batch_size=4)
    assert set(accuracy) == {"shape", "colour", "size", "background", "count"}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    saved = mx.nd.load(str(out))
    symbol = synthetic.build_symbol()
    expected = {"arg:" + n for n in symbol.list_arguments() if n not in ("data", "softmax_label")} | \
        {"aux:" + n for n in symbol.list_auxiliary_states()}
    assert set(saved) == expected
    assert json.loads((tmp_path / "cnn" / "synthetic-cnn-symbol.json").read_text()) == json.loads(symbol.tojson())
