"""Lexical constraints: hypothesis states, the avoid trie, bank allocation, constrained search, the CLI."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioning import constants as C
from captioning import lexical_constraints as lc
from captioning.beam_search import BeamSearch

from .test_beam_search import MarkovModel

REPO = Path(__file__).resolve().parents[2]


def contains(tokens, phrase):
    n = len(phrase)
    return any(tuple(tokens[i:i + n]) == tuple(phrase) for i in range(len(tokens) - n + 1))


def test_constrained_hypothesis_tracks_phrases():
    hyp = lc.ConstrainedHypothesis.create(((5,), (6, 7, 8)))
    assert hyp.num_needed() == 4 and hyp.num_met() == 0 and not hyp.all_met()
    assert hyp.allowed() == {5, 6}
    hyp = hyp.advance(6)
    assert hyp.num_met() == 1 and hyp.allowed() == {7}
    broken = hyp.advance(9)  # a phrase must be contiguous: the partial match is undone
    assert broken.num_met() == 0 and broken.allowed() == {5, 6}
    restarted = hyp.advance(6)  # the first word again starts the phrase anew
    assert restarted.num_met() == 1 and restarted.allowed() == {7}
    hyp = hyp.advance(7).advance(8)
    assert hyp.num_met() == 3 and hyp.allowed() == {5}
    hyp = hyp.advance(5)
    assert hyp.all_met() and hyp.num_met() == 4 and hyp.allowed() == set()
    assert hyp.advance(6) == hyp


def test_avoid_trie_blocks_completing_words():
    trie = lc.AvoidTrie([(5,), (6, 7), (6, 7, 9), (8, 6)])
    state = frozenset()
    assert sorted(trie.blocked(state)) == [5]
    state = trie.consume(state, 6)
    assert sorted(trie.blocked(state)) == [5, 7]
    state = trie.consume(state, 8)
    assert sorted(trie.blocked(state)) == [5, 6]
    state = trie.consume(state, 4)
    assert sorted(trie.blocked(state)) == [5]


@pytest.mark.parametrize("counts,beam,expected", [
    ([5, 5, 5], 3, [1, 1, 1]),
    ([5, 5, 5], 5, [1, 2, 2]),
    ([5, 0, 5], 5, [1, 0, 4]),  # spare slots go to the banks with most met first
    ([1, 0, 0], 4, [1, 0, 0]),
    ([10, 1, 1], 6, [4, 1, 1]),
])
def test_bank_sizes(counts, beam, expected):
    sizes = lc.bank_sizes(counts, beam)
    assert sizes == expected
    assert sum(sizes) == min(beam, sum(counts))


def test_phrases_to_ids_warns_on_unknown_words(caplog):
    vocab = {s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}
    vocab.update({"a": 4, "dog": 5})
    with caplog.at_level(logging.WARNING):
        ids = lc.phrases_to_ids(["a dog", "a cat", "</s>", "  "], vocab, "in.json, line 3", "constraint")
    assert ids == ((4, 5),)
    messages = [r.getMessage() for r in caplog.records]
    assert any("in.json, line 3" in m and "'cat'" in m for m in messages)
    assert any("'</s>'" in m for m in messages)


def test_random_constraints_are_always_satisfied():
    rng = np.random.RandomState(0)
    vocab_size = 16
    model = MarkovModel(vocab_size=vocab_size, seed=4, scale=1.5, bias_scale=0.2)
    model.table[:, C.EOS_ID] = model.table.max(axis=1) + 1.0  # </s> likely: captions end once allowed
    words = list(range(len(C.VOCAB_SYMBOLS), vocab_size))
    batch = 12
    for trial in range(4):
        constraints = []
        for _ in range(batch):
            chosen = list(rng.permutation(words))
            include = []
            for _ in range(rng.randint(0, 3)):
                length = rng.randint(1, 3)
                include.append(tuple(int(chosen.pop()) for _ in range(length)))
            avoid = []
            for _ in range(rng.randint(0, 3)):
                length = rng.randint(1, 3)
                avoid.append(tuple(int(chosen.pop()) for _ in range(length)))
            constraints.append(lc.Constraints(tuple(include), tuple(avoid)))
        feats = model.features(batch, seed=trial)
        beam = int(rng.choice([1, 3, 5]))
        results = BeamSearch([model], beam_size=beam, max_output_length=12).search(feats, constraints)
        for result, c in zip(results, constraints):
            assert result.nbest[0].finished
            for phrase in c.include:
                assert contains(result.tokens, phrase), (result.tokens, c)
            for phrase in c.avoid:
                assert not contains(result.tokens, phrase), (result.tokens, c)


def test_constraint_changes_output_and_is_batch_independent():
    model = MarkovModel(vocab_size=14, seed=8, scale=1.5)
    feats = model.features(5, seed=1)
    search = BeamSearch([model], beam_size=4, max_output_length=10)
    plain = search.search(feats)
    absent = [next(w for w in range(4, 14) if w not in r.tokens) for r in plain]
    constraints = [lc.Constraints(((w,),)) for w in absent]
    together = search.search(feats, constraints)
    for r, w in zip(together, absent):
        assert w in r.tokens
    alone = [search.search(feats[b:b + 1], constraints[b:b + 1])[0] for b in range(5)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    # an avoided word that the unconstrained caption used disappears
    avoid = [lc.Constraints((), ((r.tokens[0],),)) for r in plain if r.tokens]
    for r, c in zip(search.search(feats[:len(avoid)], avoid), avoid):
        assert c.avoid[0][0] not in r.tokens


def test_empty_constraints_give_the_plain_search():
    model = MarkovModel(vocab_size=12, seed=3)
    feats = model.features(4, seed=2)
    search = BeamSearch([model], beam_size=3, max_output_length=8)
    plain = search.search(feats)
    with_none = search.search(feats, [None, lc.Constraints(), None, None])
    assert [r.tokens for r in plain] == [r.tokens for r in with_none]


def test_make_json_line():
    assert json.loads(lc.make_json_line("a/b.npy\tred dog\t ball ", avoid=False)) == \
        {"text": "a/b.npy", "constraints": ["red dog", "ball"]}
    assert json.loads(lc.make_json_line("x.npy\tcat", avoid=True, constraints=["dog"])) == \
        {"text": "x.npy", "constraints": ["dog"], "avoid": ["cat"]}
    assert json.loads(lc.make_json_line("x.npy", avoid=False)) == {"text": "x.npy"}


def test_cli(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("img1.npy\ta dog\tball\nimg2.npy\n", encoding="utf-8")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "captioning.lexical_constraints", "-i", str(source), "-o",
                           str(out), "--avoid"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"text": "img1.npy", "avoid": ["a dog", "ball"]}, {"text": "img2.npy"}]
    bad = tmp_path / "bad.txt"
    bad.write_text("ok.npy\n\tdog\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "captioning.lexical_constraints", "-i", str(bad)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.txt, line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_possible_constraints_drop_impossible_ones_with_a_warning(caplog):
    from captioning.lexical_constraints import possible_constraints
    words = {4: "a", 5: "dog", 6: "runs", 7: "cat"}
    include = ((5, 6), (7,), (4, 5, 6, 7))
    kept = possible_constraints(include, ((6,),), 10, "in.json, line 4", words)
    assert kept == ((7,),)
    messages = [r.getMessage() for r in caplog.records]
    assert any("in.json, line 4" in m and "'dog runs'" in m and "avoided phrase 'runs'" in m for m in messages)
    caplog.clear()
    assert possible_constraints(include, (), 3, "w", words) == ((5, 6), (7,))
    assert any("'a dog runs cat'" in r.getMessage() and "need 7 words" in r.getMessage() and
               "maximum output length 3" in r.getMessage() for r in caplog.records)
    assert possible_constraints(((5, 6),), ((5, 6, 7),), 5, "w") == ((5, 6),)   # a longer avoided phrase is fine
