import os

import numpy as np
import pytest
from PIL import Image

from captioning import image_io, utils


def test_resolve_path_joins_under_root(tmp_path):
    assert image_io.resolve_path(str(tmp_path), "a/b.jpg", False, "x, line 1") == os.path.join(str(tmp_path),
                                                                                                "a", "b.jpg")
    # a ".." that stays inside the root is fine
    assert image_io.resolve_path(str(tmp_path), "a/../b.jpg", False, "x") == os.path.join(str(tmp_path), "b.jpg")


@pytest.mark.parametrize("path", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd"])
def test_resolve_path_refuses_escapes(tmp_path, path):
    with pytest.raises(utils.CaptioningError, match=r"list.images, line 7: .*--allow-absolute-paths"):
        image_io.resolve_path(str(tmp_path / "root"), path, False, "list.images, line 7")
    resolved = image_io.resolve_path(str(tmp_path / "root"), path, True, "list.images, line 7")
    assert os.path.isabs(resolved) or resolved.startswith(str(tmp_path))


def test_resolve_path_empty_line(tmp_path):
    with pytest.raises(utils.CaptioningError, match="f, line 2: empty image path"):
        image_io.resolve_path(str(tmp_path), "  ", False, "f, line 2")


def test_load_image_shape_dtype_and_centre_crop(tmp_path):
    # 60 wide x 20 high: left third red, middle third green, right third blue; the centre square is the green part
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:40] = (0, 255, 0)
    array[:, 40:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(array).save(path)
    image = image_io.load_image(str(path), (8, 10))
    assert image.shape == (3, 8, 10) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, 4, 5], [0, 255, 0], atol=1)
    assert image.max() <= 255 and image.min() >= 0


def test_load_image_tall_image_is_cropped_vertically(tmp_path):
    array = np.zeros((90, 30, 3), dtype=np.uint8)
    array[:30] = 255                     # white top third, black rest: the centre crop is the black middle
    path = tmp_path / "tall.png"
    Image.fromarray(array).save(path)
    image = image_io.load_image(str(path), (6, 6))
    assert image.max() < 5


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1", "I", "F"])
def test_every_mode_becomes_rgb(image_factory, mode):
    ext = {"CMYK": "img.jpg", "I;16": "img.png", "I": "img.tif", "F": "img.tif"}.get(mode, "img.png")
    path = image_factory(ext, mode=mode if mode not in ("LA", "1", "I", "F") else "RGB", size=(33, 21))
    if mode in ("LA", "1", "I", "F"):
        Image.open(path).convert("L").convert(mode).save(path)
    with Image.open(path) as check:
        assert check.mode == mode or (mode == "I;16" and check.mode.startswith("I;16"))
    image = image_io.load_image(str(path), (16, 16))
    assert image.shape == (3, 16, 16) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 255 and image.std() > 1.0   # not a blank image


def test_rgba_transparent_pixels_become_white(tmp_path):
    array = np.zeros((10, 10, 4), dtype=np.uint8)
    array[..., 0] = 255                  # red, fully transparent
    path = tmp_path / "clear.png"
    Image.fromarray(array).save(path)
    np.testing.assert_allclose(image_io.load_image(str(path), (4, 4)), 255.0)


def test_sixteen_bit_grey_scales_to_8_bit(tmp_path):
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    image = image_io.load_image(str(path), (8, 8))
    assert image[:, :, 0].max() == 0 and image[:, :, 7].min() == 255


def test_missing_truncated_and_non_images(tmp_path, image_factory):
    with pytest.raises(image_io.BadImageError, match="no such image file"):
        image_io.load_image(str(tmp_path / "nope.jpg"), (8, 8))
    good = image_factory("good.jpg", size=(64, 64))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(image_io.BadImageError, match="truncated.jpg: not a readable image"):
        image_io.load_image(str(truncated), (8, 8), where="list.images, line 3")
    with pytest.raises(image_io.BadImageError, match="^list.images, line 3: "):
        image_io.load_image(str(truncated), (8, 8), where="list.images, line 3")
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(image_io.BadImageError, match="not a readable image"):
        image_io.load_image(str(text), (8, 8))


def test_resolve_path_follows_symbolic_links(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    Image.new("RGB", (4, 4)).save(root / "sub" / "in.png")
    os.symlink(str(outside), str(root / "out.png"))
    os.symlink(str(root / "sub" / "in.png"), str(root / "in_link.png"))
    os.symlink(str(tmp_path), str(root / "up"))                   # a folder link out of the root
    for relative in ("out.png", "up/secret.png"):
        with pytest.raises(utils.CaptioningError, match=r"l.images, line 4: path '%s' is a symbolic link .*points "
                                                        r"out of the root folder" % relative):
            image_io.resolve_path(str(root), relative, False, "l.images, line 4")
        assert image_io.resolve_path(str(root), relative, True, "w") == os.path.join(str(root), relative)
    assert image_io.resolve_path(str(root), "in_link.png", False, "w") == str(root / "in_link.png")
    # a root that is itself a link is fine
    os.symlink(str(root), str(tmp_path / "root_link"))
    assert image_io.resolve_path(str(tmp_path / "root_link"), "sub/in.png", False, "w").endswith("sub/in.png")


def _quadrants(path):
    """A 40 wide x 30 high image: red top-left, green top-right, blue bottom-left, white bottom-right quadrant."""
    array = np.zeros((30, 40, 3), dtype=np.uint8)
    array[:15, :20] = (255, 0, 0)
    array[:15, 20:] = (0, 255, 0)
    array[15:, :20] = (0, 0, 255)
    array[15:, 20:] = (255, 255, 255)
    Image.fromarray(array).save(path)
    return str(path)


def test_view_boxes_are_the_centre_square_and_corner_squares():
    assert image_io.view_box(40, 30, "centre") == image_io.view_box(40, 30, "centre-flip") == (5, 0, 35, 30)
    side = round(image_io.CORNER_FRACTION * 30)
    assert image_io.view_box(40, 30, "top-left") == (0, 0, side, side)
    assert image_io.view_box(40, 30, "top-right-flip") == (40 - side, 0, 40, side)
    assert image_io.view_box(40, 30, "bottom-left") == (0, 30 - side, side, 30)
    assert image_io.view_box(40, 30, "bottom-right") == (40 - side, 30 - side, 40, 30)
    assert len(image_io.VIEWS) == 10 and image_io.AUGMENTATIONS["ten-crop"][0] == "centre"
    with pytest.raises(ValueError, match="unknown view 'middle'"):
        image_io.view_box(40, 30, "middle")


def test_each_view_shows_its_corner_and_a_flip_mirrors_it(tmp_path):
    path = _quadrants(tmp_path / "quadrants.png")
    size = (8, 8)
    colour = {"top-left": (255, 0, 0), "top-right": (0, 255, 0), "bottom-left": (0, 0, 255),
              "bottom-right": (255, 255, 255)}
    for view, rgb in colour.items():
        image = image_io.load_image_uint8(path, size, view)
        # the pixel nearest the view's own corner has the corner's colour
        row = 0 if view.startswith("top") else -1
        col = 0 if view.endswith("left") else -1
        np.testing.assert_allclose(image[:, row, col], rgb, atol=2)
        flipped = image_io.load_image_uint8(path, size, view + "-flip")
        np.testing.assert_array_equal(flipped, image[:, :, ::-1])
    np.testing.assert_array_equal(image_io.load_image_uint8(path, size, "centre"), image_io.load_image_uint8(path, size))
    np.testing.assert_array_equal(image_io.load_image_uint8(path, size, "centre-flip"),
                                  image_io.load_image_uint8(path, size)[:, :, ::-1])
