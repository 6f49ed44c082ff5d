"""The ONNX backend of cnn.FeatureExtractor: our own checkpoints exported with mx.onnx.export_model and small graphs
built with the onnx helper API, cut at internal tensors and run by onnxruntime, equal MXNet's features."""
import numpy as np
import pytest

from captioning import cnn, utils

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from captioning import onnx_encoder  # noqa: E402


def export_onnx(prefix: str, image_size, path: str) -> str:
    """Our symbolic checkpoint as ONNX (cut before SoftmaxOutput), any batch size."""
    import mxnet as mx
    symbol, args, auxs = mx.model.load_checkpoint(prefix, 0)
    if symbol.list_outputs()[0].startswith("softmax"):
        symbol = symbol.get_children()[0]
    wanted = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    params = {k: v for k, v in {**args, **auxs}.items() if k in wanted}
    return mx.onnx.export_model(symbol, params, [(1,) + tuple(image_size)], [np.float32], path, dynamic=True,
                                dynamic_input_shapes=[(None,) + tuple(image_size)])


@pytest.fixture(scope="module")
def tiny_onnx(tiny_cnn, tmp_path_factory):
    return export_onnx(tiny_cnn.prefix, tiny_cnn.image_size, str(tmp_path_factory.mktemp("onnx") / "tiny.onnx"))


def _images(shape, count, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, size=(count,) + tuple(shape)).astype(np.float32)


@pytest.mark.parametrize("layer", ["stage4_unit2_conv2", "stage2_unit1_relu1", "stage3_unit1_plus_output"])
def test_exported_checkpoint_equals_mxnet_at_internal_layers(tiny_cnn, tiny_onnx, layer):
    import mxnet as mx
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, layer=cnn.strip_output_suffix(layer),
                           image_size=tiny_cnn.image_size)
    reference = cnn.create_feature_extractor(config, mx.cpu(), batch_size=5)
    extractor = cnn.create_feature_extractor(config.copy(model_path=tiny_onnx), mx.cpu(), batch_size=5,
                                             max_cpu_batch=2)
    assert isinstance(extractor, onnx_encoder.OnnxFeatureExtractor)
    assert isinstance(reference, cnn.MXNetFeatureExtractor)
    assert extractor.output_shape == reference.output_shape
    images = _images(tiny_cnn.image_size, 5)
    np.testing.assert_allclose(extractor.extract(images), reference.extract(images), rtol=1e-4, atol=1e-4)
    assert extractor.extract(images[:0]).shape == (0,) + reference.output_shape


def _helper_graph(path, batch=None):
    """Conv(3->4, 3x3, pad 1) -> Relu -> Conv(4->2, 1x1, stride 2): a small graph with named tensors."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.RandomState(1)
    w1, b1 = rng.randn(4, 3, 3, 3).astype(np.float32) * 0.05, rng.randn(4).astype(np.float32)
    w2 = rng.randn(2, 4, 1, 1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
             helper.make_node("Conv", ["relu1", "w2"], ["conv2"], strides=[2, 2], name="conv2")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                             [batch or "N", 3, 8, 8])],
                              [helper.make_tensor_value_info("conv2", TensorProto.FLOAT, [batch or "N", 2, 4, 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                               numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return w1, b1, w2


@pytest.mark.parametrize("batch", [None, 1])
def test_helper_graph_internal_tensor_equals_mxnet(tmp_path, batch):
    import mxnet as mx
    path = str(tmp_path / "small.onnx")
    w1, b1, w2 = _helper_graph(path, batch)
    images = _images((3, 8, 8), 3, seed=2)
    relu = mx.nd.relu(mx.nd.Convolution(mx.nd.array(images), mx.nd.array(w1), mx.nd.array(b1), kernel=(3, 3),
                                        pad=(1, 1), num_filter=4))
    conv2 = mx.nd.Convolution(relu, mx.nd.array(w2), kernel=(1, 1), stride=(2, 2), num_filter=2, no_bias=True)
    for layer, expected in (("relu1", relu), ("conv2_output", conv2)):
        config = cnn.CNNConfig(model_path=path, layer=layer, image_size=(3, 8, 8))
        extractor = cnn.FeatureExtractor(config, mx.cpu(), batch_size=3)    # the factory, by its interface's name
        assert extractor.run_batch == (batch or 3)
        np.testing.assert_allclose(extractor.extract(images), expected.asnumpy(), rtol=1e-4, atol=1e-5)
    assert cnn.list_layers(path, 0, (3, 8, 8)) == [("conv1", (4, 8, 8)), ("relu1", (4, 8, 8)), ("conv2", (2, 4, 4))]


def test_folded_normalisation_takes_raw_pixels(tmp_path):
    import mxnet as mx
    path = str(tmp_path / "small.onnx")
    _helper_graph(path)
    mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
    folded = str(tmp_path / "folded.onnx")
    onnx.save(onnx_encoder.fold_normalisation(onnx.load(path), mean, std), folded)
    images = _images((3, 8, 8), 2, seed=3)
    normalised = (images - np.array(mean, np.float32).reshape(1, 3, 1, 1)) / np.array(std, np.float32).reshape(
        1, 3, 1, 1)
    config = cnn.CNNConfig(model_path=path, layer="conv2", image_size=(3, 8, 8))
    plain = cnn.create_feature_extractor(config, mx.cpu(), 2).extract(normalised)
    raw = cnn.create_feature_extractor(config.copy(model_path=folded), mx.cpu(), 2).extract(images)
    np.testing.assert_allclose(raw, plain, rtol=1e-5, atol=1e-5)


def test_broken_and_non_cnn_files_are_one_line_errors(tmp_path):
    import mxnet as mx
    from onnx import TensorProto, helper, numpy_helper
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    config = cnn.CNNConfig(model_path=str(broken), layer="x", image_size=(3, 8, 8))
    with pytest.raises(utils.CaptioningError, match=r"broken\.onnx: not a valid ONNX model") as info:
        cnn.create_feature_extractor(config, mx.cpu(), 2)
    assert "\n" not in str(info.value)
    with pytest.raises(utils.CaptioningError, match="ONNX model file not found"):
        cnn.create_feature_extractor(config.copy(model_path=str(tmp_path / "none.onnx")), mx.cpu(), 2)
    # a matrix product on vectors: no image input
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(np.ones((4, 2), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "mlp.onnx"))
    with pytest.raises(utils.CaptioningError, match=r"mlp\.onnx: input 'x' has rank 2; an image encoder takes"):
        cnn.create_feature_extractor(config.copy(model_path=str(tmp_path / "mlp.onnx")), mx.cpu(), 2)


def test_unknown_tensor_and_wrong_input_size(tmp_path):
    import mxnet as mx
    path = str(tmp_path / "small.onnx")
    _helper_graph(path, batch=None)
    config = cnn.CNNConfig(model_path=path, layer="relu", image_size=(3, 8, 8))
    with pytest.raises(utils.CaptioningError, match=r"no tensor 'relu' \(closest names: relu1"):
        cnn.create_feature_extractor(config, mx.cpu(), 2)
    with pytest.raises(utils.CaptioningError, match=r"cannot take input size 3x9x8 .*; check --source-image-size"):
        cnn.create_feature_extractor(config.copy(layer="relu1", image_size=(3, 9, 8)), mx.cpu(), 2)
