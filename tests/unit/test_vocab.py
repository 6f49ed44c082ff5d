import json

import pytest

from captioning import constants as C
from captioning import utils
from captioning import vocab as V


CAPTIONS = ["a dog runs", "a cat runs", "a dog sits", "the bird"]


def test_build_vocab_special_ids_then_frequency_then_alphabetical():
    vocab = V.build_vocab(CAPTIONS)
    assert [vocab[s] for s in C.VOCAB_SYMBOLS] == [0, 1, 2, 3]
    # a:3, dog:2, runs:2 (alphabetical tie), then the count-1 words alphabetically
    order = sorted(vocab, key=vocab.get)[4:]
    assert order == ["a", "dog", "runs", "bird", "cat", "sits", "the"]


def test_num_words_and_min_count():
    assert sorted(V.build_vocab(CAPTIONS, num_words=2), key=lambda w: V.build_vocab(CAPTIONS, num_words=2)[w]) == \
        C.VOCAB_SYMBOLS + ["a", "dog"]
    vocab = V.build_vocab(CAPTIONS, min_count=2)
    assert set(vocab) == set(C.VOCAB_SYMBOLS) | {"a", "dog", "runs"}


def test_pad_to_multiple_of():
    vocab = V.build_vocab(CAPTIONS, pad_to_multiple_of=8)
    assert len(vocab) == 16
    assert sorted(vocab.values()) == list(range(16))


def test_save_load_round_trip(tmp_path):
    vocab = V.build_vocab(CAPTIONS)
    path = str(tmp_path / C.VOCAB_TRG_NAME)
    V.save_vocab(vocab, path)
    assert V.load_vocab(path) == vocab
    assert json.load(open(path, encoding="utf-8")) == vocab


def test_load_rejects_wrong_special_ids(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"<pad>": 0, "<s>": 1, "<unk>": 2, "</s>": 3}))
    with pytest.raises(utils.CaptioningError, match="<unk> must have id 1"):
        V.load_vocab(str(path))
    path.write_text("{not json")
    with pytest.raises(utils.CaptioningError, match="v.json: cannot read the vocabulary"):
        V.load_vocab(str(path))
    with pytest.raises(utils.CaptioningError, match="no such"):
        V.load_vocab(str(tmp_path / "missing.json"))


def test_ids_tokens():
    vocab = V.build_vocab(CAPTIONS)
    ids = V.tokens_to_ids("a zebra runs".split(), vocab)
    assert ids == [vocab["a"], C.UNK_ID, vocab["runs"]]
    rvocab = V.reverse_vocab(vocab)
    assert V.ids_to_tokens([C.BOS_ID] + ids + [C.EOS_ID, vocab["dog"]], rvocab) == ["a", "<unk>", "runs"]
    assert V.ids_to_tokens([C.BOS_ID, vocab["a"]], rvocab, strip_special=False) == ["<s>", "a"]
