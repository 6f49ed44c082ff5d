"""The target vocabulary: build it from training captions, save it as JSON, load and check it.

Ids as in Sockeye: ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3, then words by decreasing frequency (ties in
alphabetical order, so the same captions always give the same vocabulary).
"""
import collections
import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import constants as C
from . import utils

logger = logging.getLogger(__name__)

Vocab = Dict[str, int]
InverseVocab = Dict[int, str]


def build_vocab(captions: Iterable[str], num_words: int = 0, min_count: int = 1,
                pad_to_multiple_of: Optional[int] = None) -> Vocab:
    """A vocabulary of the whitespace tokens of ``captions``: the special symbols, then the words seen at least
    ``min_count`` times, most frequent first, at most ``num_words`` of them (0: no limit). With
    ``pad_to_multiple_of`` the size is padded with unused ``<pad..>`` entries up to a multiple of that number."""
    counts: collections.Counter = collections.Counter()
    for caption in captions:
        counts.update(caption.split())
    for symbol in C.VOCAB_SYMBOLS:
        counts.pop(symbol, None)
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    if num_words > 0:
        words = words[:num_words]
    vocab: Vocab = {symbol: i for i, symbol in enumerate(C.VOCAB_SYMBOLS)}
    for word in words:
        vocab[word] = len(vocab)
    if pad_to_multiple_of:
        filler = 0
        while len(vocab) % pad_to_multiple_of:
            vocab["<pad%d>" % filler] = len(vocab)
            filler += 1
    logger.info("Vocabulary: %d types (%d distinct words in the captions, min count %d, limit %s)",
                len(vocab), len(counts), min_count, num_words or "none")
    return vocab


def save_vocab(vocab: Vocab, path: str) -> None:
    """Write the vocabulary as a JSON object ``{word: id}`` (Sockeye's ``vocab.trg.0.json``), atomically."""
    with utils.atomic_open(path, "w") as f:
        json.dump(vocab, f, indent=4, ensure_ascii=False)
        f.write("\n")


def load_vocab(path: str) -> Vocab:
    """Read a vocabulary written by `save_vocab` (or by Sockeye) and check its ids."""
    utils.check_condition(os.path.exists(path), "%s: no such vocabulary file" % path)
    vocab = utils.read_json(path, "the vocabulary")
    check_vocab(vocab, path)
    return vocab


def check_vocab(vocab: object, where: str) -> None:
    """Raise `CaptioningError` unless ``vocab`` maps strings to distinct ids 0..n-1 with the special ids fixed."""
    utils.check_condition(isinstance(vocab, dict) and all(isinstance(k, str) and isinstance(v, int)
                                                          and not isinstance(v, bool) for k, v in vocab.items()),
                          "%s: a vocabulary must be a JSON object of word -> integer id" % where)
    assert isinstance(vocab, dict)
    for i, symbol in enumerate(C.VOCAB_SYMBOLS):
        utils.check_condition(vocab.get(symbol) == i, "%s: %s must have id %d (found %s); was this vocabulary "
                              "made by this toolkit or Sockeye?" % (where, symbol, i, vocab.get(symbol)))
    utils.check_condition(sorted(vocab.values()) == list(range(len(vocab))),
                          "%s: the ids must be 0..%d, each once" % (where, len(vocab) - 1))


def vocab_beside(params: str) -> Optional[str]:
    """The vocabulary file of the model folder a parameter file lies in (``MODEL/params.best`` ->
    ``MODEL/vocab.trg.0.json``), or None for a parameter file outside a model folder."""
    path = os.path.join(os.path.dirname(os.path.abspath(params)), C.VOCAB_TRG_NAME)
    return path if os.path.isfile(path) else None


def count_unknown(captions: Iterable[str], vocab: Vocab) -> Tuple[int, int]:
    """(words, distinct words) of ``captions`` (whitespace-tokenised) that ``vocab`` lacks."""
    missing = [token for caption in captions for token in caption.split() if token not in vocab]
    return len(missing), len(set(missing))


def reverse_vocab(vocab: Vocab) -> InverseVocab:
    """id -> word."""
    return {i: w for w, i in vocab.items()}


def tokens_to_ids(tokens: Sequence[str], vocab: Vocab) -> List[int]:
    """Word ids; unknown words map to ``<unk>``."""
    unk = vocab[C.UNK_SYMBOL]
    return [vocab.get(t, unk) for t in tokens]


def ids_to_tokens(ids: Iterable[int], rvocab: InverseVocab, strip_special: bool = True) -> List[str]:
    """Words of ``ids``; with ``strip_special`` the output stops at ``</s>`` and leaves out ``<pad>``/``<s>``
    (``<unk>`` is kept: it is a word of the output)."""
    tokens: List[str] = []
    for i in ids:
        i = int(i)
        if strip_special:
            if i == C.EOS_ID:
                break
            if i in (C.PAD_ID, C.BOS_ID):
                continue
        tokens.append(rvocab.get(i, C.UNK_SYMBOL))
    return tokens
