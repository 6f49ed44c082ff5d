"""Pictures of a captioning run: pages of images with their predicted caption (white box) and ground-truth captions
(green box), attention maps (one panel per output word, as in Show, Attend and Tell), training curves from a model
folder's ``metrics`` file, and (through `report`) a static HTML page.

CLI (Sockeye 1.18's flags)::

    python -m captioning.visualize --image-root IMGS --source dev.images --prediction dev.predictions \
        --ground-truth dev.captions --save-to-folder pages/

Saving uses Matplotlib's Agg canvas directly (no pyplot, no global figure state); only showing pages on screen goes
through pyplot and the interactive backend.
"""
import argparse
import logging
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from . import arguments, image_io, log, utils
from .report import format_caption  # noqa: F401 - part of this module's drawing API
from .config import Config
from .model_folder import read_metrics
from .utils import CaptioningError, check_condition

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PAGE_NAME = "page_%04d.png"
ATTENTION_NAME = "attention_%04d.png"
CURVES_NAME = "training_curves.png"
ALIGNMENT_ROW_SEPARATOR = "|||"
PREDICTION_BOX = {"boxstyle": "square,pad=0.35", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.95}
REFERENCE_BOX = {"boxstyle": "square,pad=0.35", "facecolor": "#c8ecc8", "edgecolor": "#3c9a3c", "alpha": 0.95}
LINE_SPACING = 1.2     # Matplotlib's default line spacing, in font sizes
CHAR_WIDTH = 0.56      # average width of a DejaVu Sans character, in font sizes (for wrapping)


@dataclass
class PageConfig(Config):
    """How pages are laid out. Sizes in inches, fonts in points."""
    columns: int = 4                        # images per row (-nc)
    images_per_page: Optional[int] = None   # default: two rows
    cell_width: float = 4.0                 # width of one image's column
    image_height: float = 3.0               # height of the box an image is fitted into (aspect ratio kept)
    font_size: float = 10.0
    dpi: int = 100

    @property
    def per_page(self) -> int:
        return self.images_per_page or 2 * self.columns


@dataclass
class Alignment:
    """One line of the captioner's ``translation_with_alignments`` output."""
    words: List[str]
    weights: np.ndarray    # (num_words, H, W): attention of each output word over the feature grid


@dataclass
class CaptionedImage:
    """One image to draw: where it is, where it was listed, its caption(s)."""
    image: str                    # path as listed in --source
    path: str                     # path on disk
    line: int                     # 1-based line of its first occurrence in --source
    prediction: str
    references: List[str] = field(default_factory=list)
    alignment: Optional[Alignment] = None


# ---------------------------------------------------------------------------------------------------------------
# reading the inputs
# ---------------------------------------------------------------------------------------------------------------

def parse_alignment(line: str, where: str) -> Alignment:
    """``CAPTION<TAB>H W<TAB>ROW ||| ROW ...`` -> `Alignment`; errors name ``where`` (file and line)."""
    fields = line.split("\t")
    check_condition(len(fields) == 3, "%s: expected 'CAPTION<TAB>H W<TAB>ROW ||| ROW ...' (3 tab-separated "
                                      "fields), got %d; use the captioner's --output-type "
                                      "translation_with_alignments" % (where, len(fields)))
    caption, grid, rows = fields
    try:
        height, width = (int(v) for v in grid.split())
    except ValueError:
        raise CaptioningError("%s: grid size %r is not 'H W' (two integers)" % (where, grid)) from None
    check_condition(height > 0 and width > 0, "%s: grid size %r must be positive" % (where, grid))
    words = caption.split()
    texts = [r for r in rows.split(ALIGNMENT_ROW_SEPARATOR)] if rows.strip() else []
    check_condition(len(texts) == len(words), "%s: %d words but %d attention rows; every word needs one row"
                    % (where, len(words), len(texts)))
    weights = np.zeros((len(words), height, width), dtype=np.float32)
    for k, text in enumerate(texts):
        try:
            values = np.array([float(v) for v in text.split()], dtype=np.float32)
        except ValueError:
            raise CaptioningError("%s: attention row %d (word %r) has a value that is not a number"
                                  % (where, k + 1, words[k])) from None
        check_condition(values.size == height * width, "%s: attention row %d (word %r) has %d values, expected "
                                                       "H*W = %d" % (where, k + 1, words[k], values.size,
                                                                     height * width))
        check_condition(bool(np.all(np.isfinite(values))) and bool(np.all(values >= 0)),
                        "%s: attention row %d (word %r) has negative or non-finite weights" % (where, k + 1, words[k]))
        weights[k] = values.reshape(height, width)
    return Alignment(words=words, weights=weights)


def _per_image(lines: List[str], path: str, source_path: str, num_lines: int, first_lines: Sequence[int],
               what: str) -> List[str]:
    """Values of a file aligned either with the lines of --source or with its distinct images."""
    if len(lines) == num_lines:
        return [lines[i - 1] for i in first_lines]
    check_condition(len(lines) == len(first_lines),
                    "%s has %d lines but %s has %d lines (%d distinct images): %s must have one line per line of "
                    "the image list, or one per distinct image" % (path, len(lines), source_path, num_lines,
                                                                     len(first_lines), what))
    return lines


def read_captioned_images(image_root: Optional[str], source: str, prediction: Optional[str] = None,
                          ground_truths: Sequence[str] = (), alignments: Optional[str] = None,
                          skip: int = 1, allow_absolute: bool = False) -> List[CaptionedImage]:
    """The images to draw, in order of first appearance in ``source``, with their prediction and references.

    Repeated image lines are one image (Sockeye's behaviour); their ground-truth lines are its several references,
    and several ground-truth files add more. ``prediction`` and ``alignments`` have one line per line of
    ``source`` (the first line of an image is used) or one per distinct image. ``skip`` = N keeps the N-th, 2N-th,
    ... distinct image (Sockeye's ``-si``). Missing images, and paths that leave ``image_root`` (``../``,
    absolute, or a symlink out) unless ``allow_absolute``, are an error naming ``source`` and the line. An empty
    ``source`` gives no images."""
    check_condition(prediction is not None or alignments is not None,
                    "give --prediction (captions, one per line of --source) or --alignments")
    sources = utils.read_lines(source)
    if not sources:
        return []
    first_line: Dict[str, int] = {}
    for number, image in enumerate(sources, 1):
        check_condition(image.strip() != "", "%s: empty image path; remove the line (and the same line of the "
                                             "caption files)" % utils.location(source, number))
        first_line.setdefault(image.strip(), number)
    images = list(first_line)
    first_lines = list(first_line.values())

    predictions: List[str] = [""] * len(images)
    if prediction is not None:
        predictions = [p.strip() for p in _per_image(utils.read_lines(prediction), prediction, source, len(sources),
                                                       first_lines, "--prediction")]
    aligned: List[Optional[Alignment]] = [None] * len(images)
    if alignments is not None:
        lines = utils.read_lines(alignments)
        rows = _per_image(lines, alignments, source, len(sources), first_lines, "--alignments")
        index_of = ((lambda i: first_lines[i]) if len(lines) == len(sources) else (lambda i: i + 1))
        aligned = [parse_alignment(row, utils.location(alignments, index_of(i))) for i, row in enumerate(rows)]
        if prediction is None:
            predictions = [" ".join(a.words) for a in aligned if a is not None]

    references = _references(ground_truths, source, sources, images, first_lines)
    selected = []
    root = image_root or "."
    for index, image in enumerate(images):
        if (index + 1) % skip != 0:
            continue
        where = utils.location(source, first_lines[index])
        path = image_io.resolve_path(root, image, allow_absolute=allow_absolute, where=where)
        check_condition(os.path.isfile(path), "%s: image %s not found (is --image-root %r right?)"
                        % (where, path, image_root))
        selected.append(CaptionedImage(image=image, path=path, line=first_lines[index],
                                       prediction=predictions[index], references=references[image],
                                       alignment=aligned[index]))
    check_condition(bool(selected), "%s: -si/--skip-images %d leaves no image to draw (it lists %d distinct "
                                    "images)" % (source, skip, len(images)))
    return selected


def _references(ground_truths: Sequence[str], source: str, sources: Sequence[str], images: Sequence[str],
                first_lines: Sequence[int]) -> Dict[str, List[str]]:
    """The references of each distinct image: every ground-truth line of each of its image lines (files aligned
    with ``source``), or one per distinct image (files with a line per image)."""
    references: Dict[str, List[str]] = {image: [] for image in images}
    for path in ground_truths:
        lines = utils.read_lines(path)
        if len(lines) == len(sources):
            pairs: Iterable[Tuple[str, str]] = zip((s.strip() for s in sources), lines)
        else:
            pairs = zip(images, _per_image(lines, path, source, len(sources), first_lines, "--ground-truth"))
        for image, caption in pairs:
            if caption.strip():
                references[image].append(caption.strip())
    return references


def load_picture(item: CaptionedImage, source: str) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, whole (not cropped); errors name the --source line."""
    try:
        with Image.open(item.path) as image:
            image.load()
            return np.asarray(image_io.to_rgb(image), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CaptioningError("%s: cannot read image %s (%s)" % (utils.location(source, item.line), item.path,
                                                                   str(e) or type(e).__name__)) from None


# ---------------------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------------------

def wrap_text(text: str, width_inches: float, font_size: float, indent: str = "") -> List[str]:
    """``text`` wrapped to lines that fit ``width_inches`` at ``font_size`` points."""
    chars = max(8, int(width_inches * 72.0 / (CHAR_WIDTH * font_size)))
    return textwrap.wrap(text, width=chars, subsequent_indent=indent, break_long_words=True) or [""]


def caption_blocks(item: CaptionedImage, width_inches: float, font_size: float) -> Tuple[List[str], List[str]]:
    """(prediction lines, reference lines) of one image, wrapped to its column."""
    usable = width_inches - 2 * 0.35 * font_size / 72.0
    prediction = wrap_text(format_caption(item.prediction), usable, font_size)
    references: List[str] = []
    for reference in item.references:
        references += wrap_text("\u2022 " + format_caption(reference), usable, font_size, indent="   ")
    return prediction, references


def _block_height(lines: int, font_size: float) -> float:
    """Height in inches of a boxed text block of ``lines`` lines (text, padding, a gap after it)."""
    return 0.0 if lines == 0 else (lines * LINE_SPACING * font_size + 2 * 0.35 * font_size + 6) / 72.0


# ---------------------------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------------------------

def paginate(items: Sequence[CaptionedImage], per_page: int) -> List[List[CaptionedImage]]:
    """Consecutive pages of at most ``per_page`` images; the last, partial page included."""
    return [list(items[i:i + per_page]) for i in range(0, len(items), per_page)]


def new_figure(size: Tuple[float, float], dpi: int, on_screen: bool) -> "Figure":
    """A figure to draw into: pyplot's (for the screen) or a plain Agg one (for files)."""
    if on_screen:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=size, dpi=dpi)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw_page(items: Sequence[CaptionedImage], pictures: Sequence[np.ndarray], config: PageConfig,
              title: str = "", on_screen: bool = False) -> "Figure":
    """One page: a grid of ``config.columns`` images per row; under each image its predicted caption (white box)
    and its references (green box). Row heights follow the longest captions of the row."""
    font = config.font_size
    margin, gap_x, gap_y, name_h, header_h = 0.25, 0.3, 0.25, 0.25, 0.45
    columns = config.columns
    rows = [list(range(i, min(i + columns, len(items)))) for i in range(0, len(items), columns)]
    blocks = [caption_blocks(item, config.cell_width, font) for item in items]
    text_heights = [max(_block_height(len(blocks[i][0]), font) + _block_height(len(blocks[i][1]), font)
                        for i in row) for row in rows]
    width = 2 * margin + columns * config.cell_width + (columns - 1) * gap_x
    height = header_h + margin + sum(name_h + config.image_height + t + gap_y for t in text_heights)
    fig = new_figure((width, height), config.dpi, on_screen)
    fig.patch.set_facecolor("white")
    inches = fig.dpi_scale_trans
    fig.text(margin, height - 0.2, title, transform=inches, va="top", ha="left", fontsize=font + 1)
    fig.text(width - margin, height - 0.2, "white: predicted caption    green: ground truth", transform=inches,
             va="top", ha="right", fontsize=font - 1, color="0.35")
    top = height - header_h
    for row, text_height in zip(rows, text_heights):
        for column, index in enumerate(row):
            left = margin + column * (config.cell_width + gap_x)
            image_top = top - name_h
            ax = fig.add_axes((left / width, (image_top - config.image_height) / height, config.cell_width / width,
                               config.image_height / height))
            ax.imshow(pictures[index], interpolation="antialiased")
            ax.set_anchor("S")
            ax.axis("off")
            fig.text(left, top - 0.05, _shorten(items[index].image, config.cell_width, font - 2), transform=inches,
                     va="top", ha="left", fontsize=font - 2, color="0.4")
            prediction, references = blocks[index]
            pad = 0.35 * font / 72.0
            y = image_top - config.image_height - 0.08
            fig.text(left + pad, y - pad, "\n".join(prediction), transform=inches, va="top", ha="left",
                     fontsize=font, bbox=PREDICTION_BOX, linespacing=LINE_SPACING)
            if references:
                y -= _block_height(len(prediction), font)
                fig.text(left + pad, y - pad, "\n".join(references), transform=inches, va="top", ha="left",
                         fontsize=font, bbox=REFERENCE_BOX, linespacing=LINE_SPACING)
        top -= name_h + config.image_height + text_height + gap_y
    return fig


def _shorten(text: str, width_inches: float, font_size: float) -> str:
    chars = max(8, int(width_inches * 72.0 / (CHAR_WIDTH * font_size)))
    return text if len(text) <= chars else "\u2026" + text[-(chars - 1):]


def save_figure(fig: "Figure", path: str) -> None:
    """Write ``fig`` as a PNG, atomically (its folder is made if missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with utils.atomic_path(path) as tmp:
        # fast zlib level: these are pictures, not line art; much faster to write, somewhat larger
        fig.savefig(tmp, format="png", dpi=fig.dpi, facecolor="white", pil_kwargs={"compress_level": 2})


def draw_pages(items: Sequence[CaptionedImage], source: str, config: PageConfig,
               folder: Optional[str]) -> List[str]:
    """Every page of ``items``: saved as ``folder/page_0001.png`` ... or, without a folder, shown on screen one
    page after the other. Returns the files written."""
    pages = paginate(items, config.per_page)
    written: List[str] = []
    for number, page in enumerate(pages, 1):
        pictures = [load_picture(item, source) for item in page]
        title = "page %d of %d  (images %d-%d of %d)" % (number, len(pages), (number - 1) * config.per_page + 1,
                                                          (number - 1) * config.per_page + len(page), len(items))
        fig = draw_page(page, pictures, config, title=title, on_screen=folder is None)
        _show_or_save(fig, folder, PAGE_NAME % number, written)
    if folder is not None:
        logger.info("%d images on %d pages in %s", len(items), len(pages), folder)
    return written


# ---------------------------------------------------------------------------------------------------------------
# attention maps
# ---------------------------------------------------------------------------------------------------------------

def upsample_attention(weights: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) attention grid, smoothly (bicubic) up-sampled to (size, size) and scaled to 0..1 by its
    maximum (a grid of zeros stays zero)."""
    grid = Image.fromarray(np.ascontiguousarray(weights, dtype=np.float32), mode="F")
    smooth = np.asarray(grid.resize((size, size), resample=Image.Resampling.BICUBIC), dtype=np.float32)
    smooth = np.clip(smooth, 0.0, None)
    peak = float(smooth.max())
    return smooth / peak if peak > 0 else smooth


def attention_overlay(picture: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``picture`` (S, S, 3) uint8, bright where ``weights`` (H, W) attends and dark elsewhere (the style of
    Show, Attend and Tell)."""
    mask = upsample_attention(weights, picture.shape[0])
    return np.clip(picture.astype(np.float32) * (0.2 + 0.8 * mask[:, :, None]), 0, 255).astype(np.uint8)


def square_picture(item: CaptionedImage, source: str, size: int) -> np.ndarray:
    """The centre square of the image (the part the CNN saw), (size, size, 3) uint8."""
    try:
        with Image.open(item.path) as image:
            image.load()
            return np.asarray(image_io.crop_resize(image_io.to_rgb(image), (size, size)), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CaptioningError("%s: cannot read image %s (%s)" % (utils.location(source, item.line), item.path,
                                                                   str(e) or type(e).__name__)) from None


def draw_attention(item: CaptionedImage, picture: np.ndarray, columns: int = 5, font_size: float = 11.0,
                   on_screen: bool = False) -> "Figure":
    """One figure for one image: the photo's centre square (``picture``, S x S pixels), then one panel per output
    word with the word's attention over the feature grid up-sampled and overlaid on the photo. Panels are placed
    pixel for pixel (``figimage``: no axes, no resampling), which keeps drawing fast."""
    assert item.alignment is not None
    words = item.alignment.words
    panels = 1 + len(words)
    columns = max(1, min(columns, panels))
    rows = (panels + columns - 1) // columns
    dpi = 100
    panel = picture.shape[0] / dpi
    margin, title_h, gap = 0.2, 0.3, 0.1
    caption_lines = wrap_text(format_caption(item.prediction or " ".join(words)),
                              columns * (panel + gap) - gap, font_size)
    header = (len(caption_lines) * LINE_SPACING * font_size + 10) / 72.0
    width = 2 * margin + columns * panel + (columns - 1) * gap
    height = margin + header + rows * (panel + title_h) + margin
    fig = new_figure((width, height), dpi, on_screen)
    fig.patch.set_facecolor("white")
    inches = fig.dpi_scale_trans
    fig.text(margin, height - margin, "\n".join(caption_lines), transform=inches, va="top", ha="left",
             fontsize=font_size, linespacing=LINE_SPACING)
    for k in range(panels):
        row, column = divmod(k, columns)
        left = margin + column * (panel + gap)
        bottom = height - margin - header - (row + 1) * (panel + title_h)
        tile = picture if k == 0 else attention_overlay(picture, item.alignment.weights[k - 1])
        fig.figimage(tile, xo=int(round(left * dpi)), yo=int(round(bottom * dpi)), origin="upper")
        if k == 0:
            fig.text(left + panel / 2, bottom + panel + 0.05, _shorten(item.image, panel, font_size - 2),
                     transform=inches, ha="center", va="bottom", fontsize=font_size - 2, color="0.4")
        else:
            fig.text(left + panel / 2, bottom + panel + 0.05, words[k - 1], transform=inches, ha="center",
                     va="bottom", fontsize=font_size)
    return fig


def draw_attention_maps(items: Sequence[CaptionedImage], source: str, folder: Optional[str],
                        size: int = 224) -> List[str]:
    """An attention figure per image (``folder/attention_0001.png`` ..., numbered in drawing order), or shown
    on screen without a folder. Returns the files written."""
    written: List[str] = []
    for number, item in enumerate(items, 1):
        if item.alignment is None:
            continue
        fig = draw_attention(item, square_picture(item, source, size), on_screen=folder is None)
        _show_or_save(fig, folder, ATTENTION_NAME % number, written)
    if folder is not None:
        logger.info("%d attention maps in %s", len(written), folder)
    return written


# ---------------------------------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------------------------------

def draw_training_curves(records: Sequence[Dict[str, float]], title: str = "",
                         on_screen: bool = False) -> "Figure":
    """Perplexity (train, val), validation BLEU/chrF and learning rate per checkpoint, one panel each (panels
    without data are left out). The best validation perplexity is marked."""
    panels = []
    if any(k.startswith("perplexity") for r in records for k in r):
        panels.append(("perplexity", ["perplexity-train", "perplexity-val"]))
    if any(k in ("bleu-val", "chrf-val") for r in records for k in r):
        panels.append(("BLEU / chrF (validation)", ["bleu-val", "chrf-val"]))
    if any("learning-rate" in r for r in records):
        panels.append(("learning rate", ["learning-rate"]))
    check_condition(bool(panels), "the metrics file has none of perplexity-train, perplexity-val, bleu-val, "
                                  "learning-rate: nothing to plot")
    fig = new_figure((5.0 * len(panels), 3.8), 100, on_screen)
    fig.patch.set_facecolor("white")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, keys) in zip(axes, panels):
        for key in keys:
            points = [(r["checkpoint"], r[key]) for r in records if key in r]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=key,
                    drawstyle="steps-post" if key == "learning-rate" else "default")
            if key == "perplexity-val":
                best = int(np.argmin(ys))
                ax.scatter([xs[best]], [ys[best]], s=80, facecolors="none", edgecolors="red", zorder=3,
                           label="best %.2f (checkpoint %d)" % (ys[best], xs[best]))
            if key in ("bleu-val", "chrf-val"):
                best = int(np.argmax(ys))
                ax.scatter([xs[best]], [ys[best]], s=80, facecolors="none", edgecolors="red", zorder=3)
        values = [r[k] for r in records for k in keys if k in r]
        if label in ("perplexity", "learning rate") and min(values) > 0 and max(values) / min(values) > 10:
            _log_axis(ax)
        ax.set_title(label)
        ax.set_xlabel("checkpoint")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _log_axis(ax: "Axes") -> None:
    """A log-scale y axis with plain-number ticks at 1, 2 and 5 times the powers of ten."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())


def draw_curves_file(metrics_path: str, folder: Optional[str]) -> Optional[str]:
    """The training curves of ``metrics_path``, saved as ``folder/training_curves.png`` or shown on screen."""
    fig = draw_training_curves(read_metrics(metrics_path), title=metrics_path, on_screen=folder is None)
    if folder is None:
        _show(fig)
        return None
    path = os.path.join(folder, CURVES_NAME)
    save_figure(fig, path)
    logger.info("training curves in %s", path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the screen
# ---------------------------------------------------------------------------------------------------------------

def _non_interactive_backends() -> List[str]:
    try:
        from matplotlib.backends import BackendFilter, backend_registry
        return [b.lower() for b in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)]
    except ImportError:  # Matplotlib < 3.9
        from matplotlib import rcsetup
        return [b.lower() for b in rcsetup.non_interactive_bk]


def check_screen() -> None:
    """Raise a one-line `CaptioningError` unless figures can be shown: a display and an interactive backend."""
    hint = "pass --save-to-folder DIR to save the pages as PNG files instead"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CaptioningError("no display to show the figures on ($DISPLAY is not set): " + hint)
    import matplotlib
    import matplotlib.pyplot  # noqa: F401 - resolves the automatic backend choice
    backend = matplotlib.get_backend().lower()
    check_condition(backend not in _non_interactive_backends() and not backend.startswith("module://"),
                    "Matplotlib's backend %r cannot show windows (set MPLBACKEND to an interactive one such as "
                    "TkAgg or QtAgg), or %s" % (backend, hint))


def _show_or_save(fig: "Figure", folder: Optional[str], name: str, written: List[str]) -> None:
    """Show ``fig`` on screen (no folder) or save it as ``folder/name`` and add the path to ``written``."""
    if folder is None:
        _show(fig)
    else:
        path = os.path.join(folder, name)
        save_figure(fig, path)
        written.append(path)


def _show(fig: "Figure") -> None:
    import matplotlib.pyplot as plt
    plt.show()
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def write_html_report(items: Sequence[CaptionedImage], source: str, folder: str,
                      metrics_path: Optional[str] = None) -> str:
    """`report.write_report` with the training curves (``metrics_path``) and the attention maps (items with an
    alignment) drawn into the report's folder. Returns the page's path."""
    from . import report
    curves_link = None
    if metrics_path is not None:
        save_figure(draw_training_curves(read_metrics(metrics_path), title=metrics_path),
                    os.path.join(folder, CURVES_NAME))
        curves_link = CURVES_NAME
    attention_links: Optional[List[Optional[str]]] = None
    if any(item.alignment is not None for item in items):
        written = iter(draw_attention_maps(items, source, os.path.join(folder, report.IMAGES_DIRNAME)))
        attention_links = [report.IMAGES_DIRNAME + "/" + os.path.basename(next(written))
                           if item.alignment is not None else None for item in items]
    return report.write_report(items, source, folder, curves_link=curves_link, attention_links=attention_links)


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = arguments.ConfigArgumentParser(
        prog="python -m captioning.visualize",
        description="Draw images with their predicted and ground-truth captions (PNG pages or on screen), "
                    "attention maps (--alignments), training curves (--metrics) and an HTML report (--html).")
    arguments.add_visualize_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    check_condition(args.source is not None or args.metrics is not None,
                    "nothing to draw: give --source with --prediction (or --alignments), and/or --metrics")
    check_condition(args.source is None or args.prediction is not None or args.alignments is not None,
                    "--source needs --prediction (captions, one per line of --source) or --alignments")
    check_condition(args.source is not None or (args.prediction is None and args.alignments is None
                                                and args.ground_truth is None),
                    "--prediction, --ground-truth and --alignments need --source (the image list they are "
                    "aligned with)")
    check_condition(args.html is None or args.source is not None, "--html needs --source and --prediction")

    items: List[CaptionedImage] = []
    if args.source is not None:
        items = read_captioned_images(args.image_root, args.source, args.prediction, args.ground_truth or (),
                                      args.alignments, args.skip_images, args.allow_absolute_paths)
        if not items and args.metrics is None:
            logger.warning("%s: no images, nothing to draw", args.source)
            return
    draw = args.save_to_folder is not None or args.html is None
    folder = args.save_to_folder
    # every output is checked before the (slow) drawing starts
    if draw and folder is None:
        check_screen()
    # folders this run creates are removed again if it fails (their files are removed as they fail)
    created = sorted({made for path in (folder, args.html) if path is not None
                      for made in utils.missing_folders(path)}, key=len, reverse=True)
    try:
        for path, flag in ((folder, "--save-to-folder"), (args.html, "--html")):
            if path is not None:
                utils.check_output_folder(path, flag)
                check_outputs_keep_inputs(path, flag, args, items)
        _draw(args, items, draw)
    except BaseException:
        utils.remove_empty_folders(created)
        raise


def _draw(args: argparse.Namespace, items: List[CaptionedImage], draw: bool) -> None:
    """The pages, attention maps and curves (``draw``) and the HTML report the flags ask for."""
    folder = args.save_to_folder
    if draw:
        if items:
            config = PageConfig(columns=args.number_of_columns, images_per_page=args.images_per_page)
            draw_pages(items, args.source, config, folder)
            if args.alignments is not None:
                draw_attention_maps(items, args.source, folder)
        if args.metrics is not None:
            draw_curves_file(args.metrics, folder)
    if args.html is not None and items:
        logger.info("HTML report: %s", write_html_report(items, args.source, args.html, args.metrics))


# the files visualize writes into --save-to-folder and --html (the report's image copies are images/NNNN.jpg)
OUTPUT_NAME_PATTERNS = (r"page_\d{4,}\.png", r"(images/)?attention_\d{4,}\.png", re.escape(CURVES_NAME),
                        r"index\.html", r"images/\d{4,}\.jpg")


def check_outputs_keep_inputs(folder: str, flag: str, args: argparse.Namespace,
                              items: Sequence[CaptionedImage]) -> None:
    """No file this run would write into ``folder`` is one of its inputs (an image called page_0001.png in the
    folder the pages go to, a list file called index.html, ...): refused before drawing."""
    inputs = [("--source", args.source), ("--prediction", args.prediction), ("--alignments", args.alignments),
              ("--metrics", args.metrics)] + [("--ground-truth", path) for path in args.ground_truth or ()]
    inputs += [("--image-root", item.path) for item in items]
    from .report import IMAGES_DIRNAME
    for sub in ("", IMAGES_DIRNAME):
        where = os.path.join(folder, sub)
        names = [os.path.join(sub, name) if sub else name for name in
                 (os.listdir(where) if os.path.isdir(where) else [])]
        for name in names:
            if any(re.fullmatch(pattern, name.replace(os.sep, "/")) for pattern in OUTPUT_NAME_PATTERNS):
                utils.check_not_an_input(os.path.join(folder, name), flag, inputs)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point."""
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
