"""The pretrained CNN (image encoder): cut at any internal output, run on image batches. Two backends behind one
interface, `FeatureExtractor`: an MXNet symbolic checkpoint (``PREFIX-symbol.json`` + ``PREFIX-%04d.params``;
`MXNetFeatureExtractor`) and an ONNX file (``model.onnx``, run by onnxruntime; `onnx_encoder.OnnxFeatureExtractor`).
`create_feature_extractor` picks the backend from the path. Images are decoded in a pool of worker processes while
the CNN runs. Used by ``extract_features`` (features to files) and by ``captioner --extract-image-features``
(features kept in memory)."""
import collections
import dataclasses
import difflib
import logging
import multiprocessing
import os
import warnings
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union, cast

import numpy as np

from . import constants as C
from . import image_io, utils
from .config import Config

if TYPE_CHECKING:  # pragma: no cover - MXNet is imported where a network runs
    import mxnet as mx

# MXNet is imported inside the functions that need it: the image-decoding worker processes (spawned, so they
# re-import the main module) and CNNConfig users then do not pay for it.

logger = logging.getLogger(__name__)

OUTPUT_SUFFIX = C.LAYER_OUTPUT_SUFFIX
SYMBOL_SUFFIX = "-symbol.json"
PARAMS_FORMAT = "%s-%04d.params"
ENCODER_SIDECAR_SUFFIX = "-encoder.json"     # written by import_cnn beside PREFIX-symbol.json / PREFIX.onnx


@dataclasses.dataclass
class CNNConfig(Config):
    """Which CNN makes the features: checkpoint prefix and epoch, the layer (without ``_output``), the input size."""
    model_path: str                                          # PREFIX of PREFIX-symbol.json / .params, or FILE.onnx
    layer: str                                               # internal output, stored without the "_output" suffix
    epoch: int = 0
    image_size: Tuple[int, int, int] = C.DEFAULT_SOURCE_IMAGE_SIZE   # (C, H, W) of the CNN input


def symbol_file(prefix: str) -> str:
    return prefix + SYMBOL_SUFFIX


def params_file(prefix: str, epoch: int) -> str:
    return PARAMS_FORMAT % (prefix, epoch)


def strip_output_suffix(layer: str) -> str:
    """``"stage4_unit3_conv3_output"`` -> ``"stage4_unit3_conv3"``."""
    return layer.removesuffix(OUTPUT_SUFFIX)


def load_checkpoint(prefix: str, epoch: int) -> Tuple["mx.sym.Symbol", dict, dict]:
    """(symbol, arg_params, aux_params) of a symbolic checkpoint, with clear errors for missing or broken files."""
    import mxnet as mx
    sym_path, par_path = symbol_file(prefix), params_file(prefix, epoch)
    for path, what in ((sym_path, "symbol"), (par_path, "parameters")):
        utils.check_condition(os.path.isfile(path),
                              "%s: CNN %s file not found; check --image-encoder-model-path (the prefix, without "
                              "'-symbol.json') and --image-encoder-model-epoch" % (path, what))
        utils.check_condition(os.access(path, os.R_OK), "%s: cannot read the CNN %s file (permission denied)"
                              % (path, what))
    try:
        symbol = mx.sym.load(sym_path)
    except Exception as e:  # noqa: BLE001 - MXNetError or JSON errors: a broken file either way
        raise utils.CaptioningError("%s: not a readable MXNet symbol file (%s)"
                                    % (sym_path, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    try:
        saved = mx.nd.load(par_path)
    except Exception as e:  # noqa: BLE001
        raise utils.CaptioningError("%s: not a readable MXNet parameters file (%s)"
                                    % (par_path, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    utils.check_condition(isinstance(saved, dict), "%s: expected named parameters (arg:NAME / aux:NAME)" % par_path)
    arg_params, aux_params = {}, {}
    for key, value in saved.items():
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
        else:  # a file saved without the arg:/aux: prefixes (e.g. Gluon's save_parameters)
            arg_params[key] = value
    return symbol, arg_params, aux_params


def save_checkpoint(prefix: str, symbol: Any, arg_params: Dict[str, Any], aux_params: Dict[str, Any],
                    epoch: int = 0) -> None:
    """``PREFIX-symbol.json`` + ``PREFIX-%04d.params`` (``arg:``/``aux:`` names, as ``mx.model.save_checkpoint``),
    each written to a temporary name and renamed."""
    import mxnet as mx
    with utils.atomic_path(symbol_file(prefix)) as tmp:
        symbol.save(tmp)
    saved = {"arg:" + k: v for k, v in arg_params.items()}
    saved.update({"aux:" + k: v for k, v in aux_params.items()})
    with utils.atomic_path(params_file(prefix, epoch)) as tmp:
        mx.nd.save(tmp, saved)


def layer_names(symbol: "mx.sym.Symbol") -> List[str]:
    """Every internal output of the symbol, as users name them (without ``_output``)."""
    return [strip_output_suffix(name) for name in symbol.get_internals().list_outputs()]


def cut_at_layer(symbol: "mx.sym.Symbol", layer: str, where: str) -> "mx.sym.Symbol":
    """The sub-graph that ends at ``layer`` (``LAYER`` or ``LAYER_output``; also layers that own no weight)."""
    internals = symbol.get_internals()
    outputs = internals.list_outputs()
    for candidate in (layer, layer + OUTPUT_SUFFIX):
        if candidate in outputs:
            return internals[candidate]
    names = [n for n in layer_names(symbol) if not n.endswith(("_weight", "_bias", "_gamma", "_beta",
                                                               "_moving_mean", "_moving_var", "_label"))]
    close = difflib.get_close_matches(strip_output_suffix(layer), names, n=5, cutoff=0.4)
    hint = ("closest names: %s" % ", ".join(close)) if close else ("layers include: %s"
                                                                   % ", ".join(names[-5:]))
    raise utils.CaptioningError("%s: the CNN has no layer %r (%s); pick one with --image-encoder-layer"
                                % (where, layer, hint))


def _data_name(symbol: "mx.sym.Symbol", params: dict) -> str:
    inputs = [n for n in symbol.list_arguments() if n not in params and not n.endswith("_label")]
    if "data" in inputs:
        return "data"
    utils.check_condition(len(inputs) == 1, "the CNN must have exactly one input without parameters, found %s"
                          % (inputs or "none"))
    return inputs[0]


def _has_mkldnn() -> bool:
    import mxnet as mx
    try:
        return bool(mx.runtime.Features().is_enabled("MKLDNN"))
    except Exception:  # noqa: BLE001 - an unknown feature name on other builds
        return False


class FeatureExtractor(Protocol):
    """A CNN cut at a layer: ``extract`` maps (B, 3, H, W) float32 raw 0..255 RGB to (B, C, h, w) float32 features
    of ``output_shape``. Implemented by `MXNetFeatureExtractor` and `onnx_encoder.OnnxFeatureExtractor`.

    ``FeatureExtractor(config, ctx, batch_size)`` is `create_feature_extractor`: the backend that fits
    ``config.model_path``."""
    config: CNNConfig
    batch_size: int
    output_shape: Tuple[int, int, int]

    def __new__(cls, config: CNNConfig, ctx: "mx.Context", batch_size: int,
                max_cpu_batch: int = 16) -> "FeatureExtractor":
        return create_feature_extractor(config, ctx, batch_size, max_cpu_batch)

    def extract(self, images: np.ndarray) -> np.ndarray:
        ...


def is_onnx(model_path: str) -> bool:
    """True when ``model_path`` names an ONNX file (the ONNX backend) rather than an MXNet checkpoint prefix."""
    return model_path.lower().endswith(".onnx")


def create_feature_extractor(config: CNNConfig, ctx: "mx.Context", batch_size: int,
                             max_cpu_batch: int = 16) -> FeatureExtractor:
    """The `FeatureExtractor` for ``config.model_path``: onnxruntime for ``*.onnx``, MXNet otherwise."""
    if is_onnx(config.model_path):
        from .onnx_encoder import OnnxFeatureExtractor
        return OnnxFeatureExtractor(config, ctx, batch_size, max_cpu_batch)
    return MXNetFeatureExtractor(config, ctx, batch_size, max_cpu_batch)


def encoder_sidecar_path(model_path: str) -> str:
    """``PREFIX-encoder.json`` of a checkpoint prefix or of ``PREFIX.onnx``."""
    prefix = model_path[:-len(".onnx")] if is_onnx(model_path) else model_path
    return prefix + ENCODER_SIDECAR_SUFFIX


def read_encoder_sidecar(model_path: str) -> Optional[Dict[str, Any]]:
    """What ``import_cnn`` recorded about an encoder (source, licence, input, layers), or None without a (readable)
    sidecar: it is information, never needed to run the encoder."""
    path = encoder_sidecar_path(model_path)
    try:
        values = utils.read_json(path, "the encoder sidecar")
    except utils.CaptioningError:
        return None
    return values if isinstance(values, dict) else None


def list_layers(model_path: str, epoch: int, image_size: Sequence[int]) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape without the batch axis) of every internal output of the encoder for ``image_size`` = (C, H, W):
    the names ``--image-encoder-layer`` takes. Parameters and labels are left out."""
    if is_onnx(model_path):
        from . import onnx_encoder
        return onnx_encoder.list_layers(model_path, image_size)
    symbol, arg_params, aux_params = load_checkpoint(model_path, epoch)
    internals = symbol.get_internals()
    data_name = _data_name(symbol, {**arg_params, **aux_params})
    try:
        _, shapes, _ = internals.infer_shape_partial(**{data_name: (1,) + tuple(image_size)})
    except Exception as e:  # noqa: BLE001
        raise utils.CaptioningError("%s: the CNN cannot take input size %s (%s); check --source-image-size"
                                    % (symbol_file(model_path), "x".join(map(str, image_size)),
                                       str(e).splitlines()[0])) from None
    inputs = set(symbol.list_inputs())
    layers = []
    for name, shape in zip(internals.list_outputs(), shapes):
        plain = strip_output_suffix(name)
        if plain in inputs or name in inputs or plain.endswith("_label"):
            continue
        layers.append((plain, tuple(int(d) for d in shape[1:]) if shape else ()))
    return layers


class MXNetFeatureExtractor:
    """A CNN cut at a layer, as a hybridized Gluon `SymbolBlock`: ``extract`` maps (B, 3, H, W) raw 0..255 images to
    (B, C, h, w) features. Memory is planned once for the batch size; a smaller (last) batch runs as it is.

    On CPU the network runs chunks of at most ``max_cpu_batch`` images (``batch_size`` is still what the callers
    decode and hand over at once): on CPU, larger chunks are hardly faster while activation memory grows linearly
    with the chunk."""

    def __init__(self, config: CNNConfig, ctx: "mx.Context", batch_size: int,
                 max_cpu_batch: int = 16) -> None:
        import mxnet as mx
        from mxnet import gluon
        self.config = config
        self.ctx = ctx
        self.batch_size = batch_size
        self.run_batch = min(batch_size, max_cpu_batch) if ctx.device_type == "cpu" else batch_size
        symbol, arg_params, aux_params = load_checkpoint(config.model_path, config.epoch)
        output = cut_at_layer(symbol, config.layer, symbol_file(config.model_path))
        params = dict(arg_params)
        params.update(aux_params)
        data_name = _data_name(output, params)
        with warnings.catch_warnings():  # "Cannot decide type for data": it is float32, given at the first call
            warnings.simplefilter("ignore", UserWarning)
            self.block = gluon.SymbolBlock(outputs=output, inputs=mx.sym.var(data_name))
        needed = self.block.collect_params()
        missing = [name for name in needed.keys() if name not in params]
        utils.check_condition(not missing, "%s: the CNN parameters lack %s needed by layer %r"
                              % (params_file(config.model_path, config.epoch), ", ".join(missing[:5]),
                                 config.layer))
        needed.load_dict({name: params[name] for name in needed.keys()}, ctx=ctx, cast_dtype=True)
        if ctx.device_type == "cpu" and _has_mkldnn():
            # oneDNN graph fusion (conv + batch norm + activation): what Module's executor does by default; without
            # it a hybridized SymbolBlock runs much slower on CPU. Same numbers either way.
            self.block.hybridize(backend="MKLDNN", static_alloc=True, static_shape=True)
        else:
            self.block.hybridize(static_alloc=True, static_shape=True)
        input_shape = (batch_size,) + tuple(config.image_size)
        try:
            _, out_shapes, _ = output.infer_shape(**{data_name: input_shape})
        except Exception as e:  # noqa: BLE001 - MXNetError on a size the graph cannot take
            raise utils.CaptioningError("%s: the CNN cannot take input size %s (%s); check --source-image-size"
                                        % (symbol_file(config.model_path), "x".join(map(str, config.image_size)),
                                           str(e).splitlines()[0])) from None
        utils.check_condition(out_shapes and len(out_shapes[0]) == 4,
                              "%s: layer %r gives shape %s; a feature map needs (C, H, W)"
                              % (symbol_file(config.model_path), config.layer, out_shapes[0][1:]))
        self.output_shape = cast(Tuple[int, int, int], tuple(int(d) for d in out_shapes[0][1:]))

    def extract(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 raw 0..255 -> (B, C, h, w) float32; any B (run in chunks of ``run_batch``)."""
        import mxnet as mx
        outputs = []
        for start in range(0, images.shape[0], self.run_batch):
            chunk = mx.nd.array(images[start:start + self.run_batch], ctx=self.ctx, dtype=np.float32)
            outputs.append(self.block(chunk).asnumpy())
        if not outputs:
            return np.zeros((0,) + self.output_shape, dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# decoding images in worker processes while the CNN runs
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ImageBatch:
    """Images of consecutive input items, in input order: ``images[k]`` belongs to ``indices[k]``; ``bad[k]`` is
    True for an image that could not be read (all zeros; only with ``skip_bad_images``)."""
    indices: List[int]
    images: np.ndarray          # (B, 3, H, W) float32, raw 0..255
    bad: List[bool]


def default_num_workers() -> int:
    return utils.num_cpus()


def _where(where: Union[str, Sequence[str]], index: int) -> str:
    return utils.location(where, index + 1) if isinstance(where, str) else where[index]


def iterate_image_batches(paths: Sequence[str], image_size: Tuple[int, int], batch_size: int,
                          num_workers: Optional[int] = None, skip_bad_images: bool = False,
                          where: Union[str, Sequence[str]] = "<input>",
                          prefetch_batches: int = 2, niceness: int = 10,
                          views: Optional[Sequence[str]] = None) -> Iterator[ImageBatch]:
    """Decode ``paths`` (already resolved) to batches of ``(B, 3, H, W)`` float32 in input order. With
    ``num_workers`` > 0, a process pool decodes up to ``prefetch_batches`` batches ahead of the consumer (bounded
    memory); the workers run at lower priority (``niceness``) so that on a busy CPU they fill the CNN's idle
    moments instead of pre-empting its OpenMP threads. ``where`` names the input for errors: a list file (item i is its line i+1) or
    one label per item; ``views`` (one per path, `image_io.VIEWS`) picks the view of each image (default: the centre
    square).
    A bad image raises `image_io.BadImageError` naming it, or with ``skip_bad_images`` logs a warning and gives
    zeros (``bad`` marks it)."""
    num_workers = default_num_workers() if num_workers is None else num_workers
    size = (int(image_size[0]), int(image_size[1]))
    batches = [list(range(start, min(start + batch_size, len(paths)))) for start in range(0, len(paths), batch_size)]
    if not batches:
        return
    if num_workers <= 0:
        for indices in batches:
            yield _assemble(indices, image_io.decode_chunk(_task(paths, views, indices, size)), size,
                            skip_bad_images, where)
        return
    # spawn: the workers need only PIL and numpy, and a fork of a process running MXNet's engine is unsafe.
    chunk = max(1, -(-batch_size // (2 * num_workers)))
    with multiprocessing.get_context("spawn").Pool(num_workers, initializer=image_io.ignore_interrupts,
                                                 initargs=(niceness,)) as pool:
        pending: Deque[Tuple[List[int], list]] = collections.deque()
        next_batch = 0

        def submit() -> None:
            nonlocal next_batch
            indices = batches[next_batch]
            parts = [pool.apply_async(image_io.decode_chunk, (_task(paths, views, indices[s:s + chunk], size),))
                     for s in range(0, len(indices), chunk)]
            pending.append((indices, parts))
            next_batch += 1

        while next_batch < len(batches) and len(pending) < prefetch_batches + 1:
            submit()
        while pending:
            indices, parts = pending.popleft()
            if next_batch < len(batches):
                submit()
            decoded: List[Union[np.ndarray, str]] = []
            for part in parts:
                decoded.extend(part.get())
            yield _assemble(indices, decoded, size, skip_bad_images, where)


def _task(paths: Sequence[str], views: Optional[Sequence[str]], indices: Sequence[int], size: Tuple[int, int]
          ) -> Tuple[List[str], Tuple[int, int], Optional[List[str]]]:
    """`image_io.decode_chunk`'s job for the items ``indices``."""
    return [paths[i] for i in indices], size, None if views is None else [views[i] for i in indices]


def _assemble(indices: List[int], decoded: List[Union[np.ndarray, str]], size: Tuple[int, int],
              skip_bad_images: bool, where: Union[str, Sequence[str]]) -> ImageBatch:
    images = np.zeros((len(indices), 3) + size, dtype=np.float32)
    bad = []
    for k, (index, item) in enumerate(zip(indices, decoded)):
        if isinstance(item, str):
            if not skip_bad_images:
                raise image_io.BadImageError("%s: %s; fix or remove the line (or pass --skip-bad-images)"
                                             % (_where(where, index), item))
            logger.warning("%s: %s; skipped (all-zero feature)", _where(where, index), item)
            bad.append(True)
        else:
            images[k] = item
            bad.append(False)
    return ImageBatch(indices=indices, images=images, bad=bad)
