"""Pretraining the synthetic CNN on the scenes' attribute labels (``python -m captioning.synthetic --train-cnn``)."""
import logging
import os
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from .. import utils
from .network import build_symbol, init_params
from .scenes import BACKGROUNDS, COLOURS, SHAPES, SIZES, Scene, draw_scene, sample_scene

logger = logging.getLogger(__name__)

GRID = 8                     # the feature grid at 128x128 input


def attribute_labels(scene: Scene, image_size: int) -> Dict[str, np.ndarray]:
    """Per grid cell (GRID x GRID): shape and colour of the object covering the cell centre (0: none), size class
    at the cell holding an object's centre (-1 elsewhere: ignored); per image: background and object count."""
    shape = np.zeros((GRID, GRID), dtype=np.int64)
    colour = np.zeros((GRID, GRID), dtype=np.int64)
    size = np.full((GRID, GRID), -1, dtype=np.int64)
    cell = image_size / GRID
    centres = (np.arange(GRID) + 0.5) * cell
    for o in scene.objects:
        dx = centres[None, :] - o.centre[0]
        dy = centres[:, None] - o.centre[1]
        inside = np.hypot(dx, dy) <= max(o.radius * 0.75, cell * 0.5)
        shape[inside] = SHAPES.index(o.shape) + 1
        colour[inside] = list(COLOURS).index(o.colour) + 1
        row, col = min(int(o.centre[1] // cell), GRID - 1), min(int(o.centre[0] // cell), GRID - 1)
        size[row, col] = SIZES.index(o.size)
    return {"shape": shape, "colour": colour, "size": size,
            "background": np.array(list(BACKGROUNDS).index(scene.background)),
            "count": np.array(len(scene.objects) - 1)}


def _training_arrays(count: int, seed: int, image_size: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    rng = np.random.RandomState([seed, 99])
    images = np.zeros((count, 3, image_size, image_size), dtype=np.uint8)
    labels: Dict[str, List[np.ndarray]] = {}
    for i in range(count):
        scene = sample_scene(rng, image_size)
        images[i] = np.asarray(draw_scene(scene, image_size, rng)).transpose(2, 0, 1)
        for key, value in attribute_labels(scene, image_size).items():
            labels.setdefault(key, []).append(value)
    return images, {k: np.stack(v) for k, v in labels.items()}


def _held_out_accuracy(forward: Callable[[np.ndarray], Sequence[Any]], images: np.ndarray,
                       labels: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Accuracy of each attribute head on held-out scenes (batch norm in inference mode); shape and colour are
    scored on the cells that hold an object, size where there is one."""
    keys = ("shape", "colour", "size", "background", "count")
    correct: Dict[str, List[float]] = {k: [] for k in keys}
    for s in range(0, len(images), 100):
        outs = forward(images[s:s + 100].astype(np.float32))
        for key, out in zip(keys, outs):
            pred = out.argmax(axis=1).asnumpy().astype(np.int64)
            truth = labels[key][s:s + 100]
            mask = truth >= 0 if key == "size" else truth > 0 if key in ("shape", "colour") else \
                np.ones(truth.shape, dtype=bool)
            correct[key].append(float((pred[mask] == truth[mask]).mean()))
    return {k: float(np.mean(v)) for k, v in correct.items()}


class _Networks(NamedTuple):
    """The CNN's body (up to ``relu1`` and the gallery head ``fc1``) and the attribute heads trained with it."""
    symbol: Any           # mx.sym.Symbol of the whole CNN
    body: Any             # gluon.SymbolBlock: data -> (relu1, fc1)
    heads: Any            # 1x1 convolutions on relu1: shape, colour and size class per cell
    background_head: Any  # dense layer on the pooled relu1: the background


def train_cnn(output_params: str, steps: int = 2000, seconds: float = 600.0, seed: int = 0, num_scenes: int = 6000,
              batch_size: int = 32, learning_rate: float = 3e-3) -> Dict[str, float]:
    """Pretrain the synthetic CNN (``build_symbol``) on attribute labels for ``steps`` updates (linearly decayed
    learning rate; stops early after ``seconds``; about a minute on two idle cores): 1x1-convolution
    heads on ``relu1`` predict each grid cell's shape, colour and size class, a pooled head the background, and the
    gallery head ``fc1`` the object count. Saves the CNN's parameters (heads on relu1 dropped) to
    ``output_params`` and returns held-out accuracies."""
    import time
    import mxnet as mx
    from mxnet import gluon
    image_size = GRID * 16
    mx.random.seed(seed)
    images, labels = _training_arrays(num_scenes, seed, image_size)
    held_images, held_labels = _training_arrays(300, seed + 1, image_size)
    nets = _build_networks(seed, image_size)
    params = nets.body.collect_params()
    params.update(nets.heads.collect_params())
    params.update(nets.background_head.collect_params())
    trainer = gluon.Trainer(params, "adam", {"learning_rate": learning_rate})
    forward = _forward(nets)
    start, step = time.time(), 0
    rng = np.random.RandomState(seed)
    while step < steps and time.time() - start < seconds:
        trainer.set_learning_rate(learning_rate * max(0.05, 1.0 - step / steps))
        loss = _update(forward, trainer, images, labels, rng, batch_size)
        step += 1
        if step % 50 == 0:
            logger.info("step %d (%.0f s): loss %.3f", step, time.time() - start, loss.mean().asscalar())
    accuracy = _held_out_accuracy(forward, held_images, held_labels)
    logger.info("%d steps in %.0f s; held-out accuracy: %s", step, time.time() - start,
                ", ".join("%s %.3f" % kv for kv in accuracy.items()))
    _save_body(nets, output_params)
    return accuracy


def _build_networks(seed: int, image_size: int) -> _Networks:
    """The CNN's body with its deterministic initial weights (`init_params`) and freshly initialised heads."""
    import mxnet as mx
    from mxnet import gluon
    symbol = build_symbol()
    internals = symbol.get_internals()
    with warnings.catch_warnings():   # "Cannot decide type for data": float32, given at the first call
        warnings.simplefilter("ignore", UserWarning)
        body = gluon.SymbolBlock(outputs=[internals["relu1_output"], internals["fc1_output"]],
                                 inputs=mx.sym.var("data"))
    args, auxs = init_params(symbol, seed, image_size)
    body.collect_params().load_dict({**args, **auxs}, ignore_extra=True, cast_dtype=True)
    for name in ("data_mean", "data_scale"):
        body.collect_params()[name].grad_req = "null"
    heads = gluon.nn.HybridSequential()
    with heads.name_scope():
        heads.add(gluon.nn.Conv2D(len(SHAPES) + 1 + len(COLOURS) + 1 + len(SIZES), kernel_size=1))
    heads.initialize(mx.init.Xavier())
    background_head = gluon.nn.Dense(len(BACKGROUNDS))
    background_head.initialize(mx.init.Xavier())
    body.hybridize(static_alloc=True)
    heads.hybridize(static_alloc=True)
    return _Networks(symbol, body, heads, background_head)


def _forward(nets: _Networks) -> Callable[[np.ndarray], Sequence[Any]]:
    """images -> the logits of (shape, colour, size per cell, background, count)."""
    import mxnet as mx
    n_shape, n_colour = len(SHAPES) + 1, len(COLOURS) + 1

    def forward(batch: np.ndarray) -> Sequence[Any]:
        features, count_logits = nets.body(mx.nd.array(batch, dtype="float32"))
        cells = nets.heads(features)
        return (cells[:, :n_shape], cells[:, n_shape:n_shape + n_colour], cells[:, n_shape + n_colour:],
                nets.background_head(mx.nd.mean(features, axis=(2, 3))), count_logits)
    return forward


def _update(forward: Callable[[np.ndarray], Sequence[Any]], trainer: Any, images: np.ndarray,
            labels: Dict[str, np.ndarray], rng: np.random.RandomState, batch_size: int) -> Any:
    """One update on a random batch of the training scenes; returns the batch's losses."""
    import mxnet as mx
    from mxnet import autograd, gluon
    ce = gluon.loss.SoftmaxCrossEntropyLoss(axis=1)
    rows = rng.randint(0, len(images), size=batch_size)
    batch = images[rows].astype(np.float32)
    if rng.rand() < 0.5:   # small photometric jitter keeps the features robust to colour shifts
        batch = np.clip(batch * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10), 0, 255)
    y = {k: mx.nd.array(v[rows]) for k, v in labels.items()}
    with autograd.record():
        shape_l, colour_l, size_l, bg_l, count_l = forward(batch)
        size_mask = (y["size"] >= 0)
        size_loss = ce(size_l, mx.nd.maximum(y["size"], 0), size_mask.expand_dims(1)) * \
            (GRID * GRID / mx.nd.maximum(size_mask.sum(axis=(1, 2)), 1))
        # object cells are few: weight them up so "nothing here" does not win
        cell_weight = (1.0 + 4.0 * (y["shape"] > 0)).expand_dims(1)
        loss = ce(shape_l, y["shape"], cell_weight) + ce(colour_l, y["colour"], cell_weight) + size_loss + \
            ce(bg_l, y["background"]) + ce(count_l, y["count"])
    loss.backward()
    trainer.step(batch_size)
    return loss


def _save_body(nets: _Networks, output_params: str) -> None:
    """The body's parameters as ``output_params`` (PREFIX-0000.params: with PREFIX-symbol.json beside it)."""
    import mxnet as mx
    aux_names = set(nets.symbol.list_auxiliary_states())
    saved = {("aux:" if name in aux_names else "arg:") + name: p.data().copyto(mx.cpu())
             for name, p in nets.body.collect_params().items()}
    os.makedirs(os.path.dirname(os.path.abspath(output_params)), exist_ok=True)
    with utils.atomic_path(output_params) as tmp:
        mx.nd.save(tmp, saved)
    if output_params.endswith("-0000.params"):   # the symbol beside it: PREFIX-symbol.json
        utils.atomic_write_text(output_params[:-len("-0000.params")] + "-symbol.json", nets.symbol.tojson())
