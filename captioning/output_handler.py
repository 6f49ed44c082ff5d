"""The captioner's output types: one line per input line, in input order.

``translation`` (the caption), ``translation_with_score`` (``SCORE<TAB>caption``, as Sockeye), ``score``, ``json``
(``sentence_id``, ``text``, ``translation``, ``score``, the n-best lists when there are several, and the input's other
JSON keys), ``translation_with_alignments`` (``CAPTION<TAB>H W<TAB>ROW ||| ROW ...``, one row of ``H*W`` attention
weights per word, see docs/architecture.md). An input that failed gives an empty line whatever the type, so line k
of the output always belongs to line k of the input.
"""
import json
from typing import IO, Optional, Tuple

import numpy as np

from . import constants as C
from .inference import CaptionOutput


def format_output(output: CaptionOutput, output_type: str, grid: Optional[Tuple[int, int]] = None) -> str:
    """The output line (without its line end) of one input."""
    if output.failed:
        return ""
    if output_type == C.OUTPUT_TYPE_TRANSLATION:
        return output.caption
    if output_type == C.OUTPUT_TYPE_TRANSLATION_WITH_SCORE:
        return "%.3f\t%s" % (output.score, output.caption)
    if output_type == C.OUTPUT_TYPE_SCORE:
        return "%.3f" % output.score
    if output_type == C.OUTPUT_TYPE_JSON:
        return json.dumps(json_record(output), ensure_ascii=False)
    if output_type == C.OUTPUT_TYPE_TRANSLATION_WITH_ALIGNMENTS:
        return alignment_line(output, grid)
    raise ValueError("unknown output type %r" % output_type)


def json_record(output: CaptionOutput) -> dict:
    """The ``json`` output of one input: the input's own keys first, then ours (which win)."""
    record = dict(output.extra)
    record.update({"sentence_id": output.sentence_id, "text": output.text, "translation": output.caption,
                   "score": round(float(output.score), 6)})
    if len(output.nbest_captions) > 1:
        record["translations"] = list(output.nbest_captions)
        record["scores"] = [round(float(s), 6) for s in output.nbest_scores]
    return record


def alignment_line(output: CaptionOutput, grid: Optional[Tuple[int, int]]) -> str:
    """``CAPTION<TAB>H W<TAB>ROW ||| ROW ...``: per word, the attention over the H x W grid (row-major); a global
    descriptor's weight (an extra last position) is left out."""
    attention = np.asarray(output.attention, dtype=np.float32)
    if grid is None:  # a square grid, or one row
        side = int(round(np.sqrt(attention.shape[1]))) if attention.ndim == 2 else 0
        grid = (side, side) if side * side == attention.shape[1] else (1, attention.shape[1])
    height, width = grid
    rows = [" ".join("%.4f" % w for w in weights[:height * width]) for weights in attention]
    return "%s\t%d %d\t%s" % (output.caption, height, width, " ||| ".join(rows))


class OutputHandler:
    """Writes each `CaptionOutput` as one line of ``output_type`` to ``stream``."""

    def __init__(self, stream: IO[str], output_type: str = C.OUTPUT_TYPE_TRANSLATION,
                 grid: Optional[Tuple[int, int]] = None) -> None:
        if output_type not in C.OUTPUT_TYPES:
            raise ValueError("unknown output type %r (one of %s)" % (output_type, C.OUTPUT_TYPES))
        self.stream = stream
        self.output_type = output_type
        self.grid = grid

    def handle(self, output: CaptionOutput) -> None:
        self.stream.write(format_output(output, self.output_type, self.grid) + "\n")
