"""Captioner: input parsing, chunking/batching independence, bad lines, constraints, unknown words."""
import numpy as np
import pytest

from captioning import constants as C
from captioning.inference import Captioner, CaptionerConfig, models_max_output_length, parse_input

from .test_beam_search import MarkovModel


class ArraySource:
    """A feature source backed by a dict name -> feature; unknown names fail like a missing file. Records the
    size of every batch it hands out."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.feature_shape = next(iter(arrays.values())).shape
        self.batch_sizes = []

    def batches(self, inputs, batch_size, where):
        for start in range(0, len(inputs), batch_size):
            positions = []
            for k in range(start, min(start + batch_size, len(inputs))):
                item = inputs[k]
                if item.text in self.arrays:
                    positions.append(k)
                else:
                    item.error = "%s, line %d: feature file %s not found" % (where, item.sentence_id, item.text)
            if positions:
                self.batch_sizes.append(len(positions))
                yield positions, np.stack([self.arrays[inputs[k].text] for k in positions])


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


HOSTILE_JSON_LINES = [
    "[" * 50000 + "]" * 50000,                              # RecursionError in json.loads
    '{"text": "f1", "id": ' + "[" * 50000 + "]" * 50000 + "}",
    '{"text": "f1", "id": 1e999}',                           # a float beyond float64
    '{"text": "f1", "id": ' + "9" * 5000 + "}",             # an integer beyond Python's digit limit
    '{"text": "f1", "id": NaN}',
    '{"text": 5}', '["f1"]', '"f1"', "null", '{"text": ["f1"]}',
    '{"text": "f1", "constraints": {"a": 1}}', '{"text": "f1", "avoid": [null]}',
    '{"text": "f1", "constraints": [[["dog"]]]}',
    '{"text": "' + "x" * 1_100_000 + '"}',                   # longer than MAX_JSON_LINE_CHARS
]


def test_each_hostile_json_line_costs_only_itself():
    captioner = make_captioner(batch_size=2, chunk_size=4)
    lines = []
    for bad in HOSTILE_JSON_LINES:
        lines += ['{"text": "f0"}', bad]
    lines.append('{"text": "f3"}')
    outputs = list(captioner.caption_lines(lines, "in.json", json_input=True))
    assert len(outputs) == len(lines)
    assert [o.failed for o in outputs] == [False, True] * len(HOSTILE_JSON_LINES) + [False]
    assert [o.sentence_id for o in outputs] == list(range(1, len(lines) + 1))
    reference = [o.caption for o in make_captioner().caption_lines(["f0", "f3"], "in")]
    assert {o.caption for o in outputs[0:-1:2]} == {reference[0]} and outputs[-1].caption == reference[1]


def test_parse_input_names_the_line_for_each_hostile_line():
    messages = [parse_input(line, 7, True, "in.json, line 7").error for line in HOSTILE_JSON_LINES]
    assert all(m is not None and m.startswith("in.json, line 7: ") for m in messages)
    assert "nested too deeply" in messages[0]
    assert "out of range" in messages[2]
    assert "longer than" in messages[-1]


def test_non_utf8_line_fails_alone():
    captioner = make_captioner(batch_size=3)
    outputs = list(captioner.caption_stream([b"f0\n", b"f\xff1\n", b"f2\r\n"], "in"))
    assert [o.failed for o in outputs] == [False, True, False]
    assert captioner.num_failed == 1


def test_non_utf8_error_names_the_line(caplog):
    list(make_captioner().caption_stream([b"f0\n", b"\xfe\n"], "list.txt"))
    assert any("list.txt, line 2: not UTF-8" in r.getMessage() for r in caplog.records)


def test_default_chunk_size_is_bounded():
    assert CaptionerConfig(batch_size=1).effective_chunk_size() == 1
    assert CaptionerConfig(batch_size=4).effective_chunk_size() == 2000
    assert CaptionerConfig(batch_size=512).effective_chunk_size() == 5000
    assert CaptionerConfig(batch_size=8000).effective_chunk_size() == 8000
    assert CaptionerConfig(batch_size=8, chunk_size=3).effective_chunk_size() == 3


def test_features_are_loaded_per_batch_and_outputs_stream():
    """The first caption comes out after one batch was loaded, not the whole chunk; at batch size 1 the captioner
    reads one line, captions it, then reads the next (interactive use)."""
    consumed = []

    def lines(n):
        for i in range(n):
            consumed.append(i)
            yield "f%d" % i

    captioner = make_captioner(batch_size=4, chunk_size=24)
    outputs = captioner.caption_lines(lines(24), "in")
    next(outputs)
    assert captioner.source.batch_sizes == [4] and len(consumed) == 24
    rest = list(outputs)
    assert len(rest) == 23 and captioner.source.batch_sizes == [4] * 6
    consumed.clear()
    interactive = make_captioner(batch_size=1).caption_lines(lines(10), "in")
    for k in range(10):
        next(interactive)
        assert len(consumed) == k + 1


def test_constrained_lines_wait_only_for_their_batch():
    """Plain and constrained lines are batched apart; outputs still come in input order."""
    captioner = make_captioner(batch_size=2, chunk_size=6)
    lines = ['{"text": "f0"}', '{"text": "f1", "constraints": ["dog"]}', '{"text": "f2"}', '{"text": "f3"}',
             '{"text": "f4", "constraints": ["cat"]}', '{"text": "f5"}']
    outputs = list(captioner.caption_lines(lines, "in", json_input=True))
    assert [o.sentence_id for o in outputs] == [1, 2, 3, 4, 5, 6]
    assert "dog" in outputs[1].words and "cat" in outputs[4].words
    assert captioner.source.batch_sizes == [2, 2, 2]


def test_impossible_constraints_are_warned_about(caplog):
    captioner = make_captioner(batch_size=1)
    lines = ['{"text": "f0", "constraints": ["dog runs"], "avoid": ["runs"]}',
             '{"text": "f1", "constraints": ["a dog runs on the grass", "cat ball"]}']
    captioner.max_output_length = 6
    outputs = list(captioner.caption_lines(lines, "in.json", json_input=True))
    assert not any(o.failed for o in outputs)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("in.json, line 1" in m and "'dog runs'" in m and "avoided" in m for m in messages)
    assert any("in.json, line 2" in m and "'cat ball'" in m and "maximum output length 6" in m for m in messages)
    assert " a dog runs on the grass " in " %s " % outputs[1].caption
    assert "runs" not in outputs[0].words


def test_repetition_controls_reach_the_beam_search():
    lines = ["f%d" % i for i in range(30)]
    plain = [o.words for o in make_captioner(batch_size=5).caption_lines(lines, "in")]
    # a caption shorter than max_output_length (8) ended with </s>: only those are bound by --no-dangling-words
    assert any(len(set(w)) < len(w) for w in plain) and any(0 < len(w) < 8 and w[-1] in ("a", "on", "the")
                                                            for w in plain)
    no_repeat = [o.words for o in make_captioner(batch_size=5, no_repeat_ngram_size=1).caption_lines(lines, "in")]
    assert all(len(set(w)) == len(w) for w in no_repeat)
    tidy = [o.words for o in make_captioner(batch_size=5, no_dangling_words=True).caption_lines(lines, "in")]
    assert not any(0 < len(w) < 8 and w[-1] in ("a", "on", "the") for w in tidy)


def test_sampling_gives_nbest_samples_and_refuses_constraints():
    import mxnet as mx
    lines = ["f%d" % i for i in range(6)]
    mx.random.seed(3)
    first = list(make_captioner(batch_size=3, sample=0, nbest_size=4).caption_lines(lines, "in"))
    mx.random.seed(3)
    again = list(make_captioner(batch_size=3, sample=0, nbest_size=4).caption_lines(lines, "in"))
    assert all(len(o.nbest_captions) == 4 for o in first)   # --nbest-size above --beam-size is fine when sampling
    assert [o.nbest_captions for o in first] == [o.nbest_captions for o in again]
    assert len({c for o in first for c in o.nbest_captions}) > 6
    top1 = list(make_captioner(sample=1, nbest_size=2).caption_lines(lines, "in"))
    greedy = list(make_captioner(beam_size=1).caption_lines(lines, "in"))
    assert [o.nbest_captions for o in top1] == [[g.caption, g.caption] for g in greedy]
    captioner = make_captioner(sample=0)
    outputs = list(captioner.caption_lines(['{"text": "f0"}', '{"text": "f1", "constraints": ["dog"]}'], "in.json",
                                           json_input=True))
    assert [o.failed for o in outputs] == [False, True]


def test_config_checks():
    from captioning.utils import CaptioningError
    with pytest.raises(CaptioningError, match="cannot be used with --sample"):
        CaptionerConfig(sample=0, no_dangling_words=True)
    with pytest.raises(CaptioningError, match="--temperature"):
        CaptionerConfig(sample=0, softmax_temperature=0.0)
    with pytest.raises(CaptioningError, match="--nbest-size 3 is larger than --beam-size 2"):
        CaptionerConfig(beam_size=2, nbest_size=3)


def test_the_default_length_bound_is_the_smallest_the_models_store():
    short, long = MarkovModel(), MarkovModel()
    short.max_output_length = 5
    assert models_max_output_length([long, short]) == 5
    captioner = make_captioner()
    captioner = Captioner([long, short], captioner.vocab, CaptionerConfig(), captioner.source)
    assert captioner.max_output_length == 5
