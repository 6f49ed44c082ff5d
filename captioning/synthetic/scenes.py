"""Scenes of the synthetic data set: what they hold (shapes, colours, sizes, positions on a 3x3 grid, background),
how they are sampled and how they are drawn."""
import dataclasses
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (35, 70, 220), "yellow": (240, 220, 30),
    "orange": (245, 140, 20), "purple": (140, 50, 180), "white": (250, 250, 250), "black": (15, 15, 15),
}
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128), "beige": (225, 210, 170),
}
SIZES = ["small", "big"]
SIZE_RADIUS = {"small": (0.085, 0.105), "big": (0.16, 0.19)}     # fraction of the image side
# 3x3 grid cells (row, col) -> position names
POSITION_NAMES = {(0, 0): "top left", (0, 1): "top", (0, 2): "top right", (1, 0): "left", (1, 1): "center",
                  (1, 2): "right", (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right"}


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
            specs = []
            used: Set[Tuple[str, str]] = set()
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


def _distinct_spec(rng: np.random.RandomState, colours: Sequence[str], used: Set[Tuple[str, str]]
                   ) -> Tuple[str, str, str]:
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
