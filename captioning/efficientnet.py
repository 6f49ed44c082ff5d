"""EfficientNet-Lite (Tan & Le 2019; the "Lite" variants drop squeeze-excitation and use ReLU6) as an MXNet symbol
with the model gallery's naming, built from a PyTorch ``state_dict`` read by `torch_weights` (the layout of
``efficientnet-lite-pytorch``, a light edit of lukemelas/EfficientNet-PyTorch: ``_conv_stem``, ``_bn0``,
``_blocks.N._{expand_conv,bn0,depthwise_conv,bn1,project_conv,bn2}``, ``_conv_head``, ``_bn1``, ``_fc``).

Everything that varies between Lite0..Lite4 is read from the weights: the width of every layer, the number of
blocks per stage (a stage is a run of blocks with the same output width) and the kernel sizes. What weights do not
hold comes from the architecture: the stride of each of the 7 stages (1, 2, 2, 2, 1, 2, 1), BatchNorm epsilon
1e-3, and the native input size of each variant, looked up by the derived widths and depths. TensorFlow's 'SAME'
padding of the stride-2 convolutions is worked out for that input size (asymmetric pads become a ``Pad`` layer);
the model's own preprocessing, ``(x - 127) / 128``, is the graph's first step, so the input stays raw 0..255 RGB.

Layer names: ``stem_conv/_bn/_relu6``, ``stageS_unitU_{expand,expand_bn,expand_relu6,dw,dw_bn,dw_relu6,project,
project_bn,add}``, ``head_conv/_bn/_relu6``, ``pool``, ``flatten``, ``fc``, ``softmax`` (SoftmaxOutput, as in the
gallery)."""
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import utils

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPS = 1e-3
INPUT_MEAN = 127.0
INPUT_SCALE = 128.0

# (output widths of the 7 stages, blocks per stage) -> (variant, native input size). Lite0-2 checked against the
# PyPI weight wheels; the widths follow from the width multipliers 1.0 / 1.0 / 1.1 and the depths from 1.0 / 1.1 /
# 1.2 (first and last stage unscaled in the Lite variants).
KNOWN_VARIANTS: Dict[Tuple[Tuple[int, ...], Tuple[int, ...]], Tuple[str, int]] = {
    ((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)): ("efficientnet-lite0", 224),
    ((16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1)): ("efficientnet-lite1", 240),
    ((16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)): ("efficientnet-lite2", 260),
}


@dataclasses.dataclass
class BlockSpec:
    """One MBConv block as found in the weights."""
    index: int              # position in ``_blocks``
    stage: int              # 1-based
    unit: int               # 1-based within the stage
    in_channels: int
    expand_channels: int    # = in_channels when the block has no expansion
    out_channels: int
    kernel: int
    stride: int


@dataclasses.dataclass
class Architecture:
    """What the weights say about the network."""
    blocks: List[BlockSpec]
    stem_channels: int
    head_channels: int
    num_classes: int

    @property
    def widths(self) -> Tuple[int, ...]:
        return tuple(max(b.out_channels for b in self.blocks if b.stage == s) for s in range(1, 8))

    @property
    def depths(self) -> Tuple[int, ...]:
        return tuple(sum(1 for b in self.blocks if b.stage == s) for s in range(1, 8))


def _get(state: Dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    utils.check_condition(key in state, "%s: no tensor %r: not an EfficientNet-Lite state dict" % (where, key))
    return state[key]


def read_architecture(state: Dict[str, np.ndarray], where: str) -> Architecture:
    """Widths, stages, units and kernel sizes from the tensor shapes."""
    stem = _get(state, "_conv_stem.weight", where)
    head = _get(state, "_conv_head.weight", where)
    fc = _get(state, "_fc.weight", where)
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("_blocks.")})
    utils.check_condition(indices == list(range(len(indices))) and bool(indices),
                          "%s: the blocks are not numbered 0..N-1: not an EfficientNet-Lite state dict" % where)
    blocks: List[BlockSpec] = []
    in_channels = stem.shape[0]
    stage, unit = 0, 0
    previous_out = None
    for i in indices:
        prefix = "_blocks.%d." % i
        dw = _get(state, prefix + "_depthwise_conv.weight", where)
        project = _get(state, prefix + "_project_conv.weight", where)
        expand = state.get(prefix + "_expand_conv.weight")
        utils.check_condition(prefix + "_se_reduce.weight" not in state,
                              "%s: squeeze-excitation blocks found: this is EfficientNet, not EfficientNet-Lite; "
                              "export it to ONNX instead" % where)
        out_channels = project.shape[0]
        if out_channels != previous_out:
            stage, unit = stage + 1, 1
        else:
            unit += 1
        utils.check_condition(stage <= len(STAGE_STRIDES), "%s: more than %d stages: not an EfficientNet-Lite"
                              % (where, len(STAGE_STRIDES)))
        blocks.append(BlockSpec(index=i, stage=stage, unit=unit, in_channels=in_channels,
                                expand_channels=expand.shape[0] if expand is not None else in_channels,
                                out_channels=out_channels, kernel=dw.shape[2],
                                stride=STAGE_STRIDES[stage - 1] if unit == 1 else 1))
        in_channels = previous_out = out_channels
    utils.check_condition(stage == len(STAGE_STRIDES), "%s: %d stages found, EfficientNet-Lite has %d"
                          % (where, stage, len(STAGE_STRIDES)))
    return Architecture(blocks=blocks, stem_channels=stem.shape[0], head_channels=head.shape[0],
                        num_classes=fc.shape[0])


def identify(arch: Architecture) -> Optional[Tuple[str, int]]:
    """(variant name, native input size) of known widths and depths, else None."""
    return KNOWN_VARIANTS.get((arch.widths, arch.depths))


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """Builds the MXNet symbol layer by layer, collecting the weights each layer takes from the PyTorch state and
    tracking the spatial size (for TensorFlow 'SAME' padding)."""

    def __init__(self, state: Dict[str, np.ndarray], image_size: int, where: str) -> None:
        self.state, self.where, self.size = state, where, image_size
        self.args: Dict[str, np.ndarray] = {}
        self.aux: Dict[str, np.ndarray] = {}

    def conv(self, x: Any, name: str, key: str, kernel: int, stride: int, groups: int = 1) -> Any:
        import mxnet as mx
        weight = _get(self.state, key, self.where)
        self.args[name + "_weight"] = weight
        pads = (0, 0) if kernel == 1 and stride == 1 else same_padding(self.size, kernel, stride)
        pad = (0, 0)
        if pads[0] != pads[1]:
            x = mx.sym.pad(x, mode="constant", constant_value=0, name=name + "_pad",
                           pad_width=(0, 0, 0, 0, pads[0], pads[1], pads[0], pads[1]))
        else:
            pad = pads
        self.size = (self.size + pads[0] + pads[1] - kernel) // stride + 1
        return mx.sym.Convolution(x, kernel=(kernel, kernel), stride=(stride, stride), pad=pad,
                                  num_filter=weight.shape[0], num_group=groups, no_bias=True, name=name)

    def batch_norm(self, x: Any, name: str, key: str) -> Any:
        import mxnet as mx
        self.args[name + "_gamma"] = _get(self.state, key + ".weight", self.where)
        self.args[name + "_beta"] = _get(self.state, key + ".bias", self.where)
        self.aux[name + "_moving_mean"] = _get(self.state, key + ".running_mean", self.where)
        self.aux[name + "_moving_var"] = _get(self.state, key + ".running_var", self.where)
        return mx.sym.BatchNorm(x, eps=BN_EPS, momentum=0.99, fix_gamma=False, use_global_stats=True, name=name)

    @staticmethod
    def relu6(x: Any, name: str) -> Any:
        import mxnet as mx
        return mx.sym.clip(x, a_min=0.0, a_max=6.0, name=name)

    def block(self, x: Any, block: BlockSpec) -> Any:
        """One MBConv block: expansion (if any), depthwise convolution, projection, residual (if shapes allow)."""
        import mxnet as mx
        name = "stage%d_unit%d" % (block.stage, block.unit)
        prefix = "_blocks.%d." % block.index
        shortcut = x
        if prefix + "_expand_conv.weight" in self.state:
            x = self.conv(x, name + "_expand", prefix + "_expand_conv.weight", 1, 1)
            x = self.relu6(self.batch_norm(x, name + "_expand_bn", prefix + "_bn0"), name + "_expand_relu6")
        x = self.conv(x, name + "_dw", prefix + "_depthwise_conv.weight", block.kernel, block.stride,
                      groups=block.expand_channels)
        x = self.relu6(self.batch_norm(x, name + "_dw_bn", prefix + "_bn1"), name + "_dw_relu6")
        x = self.conv(x, name + "_project", prefix + "_project_conv.weight", 1, 1)
        x = self.batch_norm(x, name + "_project_bn", prefix + "_bn2")
        if block.stride == 1 and block.in_channels == block.out_channels:
            x = mx.sym.elemwise_add(x, shortcut, name=name + "_add")
        return x


def build(state: Dict[str, np.ndarray], image_size: int, where: str) -> Tuple[Any, Dict[str, Any], Dict[str, Any],
                                                                          Architecture]:
    """(symbol, arg_params, aux_params, architecture) for square inputs of ``image_size``."""
    import mxnet as mx
    arch = read_architecture(state, where)
    graph = _Graph(state, image_size, where)
    data = mx.sym.var("data")
    # named as MXNet names them in a fresh process (the reference conversion's names), not by a global counter
    centred = mx.sym._internal._minus_scalar(data, scalar=INPUT_MEAN, name="_minusscalar0")  # noqa: SLF001
    x = mx.sym.identity(mx.sym._internal._div_scalar(centred, scalar=INPUT_SCALE, name="_divscalar0"),  # noqa: SLF001
                        name="data_norm")
    x = graph.relu6(graph.batch_norm(graph.conv(x, "stem_conv", "_conv_stem.weight", 3, 2), "stem_bn", "_bn0"),
                    "stem_relu6")
    for block in arch.blocks:
        x = graph.block(x, block)
    x = graph.conv(x, "head_conv", "_conv_head.weight", 1, 1)
    x = graph.relu6(graph.batch_norm(x, "head_bn", "_bn1"), "head_relu6")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="avg", name="pool")
    x = mx.sym.flatten(x, name="flatten")
    graph.args["fc_weight"] = _get(state, "_fc.weight", where)
    graph.args["fc_bias"] = _get(state, "_fc.bias", where)
    x = mx.sym.FullyConnected(x, num_hidden=arch.num_classes, name="fc")
    symbol = mx.sym.SoftmaxOutput(x, name="softmax")
    to_nd = lambda values: {k: mx.nd.array(v, dtype=np.float32) for k, v in values.items()}  # noqa: E731
    return symbol, to_nd(graph.args), to_nd(graph.aux), arch


def recommended_layers(arch: Architecture) -> List[str]:
    """Layers that make good caption features, best first: the head's feature map, the last block's output, the
    last block of stage 6, the pooled vector."""
    last6 = max(b.unit for b in arch.blocks if b.stage == 6)
    return ["head_relu6", "stage7_unit1_project_bn", "stage6_unit%d_add" % last6 if last6 > 1 else
            "stage6_unit1_project_bn", "pool"]
