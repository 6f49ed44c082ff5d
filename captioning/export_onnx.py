"""CLI: export a trained model to ONNX, so that it captions with onnxruntime alone (no MXNet).

    python -m captioning.export_onnx --models MODEL --output MODEL.onnx-export [--quantize int8] \\
        [--image-encoder-model-path CNN --image-encoder-layer L --source-image-size 3 H W]

The output folder (see `onnx_model` and ``docs/deploy.md``) holds the encode graph (features -> the decoder's
initial states), the decoder's step graph (previous words and states -> logits, attention, new states, with the
constants of the fixed parameters folded in: `model.CaptionModel.step_constants`), the vocabulary, the config, the
CNN cut at its layer when asked for (``cnn.onnx``), and ``manifest.json`` with the sha256 of each file.

The graphs are the model's own hybridized computations (`model._EncodeGraph`, `model._StepGraph`) traced to MXNet
symbols and converted by ``mx.onnx.export_model``; the MXNet operators its converter does not translate (a
reshape with MXNet's special codes, a 1-D convolution) are translated here with ``onnx.helper`` (`_converters`).
Each exported graph is then run by onnxruntime next to the MXNet model on random inputs (several steps, states fed
back) and must give the same numbers, or the export is refused in one line. ``--quantize int8`` rewrites the
checked graphs (`quantize_int8`) in the form of onnxruntime's dynamic quantization: onnxruntime 1.32's own
``quantize_dynamic`` needs onnx >= 1.16 (and ml_dtypes), with which mx.onnx does not run. The folder is written
under a temporary name and renamed when complete.
"""
import ast
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__, arguments, log, utils
from . import constants as C
from . import onnx_model as O
from .cnn import CNNConfig
from .config import Config

logger = logging.getLogger(__name__)

OPSET = 13                       # the opset mx.onnx's translations are written for
QUANTIZE_TYPES = ("int8",)
CHECK_BATCH = 3                  # inputs of the equality check of each exported graph
CHECK_STEPS = 3                  # steps of that check (states fed back)
CHECK_RTOL = 1e-3
CHECK_ATOL = 1e-4
CHECK_SEED = 13
INT8_MAX = 127.0


def _onnx() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401 - checked here, used by the equality check
    except ImportError:
        raise utils.CaptioningError("export_onnx needs the onnx and onnxruntime packages: pip install -e "
                                    "\".[encoders]\"") from None
    return onnx


# ---------------------------------------------------------------------------------------------------------------
# translations of the MXNet operators mx.onnx's converter does not handle (opset 13)
# ---------------------------------------------------------------------------------------------------------------

class _NodeBuilder:
    """Collects the ONNX nodes (and int64 initializers) that translate one MXNet node named ``name``."""

    def __init__(self, node: Dict[str, Any], kwargs: Dict[str, Any]) -> None:
        from onnx import helper
        self.helper = helper
        self.name = node["name"]
        self.attrs = node.get("attrs", {})
        lookup = kwargs["outputs_lookup"]
        self.inputs = [lookup[i[0]][i[1]].name for i in node["inputs"]]
        self.initializer = kwargs["initializer"]
        self.nodes: List[Any] = []
        self.count = 0

    def tensor(self) -> str:
        self.count += 1
        return "%s__%d" % (self.name, self.count)

    def const(self, values: Sequence[int]) -> str:
        from onnx import numpy_helper
        name = self.tensor()
        self.initializer.append(numpy_helper.from_array(np.array(list(values), dtype=np.int64), name))
        return name

    def add(self, op: str, inputs: Sequence[str], output: Optional[str] = None, **attrs: Any) -> str:
        output = output or self.tensor()
        self.nodes.append(self.helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def attr(self, key: str, default: Any = None) -> Any:
        """An attribute's Python value (MXNet writes them as strings: ``"(3,)"``, ``"True"``, ``"1"``)."""
        raw = self.attrs.get(key)
        if raw is None:
            return default
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw


def _reshape_dims(b: _NodeBuilder, shape: Sequence[int]) -> List[str]:
    """The output shape of MXNet's reshape codes (0 copy, -1 infer, -2 copy the rest, -3 merge two, -4 split
    one into the next two values) as int64 pieces computed from the input's shape."""
    in_shape = b.add("Shape", [b.inputs[0]])

    def dim(begin: int, end: int) -> str:
        return b.add("Slice", [in_shape, b.const([begin]), b.const([end])])

    parts: List[str] = []
    source, k = 0, 0
    while k < len(shape):
        code = shape[k]
        if code == 0:
            parts.append(dim(source, source + 1))
        elif code > 0 or code == -1:
            parts.append(b.const([code]))
        elif code == -2:
            parts.append(dim(source, np.iinfo(np.int64).max))
        elif code == -3:
            parts.append(b.add("Mul", [dim(source, source + 1), dim(source + 1, source + 2)]))
            source += 1
        else:  # -4: split the input dimension into the next two values, one of them possibly -1
            first, second = shape[k + 1], shape[k + 2]
            whole = dim(source, source + 1)
            known = second if first == -1 else first
            rest = b.add("Div", [whole, b.const([known])]) if -1 in (first, second) else b.const([second])
            parts.extend([rest, b.const([second])] if first == -1 else [b.const([first]), rest])
            k += 2
        source += 1
        k += 1
    return parts


def _convert_reshape(original: Callable) -> Callable:
    def convert(node: Dict[str, Any], **kwargs: Any) -> Any:
        b = _NodeBuilder(node, kwargs)
        shape = b.attr("shape")
        shape = [int(v) for v in (shape if isinstance(shape, (tuple, list)) else [shape])]
        if b.attr("reverse", False) or not set(shape) & {-2, -3, -4}:
            return original(node, **kwargs)
        target = b.add("Concat", _reshape_dims(b, shape), axis=0)
        b.add("Reshape", [b.inputs[0], target], output=b.name)
        return b.nodes
    return convert


def _convert_convolution(original: Callable) -> Callable:
    """``Convolution`` with the 1-D layout ``NCW`` (the convolutional decoder's), as ONNX's Conv."""
    def convert(node: Dict[str, Any], **kwargs: Any) -> Any:
        b = _NodeBuilder(node, kwargs)
        if b.attr("layout") != "NCW":
            return original(node, **kwargs)
        kernel = list(b.attr("kernel"))
        pad = list(b.attr("pad", (0,) * len(kernel))) or [0] * len(kernel)
        inputs = b.inputs[:2] if b.attr("no_bias", False) else b.inputs[:3]
        b.add("Conv", inputs, output=b.name, kernel_shape=kernel,
              strides=list(b.attr("stride", (1,) * len(kernel))) or [1] * len(kernel),
              dilations=list(b.attr("dilate", (1,) * len(kernel))) or [1] * len(kernel),
              pads=pad + pad, group=int(b.attr("num_group", 1)))
        return b.nodes
    return convert


@contextlib.contextmanager
def _converters() -> Iterator[None]:
    """mx.onnx's converter with the translations above in place of its own, and its check of the graph at the
    opset its translations are written for (it checks at the installed onnx's newest opset, where some of them,
    such as ReduceMean's axes attribute, are no longer valid), for the block's duration."""
    import onnx.checker
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    registry = MXNetGraph.registry_
    replaced = {"Reshape": _convert_reshape, "Convolution": _convert_convolution}
    saved = {op: registry.get(OPSET, {}).get(op) for op in replaced}
    for op, make in replaced.items():
        original = next(registry[v][op] for v in range(OPSET, 11, -1) if op in registry.get(v, {}))
        registry.setdefault(OPSET, {})[op] = make(original)
    check_graph = onnx.checker.check_graph
    context = onnx.checker.C.CheckerContext()
    context.ir_version = onnx.checker.DEFAULT_CONTEXT.ir_version
    context.opset_imports = {"": OPSET}
    onnx.checker.check_graph = lambda graph, ctx=context: check_graph(graph, ctx)
    try:
        yield
    finally:
        onnx.checker.check_graph = check_graph
        for op, function in saved.items():
            if function is None:
                registry[OPSET].pop(op, None)
            else:
                registry[OPSET][op] = function


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """mx.onnx logs every export at INFO on the root logger: not news for our users."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------------------------------------------
# one graph: MXNet symbol -> ONNX model with the export's input and output names
# ---------------------------------------------------------------------------------------------------------------

class GraphSpec:
    """A graph to export: its symbol (inputs are ``mx.sym.var`` s named as the export's inputs), the arrays of its
    parameters and folded constants by name, each input's (example shape, shape with None where dynamic) and the
    export's output names, in the symbol's output order."""

    def __init__(self, kind: str, symbol: Any, params: Dict[str, Any], inputs: Dict[str, Tuple[tuple, tuple]],
                 outputs: Sequence[str]) -> None:
        self.kind = kind
        self.symbol = symbol
        self.params = params
        self.inputs = inputs
        self.outputs = list(outputs)


def _mx_output_names(symbol: Any) -> List[str]:
    """The ONNX names mx.onnx gives the symbol's outputs (its ``_output`` suffix dropped)."""
    return [name[:-len("_output")] if name.endswith("_output") else name for name in symbol.list_outputs()]


def _export_spec(spec: GraphSpec, work: str, what: str) -> Any:
    """The ONNX model of ``spec``: converted by mx.onnx (opset 13), weights as initializers only, inputs in the
    export's order (an input the graph does not read is still declared), outputs renamed; a one-line error naming
    ``what`` when an operator cannot be converted."""
    onnx = _onnx()
    import mxnet as mx
    used = set(spec.symbol.list_inputs())
    params = {name: value for name, value in spec.params.items() if name in used}
    order = [name for name in spec.symbol.list_inputs() if name not in params]
    path = os.path.join(work, "%s.mxnet.onnx" % spec.kind)
    try:
        with _converters(), _quiet_root_logger():
            mx.onnx.export_model(spec.symbol, params, in_shapes=[spec.inputs[n][0] for n in order],
                                 in_types=[np.float32] * len(order), onnx_file_path=path, dynamic=True,
                                 dynamic_input_shapes=[spec.inputs[n][1] for n in order])
        proto = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - the converter raises AttributeError, NotImplementedError, ...
        raise utils.CaptioningError("%s: its %s graph cannot be exported to ONNX (%s)"
                                    % (what, spec.kind, utils.error_cause(e, 200))) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    return _finish_graph(proto, spec)


def _finish_graph(proto: Any, spec: GraphSpec) -> Any:
    onnx = _onnx()
    from onnx import TensorProto, helper
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("", OPSET))
    graph = proto.graph
    declared = {i.name: i for i in graph.input}
    initializers = {i.name for i in graph.initializer}
    inputs = []
    for name, (_, dynamic) in spec.inputs.items():
        if name in declared:
            inputs.append(declared[name])
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                        [d if d is not None else "%s_%d" % (name, k)
                                                         for k, d in enumerate(dynamic)]))
    del graph.input[:]
    graph.input.extend(i for i in inputs if i.name not in initializers)
    produced = {o.name: o for o in graph.output}
    del graph.output[:]
    for source, target in zip(_mx_output_names(spec.symbol), spec.outputs):
        graph.node.append(helper.make_node("Identity", [source], [target], name=target))
        info = onnx.ValueInfoProto()
        info.CopyFrom(produced[source])
        info.name = target
        graph.output.append(info)
    names = {node.name for node in graph.node}
    for index, node in enumerate(graph.node):     # unique node names: int8 finds its nodes by name
        if not node.name:
            node.name = next(n for n in ("%s_node_%d" % (spec.kind, index + k) for k in range(len(graph.node) + 1))
                             if n not in names)
            names.add(node.name)
    graph.name = "captioning_%s" % spec.kind
    proto.producer_name = "captioning.export_onnx"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    return proto


# ---------------------------------------------------------------------------------------------------------------
# the model's graphs
# ---------------------------------------------------------------------------------------------------------------

def _param_arrays(model: Any) -> Dict[str, Any]:
    return {p.name: p.data() for p in model.collect_params().values()}


def _constant_name(index: int) -> str:
    return "step_constant_%d" % index


def _dynamic_state_shapes(model: Any, constants: Any) -> List[tuple]:
    """Each state's shape with None on the batch axis and on any axis that grows from step to step (the
    transformer's caches), found by running one step."""
    import mxnet as mx
    features = mx.nd.ones((2,) + tuple(model.config.encoder.feature_shape))
    states = model.encode(features)
    _, _, new_states = model.decode_step(mx.nd.array([C.BOS_ID, C.BOS_ID]), states, 1, constants)
    shapes = []
    for before, after in zip(states, new_states):
        shapes.append((None,) + tuple(d if d == e else None for d, e in zip(before.shape[1:], after.shape[1:])))
    return shapes


def graph_specs(model: Any) -> Tuple[GraphSpec, GraphSpec]:
    """The encode and step graphs of ``model`` (parameters fixed: `model.CaptionModel.fix_parameters`)."""
    import mxnet as mx
    from .model import _EncodeGraph, _StepGraph
    model.fix_parameters()
    constants = model.step_constants(mx.cpu())
    params = _param_arrays(model)
    feature_shape = tuple(int(d) for d in model.config.encoder.feature_shape)
    encode_graph = _EncodeGraph(model)
    states = encode_graph.hybrid_forward(mx.sym, mx.sym.var(O.FEATURES_INPUT))
    states = list(states) if isinstance(states, (list, tuple)) else [states]
    num_states = len(states)
    encode = GraphSpec("encode", mx.sym.Group(states), params,
                       {O.FEATURES_INPUT: ((2,) + feature_shape, (None,) + feature_shape)},
                       O.state_names(num_states))
    example = model.encode(mx.nd.ones((2,) + feature_shape))
    dynamic = _dynamic_state_shapes(model, constants)
    step_params = dict(params)
    step_params.update({_constant_name(i): a for i, a in enumerate(constants.arrays)})
    names = O.state_names(num_states)
    outputs = _StepGraph(model, 0, fixed=True).hybrid_forward(
        mx.sym, mx.sym.var(O.WORDS_INPUT), *[mx.sym.var(_constant_name(i)) for i in range(len(constants.arrays))],
        *[mx.sym.var(name) for name in names])
    inputs = {O.WORDS_INPUT: ((2,), (None,))}
    inputs.update({name: (tuple(s.shape), shape) for name, s, shape in zip(names, example, dynamic)})
    step = GraphSpec("step", mx.sym.Group(list(outputs)), step_params, inputs,
                     O.step_output_names(model.num_static_states, num_states))
    return encode, step


def _session(proto: Any) -> Any:
    import onnxruntime as ort
    return ort.InferenceSession(proto.SerializeToString(), sess_options=O.session_options(1),
                                providers=["CPUExecutionProvider"])


def _compare(expected: Sequence[Any], got: Sequence[np.ndarray], names: Sequence[str], what: str) -> None:
    for name, a, b in zip(names, expected, got):
        a = a.asnumpy() if hasattr(a, "asnumpy") else np.asarray(a)
        same = a.shape == b.shape and np.allclose(a, b, rtol=CHECK_RTOL, atol=CHECK_ATOL)
        difference = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("nan")
        utils.check_condition(same, "%s: exported to ONNX, its %s differs from the MXNet model's (shape %s vs %s, "
                                    "largest difference %.3g): this model cannot be exported faithfully"
                              % (what, name, a.shape, b.shape, difference))


def check_graphs(model: Any, encode_proto: Any, step_proto: Any, what: str, beam_size: int = 1) -> float:
    """Run the exported graphs next to ``model`` (random features and words, `CHECK_STEPS` steps, each side
    feeding its own states back); a one-line error when any output differs. Returns the largest difference of
    the logits."""
    import mxnet as mx
    rng = np.random.RandomState(CHECK_SEED)
    features = rng.uniform(0.0, 2.0, (CHECK_BATCH,) + tuple(model.config.encoder.feature_shape)).astype(np.float32)
    encode, step = _session(encode_proto), _session(step_proto)
    states = model.encode(mx.nd.array(features))
    onnx_states = encode.run(None, {O.FEATURES_INPUT: features})
    _compare(states, onnx_states, ["encode output %d" % i for i in range(len(states))], what)
    constants = model.step_constants(mx.cpu())
    if beam_size > 1:
        onnx_states = onnx_states[:model.num_static_states] + [
            np.repeat(s, beam_size, axis=0) for s in onnx_states[model.num_static_states:]]
        states = states[:model.num_static_states] + [mx.nd.repeat(s, beam_size, axis=0)
                                                     for s in states[model.num_static_states:]]
    largest = 0.0
    for _ in range(CHECK_STEPS):
        words = rng.randint(0, model.config.vocab_size, size=CHECK_BATCH * beam_size).astype(np.float32)
        logits, attention, states = model.decode_step(mx.nd.array(words), states, beam_size, constants)
        got = O.run_step(step, model.num_static_states, words, onnx_states, beam_size)
        _compare([logits, attention] + states, [got[0], got[1]] + got[2], ["logits", "attention"] +
                 ["step state %d" % i for i in range(len(states))], what)
        largest = max(largest, float(np.max(np.abs(logits.asnumpy() - got[0]))))
        onnx_states = got[2]
    return largest


# ---------------------------------------------------------------------------------------------------------------
# int8: dynamic quantization of the matrix products by constant weights
# ---------------------------------------------------------------------------------------------------------------

def _gemms_as_matmuls(proto: Any) -> Any:
    """A copy of ``proto`` whose Gemm nodes with a constant weight (mx.onnx's FullyConnected) are MatMul (+ Add of
    the bias) with the weight stored pre-transposed (the form `quantize_int8` works on)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, added = [], {}
    for index, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in weights or attrs.get("transA", 0) or \
                attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            weight = weight + "__transposed"
            if weight not in added:
                added[weight] = numpy_helper.from_array(
                    np.ascontiguousarray(numpy_helper.to_array(weights[node.input[1]]).T), weight)
        name = node.name or "gemm_%d" % index
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = node.output[0] if bias is None else name + "__product"
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=name + "__matmul"))
        if bias is not None:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=name + "__bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added.values())
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return proto


def constant_matmuls(proto: Any) -> List[str]:
    """Names of the MatMul nodes whose second input is a constant weight (what int8 quantizes)."""
    weights = {i.name for i in proto.graph.initializer}
    return [node.name for node in proto.graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def _quantized_matmul(node: Any, weight: np.ndarray, nodes: List[Any], initializers: List[Any]) -> None:
    """``MatMul(x, W)`` as int8 arithmetic: x quantized to uint8 at run time (one scale per call,
    DynamicQuantizeLinear), W to int8 once (one symmetric scale per output column), their product in int32
    (MatMulInteger) scaled back to float32 (the form of onnxruntime's dynamic quantization, which its optimiser
    fuses into one kernel)."""
    from onnx import TensorProto, helper, numpy_helper
    name = node.name
    scales = np.maximum(np.abs(weight).max(axis=0), np.finfo(np.float32).tiny) / INT8_MAX
    quantized = np.clip(np.round(weight / scales), -INT8_MAX, INT8_MAX).astype(np.int8)
    initializers += [numpy_helper.from_array(quantized, name + "__weight_int8"),
                     numpy_helper.from_array(scales.astype(np.float32), name + "__weight_scale")]
    x_q, x_scale, x_zero = name + "__x_uint8", name + "__x_scale", name + "__x_zero_point"
    nodes += [
        helper.make_node("DynamicQuantizeLinear", [node.input[0]], [x_q, x_scale, x_zero], name=name + "__quantize"),
        helper.make_node("MatMulInteger", [x_q, name + "__weight_int8", x_zero], [name + "__int32"],
                         name=name + "__matmul_integer"),
        helper.make_node("Cast", [name + "__int32"], [name + "__float"], name=name + "__cast",
                         to=TensorProto.FLOAT),
        helper.make_node("Mul", [x_scale, name + "__weight_scale"], [name + "__scale"], name=name + "__scale"),
        helper.make_node("Mul", [name + "__float", name + "__scale"], [node.output[0]], name=name + "__rescale")]


def _quantized_gather(node: Any, table: np.ndarray, nodes: List[Any], initializers: List[Any]) -> None:
    """``Gather(table, ids)`` of a constant table (the RNN's projected embeddings) from an int8 copy with one
    scale per row: the rows read are scaled back to float32."""
    from onnx import TensorProto, helper, numpy_helper
    name = node.name
    scales = np.maximum(np.abs(table).max(axis=1, keepdims=True), np.finfo(np.float32).tiny) / INT8_MAX
    quantized = np.clip(np.round(table / scales), -INT8_MAX, INT8_MAX).astype(np.int8)
    initializers += [numpy_helper.from_array(quantized, name + "__table_int8"),
                     numpy_helper.from_array(scales.astype(np.float32), name + "__table_scale")]
    nodes += [
        helper.make_node("Gather", [name + "__table_int8", node.input[1]], [name + "__rows_int8"], axis=0,
                         name=name + "__gather"),
        helper.make_node("Gather", [name + "__table_scale", node.input[1]], [name + "__row_scales"], axis=0,
                         name=name + "__gather_scale"),
        helper.make_node("Cast", [name + "__rows_int8"], [name + "__rows"], name=name + "__cast",
                         to=TensorProto.FLOAT),
        helper.make_node("Mul", [name + "__rows", name + "__row_scales"], [node.output[0]], name=name + "__rescale")]


def constant_tables(proto: Any) -> List[str]:
    """Names of the Gather nodes that read rows (axis 0) of a constant float32 matrix (what int8 stores in int8)."""
    from onnx import TensorProto, helper
    tables = {i.name for i in proto.graph.initializer if len(i.dims) == 2 and i.data_type == TensorProto.FLOAT}
    return [node.name for node in proto.graph.node if node.op_type == "Gather" and node.input[0] in tables
            and all(helper.get_attribute_value(a) == 0 for a in node.attribute if a.name == "axis")]


def quantize_int8(proto: Any, kind: str) -> Any:
    """``proto`` with its matrix products by constant weights (`constant_matmuls`, after `_gemms_as_matmuls`) in
    int8 (`_quantized_matmul`), and its constant tables stored in int8 (`constant_tables`,
    `_quantized_gather`); every other operator stays float32."""
    from onnx import numpy_helper
    proto = _gemms_as_matmuls(proto)
    graph = proto.graph
    weights = {i.name: i for i in graph.initializer}
    products, tables = set(constant_matmuls(proto)), set(constant_tables(proto))
    stored: Dict[str, str] = {}
    nodes: List[Any] = []
    added: List[Any] = []
    for node in graph.node:
        if node.name in products:
            _quantized_matmul(node, numpy_helper.to_array(weights[node.input[1]]), nodes, added)
        elif node.name in tables:
            _quantized_gather(node, numpy_helper.to_array(weights[node.input[0]]), nodes, added)
            stored[node.input[0]] = node.name + "__table_int8"
        else:
            nodes.append(node)
    for node in nodes:      # the index clipping of mx.onnx's take reads the table's shape: read the int8 copy's
        if node.op_type == "Shape" and node.input[0] in stored:
            node.input[0] = stored[node.input[0]]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _onnx().checker.check_model(proto)
    logger.info("%s graph: %d matrix products and %d tables in int8", kind, len(products), len(tables))
    return proto


# ---------------------------------------------------------------------------------------------------------------
# the CNN
# ---------------------------------------------------------------------------------------------------------------

def _with_features_output(proto: Any, tensor: str) -> Any:
    """``proto`` (cut at ``tensor``) with one output ``features`` (B, C, H, W) float32 (through an Identity node)."""
    from onnx import TensorProto, helper
    if tensor != O.FEATURES_INPUT:
        proto.graph.node.append(helper.make_node("Identity", [tensor], [O.FEATURES_INPUT],
                                                 name="captioning_export_features"))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info(O.FEATURES_INPUT, TensorProto.FLOAT,
                                                            ["batch", "channels", "height", "width"]))
    _onnx().checker.check_model(proto)
    return proto


def _mxnet_cnn_proto(config: Any, work: str) -> Any:
    """An MXNet checkpoint cut at its layer, converted by mx.onnx (input ``(B, 3, H, W)`` raw 0..255)."""
    import mxnet as mx
    from . import cnn
    symbol, arg_params, aux_params = cnn.load_checkpoint(config.model_path, config.epoch)
    output = cnn.cut_at_layer(symbol, config.layer, cnn.symbol_file(config.model_path))
    params = {**arg_params, **aux_params}
    data = next(n for n in output.list_inputs() if n not in params and not n.endswith("_label"))
    shape = (1,) + tuple(config.image_size)
    spec = GraphSpec("cnn", mx.sym.Group([output]), params, {data: (shape, (None,) + shape[1:])},
                     [O.FEATURES_INPUT])
    return _export_spec(spec, work, cnn.symbol_file(config.model_path))


def cnn_proto(config: Any, work: str) -> Any:
    """``cnn.onnx``: the CNN of ``config`` (an MXNet checkpoint or an ONNX file) up to its layer, one output
    ``features``."""
    from . import cnn, onnx_encoder
    if cnn.is_onnx(config.model_path):
        proto, _, tensor = onnx_encoder.cut_model(config.model_path, config.layer)
        return _with_features_output(proto, tensor)
    return _mxnet_cnn_proto(config, work)


def check_cnn(config: Any, proto: Any, feature_shape: Sequence[int]) -> None:
    """The exported CNN gives the model's feature shape and the numbers of the original CNN on random images."""
    import mxnet as mx
    from . import cnn
    extractor = cnn.create_feature_extractor(config, mx.cpu(), 2)
    utils.check_condition(tuple(extractor.output_shape) == tuple(feature_shape),
                          "%s: layer %r gives features %s but the model was trained on %s; give the CNN, layer and "
                          "--source-image-size of the training features"
                          % (config.model_path, config.layer, tuple(extractor.output_shape), tuple(feature_shape)))
    images = np.random.RandomState(CHECK_SEED).uniform(0, 255, (2,) + tuple(config.image_size)).astype(np.float32)
    session = _session(proto)
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    _compare([extractor.extract(images)], [got], ["CNN output"], config.model_path)


# ---------------------------------------------------------------------------------------------------------------
# the folder
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ExportConfig(Config):
    """What to export: the model folder (``--models``) and checkpoint (``--checkpoint``; None: ``params.best``),
    the output folder (``--output``), ``--quantize``, ``--overwrite-output`` and the CNN to include (None: none)."""
    model_folder: str
    output: str
    checkpoint: Optional[int] = None
    quantize: Optional[str] = None
    overwrite_output: bool = False
    image_encoder: Optional[CNNConfig] = None


def check_output(config: ExportConfig) -> None:
    """``--output`` may be new, or an earlier export with ``--overwrite-output``; never the model folder or a
    folder that holds it."""
    output = config.output
    if not os.path.lexists(output):
        return
    check = utils.check_condition
    check(os.path.isdir(output), "%s: exists and is not a folder; --output names the folder to write" % output)
    check(not utils.inputs_within(output, [("--models", config.model_folder)]),
          "%s: holds the model folder %s; give another --output" % (output, config.model_folder))
    check(config.overwrite_output, "%s: exists; give another --output, or --overwrite-output to replace an earlier "
                                   "export" % output)
    check(O.is_export(output), "%s: holds no %s of captioning.export_onnx; --overwrite-output replaces only an "
                               "earlier export" % (output, O.MANIFEST_NAME))


@contextlib.contextmanager
def staging_folder(output: str) -> Iterator[str]:
    """A temporary folder beside ``output`` to write into; when the block ends without error it becomes
    ``output`` (an earlier export there is replaced), otherwise it is removed with any parent folder made for
    it."""
    parent = os.path.dirname(os.path.abspath(output))
    created = utils.missing_folders(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(output)) + ".", suffix=".tmp",
                                dir=parent)
        os.chmod(work, 0o777 & ~utils.current_umask())
    except OSError as e:
        utils.remove_empty_folders(created)
        raise utils.CaptioningError("%s: cannot write there (%s)" % (output, e.strerror or e)) from None
    try:
        yield work
        if os.path.lexists(output):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(output)) + ".", suffix=".old",
                                   dir=parent)
            os.replace(output, old)
            os.replace(work, output)
            if os.path.islink(old):      # --output was a link to the earlier export: the link is replaced
                os.remove(old)
            else:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        utils.remove_empty_folders(created)
        raise


def _manifest(model: Any, config: ExportConfig, folder: str, params: str, num_states: int) -> Dict[str, Any]:
    files = {name: O.sha256_file(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
    encoder = None
    if config.image_encoder is not None:
        encoder = {"file": O.CNN_FILE, "layer": config.image_encoder.layer,
                   "image_size": [int(v) for v in config.image_encoder.image_size[1:]]}
    return {"format": O.FORMAT_NAME, "format_version": O.FORMAT_VERSION, "captioning_version": __version__,
            "files": files, "feature_shape": [int(d) for d in model.config.encoder.feature_shape],
            "num_states": num_states, "num_static_states": int(model.num_static_states),
            "vocab_size": int(model.config.vocab_size), "max_output_length": int(model.max_output_length),
            "attention_positions": int(model.num_positions), "quantize": config.quantize, "image_encoder": encoder,
            "source": {"model_folder": os.path.abspath(config.model_folder), "params": os.path.basename(params),
                       "params_sha256": O.sha256_file(params)}}


def write_export(model: Any, config: ExportConfig, folder: str, params: str) -> Dict[str, Any]:
    """Write the export of ``model`` (loaded from ``params``) into the empty ``folder``; its manifest."""
    onnx = _onnx()
    what = config.model_folder
    protos: Dict[str, Any] = {}
    if config.image_encoder is not None:      # first: a CNN that does not fit the model fails fast
        protos[O.CNN_FILE] = cnn_proto(config.image_encoder, folder)
        check_cnn(config.image_encoder, protos[O.CNN_FILE], model.config.encoder.feature_shape)
    encode_spec, step_spec = graph_specs(model)
    protos[O.ENCODE_FILE] = _export_spec(encode_spec, folder, what)
    protos[O.STEP_FILE] = _export_spec(step_spec, folder, what)
    largest = check_graphs(model, protos[O.ENCODE_FILE], protos[O.STEP_FILE], what)
    logger.info("The exported graphs give the MXNet model's numbers (largest logit difference %.2g)", largest)
    if config.quantize == "int8":
        for name in (O.ENCODE_FILE, O.STEP_FILE):
            protos[name] = quantize_int8(protos[name], name.split(".")[0])
    for name, proto in protos.items():
        onnx.save(proto, os.path.join(folder, name))
    shutil.copyfile(os.path.join(config.model_folder, C.VOCAB_TRG_NAME), os.path.join(folder, C.VOCAB_TRG_NAME))
    shutil.copyfile(os.path.join(config.model_folder, C.CONFIG_NAME), os.path.join(folder, O.CONFIG_FILE))
    manifest = _manifest(model, config, folder, params, len(encode_spec.outputs))
    with open(os.path.join(folder, O.MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return manifest


def export(config: ExportConfig) -> Dict[str, Any]:
    """Export the model of ``config`` to ``config.output`` (see the module docstring); its manifest."""
    check_output(config)
    from .model import load_model, params_path
    model, _ = load_model(config.model_folder, config.checkpoint, hybridize=False)
    with staging_folder(config.output) as work:
        manifest = write_export(model, config, work, params_path(config.model_folder, config.checkpoint))
    logger.info("Exported %s (%s decoder%s) to %s", config.model_folder, model.config.decoder,
                ", int8" if config.quantize else "", config.output)
    return manifest


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.export_onnx",
                                            description="Export a trained model to ONNX: a folder that captions "
                                                        "with onnxruntime, without MXNet.")
    arguments.add_export_onnx_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    _onnx()
    image_encoder = None
    if args.include_image_encoder or args.image_encoder_model_path is not None:
        from .captioner import cnn_config_for
        from .model import load_model_config
        image_encoder = cnn_config_for(args, load_model_config(args.models), args.models)
    export(ExportConfig(model_folder=args.models, output=args.output, checkpoint=args.checkpoint,
                        quantize=args.quantize, overwrite_output=args.overwrite_output, image_encoder=image_encoder))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point."""
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
