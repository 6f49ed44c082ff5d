"""A static HTML report of a captioning run: one page (``index.html``) that opens from disk, with a copy of each
image (downscaled), its predicted caption, its references and its CIDEr-D, sortable worst-first by a small inline
script; corpus scores at the top and, when given, the training curves and the attention maps.

Written by ``python -m captioning.visualize ... --html OUT_DIR`` (which draws the curves and attention maps and
links them here). This module does not import `visualize`: the dependency runs one way, visualize -> report.
"""
import html
import logging
import os
from typing import Dict, List, Optional, Protocol, Sequence

from PIL import Image

from . import evaluate, image_io, utils
from .utils import CaptioningError

logger = logging.getLogger(__name__)

INDEX_NAME = "index.html"
IMAGES_DIRNAME = "images"
THUMBNAIL_SIZE = 320   # longest side of the copied images, in pixels

class ReportItem(Protocol):
    """One image of the report (`visualize.CaptionedImage` is one)."""
    image: str              # path as listed in --source
    path: str               # path on disk
    line: int               # 1-based line in --source
    prediction: str
    references: List[str]


def format_caption(caption: str) -> str:
    """A caption as a sentence: first letter upper case, a full stop at the end."""
    caption = " ".join(caption.split())
    if not caption:
        return "(empty caption)"
    caption = caption[0].upper() + caption[1:]
    return caption if caption[-1] in ".!?" else caption + "."


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th { white-space: nowrap; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 10px; vertical-align: top; text-align: left; }
th.sortable { cursor: pointer; text-decoration: underline dotted; }
td.img img { max-width: 320px; max-height: 320px; display: block; }
.pred { background: #fff; border: 1px solid #999; padding: 4px 6px; margin-bottom: 6px; }
.refs { background: #c8ecc8; border: 1px solid #3c9a3c; padding: 4px 6px; margin: 0; }
.refs li { margin-left: 1em; }
.score { font-variant-numeric: tabular-nums; white-space: nowrap; }
.path { color: #777; font-size: 80%; }
.scores td, .scores th { border: none; padding: 2px 12px 2px 0; }
button { margin-right: 0.5em; }
"""

# Sorts the rows of #captions by a numeric data attribute; ascending puts the worst CIDEr-D first.
_SCRIPT = """
function sortRows(key, ascending) {
  var body = document.getElementById('captions').tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = parseFloat(a.getAttribute('data-' + key)), y = parseFloat(b.getAttribute('data-' + key));
    return ascending ? x - y : y - x;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
// index.html#worst-first (or #best-first) opens the page sorted.
window.addEventListener('DOMContentLoaded', function () {
  if (location.hash === '#worst-first') { sortRows('cider', true); }
  if (location.hash === '#best-first') { sortRows('cider', false); }
});
"""


def copy_image(source_path: str, target_path: str, where: str) -> None:
    """A downscaled RGB copy (JPEG, longest side `THUMBNAIL_SIZE`) of an image, written atomically."""
    try:
        with Image.open(source_path) as image:
            image.load()
            rgb = image_io.to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CaptioningError("%s: cannot read image %s (%s)" % (where, source_path, str(e) or type(e).__name__)
                              ) from None
    rgb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    with utils.atomic_path(target_path) as tmp:
        rgb.save(tmp, format="JPEG", quality=90)


def per_image_cider(items: Sequence[ReportItem]) -> Optional[List[float]]:
    """CIDEr-D (x100) of each image's prediction against its references, idf over these images; None when some
    image has no reference."""
    if not items or any(not item.references for item in items):
        return None
    _, per_image = evaluate.coco_scores([item.prediction for item in items], [item.references for item in items],
                                        [evaluate.METRIC_CIDER])
    return per_image[evaluate.KEY_CIDER]


def corpus_scores(items: Sequence[ReportItem]) -> Dict[str, float]:
    """BLEU (sacrebleu) and the COCO metrics that need no Java, over the images with references."""
    scored = [item for item in items if item.references]
    if not scored:
        return {}
    return evaluate.evaluate([item.prediction for item in scored], [item.references for item in scored],
                             [evaluate.METRIC_BLEU, evaluate.METRIC_COCO_BLEU, evaluate.METRIC_ROUGE,
                              evaluate.METRIC_CIDER])


def render_html(items: Sequence[ReportItem], image_links: Sequence[str],
                cider: Optional[Sequence[float]], scores: Dict[str, float], title: str,
                curves_link: Optional[str] = None, attention_links: Optional[Sequence[Optional[str]]] = None) -> str:
    """The report page as a string (every text HTML-escaped)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           "<title>%s</title>" % esc(title), "<style>%s</style>" % _STYLE, "<script>%s</script>" % _SCRIPT,
           "</head><body>", "<h1>%s</h1>" % esc(title),
           "<p>%d images. White box: predicted caption; green box: ground-truth captions.</p>" % len(items)]
    if scores:
        out.append("<table class=\"scores\" id=\"scores\"><tr>%s</tr><tr>%s</tr></table>" % (
            "".join("<th>%s</th>" % esc(k) for k in scores),
            "".join("<td class=\"score\">%.2f</td>" % v for v in scores.values())))
        out.append("<p class=\"path\">Corpus scores over these images (x100; CIDEr-D's idf from these images' "
                   "references).</p>")
    if curves_link:
        out.append("<h2>Training curves</h2><img src=\"%s\" alt=\"training curves\" style=\"max-width:100%%\">"
                   % esc(curves_link))
    out.append("<p>")
    if cider is not None:
        out.append("<button onclick=\"sortRows('cider', true)\">worst CIDEr-D first</button>")
        out.append("<button onclick=\"sortRows('cider', false)\">best CIDEr-D first</button>")
    out.append("<button onclick=\"sortRows('index', true)\">input order</button></p>")
    header = "<th class=\"sortable\" onclick=\"sortRows('index', true)\">#</th><th>image</th><th>captions</th>"
    if cider is not None:
        header += "<th class=\"sortable\" onclick=\"sortRows('cider', true)\" title=\"click: worst first\">" \
                  "CIDEr-D</th>"
    out.append("<table id=\"captions\"><thead><tr>%s</tr></thead><tbody>" % header)
    for index, item in enumerate(items):
        score = cider[index] if cider is not None else 0.0
        refs = "".join("<li>%s</li>" % esc(format_caption(r)) for r in item.references)
        attention = ""
        if attention_links and attention_links[index]:
            attention = " <a href=\"%s\">attention</a>" % esc(attention_links[index] or "")
        cells = ["<td>%d</td>" % (index + 1),
                 "<td class=\"img\"><img src=\"%s\" alt=\"%s\"><div class=\"path\">%s (line %d)%s</div></td>"
                 % (esc(image_links[index]), esc(item.image), esc(item.image), item.line, attention),
                 "<td><div class=\"pred\">%s</div>%s</td>" % (esc(format_caption(item.prediction)),
                                                              "<ul class=\"refs\">%s</ul>" % refs if refs else "")]
        if cider is not None:
            cells.append("<td class=\"score\">%.1f</td>" % score)
        out.append("<tr data-index=\"%d\" data-cider=\"%.6f\">%s</tr>" % (index, score, "".join(cells)))
    out.append("</tbody></table></body></html>")
    return "\n".join(out) + "\n"


def write_report(items: Sequence[ReportItem], source: str, folder: str, title: Optional[str] = None,
                 curves_link: Optional[str] = None, attention_links: Optional[Sequence[Optional[str]]] = None
                 ) -> str:
    """Write ``folder/index.html`` with image copies under ``folder/images/``. ``curves_link`` (a training-curves
    picture) and ``attention_links`` (one per item, or None) are paths relative to ``folder`` of pictures the
    caller drew there. Returns the page's path."""
    images_dir = os.path.join(folder, IMAGES_DIRNAME)
    os.makedirs(images_dir, exist_ok=True)
    links = []
    for number, item in enumerate(items, 1):
        name = "%04d.jpg" % number
        copy_image(item.path, os.path.join(images_dir, name), utils.location(source, item.line))
        links.append(IMAGES_DIRNAME + "/" + name)
    cider = per_image_cider(items)
    scores = corpus_scores(items)
    page = render_html(items, links, cider, scores, title or "Captions: %s" % os.path.basename(source),
                       curves_link, attention_links)
    path = os.path.join(folder, INDEX_NAME)
    utils.atomic_write_text(path, page)
    return path
