"""Output types: exact lines for a known output."""
import io
import json

import numpy as np
import pytest

from captioning import constants as C
from captioning.inference import CaptionOutput
from captioning.output_handler import OutputHandler, format_output


def make_output(**changes):
    attention = np.zeros((2, 5), dtype=np.float32)
    attention[0, [0, 4]] = [0.75, 0.25]
    attention[1, 3] = 1.0
    values = dict(sentence_id=3, text="img.npy", caption="a dog", score=1.23456, words=["a", "dog"],
                  attention=attention, nbest_captions=["a dog", "dog"], nbest_scores=[1.23456, 2.5],
                  extra={"id": 7})
    values.update(changes)
    return CaptionOutput(**values)


def test_plain_types():
    out = make_output()
    assert format_output(out, C.OUTPUT_TYPE_TRANSLATION) == "a dog"
    assert format_output(out, C.OUTPUT_TYPE_TRANSLATION_WITH_SCORE) == "1.235\ta dog"
    assert format_output(out, C.OUTPUT_TYPE_SCORE) == "1.235"


def test_json_type_passes_input_keys_and_nbest():
    record = json.loads(format_output(make_output(), C.OUTPUT_TYPE_JSON))
    assert record == {"id": 7, "sentence_id": 3, "text": "img.npy", "translation": "a dog", "score": 1.23456,
                      "translations": ["a dog", "dog"], "scores": [1.23456, 2.5]}
    single = json.loads(format_output(make_output(nbest_captions=["a dog"], nbest_scores=[1.0]), C.OUTPUT_TYPE_JSON))
    assert "translations" not in single


def test_alignments_drop_the_global_descriptor():
    line = format_output(make_output(), C.OUTPUT_TYPE_TRANSLATION_WITH_ALIGNMENTS, grid=(2, 2))
    assert line == "a dog\t2 2\t0.7500 0.0000 0.0000 0.0000 ||| 0.0000 0.0000 0.0000 1.0000"


@pytest.mark.parametrize("output_type", C.OUTPUT_TYPES)
def test_failed_input_is_an_empty_line(output_type):
    stream = io.StringIO()
    handler = OutputHandler(stream, output_type, grid=(2, 2))
    handler.handle(CaptionOutput(1, "x.npy", failed=True))
    handler.handle(make_output())
    lines = stream.getvalue().split("\n")
    assert lines[0] == "" and lines[1] != "" and lines[2] == "" and len(lines) == 3


def test_unknown_type_rejected():
    with pytest.raises(ValueError):
        OutputHandler(io.StringIO(), "nonsense")
