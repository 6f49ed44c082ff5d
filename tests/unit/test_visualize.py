"""captioning.visualize and captioning.report: reading the inputs, page layout, attention maps, training curves,
the HTML page. Everything on tiny generated images."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import report, visualize
from captioning.utils import CaptioningError

COLOURS = {"red.png": (230, 20, 20), "green.png": (20, 200, 40), "blue.png": (20, 40, 220),
           "grey.png": (128, 128, 128)}


def _write(path: Path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (60, 40), colour).save(root / name)
    return root


def _item(name="red.png", prediction="a red square", references=("a red thing",), root=Path(".")):
    return visualize.CaptionedImage(image=name, path=str(root / name), line=1, prediction=prediction,
                                    references=list(references))


# --- reading -----------------------------------------------------------------------------------------------------

def test_repeated_lines_are_one_image_with_several_references(tmp_path, images):
    source = _write(tmp_path / "src", ["red.png", "red.png", "blue.png", "red.png"])
    pred = _write(tmp_path / "pred", ["p red", "p red", "p blue", "p red"])
    gt = _write(tmp_path / "gt", ["r1", "r2", "b1", "r3"])
    gt2 = _write(tmp_path / "gt2", ["x1", "", "b2", ""])
    items = visualize.read_captioned_images(str(images), source, pred, [gt, gt2])
    assert [i.image for i in items] == ["red.png", "blue.png"]
    assert [i.line for i in items] == [1, 3]
    assert [i.prediction for i in items] == ["p red", "p blue"]
    assert items[0].references == ["r1", "r2", "r3", "x1"]
    assert items[1].references == ["b1", "b2"]
    assert items[0].path == str(images / "red.png")


def test_prediction_per_distinct_image(tmp_path, images):
    source = _write(tmp_path / "src", ["red.png", "red.png", "blue.png"])
    pred = _write(tmp_path / "pred", ["p red", "p blue"])
    items = visualize.read_captioned_images(str(images), source, pred)
    assert [i.prediction for i in items] == ["p red", "p blue"]
    assert all(i.references == [] for i in items)


def test_length_mismatch_names_both_files(tmp_path, images):
    source = _write(tmp_path / "src", ["red.png", "blue.png", "green.png"])
    pred = _write(tmp_path / "pred", ["only one"])
    with pytest.raises(CaptioningError) as e:
        visualize.read_captioned_images(str(images), source, pred)
    message = str(e.value)
    assert str(tmp_path / "pred") in message and str(tmp_path / "src") in message and "\n" not in message
    pred3 = _write(tmp_path / "pred3", ["a", "b", "c"])
    gt = _write(tmp_path / "gt", ["a", "b"])
    with pytest.raises(CaptioningError, match=r"gt has 2 lines but .*src has 3 lines"):
        visualize.read_captioned_images(str(images), source, pred3, [gt])


def test_missing_image_names_source_line(tmp_path, images):
    source = _write(tmp_path / "src", ["red.png", "nope.jpg"])
    pred = _write(tmp_path / "pred", ["a", "b"])
    with pytest.raises(CaptioningError, match=r"src, line 2: image .*nope.jpg not found"):
        visualize.read_captioned_images(str(images), source, pred)
    empty = _write(tmp_path / "src2", ["red.png", ""])
    with pytest.raises(CaptioningError, match=r"src2, line 2: empty image path"):
        visualize.read_captioned_images(str(images), empty, pred)


def test_skip_images_keeps_every_nth_as_sockeye(tmp_path, images):
    names = ["red.png", "green.png", "blue.png", "grey.png"]
    source = _write(tmp_path / "src", names)
    pred = _write(tmp_path / "pred", ["a", "b", "c", "d"])
    assert [i.image for i in visualize.read_captioned_images(str(images), source, pred, skip=2)] == \
        ["green.png", "grey.png"]
    assert [i.image for i in visualize.read_captioned_images(str(images), source, pred, skip=3)] == ["blue.png"]
    assert len(visualize.read_captioned_images(str(images), source, pred, skip=1)) == 4


def test_unreadable_image_names_source_line(tmp_path, images):
    (images / "broken.png").write_bytes(b"not a png at all")
    item = visualize.CaptionedImage(image="broken.png", path=str(images / "broken.png"), line=7, prediction="x")
    with pytest.raises(CaptioningError, match=r"list.txt, line 7: cannot read image"):
        visualize.load_picture(item, "list.txt")


# --- alignments --------------------------------------------------------------------------------------------------

def _alignment_line(words, height=2, width=3, hot=None):
    rows = []
    for k, _ in enumerate(words):
        grid = np.full(height * width, 0.01)
        grid[(hot or {}).get(k, k % (height * width))] = 1.0
        rows.append(" ".join("%.3f" % v for v in grid))
    return "%s\t%d %d\t%s" % (" ".join(words), height, width, " ||| ".join(rows))


def test_parse_alignment():
    alignment = visualize.parse_alignment(_alignment_line(["a", "red", "box"]), "f, line 1")
    assert alignment.words == ["a", "red", "box"]
    assert alignment.weights.shape == (3, 2, 3)
    assert alignment.weights[1].argmax() == 1 and alignment.weights[2][0, 2] == pytest.approx(1.0)
    empty = visualize.parse_alignment("\t7 7\t", "f, line 2")
    assert empty.words == [] and empty.weights.shape == (0, 7, 7)


@pytest.mark.parametrize("line, message", [
    ("a b\t2 3", r"3 tab-separated fields"),
    ("a b\t2x3\t1 1 1 1 1 1 ||| 1 1 1 1 1 1", r"grid size '2x3'"),
    ("a b\t2 3\t1 1 1 1 1 1", r"2 words but 1 attention rows"),
    ("a b\t2 3\t1 1 1 1 1 1 ||| 1 1 1", r"row 2 \(word 'b'\) has 3 values, expected H\*W = 6"),
    ("a\t2 3\t1 1 x 1 1 1", r"row 1 \(word 'a'\) has a value that is not a number"),
    ("a\t2 3\t1 1 -1 1 1 1", r"negative or non-finite"),
])
def test_parse_alignment_errors(line, message):
    with pytest.raises(CaptioningError, match=r"^al.txt, line 4: .*" + message):
        visualize.parse_alignment(line, "al.txt, line 4")


def test_alignments_give_captions_without_prediction(tmp_path, images):
    source = _write(tmp_path / "src", ["red.png", "blue.png"])
    align = _write(tmp_path / "al", [_alignment_line(["red", "thing"]), _alignment_line(["blue"])])
    items = visualize.read_captioned_images(str(images), source, alignments=align)
    assert [i.prediction for i in items] == ["red thing", "blue"]
    assert items[0].alignment.weights.shape == (2, 2, 3)
    bad = _write(tmp_path / "bad", [_alignment_line(["red"]), "blue\t2 3\t1 2"])
    with pytest.raises(CaptioningError, match=r"bad, line 2: attention row 1"):
        visualize.read_captioned_images(str(images), source, alignments=bad)


def test_upsample_attention_is_smooth_and_peaks_at_the_cell():
    grid = np.zeros((7, 7), dtype=np.float32)
    grid[2, 5] = 1.0
    up = visualize.upsample_attention(grid, 224)
    assert up.shape == (224, 224)
    assert up.max() == pytest.approx(1.0) and up.min() >= 0.0
    row, column = np.unravel_index(up.argmax(), up.shape)
    assert row // 32 == 2 and column // 32 == 5
    # smooth: neighbouring pixels differ little (no 32-pixel blocks with hard edges)
    assert np.abs(np.diff(up, axis=1)).max() < 0.2
    assert visualize.upsample_attention(np.zeros((3, 3)), 30).max() == 0.0


def test_attention_overlay_brightens_the_attended_cell():
    picture = np.full((70, 70, 3), 200, dtype=np.uint8)
    grid = np.zeros((7, 7))
    grid[0, 0] = 1.0
    out = visualize.attention_overlay(picture, grid)
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert out[3, 3].mean() > 180 and out[66, 66].mean() < 60


def test_draw_attention_has_a_panel_per_word(images):
    item = _item(root=images)
    item.alignment = visualize.parse_alignment(_alignment_line(["a", "red", "box", "on", "grey"]), "x")
    picture = visualize.square_picture(item, "src", 56)
    assert picture.shape == (56, 56, 3) and tuple(picture[0, 0]) == COLOURS["red.png"]
    fig = visualize.draw_attention(item, picture, columns=4)
    assert len(fig.images) == 6 and all(image.get_array().shape == (56, 56, 3) for image in fig.images)
    assert [t.get_text() for t in fig.texts[2:]] == ["a", "red", "box", "on", "grey"]
    assert fig.texts[0].get_text() == "A red square." and fig.texts[1].get_text() == "red.png"
    # panel 1 is the photo itself, panel 2 ("a", attending cell (0, 0) of the 2x3 grid) is darkened away from it
    assert np.array_equal(fig.images[0].get_array(), picture)
    overlay = np.asarray(fig.images[1].get_array())
    assert overlay[5, 5].mean() > 2 * overlay[50, 50].mean()
    # 4 columns, 2 rows: the figure is 4 panels wide
    width, height = fig.get_size_inches()
    assert width == pytest.approx(2 * 0.2 + 4 * 0.56 + 3 * 0.1)


# --- pages -------------------------------------------------------------------------------------------------------

def test_paginate_keeps_the_last_partial_page():
    pages = visualize.paginate(list(range(10)), 4)
    assert [len(p) for p in pages] == [4, 4, 2]
    assert sum(pages, []) == list(range(10))
    assert visualize.paginate([], 4) == []


def test_format_and_wrap_caption():
    assert visualize.format_caption("a dog runs ") == "A dog runs."
    assert visualize.format_caption("") == "(empty caption)"
    assert visualize.format_caption("done!") == "Done!"
    lines = visualize.wrap_text("word " * 60, 2.0, 10)
    assert len(lines) > 3 and all(len(line) <= int(2.0 * 72 / (visualize.CHAR_WIDTH * 10)) for line in lines)


def test_page_layout_keeps_long_captions_inside_their_cell(images):
    long = "a very long caption about " + "many different things in the picture " * 6
    items = [_item(name, long if k % 2 else "short", [long, "a short reference"], images)
             for k, name in enumerate(COLOURS)] + [_item("red.png", "x", [], images)]
    config = visualize.PageConfig(columns=3, cell_width=3.0, image_height=2.0)
    pictures = [visualize.load_picture(item, "src") for item in items]
    fig = visualize.draw_page(items, pictures, config, title="t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    image_boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
    assert len(image_boxes) == 5
    caption_texts = [t for t in fig.texts if "\n" in t.get_text() or t.get_text().startswith(("A ", "\u2022", "S",
                                                                                                 "X"))]
    assert len(caption_texts) >= 9
    column_width_px = config.cell_width * fig.dpi
    for text in caption_texts:
        box = text.get_bbox_patch().get_window_extent(renderer)
        assert box.x0 >= fig_box.x0 - 1 and box.x1 <= fig_box.x1 + 1 and box.y0 >= fig_box.y0 - 1
        assert box.width <= column_width_px + 2, text.get_text()
        for image_box in image_boxes:   # no caption box covers a picture
            assert not box.overlaps(image_box), text.get_text()
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in caption_texts]
    for i, a in enumerate(boxes):   # nor another caption box (prediction above references, rows apart)
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    # the pictures keep their 3:2 aspect ratio
    for ax in fig.axes:
        x0, x1 = ax.get_xlim()
        y1, y0 = ax.get_ylim()
        assert (x1 - x0) / (y1 - y0) == pytest.approx(1.5)


def test_draw_pages_writes_sorted_pngs_with_the_pictures(tmp_path, images):
    items = [_item(name, "caption %d" % k, ["ref"], images) for k, name in enumerate(list(COLOURS) * 3)]  # 12
    config = visualize.PageConfig(columns=2, images_per_page=5, dpi=40)
    written = visualize.draw_pages(items, "src", config, str(tmp_path / "out"))
    assert [Path(p).name for p in written] == ["page_0001.png", "page_0002.png", "page_0003.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["page_0001.png", "page_0002.png",
                                                                    "page_0003.png"]
    last = np.asarray(Image.open(written[-1]).convert("RGB")).reshape(-1, 3)
    # page 3 holds images 11 and 12: blue and grey
    assert np.sum(np.all(np.abs(last.astype(int) - COLOURS["blue.png"]) < 8, axis=1)) > 100
    assert np.sum(np.all(np.abs(last.astype(int) - COLOURS["grey.png"]) < 8, axis=1)) > 100
    assert np.sum(np.all(np.abs(last.astype(int) - COLOURS["red.png"]) < 8, axis=1)) == 0


def test_draw_pages_on_screen_shows_each_page_once(monkeypatch, images):
    import matplotlib.pyplot as plt
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(len(plt.get_fignums())))
    items = [_item(name, "caption", [], images) for name in COLOURS] + [_item("red.png", "x", [], images)]
    written = visualize.draw_pages(items, "src", visualize.PageConfig(columns=2, images_per_page=2), None)
    assert written == [] and shown == [1, 1, 1]    # 5 images, 2 per page: 3 pages, one figure open at a time
    assert plt.get_fignums() == []                  # each page is closed after it is shown


# --- training curves ---------------------------------------------------------------------------------------------

def test_read_metrics(tmp_path):
    path = _write(tmp_path / "metrics", ["1\tperplexity-train=50.5\tperplexity-val=60\tlearning-rate=0.0003",
                                         "", "2\tperplexity-train=30\tperplexity-val=40\tbleu-val=12.5\tx=None"])
    records = visualize.read_metrics(path)
    assert records == [{"checkpoint": 1, "perplexity-train": 50.5, "perplexity-val": 60, "learning-rate": 0.0003},
                       {"checkpoint": 2, "perplexity-train": 30, "perplexity-val": 40, "bleu-val": 12.5}]


@pytest.mark.parametrize("line, message", [("one\tperplexity-val=3", r"'one' is not a checkpoint number"),
                                           ("1\tperplexity-val", r"field 'perplexity-val' is not key=value")])
def test_read_metrics_errors(tmp_path, line, message):
    path = _write(tmp_path / "metrics", ["1\tperplexity-val=4", line])
    with pytest.raises(CaptioningError, match=r"metrics, line 2: " + message):
        visualize.read_metrics(path)
    with pytest.raises(CaptioningError, match=r"no checkpoints"):
        visualize.read_metrics(_write(tmp_path / "empty", []))


def test_training_curves_panels():
    records = [{"checkpoint": n, "perplexity-train": 100.0 / n, "perplexity-val": 36.0 / n + 4 * n,
                "bleu-val": float(n), "learning-rate": 0.001} for n in range(1, 6)]
    fig = visualize.draw_training_curves(records)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["perplexity", "BLEU / chrF (validation)", "learning rate"]
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["perplexity-val"].get_ydata()) == pytest.approx([r["perplexity-val"] for r in records])
    # the best validation perplexity (checkpoint 3: 36/3 + 12 = 24) is marked
    assert any("best 24.00 (checkpoint 3)" in text.get_text() for text in fig.axes[0].get_legend().get_texts())
    only_ppl = visualize.draw_training_curves([{"checkpoint": 1, "perplexity-val": 3.0}])
    assert [ax.get_title() for ax in only_ppl.axes] == ["perplexity"]
    with pytest.raises(CaptioningError, match="nothing to plot"):
        visualize.draw_training_curves([{"checkpoint": 1, "time-elapsed": 3.0}])


def test_check_screen_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(visualize.sys, "platform", "linux")
    with pytest.raises(CaptioningError, match=r"\$DISPLAY is not set.*--save-to-folder"):
        visualize.check_screen()


def test_check_screen_with_a_non_interactive_backend(monkeypatch):
    import matplotlib
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "agg")
    with pytest.raises(CaptioningError, match=r"backend 'agg' cannot show windows.*--save-to-folder"):
        visualize.check_screen()


# --- HTML report -------------------------------------------------------------------------------------------------

def test_render_html_escapes_and_sorts(images):
    items = [_item("red.png", "a <b>bold</b> & claim", ["a red <thing>"], images),
             _item("blue.png", "blue", ["blue box"], images)]
    page = report.render_html(items, ["images/0001.jpg", "images/0002.jpg"], [12.5, 3.25], {"BLEU": 10.0}, "T&T")
    assert "<b>bold</b>" not in page and "A &lt;b&gt;bold&lt;/b&gt; &amp; claim." in page
    assert "A red &lt;thing&gt;." in page and "<title>T&amp;T</title>" in page
    rows = re.findall(r'<tr data-index="(\d+)" data-cider="([0-9.]+)">', page)
    assert rows == [("0", "12.500000"), ("1", "3.250000")]
    assert "sortRows('cider', true)" in page and 'src="images/0002.jpg"' in page
    no_refs = report.render_html(items[:1], ["images/0001.jpg"], None, {}, "t")
    assert "data-cider" in no_refs and "CIDEr-D</th>" not in no_refs


def test_write_report(tmp_path, images):
    items = [_item("red.png", "a red square", ["a red square", "red"], images),
             _item("blue.png", "a green dog", ["a blue square"], images)]
    path = report.write_report(items, "src", str(tmp_path / "html"))
    assert path == str(tmp_path / "html" / "index.html")
    page = Path(path).read_text(encoding="utf-8")
    assert 'src="images/0001.jpg"' in page and 'src="images/0002.jpg"' in page
    copy = np.asarray(Image.open(tmp_path / "html" / "images" / "0002.jpg").convert("RGB"))
    assert np.abs(copy.astype(int) - COLOURS["blue.png"]).max() < 10
    ciders = [float(v) for v in re.findall(r'data-cider="([0-9.]+)"', page)]
    assert ciders[0] > ciders[1]   # exact match scores higher than a wrong caption
    assert "CIDEr-D" in page and "ROUGE-L" in page


def test_report_does_not_import_visualize():
    """Issue 12: the report <-> visualize import cycle is broken; the dependency runs visualize -> report."""
    import ast
    source = Path(report.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.update(alias.name for alias in node.names)
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not any("visualize" in name for name in imported)


def test_read_metrics_survives_huge_and_non_finite_values(tmp_path):
    path = tmp_path / "metrics"
    path.write_text("1\tperplexity-train=nan\tperplexity-val=12.5\n2\tperplexity-val=inf\tbleu-val=3\n")
    records = visualize.read_metrics(str(path))
    assert records == [{"checkpoint": 1.0, "perplexity-val": 12.5}, {"checkpoint": 2.0, "bleu-val": 3.0}]
    path.write_text("9" * 400 + "\tperplexity-val=1\n")
    with pytest.raises(CaptioningError, match="metrics, line 1: .* is not a checkpoint number"):
        visualize.read_metrics(str(path))


def test_read_captioned_images_confines_paths(tmp_path, images):
    root = images
    source = tmp_path / "list"
    source.write_text("../outside.png\n")
    prediction = tmp_path / "pred"
    prediction.write_text("a dog\n")
    with pytest.raises(CaptioningError, match="list, line 1: path '../outside.png' leaves the root folder"):
        visualize.read_captioned_images(str(root), str(source), str(prediction))
    source.write_text("")
    prediction.write_text("")
    assert visualize.read_captioned_images(str(root), str(source), str(prediction)) == []
