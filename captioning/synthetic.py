"""The bundled demo/test data set: drawn scenes of simple shapes with several human-like reference captions each,
and a small CNN in MXNet model-gallery form to extract their features.

    python -m captioning.synthetic OUT_DIR [--train N --val N --test N --seed S --image-size PX]

Scenes hold 1-3 objects (shape, colour, size, position on a 3x3 grid) on a coloured background; captions are
lowercase and whitespace-tokenised, phrased in varied ways ("a big red circle on the left", "there is a large red
circle to the left of a blue square", "two blue squares on a white background"). See docs/synthetic.md for the
layout. ``--train-cnn`` retrains the bundled CNN weights (``captioning/data/``) on the scenes' attribute labels.
"""
import dataclasses
import logging
import os
import shutil
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from . import arguments, log, utils
from .config import Config

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# vocabulary of the scenes
# ---------------------------------------------------------------------------------------------------------------

SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
SHAPE_WORDS: Dict[str, List[Tuple[str, str]]] = {   # (singular, plural) ways to name each shape
    "circle": [("circle", "circles"), ("circle", "circles"), ("disc", "discs")],
    "square": [("square", "squares")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "diamond": [("diamond", "diamonds")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
}
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (35, 70, 220), "yellow": (240, 220, 30),
    "orange": (245, 140, 20), "purple": (140, 50, 180), "white": (250, 250, 250), "black": (15, 15, 15),
}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128), "beige": (225, 210, 170),
}
BACKGROUND_WORDS = {"white": ["white"], "black": ["black", "dark"], "gray": ["gray", "grey"], "beige": ["beige"]}
SIZES = ["small", "big"]
SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "big": ["big", "big", "large"]}
SIZE_RADIUS = {"small": (0.085, 0.105), "big": (0.16, 0.19)}     # fraction of the image side
# 3x3 grid cells (row, col) -> position names
POSITION_NAMES = {(0, 0): "top left", (0, 1): "top", (0, 2): "top right", (1, 0): "left", (1, 1): "center",
                  (1, 2): "right", (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right"}
POSITION_WORDS = {
    "left": ["on the left", "on the left side", "to the left"],
    "right": ["on the right", "on the right side", "to the right"],
    "top": ["at the top", "near the top", "at the top of the picture"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom of the picture"],
    "center": ["in the middle", "in the center", "in the middle of the picture"],
    "top left": ["in the top left corner", "at the top left", "in the upper left corner"],
    "top right": ["in the top right corner", "at the top right", "in the upper right corner"],
    "bottom left": ["in the bottom left corner", "at the bottom left", "in the lower left corner"],
    "bottom right": ["in the bottom right corner", "at the bottom right", "in the lower right corner"],
}
RELATION_WORDS = {"left": ["to the left of", "left of", "on the left of"],
                  "right": ["to the right of", "right of", "on the right of"],
                  "above": ["above", "over"], "below": ["below", "under", "beneath"]}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
NUMBERS = {2: "two", 3: "three"}

CNN_PREFIX_NAME = "synthetic-cnn"
CNN_LAYER = "stage4_unit2_conv2"
CNN_WIDTHS = (16, 16, 32, 64)
CNN_NUM_CLASSES = 3          # the gallery-style head: number of objects (1, 2, 3)
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BUNDLED_PARAMS = os.path.join(DATA_DIR, CNN_PREFIX_NAME + "-0000.params")
BUNDLED_SYMBOL = os.path.join(DATA_DIR, CNN_PREFIX_NAME + "-symbol.json")


@dataclasses.dataclass
class SyntheticConfig(Config):
    """What to generate."""
    train: int = 1000
    val: int = 100
    test: int = 100
    seed: int = 1
    image_size: int = 128
    captions_per_image: int = 5


@dataclasses.dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    cell: Tuple[int, int]            # (row, col) on the 3x3 grid
    centre: Tuple[float, float]      # (x, y) in pixels
    radius: float
    angle: float = 0.0

    @property
    def position(self) -> str:
        return POSITION_NAMES[self.cell]


@dataclasses.dataclass
class Scene:
    background: str
    objects: List[SceneObject]
    kind: str                        # single | pair | group | group_other | triple


# ---------------------------------------------------------------------------------------------------------------
# sampling scenes
# ---------------------------------------------------------------------------------------------------------------

def sample_scene(rng: np.random.RandomState, image_size: int) -> Scene:
    """A random scene: kind, background, objects on distinct grid cells that do not overlap."""
    kind = ["single", "pair", "group", "group_other", "triple"][rng.choice(5, p=[0.3, 0.3, 0.17, 0.13, 0.1])]
    background = list(BACKGROUNDS)[rng.randint(len(BACKGROUNDS))]
    colours = [c for c in COLOURS if c != background and not (background == "gray" and c == "gray")]
    count = {"single": 1, "pair": 2, "group": int(rng.choice([2, 3])), "group_other": 3, "triple": 3}[kind]
    for _ in range(100):
        cells = [divmod(int(c), 3) for c in rng.choice(9, size=count, replace=False)]
        if kind in ("group", "group_other"):
            shape, colour, size = SHAPES[rng.randint(len(SHAPES))], colours[rng.randint(len(colours))], \
                SIZES[rng.randint(2)]
            specs = [(shape, colour, size)] * (count if kind == "group" else 2)
            if kind == "group_other":
                other = _distinct_spec(rng, colours, {(shape, colour)})
                specs.append(other)
        else:
            specs, used = [], set()
            for _ in range(count):
                spec = _distinct_spec(rng, colours, used)
                used.add(spec[:2])
                specs.append(spec)
        objects = []
        for (shape, colour, size), cell in zip(specs, cells):
            low, high = SIZE_RADIUS[size]
            radius = rng.uniform(low, high) * image_size
            row, col = cell
            x = (col + 0.5) / 3 * image_size + rng.uniform(-0.04, 0.04) * image_size
            y = (row + 0.5) / 3 * image_size + rng.uniform(-0.04, 0.04) * image_size
            x = float(np.clip(x, radius + 1, image_size - radius - 1))
            y = float(np.clip(y, radius + 1, image_size - radius - 1))
            objects.append(SceneObject(shape, colour, size, cell, (x, y), float(radius),
                                       float(rng.uniform(-0.3, 0.3))))
        if _no_overlap(objects):
            return Scene(background, objects, kind)
    # tightly packed big objects kept colliding: fall back to small ones (always fits on the 3x3 grid)
    for o in objects:
        o.size, o.radius = "small", SIZE_RADIUS["small"][0] * image_size
    return Scene(background, objects, kind)


def _distinct_spec(rng: np.random.RandomState, colours: Sequence[str], used: set) -> Tuple[str, str, str]:
    while True:
        spec = (SHAPES[rng.randint(len(SHAPES))], colours[rng.randint(len(colours))], SIZES[rng.randint(2)])
        if spec[:2] not in used:
            return spec


def _no_overlap(objects: Sequence[SceneObject]) -> bool:
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            if np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) < 1.05 * (a.radius + b.radius):
                return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------------------------

def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    def rotate(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]
    if shape == "square":
        h = r * 0.8
        return rotate([(-h, -h), (h, -h), (h, h), (-h, h)])
    if shape == "triangle":
        return rotate([(r * np.cos(a), r * np.sin(a)) for a in np.radians([-90, 30, 150])])
    if shape == "diamond":
        return rotate([(0, -r), (r * 0.65, 0), (0, r), (-r * 0.65, 0)])
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            a = np.radians(-90 + 36 * k)
            points.append((radius * np.cos(a), radius * np.sin(a)))
        return rotate(points)
    if shape == "cross":
        a, b = r * 0.3, r * 0.9
        return rotate([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                       (-b, -a), (-a, -a)])
    raise ValueError(shape)


def draw_scene(scene: Scene, image_size: int, rng: np.random.RandomState) -> Image.Image:
    """Render at 2x and downsample (smooth edges); colours jitter a little."""
    scale = 2
    side = image_size * scale
    bg = np.array(BACKGROUNDS[scene.background]) + rng.randint(-12, 13, size=3)
    image = Image.new("RGB", (side, side), tuple(int(v) for v in np.clip(bg, 0, 255)))
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        colour = tuple(int(v) for v in np.clip(np.array(COLOURS[o.colour]) + rng.randint(-15, 16, size=3), 0, 255))
        cx, cy, r = o.centre[0] * scale, o.centre[1] * scale, o.radius * scale
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r, o.angle), fill=colour)
    return image.resize((image_size, image_size), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------------------------------

def _pick(rng: np.random.RandomState, options: Sequence[str]) -> str:
    return options[rng.randint(len(options))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return "%s %s" % (_article(phrase), phrase)


def _noun(rng: np.random.RandomState, shape: str, plural: bool = False) -> str:
    singular, many = SHAPE_WORDS[shape][rng.randint(len(SHAPE_WORDS[shape]))]
    return many if plural else singular


def _object_phrase(rng: np.random.RandomState, o: SceneObject, size_prob: float = 0.75) -> str:
    """'big red circle' / 'red circle' (no article)."""
    words = []
    if rng.rand() < size_prob:
        words.append(_pick(rng, SIZE_WORDS[o.size]))
    words += [o.colour, _noun(rng, o.shape)]
    return " ".join(words)


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Where a is relative to b: left | right | above | below."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _background(rng: np.random.RandomState, scene: Scene) -> str:
    return "on %s background" % _with_article(_pick(rng, BACKGROUND_WORDS[scene.background]))


def caption_candidates(scene: Scene, rng: np.random.RandomState) -> List[str]:
    """One caption of the scene, phrased by a randomly chosen template (called repeatedly for several)."""
    objs, pos = scene.objects, lambda o: _pick(rng, POSITION_WORDS[o.position])
    if scene.kind == "single":
        o = objs[0]
        p = _object_phrase(rng, o)
        templates = [
            lambda: "%s %s" % (_with_article(p), pos(o)),
            lambda: "there is %s %s" % (_with_article(p), pos(o)),
            lambda: "%s %s %s" % (_with_article(p), pos(o), _background(rng, scene)),
            lambda: "%s there is %s" % (pos(o), _with_article(p)),
            lambda: "%s %s" % (_with_article(p), _background(rng, scene)),
            lambda: "one %s %s" % (p, pos(o)),
            lambda: "%s %s that is %s" % (_with_article(_pick(rng, SIZE_WORDS[o.size])), _noun(rng, o.shape),
                                          o.colour) + " " + pos(o),
            lambda: "the picture shows %s %s" % (_with_article(p), pos(o)),
            lambda: "a single %s %s" % (p, pos(o)),
        ]
    elif scene.kind == "pair":
        a, b = objs
        pa, pb = _object_phrase(rng, a), _object_phrase(rng, b)
        rel = _relation(a, b)
        templates = [
            lambda: "%s %s %s" % (_with_article(pa), _pick(rng, RELATION_WORDS[rel]), _with_article(pb)),
            lambda: "%s %s %s" % (_with_article(pb), _pick(rng, RELATION_WORDS[INVERSE[rel]]), _with_article(pa)),
            lambda: "there is %s %s %s" % (_with_article(pa), _pick(rng, RELATION_WORDS[rel]), _with_article(pb)),
            lambda: "%s %s and %s %s" % (_with_article(pa), pos(a), _with_article(pb), pos(b)),
            lambda: "%s and %s %s" % (_with_article(pa), _with_article(pb), _background(rng, scene)),
            lambda: "two shapes %s and %s" % (_with_article(pa), _with_article(pb)),
            lambda: "%s and %s" % (_with_article(pb), _with_article(pa)),
        ]
    elif scene.kind == "group":
        o, n = objs[0], NUMBERS[len(objs)]
        size = lambda: _pick(rng, SIZE_WORDS[o.size])  # noqa: E731
        rows, cols = {x.cell[0] for x in objs}, {x.cell[1] for x in objs}
        arrangement = "in a row" if len(rows) == 1 else ("one above the other" if len(cols) == 1 and len(objs) == 2
                                                         else "")
        templates = [
            lambda: "%s %s %s" % (n, o.colour, _noun(rng, o.shape, True)),
            lambda: "%s %s %s %s %s" % (n, size(), o.colour, _noun(rng, o.shape, True), _background(rng, scene)),
            lambda: "there are %s %s %s" % (n, o.colour, _noun(rng, o.shape, True)),
            lambda: "%s %s %s %s" % (n, size(), o.colour, _noun(rng, o.shape, True)),
            lambda: ("a pair of %s %s" if len(objs) == 2 else "a group of three %s %s")
            % (o.colour, _noun(rng, o.shape, True)),
            lambda: "%s %s %s %s" % (n, _noun(rng, o.shape, True), "both" if len(objs) == 2 else "all", o.colour),
        ]
        if arrangement:
            templates.append(lambda: "%s %s %s %s" % (n, o.colour, _noun(rng, o.shape, True), arrangement))
    elif scene.kind == "group_other":
        o, b = objs[0], objs[2]
        pb = _object_phrase(rng, b)
        group = lambda: "two %s %s" % (o.colour, _noun(rng, o.shape, True))  # noqa: E731
        templates = [
            lambda: "%s and %s" % (group(), _with_article(pb)),
            lambda: "%s and %s" % (_with_article(pb), group()),
            lambda: "there are %s and %s %s" % (group(), _with_article(pb), pos(b)),
            lambda: "%s and %s %s" % (group(), _with_article(pb), _background(rng, scene)),
            lambda: "%s %s and %s" % (_with_article(pb), pos(b), group()),
        ]
    else:  # triple
        a, b, c = objs
        pa, pb, pc = (_object_phrase(rng, x, 0.5) for x in objs)
        templates = [
            lambda: "%s %s and %s" % (_with_article(pa), _with_article(pb), _with_article(pc)),
            lambda: "three shapes %s %s and %s" % (_with_article(pa), _with_article(pb), _with_article(pc)),
            lambda: "%s %s %s %s and %s %s" % (_with_article(pa), pos(a), _with_article(pb), pos(b),
                                               _with_article(pc), pos(c)),
            lambda: "three shapes %s" % _background(rng, scene),
            lambda: "%s %s and %s %s" % (_with_article(pc), _with_article(pb), _with_article(pa),
                                         _background(rng, scene)),
        ]
    return [templates[i]() for i in rng.permutation(len(templates))]


def make_captions(scene: Scene, rng: np.random.RandomState, count: int) -> List[str]:
    """``count`` captions of the scene, distinct where the templates allow."""
    captions: List[str] = []
    for _ in range(4):
        for caption in caption_candidates(scene, rng):
            caption = " ".join(caption.split())
            if caption not in captions:
                captions.append(caption)
            if len(captions) == count:
                return captions
    while len(captions) < count:
        captions.append(captions[len(captions) % max(1, len(captions))])
    return captions


# ---------------------------------------------------------------------------------------------------------------
# the CNN (model-gallery form: a small pre-activation ResNet, names as MXNet's resnet symbols)
# ---------------------------------------------------------------------------------------------------------------

def build_symbol(widths: Sequence[int] = CNN_WIDTHS, num_classes: int = CNN_NUM_CLASSES) -> "mx.sym.Symbol":  # noqa
    """data (raw 0..255) -> normalised -> conv0 (stride 2) -> 4 stages of 2 pre-activation units (strides 2, 2, 2,
    1) -> bn1/relu1 -> pool1 -> fc1 -> softmax. At 128x128 input, ``stage4_unit2_conv2`` is (widths[-1], 8, 8)."""
    import mxnet as mx
    sym = mx.sym
    data = sym.var("data")
    x = sym.broadcast_mul(sym.broadcast_sub(data, sym.var("data_mean", shape=(1, 3, 1, 1), init=mx.init.Zero()),
                                            name="centre"),
                          sym.var("data_scale", shape=(1, 3, 1, 1), init=mx.init.One()), name="normalize")
    x = sym.Convolution(x, num_filter=widths[0], kernel=(3, 3), stride=(2, 2), pad=(1, 1), no_bias=True,
                        name="conv0")
    strides = (2, 2, 2, 1)
    in_width = widths[0]
    for s, (width, stride) in enumerate(zip(widths, strides), start=1):
        for u in (1, 2):
            name = "stage%d_unit%d" % (s, u)
            unit_stride = stride if u == 1 else 1
            bn1 = sym.BatchNorm(x, fix_gamma=False, eps=2e-5, momentum=0.9, name=name + "_bn1")
            act1 = sym.Activation(bn1, act_type="relu", name=name + "_relu1")
            conv1 = sym.Convolution(act1, num_filter=width, kernel=(3, 3), stride=(unit_stride,) * 2, pad=(1, 1),
                                    no_bias=True, name=name + "_conv1")
            bn2 = sym.BatchNorm(conv1, fix_gamma=False, eps=2e-5, momentum=0.9, name=name + "_bn2")
            act2 = sym.Activation(bn2, act_type="relu", name=name + "_relu2")
            conv2 = sym.Convolution(act2, num_filter=width, kernel=(3, 3), stride=(1, 1), pad=(1, 1), no_bias=True,
                                    name=name + "_conv2")
            if unit_stride != 1 or width != in_width:
                shortcut = sym.Convolution(act1, num_filter=width, kernel=(1, 1), stride=(unit_stride,) * 2,
                                           no_bias=True, name=name + "_sc")
            else:
                shortcut = x
            x = sym.elemwise_add(conv2, shortcut, name=name + "_plus")
            in_width = width
    bn1 = sym.BatchNorm(x, fix_gamma=False, eps=2e-5, momentum=0.9, name="bn1")
    relu1 = sym.Activation(bn1, act_type="relu", name="relu1")
    pool1 = sym.Pooling(relu1, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    flat = sym.Flatten(pool1, name="flatten0")
    fc1 = sym.FullyConnected(flat, num_hidden=num_classes, name="fc1")
    return sym.SoftmaxOutput(fc1, name="softmax")


def init_params(symbol: "mx.sym.Symbol", seed: int, image_size: int) -> Tuple[Dict[str, "mx.nd.NDArray"],  # noqa
                                                                               Dict[str, "mx.nd.NDArray"]]:
    """Deterministic random weights (He-normal convolutions, unit batch norms) for ``symbol``."""
    import mxnet as mx
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, image_size, image_size))
    args, auxs = {}, {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name in ("data", "softmax_label"):
            continue
        if name == "data_mean":
            value = np.full(shape, 127.5)
        elif name == "data_scale":
            value = np.full(shape, 1.0 / 64.0)
        elif name.endswith("_gamma"):
            value = np.ones(shape)
        elif name.endswith(("_beta", "_bias")):
            value = np.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        args[name] = mx.nd.array(value, dtype="float32")
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        auxs[name] = mx.nd.array(np.ones(shape) if name.endswith("_var") else np.zeros(shape), dtype="float32")
    return args, auxs


def save_checkpoint(prefix: str, symbol: "mx.sym.Symbol", args: Dict[str, "mx.nd.NDArray"],  # noqa: F821
                    auxs: Dict[str, "mx.nd.NDArray"], epoch: int = 0) -> None:
    """``PREFIX-symbol.json`` + ``PREFIX-%04d.params`` (the format of ``mx.model.save_checkpoint``), atomically."""
    import mxnet as mx
    with utils.atomic_open(prefix + "-symbol.json", "w") as f:
        f.write(symbol.tojson())
    saved = {"arg:" + k: v for k, v in args.items()}
    saved.update({"aux:" + k: v for k, v in auxs.items()})
    with utils.atomic_path("%s-%04d.params" % (prefix, epoch)) as tmp:
        mx.nd.save(tmp, saved)


def write_cnn(folder: str, image_size: int, seed: int = 0) -> str:
    """Write the synthetic CNN into ``folder``; returns its prefix. Uses the bundled pretrained weights when present
    (``captioning/data/``), else deterministic random weights (features then carry much less information)."""
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, CNN_PREFIX_NAME)
    if os.path.exists(BUNDLED_PARAMS) and os.path.exists(BUNDLED_SYMBOL):
        # plain copies: generating a data set needs no MXNet
        for source, target in ((BUNDLED_SYMBOL, prefix + "-symbol.json"), (BUNDLED_PARAMS, prefix + "-0000.params")):
            with utils.atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
    else:
        logger.warning("No pretrained synthetic CNN weights in %s: writing random weights (regenerate them with "
                       "python -m captioning.synthetic --train-cnn)", DATA_DIR)
        symbol = build_symbol()
        args, auxs = init_params(symbol, seed, image_size)
        save_checkpoint(prefix, symbol, args, auxs)
    return prefix


# ---------------------------------------------------------------------------------------------------------------
# pretraining the CNN on the scenes' attribute labels (python -m captioning.synthetic --train-cnn)
# ---------------------------------------------------------------------------------------------------------------

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


def train_cnn(output_params: str, steps: int = 2000, seconds: float = 600.0, seed: int = 0, num_scenes: int = 6000,
              batch_size: int = 32, learning_rate: float = 3e-3) -> Dict[str, float]:
    """Pretrain the synthetic CNN (``build_symbol``) on attribute labels for ``steps`` updates (linearly decayed
    learning rate; stops early after ``seconds``; about a minute on two idle cores): 1x1-convolution
    heads on ``relu1`` predict each grid cell's shape, colour and size class, a pooled head the background, and the
    gallery head ``fc1`` the object count. Saves the CNN's parameters (heads on relu1 dropped) to
    ``output_params`` and returns held-out accuracies."""
    import time
    import mxnet as mx
    from mxnet import autograd, gluon
    image_size = GRID * 16
    mx.random.seed(seed)
    images, labels = _training_arrays(num_scenes, seed, image_size)
    held_images, held_labels = _training_arrays(300, seed + 1, image_size)
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
    params = body.collect_params()
    params.update(heads.collect_params())
    params.update(background_head.collect_params())
    trainer = gluon.Trainer(params, "adam", {"learning_rate": learning_rate})
    ce = gluon.loss.SoftmaxCrossEntropyLoss(axis=1)
    n_shape, n_colour = len(SHAPES) + 1, len(COLOURS) + 1

    def forward(batch: np.ndarray):
        features, count_logits = body(mx.nd.array(batch, dtype="float32"))
        cells = heads(features)
        return (cells[:, :n_shape], cells[:, n_shape:n_shape + n_colour], cells[:, n_shape + n_colour:],
                background_head(mx.nd.mean(features, axis=(2, 3))), count_logits)

    start, step = time.time(), 0
    rng = np.random.RandomState(seed)
    while step < steps and time.time() - start < seconds:
        trainer.set_learning_rate(learning_rate * max(0.05, 1.0 - step / steps))
        rows = rng.randint(0, num_scenes, size=batch_size)
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
        step += 1
        if step % 50 == 0:
            logger.info("step %d (%.0f s): loss %.3f", step, time.time() - start, loss.mean().asscalar())
    accuracy = _held_out_accuracy(forward, held_images, held_labels)
    logger.info("%d steps in %.0f s; held-out accuracy: %s", step, time.time() - start,
                ", ".join("%s %.3f" % kv for kv in accuracy.items()))
    aux_names = set(symbol.list_auxiliary_states())
    saved = {("aux:" if name in aux_names else "arg:") + name: p.data().copyto(mx.cpu())
             for name, p in body.collect_params().items()}
    os.makedirs(os.path.dirname(os.path.abspath(output_params)), exist_ok=True)
    with utils.atomic_path(output_params) as tmp:
        mx.nd.save(tmp, saved)
    if output_params.endswith("-0000.params"):   # the symbol beside it: PREFIX-symbol.json
        utils.atomic_write_text(output_params[:-len("-0000.params")] + "-symbol.json", symbol.tojson())
    return accuracy


# ---------------------------------------------------------------------------------------------------------------
# the data set on disk
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SyntheticDataset:
    """Paths of a generated data set."""
    root: str
    image_root: str
    cnn_prefix: str
    layer: str
    image_size: Tuple[int, int, int]
    splits: Dict[str, Dict[str, object]]    # split -> {"images": path, "captions": [paths], "num_images": n}


SPLITS = ("train", "val", "test")


def generate_split(rng: np.random.RandomState, count: int, image_size: int, references: int
                   ) -> List[Tuple[Scene, Image.Image, List[str]]]:
    items = []
    for _ in range(count):
        scene = sample_scene(rng, image_size)
        image = draw_scene(scene, image_size, rng)
        items.append((scene, image, make_captions(scene, rng, references)))
    return items


README_TITLE = "Synthetic captioning data set"


def check_out_dir(out_dir: str) -> None:
    """``out_dir`` must be new, empty or a data set this module wrote (its README.txt says so): the files of any
    other folder are kept, not replaced by the data set's."""
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if not names:
        return
    readme = os.path.join(out_dir, "README.txt")
    try:
        with open(readme, encoding="utf-8") as f:
            ours = f.read(len(README_TITLE)) == README_TITLE
    except (OSError, UnicodeDecodeError):
        ours = False
    utils.check_condition(ours, "%s: the folder holds files that are not a synthetic data set (%s%s); they are "
                                "kept: choose a new or empty folder" % (out_dir, ", ".join(names[:5]),
                                                                        " ..." if len(names) > 5 else ""))


def generate(out_dir: str, config: SyntheticConfig) -> SyntheticDataset:
    """Write the data set (images, list and caption files, README.txt, CNN) into ``out_dir``."""
    utils.check_condition(not os.path.exists(out_dir) or os.path.isdir(out_dir),
                          "%s: exists and is not a folder; give a folder for the data set" % out_dir)
    utils.check_condition(config.image_size >= 16, "--image-size must be at least 16, got %d" % config.image_size)
    utils.check_condition(config.captions_per_image >= 1, "--captions-per-image must be at least 1")
    check_out_dir(out_dir)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    # written first: a run interrupted later leaves a folder recognisably ours, which the next run may fill
    utils.atomic_write_text(os.path.join(out_dir, "README.txt"), _readme(config))
    splits: Dict[str, Dict[str, object]] = {}
    k = config.captions_per_image
    for split_id, split in enumerate(SPLITS):
        count = getattr(config, split)
        rng = np.random.RandomState([config.seed, split_id])
        items = generate_split(rng, count, config.image_size, k)
        names = ["images/%s_%05d.png" % (split, i) for i in range(count)]
        for name, (_, image, _) in zip(names, items):
            with utils.atomic_path(os.path.join(out_dir, name)) as tmp:
                image.save(tmp, format="PNG", compress_level=1)
        images_path = os.path.join(out_dir, split + ".images")
        if split == "train":
            # one line per (image, caption): every reference is a training pair
            utils.atomic_write_text(images_path, "".join(name + "\n" for name in names for _ in range(k)))
            captions = [os.path.join(out_dir, "train.captions")]
            utils.atomic_write_text(captions[0], "".join(c + "\n" for _, _, caps in items for c in caps))
        else:
            utils.atomic_write_text(images_path, "".join(name + "\n" for name in names))
            captions = [os.path.join(out_dir, split + ".captions" + ("" if r == 0 else ".%d" % r)) for r in range(k)]
            for r, path in enumerate(captions):
                utils.atomic_write_text(path, "".join(caps[r] + "\n" for _, _, caps in items))
        splits[split] = {"images": images_path, "captions": captions, "num_images": count}
    prefix = write_cnn(os.path.join(out_dir, "cnn"), config.image_size, config.seed)
    logger.info("Wrote %d/%d/%d train/val/test scenes (%d captions each) to %s", config.train, config.val,
                config.test, k, out_dir)
    return SyntheticDataset(root=out_dir, image_root=out_dir, cnn_prefix=prefix, layer=CNN_LAYER,
                            image_size=(3, config.image_size, config.image_size), splits=splits)


def _readme(config: SyntheticConfig) -> str:
    k = config.captions_per_image
    grid = config.image_size // 16
    return README_TITLE + """ (captioning.synthetic, seed %(seed)d)
==================================================================
Drawn scenes of 1-3 simple shapes with %(k)d reference captions per image (lowercase, whitespace-tokenised).

images/{train,val,test}_NNNNN.png   %(size)dx%(size)d RGB images
train.images / train.captions      ONE LINE PER (image, caption) PAIR: each image line is repeated %(k)d times,
                                   once per reference (%(train)d images, %(pairs)d lines)
val.images, test.images            one line per image (%(val)d, %(test)d images)
val.captions, test.captions        reference 0 of each image; val.captions.1 .. val.captions.%(last)d: the others
cnn/%(prefix)s-symbol.json        a small CNN in MXNet model-gallery form (raw 0..255 RGB input, normalised
cnn/%(prefix)s-0000.params        inside the graph). Feature layer: %(layer)s -> (%(channels)d, %(grid)d, %(grid)d)
                                   at --source-image-size 3 %(size)d %(size)d.

Extract features (paths in the lists are relative to this folder):
  python -m captioning.extract_features --image-root . --input train.images --output-root features \\
      --output train.features --source-image-size 3 %(size)d %(size)d \\
      --image-encoder-model-path cnn/%(prefix)s --image-encoder-layer %(layer)s
""" % dict(seed=config.seed, k=k, size=config.image_size, train=config.train, pairs=config.train * k,
           val=config.val, test=config.test, last=k - 1, prefix=CNN_PREFIX_NAME, layer=CNN_LAYER,
           channels=CNN_WIDTHS[-1], grid=grid)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.synthetic",
                                            description="Generate the synthetic captioning data set (drawn "
                                                        "scenes, several captions each, and a small CNN).")
    parser.add_argument("out_dir", nargs="?", default=None, help="Folder to write the data set into.")
    parser.add_argument("--train", type=arguments.int_greater_or_equal(0), default=1000, help="Training images.")
    parser.add_argument("--val", type=arguments.int_greater_or_equal(0), default=100, help="Validation images.")
    parser.add_argument("--test", type=arguments.int_greater_or_equal(0), default=100, help="Test images.")
    parser.add_argument("--seed", type=int, default=1, help="Random seed: the same seed gives the same data set.")
    parser.add_argument("--image-size", type=arguments.int_greater_or_equal(16), default=128,
                        help="Side of the square images in pixels (the bundled CNN was trained at 128).")
    parser.add_argument("--captions-per-image", type=arguments.int_greater_or_equal(1), default=5,
                        help="Reference captions per image.")
    group = parser.add_argument_group("Pretraining the bundled CNN")
    group.add_argument("--train-cnn", action="store_true", default=False,
                       help="Instead of writing a data set, pretrain the synthetic CNN on attribute labels and save "
                            "its weights (and symbol) to --cnn-output.")
    group.add_argument("--train-cnn-steps", type=arguments.int_greater_or_equal(1), default=2000,
                       help="Updates (batches of 32 scenes) of --train-cnn.")
    group.add_argument("--train-cnn-seconds", type=arguments.float_greater_or_equal(1.0), default=600.0,
                       help="Wall-clock cap of --train-cnn (stops early).")
    group.add_argument("--cnn-output", type=str, default=None,
                       help="Where --train-cnn writes the weights (PREFIX-0000.params; PREFIX-symbol.json beside it). "
                            "Default: the package's bundled weights, captioning/data/%s-0000.params." % CNN_PREFIX_NAME)
    arguments.add_logging_args(parser)
    return parser


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    if args.train_cnn:
        train_cnn(args.cnn_output or BUNDLED_PARAMS, steps=args.train_cnn_steps, seconds=args.train_cnn_seconds,
                  seed=args.seed)
        return
    if args.out_dir is None:
        parser.error("give OUT_DIR (or --train-cnn)")
    generate(args.out_dir, SyntheticConfig(train=args.train, val=args.val, test=args.test, seed=args.seed,
                                           image_size=args.image_size, captions_per_image=args.captions_per_image))


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
