"""The ONNX backend of `cnn.FeatureExtractor`: an image encoder in an ``.onnx`` file (a torchvision or timm export,
the ONNX model zoo, ``mx.onnx.export_model``) run by onnxruntime, cut at any internal tensor. MXNet 1.9's own ONNX
importer fails on modern exports, so ONNX models are run, not converted.

Layers are ONNX tensor names (the output names of the graph's nodes; ``--list-layers`` prints them). The input is
what the toolkit gives every CNN: ``(B, 3, H, W)`` float32 raw 0..255 RGB; a model that expects normalised input
gets its normalisation folded in by ``import_cnn --onnx FILE --input-mean ... --input-std ...``.
Needs the ``encoders`` extra (``pip install -e ".[encoders]"``)."""
import logging
import os
from typing import Any, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import constants as C
from . import utils

logger = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"


def _require() -> Tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise utils.CaptioningError("ONNX encoders need the onnx and onnxruntime packages: pip install -e "
                                    "\".[encoders]\"") from None
    return onnx, onnxruntime


def load_model(path: str) -> Any:
    """The parsed ``onnx.ModelProto``; a one-line error for a missing, unreadable or broken file."""
    onnx, _ = _require()
    utils.check_condition(os.path.isfile(path), "%s: ONNX model file not found; check --image-encoder-model-path"
                          % path)
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - DecodeError, ValidationError, OSError: a broken file either way
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise utils.CaptioningError("%s: not a valid ONNX model (%s)" % (path, message[:200])) from None
    return model


def _image_input(model: Any, path: str) -> Tuple[str, Optional[int]]:
    """(name, fixed batch size or None) of the model's one image input (rank 4)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    utils.check_condition(len(inputs) == 1, "%s: an image encoder has one input; this ONNX model has %d (%s)"
                          % (path, len(inputs), ", ".join(i.name for i in inputs)))
    dims = inputs[0].type.tensor_type.shape.dim
    utils.check_condition(len(dims) == 4, "%s: input %r has rank %d; an image encoder takes (N, 3, H, W)"
                          % (path, inputs[0].name, len(dims)))
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    channels = dims[1].dim_value if dims[1].HasField("dim_value") else 3
    utils.check_condition(channels == 3, "%s: input %r has %d channels; an image encoder takes 3 (RGB)"
                          % (path, inputs[0].name, channels))
    return inputs[0].name, batch


def tensor_names(model: Any) -> List[str]:
    """Every node output of the graph, in graph order (the names ``--image-encoder-layer`` takes)."""
    return [name for node in model.graph.node for name in node.output if name]


def _resolve_layer(model: Any, layer: str, path: str) -> str:
    import difflib
    names = tensor_names(model)
    for candidate in (layer, layer + C.LAYER_OUTPUT_SUFFIX, layer.removesuffix(C.LAYER_OUTPUT_SUFFIX)):
        if candidate in names:
            return candidate
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    raise utils.CaptioningError("%s: the ONNX model has no tensor %r (%s); see extract_features --list-layers"
                                % (path, layer, "closest names: %s" % ", ".join(close) if close else
                                   "tensors include: %s" % ", ".join(names[-5:])))


def _with_outputs(model: Any, outputs: Sequence[str], input_name: str) -> Any:
    """A copy of ``model`` whose graph outputs are ``outputs`` (internal tensors), pruned to what they need."""
    onnx, _ = _require()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.output[:]
    for name in outputs:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    needed = set(outputs)
    keep = []
    for node in reversed(model.graph.node):        # nodes are topologically sorted: walk back from the outputs
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(n for n in node.input if n)
    kept = list(reversed(keep))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {n for node in kept for n in node.input}
    initializers = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    # only the image is an input: exporters (mx.onnx among them) also list the weights as inputs, and onnxruntime
    # then treats them as variables (no constant folding, e.g. of batch norm into the convolutions)
    inputs = [i for i in model.graph.input if i.name == input_name]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def _providers(ctx: Any) -> List[str]:
    _, ort = _require()
    available = ort.get_available_providers()
    if getattr(ctx, "device_type", "cpu") == "gpu":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu): running the ONNX encoder "
                       "on the CPU")
    return ["CPUExecutionProvider"]


def _session(model: Any, ctx: Any, path: str, threads: int = 0, providers: Optional[Sequence[str]] = None) -> Any:
    """``threads``: intra-op threads (0: OMP_NUM_THREADS when set); ``providers``: onnxruntime's execution
    providers (None: from ``ctx``)."""
    _, ort = _require()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    env_threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads <= 0 and env_threads.isdigit():
        threads = int(env_threads)
    if threads > 0:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    # no spin-waiting between operators: on a busy machine spinning threads take the CPU from the work
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        chosen = list(providers) if providers is not None else _providers(ctx)
        provider_options = [{"device_id": str(getattr(ctx, "device_id", 0))} if p == "CUDAExecutionProvider"
                            else {} for p in chosen]
        return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=chosen,
                                    provider_options=provider_options)
    except Exception as e:  # noqa: BLE001 - onnxruntime's Fail / InvalidGraph / NotImplemented
        raise utils.CaptioningError("%s: onnxruntime cannot run this model (%s)"
                                    % (path, str(e).strip().splitlines()[0][:200] if str(e).strip()
                                       else type(e).__name__)) from None


def _run(session: Any, input_name: str, images: np.ndarray, path: str, image_size: Sequence[int]) -> List[np.ndarray]:
    try:
        return session.run(None, {input_name: np.ascontiguousarray(images, dtype=np.float32)})
    except Exception as e:  # noqa: BLE001
        raise utils.CaptioningError("%s: the ONNX model cannot take input size %s (%s); check --source-image-size"
                                    % (path, "x".join(map(str, image_size)),
                                       str(e).strip().splitlines()[0][:200] if str(e).strip()
                                       else type(e).__name__)) from None


class OnnxFeatureExtractor:
    """An ONNX model cut at a tensor, run by onnxruntime: ``extract`` maps (B, 3, H, W) raw 0..255 images to
    (B, C, h, w) features. A model with a fixed batch dimension runs that many images at a time; otherwise at most
    ``max_cpu_batch`` on CPU (as the MXNet backend). ``threads`` and ``providers``: see `_session`."""

    def __init__(self, config: Any, ctx: Any, batch_size: int, max_cpu_batch: int = 16, threads: int = 0,
                 providers: Optional[Sequence[str]] = None) -> None:
        path = config.model_path
        model = load_model(path)
        self.input_name, fixed_batch = _image_input(model, path)
        self.config = config
        self.batch_size = batch_size
        self.layer = _resolve_layer(model, config.layer, path)
        self.path = path
        on_gpu = getattr(ctx, "device_type", "cpu") == "gpu"
        self.fixed_batch = fixed_batch
        self.run_batch = fixed_batch or (batch_size if on_gpu else min(batch_size, max_cpu_batch))
        self.session = _session(_with_outputs(model, [self.layer], self.input_name), ctx, path, threads, providers)
        probe = np.zeros((fixed_batch or 1,) + tuple(config.image_size), dtype=np.float32)
        shape = _run(self.session, self.input_name, probe, path, config.image_size)[0].shape
        utils.check_condition(len(shape) == 4, "%s: tensor %r gives shape %s; a feature map needs (C, H, W)"
                              % (path, self.layer, tuple(shape[1:])))
        self.output_shape = cast(Tuple[int, int, int], tuple(int(d) for d in shape[1:]))

    def extract(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 raw 0..255 -> (B, C, h, w) float32; any B."""
        outputs = []
        for start in range(0, images.shape[0], self.run_batch):
            chunk = images[start:start + self.run_batch]
            count = chunk.shape[0]
            if self.fixed_batch and count < self.fixed_batch:     # a model made for exactly N images
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - count,) + chunk.shape[1:], chunk.dtype)])
            outputs.append(_run(self.session, self.input_name, chunk, self.path, self.config.image_size)[0][:count])
        if not outputs:
            return np.zeros((0,) + self.output_shape, dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)


def cut_model(path: str, layer: str) -> Tuple[Any, str, str]:
    """The ONNX model in ``path`` cut at ``layer`` (a graph whose one output is that tensor, its only input the
    image), the image input's name and the tensor's name."""
    model = load_model(path)
    input_name, _ = _image_input(model, path)
    tensor = _resolve_layer(model, layer, path)
    return _with_outputs(model, [tensor], input_name), input_name, tensor


def list_layers(path: str, image_size: Sequence[int]) -> List[Tuple[str, Tuple[int, ...]]]:
    """(tensor name, shape without the batch axis) of every node output, for one image of ``image_size``."""
    model = load_model(path)
    input_name, fixed_batch = _image_input(model, path)
    names = tensor_names(model)
    session = _session(_with_outputs(model, names, input_name), None, path)
    probe = np.zeros((fixed_batch or 1,) + tuple(image_size), dtype=np.float32)
    values = _run(session, input_name, probe, path, image_size)
    # shape arithmetic (Shape, Gather, Concat of int64) is no layer: only floating-point tensors are listed
    return [(name, tuple(int(d) for d in np.shape(value)[1:])) for name, value in zip(names, values)
            if np.issubdtype(np.asarray(value).dtype, np.floating)]


def fold_normalisation(model: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """A copy of ``model`` that takes raw 0..255 RGB: ``(x - mean) / std`` (per channel, in 0..255 units) runs
    first, then the original graph."""
    onnx, _ = _require()
    from onnx import helper, numpy_helper
    model = onnx.ModelProto.FromString(model.SerializeToString())
    input_name, _ = _image_input(model, "<model>")
    inner = input_name + "_normalised"
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = inner
    mean_name, std_name = input_name + "_mean", input_name + "_std"
    model.graph.initializer.extend([
        numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1), mean_name),
        numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, 3, 1, 1), std_name)])
    centred = input_name + "_centred"
    nodes = [helper.make_node("Sub", [input_name, mean_name], [centred], name=centred),
             helper.make_node("Div", [centred, std_name], [inner], name=inner)]
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    return model
