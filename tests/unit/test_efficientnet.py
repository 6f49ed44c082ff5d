"""efficientnet: the architecture read from a state dict's shapes, TF-SAME padding, gallery names."""
import numpy as np
import pytest

from captioning import efficientnet, utils

# a miniature EfficientNet-Lite: stage widths and depths of our choosing, kernel 3 or 5
WIDTHS = (4, 6, 8, 10, 12, 14, 16)
DEPTHS = (1, 2, 1, 2, 1, 3, 1)
KERNELS = (3, 3, 5, 3, 5, 5, 3)


def mini_state(widths=WIDTHS, depths=DEPTHS, seed=0):
    rng = np.random.RandomState(seed)
    state = {}

    def conv(key, out, inp, k):
        state[key + ".weight"] = (rng.randn(out, inp, k, k) * 0.2).astype(np.float32)

    def bn(key, n):
        state[key + ".weight"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        state[key + ".bias"] = rng.randn(n).astype(np.float32) * 0.1
        state[key + ".running_mean"] = rng.randn(n).astype(np.float32) * 0.1
        state[key + ".running_var"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
        state[key + ".num_batches_tracked"] = np.array(1, np.int64)

    conv("_conv_stem", 8, 3, 3)
    bn("_bn0", 8)
    channels, index = 8, 0
    for stage, (width, depth, kernel) in enumerate(zip(widths, depths, KERNELS)):
        for _ in range(depth):
            prefix = "_blocks.%d." % index
            expanded = channels if stage == 0 else channels * 2
            if stage > 0:
                conv(prefix + "_expand_conv", expanded, channels, 1)
                bn(prefix + "_bn0", expanded)
            conv(prefix + "_depthwise_conv", expanded, 1, kernel)
            bn(prefix + "_bn1", expanded)
            conv(prefix + "_project_conv", width, expanded, 1)
            bn(prefix + "_bn2", width)
            channels, index = width, index + 1
    conv("_conv_head", 20, channels, 1)
    bn("_bn1", 20)
    state["_fc.weight"] = rng.randn(5, 20).astype(np.float32)
    state["_fc.bias"] = rng.randn(5).astype(np.float32)
    return state


@pytest.mark.parametrize("size,kernel,stride,expected", [(224, 3, 2, (0, 1)), (224, 5, 2, (1, 2)), (65, 3, 2, (1, 1)),
                                                         (17, 5, 2, (2, 2)), (7, 3, 1, (1, 1)), (9, 5, 1, (2, 2))])
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert efficientnet.same_padding(size, kernel, stride) == expected
    before, after = expected
    assert (size + before + after - kernel) // stride + 1 == -(-size // stride)


def test_architecture_from_the_weights():
    arch = efficientnet.read_architecture(mini_state(), "mini.pth")
    assert arch.widths == WIDTHS and arch.depths == DEPTHS
    assert [b.kernel for b in arch.blocks if b.unit == 1] == list(KERNELS)
    assert [b.stride for b in arch.blocks if b.unit == 1] == list(efficientnet.STAGE_STRIDES)
    assert all(b.stride == 1 for b in arch.blocks if b.unit > 1)
    assert efficientnet.identify(arch) is None
    assert efficientnet.recommended_layers(arch) == ["head_relu6", "stage7_unit1_project_bn", "stage6_unit3_add",
                                                     "pool"]


@pytest.mark.parametrize("size", [64, 65])
def test_built_network_shapes_and_names(size):
    import mxnet as mx
    symbol, args, auxs, _ = efficientnet.build(mini_state(), size, "mini.pth")
    internals = symbol.get_internals()
    _, shapes, _ = internals.infer_shape(data=(2, 3, size, size))
    shape = dict(zip(internals.list_outputs(), shapes))
    grid = size
    for _ in range(5):          # five stride-2 steps, each TF-SAME: ceil(n / 2)
        grid = -(-grid // 2)
    assert shape["head_relu6_output"] == (2, 20, grid, grid)
    assert shape["stage2_unit2_add_output"][1] == 6 and "stage1_unit1_expand_output" not in shape
    assert shape["softmax_output"] == (2, 5)
    assert set(args) | set(auxs) == set(symbol.list_arguments() + symbol.list_auxiliary_states()) - {
        "data", "softmax_label"}
    module = mx.mod.Module(internals["fc_output"], label_names=None)
    module.bind(data_shapes=[("data", (2, 3, size, size))], for_training=False)
    module.set_params(args, auxs, allow_extra=True)
    images = np.random.RandomState(1).uniform(0, 255, (2, 3, size, size)).astype(np.float32)
    module.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    assert np.isfinite(module.get_outputs()[0].asnumpy()).all()


def test_not_an_efficientnet_lite_is_a_clear_error():
    state = mini_state()
    state["_blocks.3._se_reduce.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(utils.CaptioningError, match="squeeze-excitation blocks found: this is EfficientNet, not"):
        efficientnet.read_architecture(state, "b0.pth")
    with pytest.raises(utils.CaptioningError, match=r"resnet.pth: no tensor '_conv_stem.weight'"):
        efficientnet.read_architecture({"conv1.weight": np.zeros((1,))}, "resnet.pth")
    with pytest.raises(utils.CaptioningError, match="6 stages found, EfficientNet-Lite has 7"):
        efficientnet.read_architecture(mini_state(WIDTHS[:6], DEPTHS[:6]), "short.pth")
