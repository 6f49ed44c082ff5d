import os
import shutil

import numpy as np
import pytest
from PIL import Image

from captioning import cnn, image_io, utils


def _module_forward(prefix: str, layer_output: str, images: np.ndarray) -> np.ndarray:
    """The reference: MXNet's own Module API on the same checkpoint."""
    import mxnet as mx
    symbol, args, auxs = mx.model.load_checkpoint(prefix, 0)
    output = symbol.get_internals()[layer_output]
    module = mx.mod.Module(output, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", images.shape)], for_training=False)
    module.set_params(args, auxs, allow_missing=False, allow_extra=True)
    module.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    return module.get_outputs()[0].asnumpy()


@pytest.fixture(scope="module")
def extractor(tiny_cnn):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=tiny_cnn.layer, image_size=tiny_cnn.image_size)
    return cnn.FeatureExtractor(config, mx.cpu(), batch_size=4)


def test_output_shape_and_values_match_module_forward(extractor, tiny_cnn):
    assert extractor.output_shape == tiny_cnn.feature_shape
    images = np.random.RandomState(0).uniform(0, 255, size=(5,) + tiny_cnn.image_size).astype(np.float32)
    features = extractor.extract(images)   # 5 = one full batch of 4 + a partial batch of 1
    assert features.shape == (5,) + tiny_cnn.feature_shape and features.dtype == np.float32
    expected = _module_forward(tiny_cnn.prefix, tiny_cnn.layer + "_output", images)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # a batch of one alone, and an empty batch
    np.testing.assert_allclose(extractor.extract(images[2:3]), expected[2:3], rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    assert extractor.extract(images[:0]).shape == (0,) + tiny_cnn.feature_shape
    assert np.abs(features).max() > 0


def test_cpu_chunks_give_the_same_features(tiny_cnn):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=tiny_cnn.layer, image_size=tiny_cnn.image_size)
    chunked = cnn.FeatureExtractor(config, mx.cpu(), batch_size=8, max_cpu_batch=3)
    assert chunked.run_batch == 3
    images = np.random.RandomState(4).uniform(0, 255, size=(8,) + tiny_cnn.image_size).astype(np.float32)
    expected = _module_forward(tiny_cnn.prefix, tiny_cnn.layer + "_output", images)
    np.testing.assert_allclose(chunked.extract(images), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("layer,shape", [("stage4_unit2_conv2_output", (8, 4, 4)), ("relu1", (8, 4, 4)),
                                         ("stage2_unit1_relu1", (4, 16, 16)), ("stage4_unit2_plus", (8, 4, 4)),
                                         ("pool1", (8, 1, 1))])
def test_any_internal_output_with_or_without_suffix(tiny_cnn, layer, shape):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=layer, image_size=tiny_cnn.image_size)
    extractor = cnn.FeatureExtractor(config, mx.cpu(), batch_size=2)
    assert extractor.output_shape == shape
    images = np.full((2,) + tiny_cnn.image_size, 100.0, dtype=np.float32)
    expected = _module_forward(tiny_cnn.prefix, cnn.strip_output_suffix(layer) + "_output", images)
    np.testing.assert_allclose(extractor.extract(images), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_unknown_layer_lists_closest_names(tiny_cnn):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer="stage4_unit3_conv3", image_size=tiny_cnn.image_size)
    with pytest.raises(utils.CaptioningError) as error:
        cnn.FeatureExtractor(config, mx.cpu(), batch_size=2)
    message = str(error.value)
    assert "tiny-cnn-symbol.json: the CNN has no layer 'stage4_unit3_conv3'" in message
    assert "closest names: stage4_unit2_conv2" in message or "stage4_unit1_conv2" in message
    assert "\n" not in message


def test_flatten_layer_is_refused(tiny_cnn):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer="fc1", image_size=tiny_cnn.image_size)
    with pytest.raises(utils.CaptioningError, match="a feature map needs"):
        cnn.FeatureExtractor(config, mx.cpu(), batch_size=2)


def test_missing_and_broken_checkpoints(tiny_cnn, tmp_path):
    import mxnet as mx
    with pytest.raises(utils.CaptioningError, match=r"nope-symbol.json: CNN symbol file not found"):
        cnn.load_checkpoint(str(tmp_path / "nope"), 0)
    with pytest.raises(utils.CaptioningError, match=r"tiny-cnn-0003.params: CNN parameters file not found"):
        cnn.load_checkpoint(tiny_cnn.prefix, 3)
    broken = str(tmp_path / "broken")
    shutil.copyfile(tiny_cnn.prefix + "-symbol.json", broken + "-symbol.json")
    with open(broken + "-0000.params", "wb") as f:
        f.write(b"not a params file")
    with pytest.raises(utils.CaptioningError, match="broken-0000.params: not a readable MXNet parameters file"):
        cnn.load_checkpoint(broken, 0)
    with open(broken + "-symbol.json", "w") as f:
        f.write("{ truncated")
    with pytest.raises(utils.CaptioningError, match="broken-symbol.json: not a readable MXNet symbol file"):
        cnn.load_checkpoint(broken, 0)
    # parameters that lack a weight the layer needs
    partial = str(tmp_path / "partial")
    shutil.copyfile(tiny_cnn.prefix + "-symbol.json", partial + "-symbol.json")
    saved = mx.nd.load(tiny_cnn.prefix + "-0000.params")
    del saved["arg:conv0_weight"]
    mx.nd.save(partial + "-0000.params", saved)
    config = cnn.CNNConfig(model_path=partial, layer="relu1", image_size=tiny_cnn.image_size)
    with pytest.raises(utils.CaptioningError, match="lack conv0_weight"):
        cnn.FeatureExtractor(config, mx.cpu(), batch_size=1)


def _write_images(folder, count):
    paths = []
    rng = np.random.RandomState(1)
    for i in range(count):
        path = os.path.join(folder, "im%02d.png" % i)
        Image.fromarray(rng.randint(0, 256, size=(20 + i, 30, 3)).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_image_batches_in_order_with_and_without_workers(tmp_path):
    paths = _write_images(str(tmp_path), 7)
    serial = list(cnn.iterate_image_batches(paths, (16, 16), 3, num_workers=0))
    parallel = list(cnn.iterate_image_batches(paths, (16, 16), 3, num_workers=2, prefetch_batches=1))
    assert [b.indices for b in serial] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.indices for b in parallel] == [b.indices for b in serial]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.images, b.images)
        assert a.images.dtype == np.float32 and a.images.shape[1:] == (3, 16, 16)
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(serial[i // 3].images[i % 3], image_io.load_image(path, (16, 16)))


def test_bad_image_error_names_line_or_is_skipped(tmp_path):
    paths = _write_images(str(tmp_path), 4)
    with open(paths[2], "wb") as f:
        f.write(b"\x89PNG garbage")
    with pytest.raises(image_io.BadImageError, match=r"^list.images, line 3: .*im02.png.*--skip-bad-images"):
        list(cnn.iterate_image_batches(paths, (8, 8), 2, num_workers=0, where="list.images"))
    batches = list(cnn.iterate_image_batches(paths, (8, 8), 2, num_workers=0, skip_bad_images=True,
                                             where="list.images"))
    assert [b.bad for b in batches] == [[False, False], [True, False]]
    assert not batches[1].images[0].any() and batches[1].images[1].any()
