"""Reading images for the CNN: path safety under a root folder, decoding any image mode to RGB, centre square crop
(or another view of the image, for feature augmentation) and bicubic resize to the CNN's input size. Pure functions;
no MXNet here (the decode workers import this module only)."""
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFile

from . import utils

# A truncated file is an error (never silently padded with grey).
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Colour used under transparent pixels (Sockeye's PIL .convert("RGB") turned them black; white is what a viewer shows).
TRANSPARENT_BACKGROUND = (255, 255, 255)


class BadImageError(utils.CaptioningError):
    """An image file that is missing, unreadable, truncated or not an image."""


def is_inside(root: str, path: str) -> bool:
    """True when ``path`` is ``root`` or below it once both are resolved (``..`` and symbolic links followed)."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), real_root]) == real_root


def check_inside_root(root: str, relative: str, allow_absolute: bool, where: str, what: str = "image") -> str:
    """``root/relative`` (normalised); a path that is absolute, leaves ``root`` through ``..``, or is (or passes
    through) a symbolic link pointing out of ``root`` is refused with a `CaptioningError` naming ``where`` (e.g.
    ``"train.images, line 7"``), unless ``allow_absolute``. Used for images and feature files alike."""
    utils.check_condition(relative.strip() != "", "%s: empty %s path; remove the empty line" % (where, what))
    if os.path.isabs(relative):
        utils.check_condition(allow_absolute, "%s: absolute path %r; %s paths must be relative to the root folder "
                                              "(or pass --allow-absolute-paths)" % (where, relative, what))
        return relative
    joined = os.path.normpath(os.path.join(root, relative))
    if allow_absolute:
        return joined
    parts = relative.split(os.sep)
    if ".." not in parts and not any(os.path.islink(os.path.join(root, *parts[:k + 1])) for k in range(len(parts))):
        return joined   # no way out: no "..", and no link below the root (one lstat per part, not three realpaths)
    textual = os.path.commonpath([os.path.abspath(joined), os.path.abspath(root)]) == os.path.abspath(root)
    utils.check_condition(textual, "%s: path %r leaves the root folder %s; use paths below the root (or pass "
                                   "--allow-absolute-paths)" % (where, relative, root))
    utils.check_condition(is_inside(root, joined), "%s: path %r is a symbolic link (or passes through one) that "
                                                   "points out of the root folder %s, to %s; copy the file into the "
                                                   "root (or pass --allow-absolute-paths)"
                          % (where, relative, root, os.path.realpath(joined)))
    return joined


def resolve_path(root: str, relative: str, allow_absolute: bool, where: str) -> str:
    """``root/relative`` for an image path of a list; see `check_inside_root` for what is refused."""
    return check_inside_root(root, relative, allow_absolute, where, "image")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: grey, palette, CMYK, YCbCr, 16/32-bit integer and float greys; transparency
    (RGBA, LA, palette with a transparent colour) is composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # High bit depth greys: scale the value range of the type to 0..255.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "I" and array.max() <= 255:
            top = 255.0
        if image.mode == "F" and array.max() <= 1.0:
            top = 1.0
        grey = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa") or (image.mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, TRANSPARENT_BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


# Views of an image (feature augmentation, `extract_features --augment`): the centre square (what captioning uses),
# squares in the four corners and the mirror image of each: the "ten crops" of Krizhevsky et al. (2012).
CENTRE = "centre"
CROPS = (CENTRE, "top-left", "top-right", "bottom-left", "bottom-right")
FLIP_SUFFIX = "-flip"
VIEWS = CROPS + tuple(crop + FLIP_SUFFIX for crop in CROPS)
AUGMENTATIONS = {"none": (CENTRE,), "flip": (CENTRE, CENTRE + FLIP_SUFFIX), "ten-crop": VIEWS}
CORNER_FRACTION = 0.875     # side of a corner square / the image's shorter side


def view_box(width: int, height: int, view: str = CENTRE) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of ``view``'s square in a ``width`` x ``height`` image (a flip crops as its view
    without the flip): the largest centred square, or a square of `CORNER_FRACTION` of the shorter side in a
    corner."""
    crop = view[:-len(FLIP_SUFFIX)] if view.endswith(FLIP_SUFFIX) else view
    if crop not in CROPS:
        raise ValueError("unknown view %r; one of %s" % (view, ", ".join(VIEWS)))
    if crop == CENTRE:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
    else:
        side = max(1, int(round(CORNER_FRACTION * min(width, height))))
        vertical, horizontal = crop.split("-")
        left = 0 if horizontal == "left" else width - side
        top = 0 if vertical == "top" else height - side
    return left, top, left + side, top + side


def crop_resize(image: Image.Image, size: Tuple[int, int], view: str = CENTRE) -> Image.Image:
    """``view``'s square of ``image`` (`view_box`), mirrored left-right for a ``-flip`` view, resized (bicubic) to
    ``size`` = (H, W)."""
    box = view_box(image.size[0], image.size[1], view)
    height_out, width_out = size
    if box != (0, 0) + image.size:
        image = image.crop(box)   # crop first: no bleeding from outside the square
    image = image.resize((width_out, height_out), resample=Image.Resampling.BICUBIC)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view.endswith(FLIP_SUFFIX) else image


def load_image_uint8(path: str, size: Tuple[int, int], view: str = CENTRE) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB of ``view`` (default: the centre square) of the image at ``path``, resized;
    `BadImageError` when the file is missing, unreadable, truncated or not an image."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = crop_resize(to_rgb(image), size, view)
    except FileNotFoundError:
        raise BadImageError("%s: no such image file" % path) from None
    except IsADirectoryError:
        raise BadImageError("%s: is a folder, not an image" % path) from None
    except PermissionError:
        raise BadImageError("%s: cannot read the image (permission denied)" % path) from None
    except Image.DecompressionBombError as e:
        raise BadImageError("%s: image too large (%s)" % (path, e)) from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        raise BadImageError("%s: not a readable image (%s)" % (path, str(e) or type(e).__name__)) from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def load_image(path: str, size: Tuple[int, int], where: Optional[str] = None) -> np.ndarray:
    """``(3, H, W)`` float32 RGB, raw 0..255 values (gallery CNNs normalise inside their graph). Errors name
    ``where`` (e.g. ``"val.images, line 3"``) when given."""
    try:
        return load_image_uint8(path, size).astype(np.float32)
    except BadImageError as e:
        if where is None:
            raise
        raise BadImageError("%s: %s" % (where, e)) from None


def decode_chunk(task: Tuple[Sequence[str], Tuple[int, int], Optional[Sequence[str]]]
                 ) -> List[Union[np.ndarray, str]]:
    """Worker-process job: decode a few images (``(paths, size, views)``; views None: the centre square of each) to
    ``(3, H, W)`` uint8 (a uint8 array pickles 4x smaller than float32); the error message in place of an unreadable
    one."""
    paths, size, views = task
    results: List[Union[np.ndarray, str]] = []
    for k, path in enumerate(paths):
        try:
            results.append(load_image_uint8(path, size, CENTRE if views is None else views[k]))
        except BadImageError as e:
            results.append(str(e))
    return results


def ignore_interrupts(niceness: int = 0) -> None:
    """Worker-process initializer: Ctrl-C is for the parent (which stops the pool); workers print no tracebacks."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
