"""The caption grammar of the synthetic scenes: several human-like phrasings of each scene, drawn at random from
templates per kind of scene (lowercase, whitespace-tokenised)."""
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .scenes import Scene, SceneObject

SHAPE_WORDS: Dict[str, List[Tuple[str, str]]] = {   # (singular, plural) ways to name each shape
    "circle": [("circle", "circles"), ("circle", "circles"), ("disc", "discs")],
    "square": [("square", "squares")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "diamond": [("diamond", "diamonds")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
}
BACKGROUND_WORDS = {"white": ["white"], "black": ["black", "dark"], "gray": ["gray", "grey"], "beige": ["beige"]}
SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "big": ["big", "big", "large"]}
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


Template = Callable[[], str]


def caption_candidates(scene: Scene, rng: np.random.RandomState) -> List[str]:
    """One caption of the scene, phrased by a randomly chosen template (called repeatedly for several)."""
    templates = _TEMPLATES[scene.kind](scene, rng)
    return [templates[i]() for i in rng.permutation(len(templates))]


def _position(rng: np.random.RandomState, o: SceneObject) -> str:
    return _pick(rng, POSITION_WORDS[o.position])


def _single_templates(scene: Scene, rng: np.random.RandomState) -> List[Template]:
    """One object."""
    o = scene.objects[0]
    p = _object_phrase(rng, o)
    return [
        lambda: "%s %s" % (_with_article(p), _position(rng, o)),
        lambda: "there is %s %s" % (_with_article(p), _position(rng, o)),
        lambda: "%s %s %s" % (_with_article(p), _position(rng, o), _background(rng, scene)),
        lambda: "%s there is %s" % (_position(rng, o), _with_article(p)),
        lambda: "%s %s" % (_with_article(p), _background(rng, scene)),
        lambda: "one %s %s" % (p, _position(rng, o)),
        lambda: "%s %s that is %s" % (_with_article(_pick(rng, SIZE_WORDS[o.size])), _noun(rng, o.shape),
                                      o.colour) + " " + _position(rng, o),
        lambda: "the picture shows %s %s" % (_with_article(p), _position(rng, o)),
        lambda: "a single %s %s" % (p, _position(rng, o)),
    ]


def _pair_templates(scene: Scene, rng: np.random.RandomState) -> List[Template]:
    """Two different objects."""
    a, b = scene.objects
    pa, pb = _object_phrase(rng, a), _object_phrase(rng, b)
    rel = _relation(a, b)
    return [
        lambda: "%s %s %s" % (_with_article(pa), _pick(rng, RELATION_WORDS[rel]), _with_article(pb)),
        lambda: "%s %s %s" % (_with_article(pb), _pick(rng, RELATION_WORDS[INVERSE[rel]]), _with_article(pa)),
        lambda: "there is %s %s %s" % (_with_article(pa), _pick(rng, RELATION_WORDS[rel]), _with_article(pb)),
        lambda: "%s %s and %s %s" % (_with_article(pa), _position(rng, a), _with_article(pb), _position(rng, b)),
        lambda: "%s and %s %s" % (_with_article(pa), _with_article(pb), _background(rng, scene)),
        lambda: "two shapes %s and %s" % (_with_article(pa), _with_article(pb)),
        lambda: "%s and %s" % (_with_article(pb), _with_article(pa)),
    ]


def _group_templates(scene: Scene, rng: np.random.RandomState) -> List[Template]:
    """Two or three alike objects."""
    objs = scene.objects
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
    return templates


def _group_other_templates(scene: Scene, rng: np.random.RandomState) -> List[Template]:
    """Two alike objects and another."""
    o, b = scene.objects[0], scene.objects[2]
    pb = _object_phrase(rng, b)
    group = lambda: "two %s %s" % (o.colour, _noun(rng, o.shape, True))  # noqa: E731
    return [
        lambda: "%s and %s" % (group(), _with_article(pb)),
        lambda: "%s and %s" % (_with_article(pb), group()),
        lambda: "there are %s and %s %s" % (group(), _with_article(pb), _position(rng, b)),
        lambda: "%s and %s %s" % (group(), _with_article(pb), _background(rng, scene)),
        lambda: "%s %s and %s" % (_with_article(pb), _position(rng, b), group()),
    ]


def _triple_templates(scene: Scene, rng: np.random.RandomState) -> List[Template]:
    """Three different objects."""
    a, b, c = scene.objects
    pa, pb, pc = (_object_phrase(rng, x, 0.5) for x in scene.objects)
    return [
        lambda: "%s %s and %s" % (_with_article(pa), _with_article(pb), _with_article(pc)),
        lambda: "three shapes %s %s and %s" % (_with_article(pa), _with_article(pb), _with_article(pc)),
        lambda: "%s %s %s %s and %s %s" % (_with_article(pa), _position(rng, a), _with_article(pb),
                                           _position(rng, b), _with_article(pc), _position(rng, c)),
        lambda: "three shapes %s" % _background(rng, scene),
        lambda: "%s %s and %s %s" % (_with_article(pc), _with_article(pb), _with_article(pa),
                                     _background(rng, scene)),
    ]


_TEMPLATES: Dict[str, Callable[[Scene, np.random.RandomState], List[Template]]] = {
    "single": _single_templates, "pair": _pair_templates, "group": _group_templates,
    "group_other": _group_other_templates, "triple": _triple_templates}


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
