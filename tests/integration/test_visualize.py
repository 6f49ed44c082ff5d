"""python -m captioning.visualize end to end on tiny generated images: pages, attention maps, training curves, the
HTML report (rendered in headless Chromium where it is installed), and its one-line errors."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
# solid colours far from each other and from the page's white, grey and green
COLOURS = {"red.png": (220, 30, 30), "blue.png": (30, 40, 210), "yellow.png": (240, 220, 20),
           "magenta.png": (200, 30, 200), "cyan.png": (20, 200, 210)}


def run_cli(module: str, args: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    environment.update(env or {})
    for key in [k for k, v in environment.items() if v is None]:
        del environment[key]
    return subprocess.run([sys.executable, "-m", module] + args, cwd=str(REPO), env=environment,
                          capture_output=True, text=True, timeout=120)


def _write(path: Path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _count_colour(png: Path, colour: Tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(np.sum(np.all(np.abs(pixels - colour) <= tolerance, axis=2)))


def _top_row(png: Path, colour: Tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    rows = np.nonzero(np.all(np.abs(pixels - colour) <= tolerance, axis=2).sum(axis=1) > 20)[0]
    return int(rows[0]) if rows.size else -1


@pytest.fixture
def data(tmp_path):
    """Five solid-colour images listed twice each (two references per image), predictions, references."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    names = []
    for k, (name, colour) in enumerate(COLOURS.items()):
        relative = ("sub/" if k % 2 else "") + name
        size = (90, 60) if k % 2 else (50, 80)       # landscape and portrait
        Image.new("RGB", size, colour).save(root / relative)
        names.append(relative)
    colours = [n.split("/")[-1][:-4] for n in names]
    source = _write(tmp_path / "val.images", [n for n in names for _ in range(2)])
    prediction = _write(tmp_path / "val.pred", ["a %s square" % c if c != "blue" else "a green dog on the beach"
                                                for c in colours for _ in range(2)])
    truth = _write(tmp_path / "val.captions", [caption for c in colours
                                               for caption in ("a %s square" % c, "a square that is %s" % c)])
    return {"root": str(root), "source": source, "prediction": prediction, "truth": truth, "names": names,
            "tmp": tmp_path}


def test_pages_of_the_tutorial_command(data):
    out = data["tmp"] / "pages"
    result = run_cli("captioning.visualize", ["--image-root", data["root"], "--source", data["source"],
                                              "--prediction", data["prediction"], "--ground-truth", data["truth"],
                                              "--save-to-folder", str(out), "-nc", "2", "--images-per-page", "2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    pages = sorted(p.name for p in out.iterdir())
    # 5 distinct images, 2 per page: the last, partial page is there too
    assert pages == ["page_0001.png", "page_0002.png", "page_0003.png"]
    drawn = {}
    for page in pages:
        for name, colour in COLOURS.items():
            if _count_colour(out / page, colour) > 500:
                drawn.setdefault(name, []).append(page)
    assert drawn == {"red.png": ["page_0001.png"], "blue.png": ["page_0001.png"], "yellow.png": ["page_0002.png"],
                     "magenta.png": ["page_0002.png"], "cyan.png": ["page_0003.png"]}
    # the green box of the references is there
    assert _count_colour(out / "page_0001.png", (200, 236, 200), tolerance=6) > 1000


def test_skip_images_and_sockeye_short_flags(data):
    out = data["tmp"] / "skip"
    result = run_cli("captioning.visualize", ["-d", data["root"], "-i", data["source"], "-c", data["prediction"],
                                              "-a", data["truth"], "-s", str(out), "-si", "2", "-nc", "4"])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["page_0001.png"]
    page = out / "page_0001.png"
    # -si 2: the 2nd and 4th images (blue, magenta) only
    present = {name for name, colour in COLOURS.items() if _count_colour(page, colour) > 500}
    assert present == {"blue.png", "magenta.png"}


@pytest.mark.parametrize("change, message", [
    ("missing_image", r"val.images, line 3: image .*sub/blue.png not found"),
    ("short_prediction", r"val.pred has 3 lines but .*val.images has 10 lines"),
    ("short_truth", r"val.captions has 9 lines but .*val.images has 10 lines"),
])
def test_input_errors_are_one_line(data, change, message):
    if change == "missing_image":
        os.remove(os.path.join(data["root"], "sub", "blue.png"))
    elif change == "short_prediction":
        _write(Path(data["prediction"]), ["a", "b", "c"])
    else:
        lines = Path(data["truth"]).read_text().splitlines()[:-1]
        _write(Path(data["truth"]), lines)
    out = data["tmp"] / "err"
    result = run_cli("captioning.visualize", ["--image-root", data["root"], "--source", data["source"],
                                              "--prediction", data["prediction"], "--ground-truth", data["truth"],
                                              "--save-to-folder", str(out)])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not list(out.glob("*.png"))


def test_no_display_is_a_clear_error(data):
    result = run_cli("captioning.visualize", ["--image-root", data["root"], "--source", data["source"],
                                              "--prediction", data["prediction"]],
                     env={"DISPLAY": None, "WAYLAND_DISPLAY": None, "MPLBACKEND": None})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "$DISPLAY is not set" in result.stderr and "--save-to-folder" in result.stderr


def test_attention_maps_and_training_curves(data):
    names = data["names"]
    rows = []
    for k in range(len(names)):
        words = ["a", "colour", "square"][: 1 + k % 3]
        grids = []
        for w in range(len(words)):
            grid = np.full(9, 0.01)
            grid[(k + w) % 9] = 0.9
            grids.append(" ".join("%.3f" % v for v in grid))
        rows += ["%s\t3 3\t%s" % (" ".join(words), " ||| ".join(grids))] * 2
    alignments = _write(data["tmp"] / "val.align", rows)
    metrics = _write(data["tmp"] / "metrics", ["%d\tperplexity-train=%.1f\tperplexity-val=%.1f\tlearning-rate=0.001"
                                               % (n, 50.0 / n, 60.0 / n + n) for n in range(1, 6)])
    out = data["tmp"] / "att"
    result = run_cli("captioning.visualize", ["--image-root", data["root"], "--source", data["source"],
                                              "--alignments", alignments, "--metrics", metrics,
                                              "--save-to-folder", str(out)])
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["attention_%04d.png" % k for k in range(1, 6)] + ["page_0001.png", "training_curves.png"]
    # attention figure 1: the red square's photo, then one panel for the word "a"
    first = out / "attention_0001.png"
    assert _count_colour(first, COLOURS["red.png"]) > 1000
    # the attended cell shows the colour at full brightness, the rest is darkened
    dark_red = tuple(int(0.2 * c) for c in COLOURS["red.png"])
    assert _count_colour(first, dark_red, tolerance=10) > 1000
    image = np.asarray(Image.open(out / "training_curves.png").convert("RGB"))
    assert image.shape[1] > 2 * image.shape[0]   # two panels side by side (perplexity, learning rate)


def test_metrics_alone_and_bad_metrics_file(tmp_path):
    bad = _write(tmp_path / "metrics", ["1\tperplexity-val=3", "2 perplexity-val=2"])
    result = run_cli("captioning.visualize", ["--metrics", bad, "--save-to-folder", str(tmp_path / "o")])
    assert result.returncode == 1 and "metrics, line 2: '2 perplexity-val=2' is not a checkpoint" in result.stderr
    result = run_cli("captioning.visualize", ["--save-to-folder", str(tmp_path / "o")])
    assert result.returncode == 1 and "nothing to draw" in result.stderr


def _screenshot(url: str, out: Path, size: str = "1000,2600") -> Path:
    profile = out.parent / ("profile-" + out.stem)
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--user-data-dir=%s" % profile, "--screenshot=%s" % out,
               "--window-size=%s" % size, url]
    subprocess.run(command, capture_output=True, timeout=90)
    assert out.exists(), "chromium wrote no screenshot"
    return out


def test_html_report(data):
    html_dir = data["tmp"] / "report"
    result = run_cli("captioning.visualize", ["--image-root", data["root"], "--source", data["source"],
                                              "--prediction", data["prediction"], "--ground-truth", data["truth"],
                                              "--html", str(html_dir)])
    assert result.returncode == 0, result.stderr
    index = html_dir / "index.html"
    page = index.read_text(encoding="utf-8")
    assert page.count("<tr data-index=") == 5
    assert "A green dog on the beach." in page and "A square that is blue." in page
    assert not (data["tmp"] / "pages").exists()   # --html alone draws no pages and shows nothing
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (/usr/bin/chromium): the rendering is not checked")
    shot = _screenshot(index.as_uri(), data["tmp"] / "shot.png")
    for name, colour in COLOURS.items():   # every image is shown
        assert _count_colour(shot, colour, tolerance=20) > 1000, name
    # input order: red (1st) above blue (2nd); worst CIDEr-D first puts blue (wrong caption) on top
    assert 0 <= _top_row(shot, COLOURS["red.png"], 20) < _top_row(shot, COLOURS["blue.png"], 20)
    sorted_shot = _screenshot(index.as_uri() + "#worst-first", data["tmp"] / "sorted.png")
    blue_top = _top_row(sorted_shot, COLOURS["blue.png"], 20)
    assert 0 <= blue_top < min(_top_row(sorted_shot, COLOURS[n], 20) for n in COLOURS if n != "blue.png")
    shutil.rmtree(data["tmp"] / "profile-shot", ignore_errors=True)
    shutil.rmtree(data["tmp"] / "profile-sorted", ignore_errors=True)


def shape_cells(image_path: str, height: int, width: int) -> np.ndarray:
    """(height, width) bool: the feature-grid cells of a synthetic scene (square, uniform background) that hold
    more than 2% shape pixels (pixels far from the background colour, the most common colour of the border)."""
    pixels = np.asarray(Image.open(image_path).convert("RGB")).astype(int)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colours, counts = np.unique(border, axis=0, return_counts=True)
    shape = np.abs(pixels - colours[counts.argmax()]).max(axis=2) > 40
    side_y, side_x = shape.shape[0] // height, shape.shape[1] // width
    return shape[:height * side_y, :width * side_x].reshape(height, side_y, width, side_x).mean(axis=(1, 3)) > 0.02


def attention_on_shapes(alignments: List[str], image_paths: List[str], content_words) -> Tuple[float, float, float]:
    """(mean share of each content word's attention on the cells holding shapes, mean area share of those cells,
    fraction of content words whose attention share exceeds the area share)."""
    from captioning import visualize
    inside, area = [], []
    for line, path in zip(alignments, image_paths):
        alignment = visualize.parse_alignment(line, "alignments")
        mask = shape_cells(path, *alignment.weights.shape[1:])
        for word, weights in zip(alignment.words, alignment.weights):
            if word in content_words and weights.sum() > 0:
                inside.append(float(weights[mask].sum() / weights.sum()))
                area.append(float(mask.mean()))
    assert inside, "the captions name no shape or colour"
    return float(np.mean(inside)), float(np.mean(area)), float(np.mean(np.array(inside) > np.array(area)))


@pytest.mark.slow
def test_attention_of_a_trained_model_falls_on_the_shapes(synthetic_features, tmp_path):
    """Train a tiny captioner on the synthetic scenes, caption the test split with alignments, draw the maps: the
    attention of words naming a shape or a colour lies on the drawn shapes far more than their area share."""
    from captioning import synthetic
    data = synthetic_features
    model = tmp_path / "model"
    train = run_cli("captioning.train", [
        "--source-root", data.feature_root, "--source", data.train_features, "--target", data.train_captions,
        "--validation-source-root", data.feature_root, "--validation-source", data.val_features,
        "--validation-target", data.val_captions, "--output", str(model), "--encoder", "image-pretrain-cnn",
        "--decoder", "rnn", "--num-layers", "1", "--rnn-num-hidden", "48", "--num-embed", "32",
        "--image-encoder-num-hidden", "48", "--batch-size", "32", "--checkpoint-interval", "200", "--max-updates",
        "200", "--decode-and-evaluate", "0", "--initial-learning-rate", "0.004", "--use-cpu",
        "--load-all-features-to-memory", "--seed", "3", "--quiet"])
    assert train.returncode == 0, train.stderr[-2000:]
    caption = run_cli("captioning.captioner", [
        "--models", str(model), "--input", data.test_features, "--source-root", data.feature_root,
        "--output-type", "translation_with_alignments", "--beam-size", "1", "--batch-size", "64", "--use-cpu",
        "--quiet"])
    assert caption.returncode == 0, caption.stderr[-2000:]
    alignments = caption.stdout.splitlines()
    images = [os.path.join(data.image_root, p) for p in Path(data.test_images).read_text().splitlines()]
    assert len(alignments) == len(images)
    content = set(synthetic.COLOURS) | {w for names in synthetic.SHAPE_WORDS.values() for pair in names
                                        for w in " ".join(pair).split()}
    on_shapes, area, fraction = attention_on_shapes(alignments, images, content)
    # measured (200 updates, seeds 3 and 11): 0.72-0.77 of the attention on cells covering 0.21 of the grid, 95-100%
    # of the words above their area share; a model on a random-weight CNN: 0.20 on 0.20, 33%
    assert on_shapes > 2 * area and fraction > 0.75, (on_shapes, area, fraction)
    # and the maps are drawn
    align_file = _write(tmp_path / "test.align", alignments)
    out = tmp_path / "maps"
    result = run_cli("captioning.visualize", ["--image-root", data.image_root, "--source", data.test_images,
                                              "--alignments", align_file, "--save-to-folder", str(out), "-si", "10"])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("attention_*.png")) == ["attention_%04d.png" % k for k in range(1, 6)]
