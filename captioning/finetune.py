"""The top of the image CNN, trained with the captioner: the CNN's layers after the feature layer S up to layer L.

Features are extracted once at S (``extract_features --image-encoder-layer S``); ``train
--image-encoder-fine-tune-from S --image-encoder-model-path CNN --image-encoder-layer L`` cuts the CNN's graph
between S and L (`cut_between`), builds it into the model (`CnnLayers`, a Gluon block over that graph, initialised
from the CNN's parameters) and trains it with the decoder. Batch normalisation keeps the CNN's statistics
(inference mode); the layers learn at ``learning_rate_multiplier`` times the decoder's rate, and not at all before
update ``start_update``. The model folder keeps the cut graph in its config and the layers' parameters, under the
CNN's own names (prefixed ``image_layers.``), in its parameter files, so captioning needs the CNN only up to S.
"""
import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Set, Tuple

from . import utils
from .cnn import CNNConfig, strip_output_suffix
from .config import Config

if TYPE_CHECKING:
    import mxnet as mx
    from mxnet import gluon

logger = logging.getLogger(__name__)

INPUT_NAME = "data"
BLOCK_NAME = "image_layers"            # the attribute of the model, hence the prefix of the saved parameters


@dataclass
class FineTuneConfig(Config):
    """Flags: ``--image-encoder-fine-tune-from`` (from_layer), ``--image-encoder-model-path`` /
    ``--image-encoder-model-epoch`` / ``--image-encoder-layer`` / ``--source-image-size`` (cnn: the whole CNN, its
    layer L), ``--image-encoder-learning-rate-multiplier``, ``--image-encoder-fine-tune-after`` (start_update).
    ``symbol``: the JSON of the cut graph; ``input_shape`` / ``output_shape``: (C, H, W) at S and at L."""
    cnn: CNNConfig
    from_layer: str
    input_shape: Tuple[int, int, int]
    output_shape: Tuple[int, int, int]
    symbol: str
    learning_rate_multiplier: float = 0.1
    start_update: int = 0


def _node_index(nodes: List[Dict[str, Any]], layer: str, where: str, flag: str) -> int:
    name = strip_output_suffix(layer)
    for i, node in enumerate(nodes):
        if node["op"] != "null" and node["name"] == name:
            return i
    close = [n["name"] for n in nodes if n["op"] != "null" and name.split("_")[0] in n["name"]][-5:]
    raise utils.CaptioningError("%s: the CNN has no layer %r (%s %s)%s" % (
        where, layer, flag, layer, "; layers with a similar name: %s" % ", ".join(close) if close else ""))


def _reachable(nodes: List[Dict[str, Any]], end: int, stop: int) -> Set[int]:
    """The nodes ``end`` reads (itself included), not looking past ``stop``."""
    seen, todo = set(), [end]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        if i != stop:
            todo.extend(j for j, _, _ in nodes[i]["inputs"])
    return seen


def cut_between(symbol_json: str, from_layer: str, to_layer: str, where: str) -> str:
    """The JSON of the CNN's layers after ``from_layer`` (S) up to ``to_layer`` (L): S's output becomes the input
    ``data``; batch normalisation uses the stored statistics. One-line errors when a layer does not exist, when S
    does not come before L, or when L reads anything before S other than through S (S is then no cut point)."""
    graph = json.loads(symbol_json)
    nodes = graph["nodes"]
    start = _node_index(nodes, from_layer, where, "--image-encoder-fine-tune-from")
    end = _node_index(nodes, to_layer, where, "--image-encoder-layer")
    kept = _reachable(nodes, end, start)
    utils.check_condition(start in kept and start != end,
                          "%s: layer %r (--image-encoder-fine-tune-from) does not come before layer %r "
                          "(--image-encoder-layer) in the CNN" % (where, from_layer, to_layer))
    after = _after(nodes, kept, start)
    for i in sorted(kept):
        if nodes[i]["op"] != "null" and i != start and i not in after:
            raise utils.CaptioningError(
                "%s: layer %r does not cut the CNN: layer %r also reads layer %r, which comes before it (pick the "
                "output of a whole block, e.g. an '_add' layer)" % (where, from_layer, to_layer, nodes[i]["name"]))
    order = sorted(kept)
    index = {old: new for new, old in enumerate(order)}
    new_nodes = []
    for old in order:
        node = copy.deepcopy(nodes[old])
        if old == start:
            node = {"op": "null", "name": INPUT_NAME, "inputs": []}
        else:
            node["inputs"] = [[index[j], k, v] for j, k, v in node["inputs"]]
            if node["op"] == "BatchNorm":
                node.setdefault("attrs", {})["use_global_stats"] = "True"
        new_nodes.append(node)
    cut = {"nodes": new_nodes, "arg_nodes": [i for i, n in enumerate(new_nodes) if n["op"] == "null"],
           "heads": [[index[end], 0, 0]], "attrs": graph.get("attrs", {})}
    return json.dumps(cut, sort_keys=True)


def _after(nodes: List[Dict[str, Any]], kept: Set[int], start: int) -> Set[int]:
    """The operators of ``kept`` that read S, directly or through others."""
    after: Set[int] = set()
    for i in sorted(kept):
        if nodes[i]["op"] != "null" and i != start and any(j == start or j in after
                                                           for j, _, _ in nodes[i]["inputs"]):
            after.add(i)
    return after


def layer_shape(symbol: "mx.sym.Symbol", layer: str, image_size: Sequence[int], where: str) -> Tuple[int, int, int]:
    """(C, H, W) of ``layer``'s output for images of ``image_size``."""
    from .cnn import cut_at_layer
    out = cut_at_layer(symbol, layer, where)
    inputs = [n for n in out.list_arguments() if n == INPUT_NAME]
    _, shapes, _ = out.infer_shape(**{inputs[0] if inputs else INPUT_NAME: (1,) + tuple(int(v) for v in image_size)})
    shape = tuple(int(v) for v in shapes[0][1:])
    utils.check_condition(len(shape) == 3, "%s: layer %r gives arrays of shape %s; fine-tuning needs a feature "
                                           "map (C, H, W)" % (where, layer, shape))
    return shape  # type: ignore[return-value]


def create_config(cnn: CNNConfig, from_layer: str, learning_rate_multiplier: float, start_update: int
                  ) -> FineTuneConfig:
    """The `FineTuneConfig` of a CNN checkpoint (``cnn.layer`` is L): cuts its graph between S and L."""
    from .cnn import is_onnx, load_checkpoint, symbol_file
    utils.check_condition(not is_onnx(cnn.model_path), "%s: fine-tuning needs an MXNet checkpoint (PREFIX-symbol.json "
                                                      "and PREFIX-NNNN.params), not an ONNX file" % cnn.model_path)
    utils.check_condition(learning_rate_multiplier >= 0.0, "--image-encoder-learning-rate-multiplier must be >= 0")
    utils.check_condition(start_update >= 0, "--image-encoder-fine-tune-after must be >= 0")
    symbol, _, _ = load_checkpoint(cnn.model_path, cnn.epoch)
    where = symbol_file(cnn.model_path)
    cut = cut_between(symbol.tojson(), from_layer, cnn.layer, where)
    return FineTuneConfig(cnn=cnn, from_layer=strip_output_suffix(from_layer),
                          input_shape=layer_shape(symbol, from_layer, cnn.image_size, where),
                          output_shape=layer_shape(symbol, cnn.layer, cnn.image_size, where), symbol=cut,
                          learning_rate_multiplier=learning_rate_multiplier, start_update=start_update)


def check_same_cnn(cnn: CNNConfig, recorded: CNNConfig, source_root: str, sidecar: str) -> None:
    """Refuse a CNN other than the one the features came from (``recorded``, from their folder's sidecar, its
    path relative to ``source_root``): the same files, or files with the same contents."""
    from .cnn import params_file, symbol_file
    recorded_path = recorded.model_path if os.path.isabs(recorded.model_path) else \
        os.path.join(source_root, recorded.model_path)
    for ours, theirs in ((symbol_file(cnn.model_path), symbol_file(recorded_path)),
                         (params_file(cnn.model_path, cnn.epoch), params_file(recorded_path, recorded.epoch))):
        if not os.path.isfile(theirs) or not os.path.isfile(ours):
            continue   # a missing file of the given CNN is reported where it is read
        utils.check_condition(os.path.samefile(ours, theirs) or utils.file_sha256(ours) == utils.file_sha256(theirs),
                              "%s: the training features were made with %s; %s is another CNN (--image-encoder-"
                              "model-path %s)" % (sidecar, theirs, ours, cnn.model_path))


def create_layers(config: FineTuneConfig) -> "gluon.SymbolBlock":
    """The cut graph as a Gluon block; its parameters keep the CNN's names and learn at the configured rate."""
    import mxnet as mx
    from mxnet import gluon

    class CnnLayers(gluon.SymbolBlock):
        """`gluon.SymbolBlock` over the cut graph, its parameters registered under their full CNN names (Gluon
        strips their common prefix)."""

        def __init__(self) -> None:
            symbol = mx.sym.load_json(config.symbol)
            with warnings.catch_warnings():   # the input's type is known only when data arrives: float32
                warnings.filterwarnings("ignore", message="Cannot decide type")
                super().__init__(symbol, mx.sym.var(INPUT_NAME))
            self._reg_params = dict(self._params.items())
            # shapes known now: the parameters initialise at once (not deferred to the first forward pass)
            arg_shapes, _, aux_shapes = symbol.infer_shape(**{INPUT_NAME: (1,) + tuple(config.input_shape)})
            names = symbol.list_arguments() + symbol.list_auxiliary_states()
            for name, shape in zip(names, arg_shapes + aux_shapes):
                if name in self._params:
                    self._params[name].shape = shape
            for p in self._params.values():
                if p.grad_req != "null":
                    p.lr_mult = config.learning_rate_multiplier

    return CnnLayers()


def load_cnn_parameters(layers: Any, config: FineTuneConfig, contexts: Sequence["mx.Context"]) -> None:
    """Set the layers' parameters to the CNN's (``config.cnn``'s checkpoint)."""
    from .cnn import load_checkpoint, params_file
    _, arg_params, aux_params = load_checkpoint(config.cnn.model_path, config.cnn.epoch)
    saved = dict(arg_params, **aux_params)
    for name, param in layers.collect_params().items():
        utils.check_condition(name in saved, "%s: the CNN's parameters lack %r" % (
            params_file(config.cnn.model_path, config.cnn.epoch), name))
        utils.check_condition(tuple(saved[name].shape) == tuple(param.shape), "%s: %r has shape %s, the CNN's "
                              "graph needs %s" % (params_file(config.cnn.model_path, config.cnn.epoch), name,
                                                  tuple(saved[name].shape), tuple(param.shape)))
        param.set_data(saved[name].as_in_context(contexts[0]))
    logger.info("Fine-tuning the CNN's layers after %s up to %s (%d parameter arrays from %s)", config.from_layer,
                config.cnn.layer, len(list(layers.collect_params().keys())), config.cnn.model_path)


def set_trainable(layers: Any, trainable: bool, accumulate: bool = False) -> None:
    """Let the layers learn (``grad_req`` write, or add when gradients accumulate) or hold them fixed (no
    gradients at all: the backward pass stops at their output)."""
    for param in layers.collect_params().values():
        if param.name.endswith(("_moving_mean", "_moving_var")):
            continue
        param.grad_req = ("add" if accumulate else "write") if trainable else "null"

