"""Captioner: input parsing, chunking/batching independence, bad lines, constraints, unknown words."""
import numpy as np
import pytest

from captioning import constants as C
from captioning.inference import Captioner, CaptionerConfig, parse_input

from .test_beam_search import MarkovModel


class ArraySource:
    """A feature source backed by a dict name -> feature; unknown names fail like a missing file."""

    def __init__(self, arrays):
        self.arrays = arrays

    def load(self, inputs, where):
        loaded = {}
        for k, item in enumerate(inputs):
            if item.text in self.arrays:
                loaded[k] = self.arrays[item.text]
            else:
                item.error = "%s, line %d: feature file %s not found" % (where, item.sentence_id, item.text)
        return loaded


def make_captioner(batch_size=1, chunk_size=None, beam_size=3, **kw):
    model = MarkovModel(vocab_size=12, seed=6, scale=1.5, bias_scale=1.5)
    model.table[:, C.EOS_ID] = model.table.max(axis=1) - 1.0
    vocab = {s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}
    for i, w in enumerate(["a", "dog", "cat", "runs", "on", "the", "grass", "ball"]):
        vocab[w] = 4 + i
    feats = model.features(30, seed=3).asnumpy()
    source = ArraySource({"f%d" % i: feats[i] for i in range(30)})
    config = CaptionerConfig(beam_size=beam_size, batch_size=batch_size, chunk_size=chunk_size,
                             max_output_length=8, **kw)
    return Captioner([model], vocab, config, source)


def test_parse_input():
    assert parse_input(" a/b.npy ", 4, False, "in, line 4").text == "a/b.npy"
    item = parse_input('{"text": "x.npy", "constraints": ["a dog"], "avoid": "cat", "id": 9}', 1, True, "w")
    assert (item.text, item.constraints, item.avoid, item.extra, item.error) == \
        ("x.npy", ["a dog"], ["cat"], {"id": 9}, None)
    assert "malformed JSON" in parse_input("{oops", 2, True, "in.json, line 2").error
    assert "in.json, line 2" in parse_input("{oops", 2, True, "in.json, line 2").error
    assert '"text"' in parse_input('{"constraints": []}', 3, True, "w").error
    assert "list of phrases" in parse_input('{"text": "x", "avoid": [1]}', 3, True, "w").error
    assert "empty line" in parse_input("   ", 5, False, "w").error


def test_outputs_independent_of_batch_and_chunk_size():
    lines = ["f%d" % i for i in range(30)]
    reference = [o.caption for o in make_captioner(batch_size=1).caption_lines(lines, "in")]
    assert len(set(reference)) > 3
    for batch, chunk in [(7, None), (64, None), (4, 3), (5, 1), (30, 29)]:
        outputs = list(make_captioner(batch_size=batch, chunk_size=chunk).caption_lines(lines, "in"))
        assert [o.caption for o in outputs] == reference
        assert [o.sentence_id for o in outputs] == list(range(1, 31))


def test_bad_lines_keep_alignment():
    captioner = make_captioner(batch_size=4, chunk_size=3)
    lines = ["f0", "", "missing", "f1", '{"text": "f2"}']
    outputs = list(captioner.caption_lines(lines, "in"))
    assert [o.failed for o in outputs] == [False, True, True, False, True]  # JSON text is a path when not --json-input
    assert captioner.num_failed == 3 and captioner.num_captioned == 2
    plain = list(make_captioner().caption_lines(["f0", "f1"], "in"))
    assert outputs[0].caption == plain[0].caption and outputs[3].caption == plain[1].caption


def test_constraints_and_unknown_words(caplog):
    captioner = make_captioner(batch_size=3)
    plain = list(captioner.caption_lines(["f%d" % i for i in range(4)], "in"))
    lines = ['{"text": "f0", "constraints": ["grass ball"]}', '{"text": "f1"}',
             '{"text": "f2", "avoid": ["%s"], "constraints": ["zebra"]}' % plain[2].words[0],
             '{"text": "f3", "constraints": ["cat"]}']
    outputs = list(captioner.caption_lines(lines, "in.json", json_input=True))
    assert " grass ball " in " %s " % outputs[0].caption
    assert outputs[1].caption == plain[1].caption  # no constraints: the plain search
    assert plain[2].words[0] not in outputs[2].words
    assert "cat" in outputs[3].words
    assert any("in.json, line 3" in r.getMessage() and "zebra" in r.getMessage() for r in caplog.records)


def test_strip_unknown_words_and_nbest():
    captioner = make_captioner(beam_size=4, nbest_size=3, strip_unknown_words=True)
    captioner.models[0].table[:, C.UNK_ID] = captioner.models[0].table.max(axis=1) + 1.0  # <unk> is likely
    outputs = list(captioner.caption_lines(["f%d" % i for i in range(6)], "in"))
    assert all(C.UNK_SYMBOL not in o.caption.split() for o in outputs)
    assert all(len(o.nbest_captions) == 3 and len(o.nbest_scores) == 3 for o in outputs)
    assert all(o.attention.shape == (len(o.words), 2) for o in outputs)
    keep = make_captioner(beam_size=4)
    keep.models[0].table[:, C.UNK_ID] = keep.models[0].table.max(axis=1) + 1.0
    assert any(C.UNK_SYMBOL in o.caption.split() for o in keep.caption_lines(["f%d" % i for i in range(6)], "in"))


def test_nbest_larger_than_beam_is_an_error():
    from captioning.utils import CaptioningError
    with pytest.raises(CaptioningError, match="--nbest-size"):
        make_captioner(beam_size=2, nbest_size=3)
