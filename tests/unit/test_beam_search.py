"""Beam search on a deterministic fake model, against brute force and an unbatched reference search."""
import itertools
import math
from typing import List, Tuple

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
import mxnet as mx
import numpy as np
import pytest

from captioning import constants as C
from captioning.beam_search import DANGLING_WORDS, BeamSearch, LengthPenalty

EOS, BOS, PAD = C.EOS_ID, C.BOS_ID, C.PAD_ID


class MarkovModel:
    """A fake caption model (a `StepModel`): the next-word logits depend on the previous word (a fixed table) plus
    a per-input bias read from the features, so every sequence's probability can be computed exactly. States: the
    bias (B, V), the feature sum (B, L) and a step counter (B, 1); all batch-major as the real models'. With
    ``static`` the first two are declared static (one row per input, repeated in the step as the real models do).
    Also an `inference.CaptionerModel` (``max_output_length``)."""

    max_output_length = 20

    def __init__(self, vocab_size: int = 8, seed: int = 0, scale: float = 2.0, eos_bonus: float = 0.0,
                 bias_scale: float = 1.0, static: bool = False) -> None:
        rng = np.random.RandomState(seed)
        self.vocab_size = vocab_size
        self.num_static_states = 2 if static else 0
        self.table = (rng.randn(vocab_size, vocab_size) * scale).astype(np.float32)
        self.table[:, PAD] = -1e4  # the model never proposes <pad>, <unk> or <s>
        self.table[:, BOS] = -1e4
        self.table[:, C.UNK_ID] = -3.0
        self.table[:, EOS] += eos_bonus
        self.proj = (rng.randn(4, vocab_size) * bias_scale).astype(np.float32)

    def features(self, batch_size: int, seed: int) -> mx.nd.NDArray:
        rng = np.random.RandomState(seed)
        return mx.nd.array(rng.randn(batch_size, 4, 1, 2).astype(np.float32))

    def encode(self, features: mx.nd.NDArray) -> List[mx.nd.NDArray]:
        pooled = features.mean(axis=(2, 3))
        bias = mx.nd.dot(pooled, mx.nd.array(self.proj))
        positions = features.reshape((0, 0, -1)).sum(axis=1)  # (B, L=2)
        return [bias, positions, mx.nd.zeros((features.shape[0], 1))]

    def step_constants(self, ctx):
        return None

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        bias, positions, step = states
        if self.num_static_states and beam_size > 1:
            bias, positions = [mx.nd.repeat(s, repeats=beam_size, axis=0) for s in (bias, positions)]
        logits = mx.nd.take(mx.nd.array(self.table), prev_word) + bias
        attention = mx.nd.softmax(positions + step, axis=-1)
        return logits, attention, list(states[:self.num_static_states]) + [bias, positions, step + 1][
            self.num_static_states:]

    def log_probs(self, features: np.ndarray) -> np.ndarray:
        """(V, V) log P(next | prev) for one input."""
        bias = features.mean(axis=(1, 2)) @ self.proj
        logits = self.table + bias[None, :]
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def sequence_cost(lp: np.ndarray, tokens: Tuple[int, ...]) -> float:
    prev, cost = BOS, 0.0
    for w in tokens:
        cost -= lp[prev, w]
        prev = w
    return cost


def brute_force(lp: np.ndarray, max_len: int, penalty: LengthPenalty) -> Tuple[Tuple[int, ...], float]:
    """The best finished caption of at most max_len - 1 words (plus </s>) by exhaustive enumeration."""
    words = list(range(len(C.VOCAB_SYMBOLS), lp.shape[0])) + [C.UNK_ID]
    best = (None, math.inf)
    for n in range(0, max_len):
        for seq in itertools.product(words, repeat=n):
            full = seq + (EOS,)
            score = sequence_cost(lp, full) / penalty(np.array(float(len(full))))
            if score < best[1]:
                best = (seq, score)
    return best


def reference_beam_search(lp: np.ndarray, k: int, max_len: int, penalty: LengthPenalty, allowed=None):
    """A plain one-input beam search with Sockeye's rules (finished hypotheses keep their slot; the top-k compares
    raw costs and a hypothesis is normalised right after it finishes), written for clarity, not speed.
    ``allowed(tokens, word)``: whether a hypothesis may continue with the word (all, without it)."""
    beam = [((), 0.0, False)]
    for _ in range(max_len):
        cands = []
        for tokens, score, done in beam:
            if done:
                cands.append((tokens, score, True, False))
                continue
            prev = tokens[-1] if tokens else BOS
            for w in range(lp.shape[0]):
                cost = score - lp[prev, w]
                if not np.isfinite(cost) or (allowed is not None and not allowed(tokens, w)):
                    continue
                cands.append((tokens + (w,), cost, w == EOS, True))
        # as Sockeye: selection on the raw cost, then a hypothesis that has just finished is normalised
        cands.sort(key=lambda c: c[1])
        beam = [(t, s / float(penalty(np.array(float(len(t))))) if d and new else s, d)
                for t, s, d, new in cands[:k]]
        if all(d for _, _, d in beam):
            break
    final = [(t, s if d else s / float(penalty(np.array(float(len(t))))), d) for t, s, d in beam]
    final.sort(key=lambda c: (not c[2], c[1]))
    tokens, score, done = final[0]
    return (tokens[:-1] if done else tokens), score


def test_large_beam_finds_the_exact_best_caption():
    model = MarkovModel(vocab_size=7, seed=3)
    feats = model.features(3, seed=1)
    penalty = LengthPenalty(0.0, 0.0)
    # 3 real words + <unk>: with a beam of 64 >= 4**3 no hypothesis of <= 3 words is ever dropped
    search = BeamSearch([model], beam_size=64, max_output_length=4, length_penalty=penalty)
    results = search.search(feats)
    for b, result in enumerate(results):
        lp = model.log_probs(feats[b].asnumpy())
        tokens, score = brute_force(lp, 4, penalty)
        assert tuple(result.tokens) == tokens
        assert result.score == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert result.attention.shape == (len(tokens), 2)


@pytest.mark.parametrize("k,alpha,beta", [(1, 0.0, 0.0), (2, 1.0, 0.0), (3, 1.0, 5.0), (5, 0.5, 1.0)])
def test_matches_unbatched_reference(k, alpha, beta):
    model = MarkovModel(vocab_size=9, seed=5, scale=1.5)
    feats = model.features(6, seed=2)
    penalty = LengthPenalty(alpha, beta)
    search = BeamSearch([model], beam_size=k, max_output_length=6, length_penalty=penalty)
    for b, result in enumerate(search.search(feats)):
        tokens, score = reference_beam_search(model.log_probs(feats[b].asnumpy()), k, 6, penalty)
        assert tuple(result.tokens) == tokens
        assert result.score == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_greedy_is_argmax_chain():
    model = MarkovModel(vocab_size=10, seed=7)
    feats = model.features(4, seed=3)
    results = BeamSearch([model], beam_size=1, max_output_length=8,
                         length_penalty=LengthPenalty(0.0, 0.0)).search(feats)
    for b, result in enumerate(results):
        lp = model.log_probs(feats[b].asnumpy())
        prev, tokens, cost = BOS, [], 0.0
        for _ in range(8):
            w = int(lp[prev].argmax())
            cost -= lp[prev, w]
            if w == EOS:
                break
            tokens.append(w)
            prev = w
        assert result.tokens == tokens
        assert result.score == pytest.approx(cost, rel=1e-4, abs=1e-5)


def test_results_do_not_depend_on_batch_composition():
    model = MarkovModel(vocab_size=12, seed=11, scale=1.0)
    feats = model.features(9, seed=4)
    for stop, prune in [("all", 0.0), ("first", 0.0), ("all", 1.0)]:
        search = BeamSearch([model], beam_size=4, max_output_length=7, stop=stop, beam_prune=prune, nbest_size=3)
        together = search.search(feats)
        alone = [search.search(feats[b:b + 1])[0] for b in range(9)]
        pairs = search.search(feats[3:5])
        assert [r.tokens for r in together] == [r.tokens for r in alone]
        assert [[h.tokens for h in r.nbest] for r in together] == [[h.tokens for h in r.nbest] for r in alone]
        assert [r.tokens for r in together[3:5]] == [r.tokens for r in pairs]


@pytest.mark.parametrize("k", [1, 3])
def test_declared_static_states_give_the_same_search(k):
    plain, static = MarkovModel(vocab_size=10, seed=6, scale=1.0), MarkovModel(vocab_size=10, seed=6, scale=1.0,
                                                                               static=True)
    feats = plain.features(5, seed=8)
    a = BeamSearch([plain], beam_size=k, max_output_length=7, nbest_size=k).search(feats)
    b = BeamSearch([static], beam_size=k, max_output_length=7, nbest_size=k).search(feats)
    assert [[(h.tokens, h.score) for h in r.nbest] for r in a] == [[(h.tokens, h.score) for h in r.nbest] for r in b]
    assert len({tuple(r.tokens) for r in a}) > 1


class LengthModel(MarkovModel):
    """A `MarkovModel` whose input b writes captions of ``lengths[b]`` words: ``</s>`` is impossible before that
    and all but certain from then on (a length beyond the limit: the input loops to it). The length travels in
    the step-counter state, ``(B, 2)`` here: [step, length]."""

    def __init__(self, lengths, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lengths = list(lengths)

    def features(self, batch_size: int, seed: int) -> mx.nd.NDArray:
        assert batch_size == len(self.lengths)
        feats = super().features(batch_size, seed).asnumpy()
        feats[:, 1, 0, 0] = self.lengths
        return mx.nd.array(feats)

    def encode(self, features):
        bias, positions, step = super().encode(features)
        return [bias, positions, mx.nd.concat(step, features[:, 1, 0, 0].reshape((-1, 1)), dim=1)]

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        counter = states[-1]
        step = mx.nd.slice_axis(counter, axis=1, begin=0, end=1)
        logits, attention, new_states = super().decode_step(prev_word, states[:-1] + [step], beam_size, constants)
        eos = mx.nd.one_hot(mx.nd.array([EOS]), self.vocab_size)                             # (1, V)
        ending = (step >= mx.nd.slice_axis(counter, axis=1, begin=1, end=2)) * 1e4 * 2 - 1e4  # (N, 1)
        logits = mx.nd.broadcast_mul(logits, 1 - eos) + mx.nd.broadcast_mul(ending, eos)
        return logits, attention, new_states[:-1] + [counter + mx.nd.array([[1, 0]])]


class RowCounter:
    """Wraps a `StepModel` and records the rows of each step."""

    def __init__(self, model) -> None:
        self.model = model
        self.num_static_states = model.num_static_states
        self.rows: List[int] = []

    def encode(self, features):
        return self.model.encode(features)

    def step_constants(self, ctx):
        return self.model.step_constants(ctx)

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        self.rows.append(prev_word.shape[0])
        return self.model.decode_step(prev_word, states, beam_size, constants)


def _hypotheses(results):
    return [[(h.tokens, h.score, h.finished, h.attention.tolist()) for h in r.nbest] for r in results]


@pytest.mark.parametrize("k,static,stop", [(1, False, "all"), (3, False, "all"), (3, True, "all"),
                                           (4, True, "first")])
def test_a_looping_input_does_not_change_the_others(k, static, stop):
    model = LengthModel([3, 5, 20, 2, 7, 4, 6], vocab_size=12, seed=11, scale=1.0, static=static)
    feats = model.features(7, seed=4)
    search = BeamSearch([model], beam_size=k, max_output_length=12, stop=stop, nbest_size=k)
    together = search.search(feats)
    alone = [search.search(feats[b:b + 1])[0] for b in range(7)]
    assert _hypotheses(together) == _hypotheses(alone)
    assert len(together[2].tokens) == 12 and not together[2].nbest[0].finished
    assert [len(r.tokens) for i, r in enumerate(together) if i != 2] == [3, 5, 2, 7, 4, 6]
    assert len({tuple(r.tokens) for r in together}) == 7


def test_constrained_inputs_leave_the_batch_too():
    from captioning import lexical_constraints as lc
    model = LengthModel([3, 5, 20, 2, 7, 4], vocab_size=12, seed=11, scale=1.0, static=True)
    feats = model.features(6, seed=4)
    search = BeamSearch([model], beam_size=3, max_output_length=10, nbest_size=2)
    plain = search.search(feats)
    constraints = [lc.Constraints(((4, 5),)), None, lc.Constraints((), ((plain[2].tokens[0],),)), None,
                   lc.Constraints(((6,),), ((plain[4].tokens[1],),)), lc.Constraints()]
    counter = RowCounter(model)
    together = BeamSearch([counter], beam_size=3, max_output_length=10, nbest_size=2).search(feats, constraints)
    alone = [search.search(feats[b:b + 1], constraints[b:b + 1])[0] for b in range(6)]
    assert _hypotheses(together) == _hypotheses(alone)
    assert counter.rows[0] == 18 and counter.rows[-1] <= 9 and counter.rows == sorted(counter.rows, reverse=True)
    assert together[0].tokens[:2] == [4, 5] and 6 in together[4].tokens
    assert plain[2].tokens[0] not in together[2].tokens and plain[4].tokens[1] not in together[4].tokens


def test_rows_computed_per_step_follow_the_captions():
    lengths = [3, 9, 2, 2, 6, 30, 4, 1]
    model = LengthModel(lengths, vocab_size=12, seed=11, scale=1.0, static=True)
    feats = model.features(8, seed=4)
    k, limit = 3, 15
    counter = RowCounter(model)
    results = BeamSearch([counter], beam_size=k, max_output_length=limit, nbest_size=k).search(feats)
    alone = [min(n + 1, limit) for n in lengths]       # the step at which each input's search stops on its own
    # an input leaves as soon as it has stopped
    assert counter.rows == [k * sum(1 for s in alone if s > t) for t in range(limit)]
    assert counter.rows[-1] == k and sum(counter.rows) < 8 * k * limit / 2
    assert [len(r.tokens) for r in results] == [min(n, limit) for n in lengths]


def test_the_last_input_dispatches_its_next_step_before_reading_its_stop_flag():
    model = LengthModel([3, 6], vocab_size=12, seed=11, scale=1.0, static=True)
    feats = model.features(2, seed=4)
    k, limit = 3, 15
    counter = RowCounter(model)
    results = BeamSearch([counter], beam_size=k, max_output_length=limit, nbest_size=k).search(feats)
    # input 0 stops after 4 steps (3 words and </s>), input 1 after 7; while it is the only one left, each next step
    # is dispatched before its stop flag is read: one step more at the end, computed and discarded
    assert counter.rows == [2 * k] * 4 + [k] * 3 + [k]
    for i, result in enumerate(results):
        (alone,) = BeamSearch([model], beam_size=k, max_output_length=limit, nbest_size=k).search(feats[i:i + 1])
        assert _hypotheses([result]) == _hypotheses([alone]) and len(result.tokens) == [3, 6][i]
    # a search cut by the length limit computes no step beyond it
    counter.rows.clear()
    BeamSearch([counter], beam_size=k, max_output_length=5).search(feats[1:])
    assert counter.rows == [k] * 5


def repeated_ngrams(tokens: List[int], n: int) -> int:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


def no_repeat(n: int):
    """The reference's rule: the n-gram a word would complete must not occur earlier in the hypothesis."""
    def allowed(tokens, word) -> bool:
        if word == EOS or len(tokens) < n - 1:
            return True
        gram = tuple(tokens[len(tokens) - n + 1:]) + (word,)
        return gram not in {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}
    return allowed


@pytest.mark.parametrize("k,n", [(1, 3), (3, 3), (3, 2), (4, 1)])
def test_no_repeat_ngram_matches_the_reference(k, n):
    # a peaked table loops ("9 9 9 ..." or "10 8 10 8 ...") until the length limit
    model = MarkovModel(vocab_size=12, seed=1, scale=2.0, eos_bonus=-2.0)
    feats = model.features(5, seed=3)
    penalty = LengthPenalty(1.0, 0.0)
    plain = BeamSearch([model], beam_size=k, max_output_length=10).search(feats)
    assert sum(repeated_ngrams(r.tokens, 3) for r in plain) >= 3          # the option has work to do
    search = BeamSearch([model], beam_size=k, max_output_length=10, no_repeat_ngram_size=n)
    results = search.search(feats)
    for b, result in enumerate(results):
        for h in result.nbest:
            assert repeated_ngrams(h.tokens, n) == 0, h.tokens
        lp = model.log_probs(feats[b].asnumpy())
        tokens, score = reference_beam_search(lp, k, 10, penalty, no_repeat(n))
        # a Markov chain's loops tie: "7 7 6 7 7 5 7 7" costs what "7 7 6 7 7 7 5 7" does; equal scores suffice
        assert result.score == pytest.approx(score, rel=1e-5)
        full = tuple(result.tokens) + ((EOS,) if result.nbest[0].finished else ())
        assert result.score == pytest.approx(sequence_cost(lp, full) / penalty(np.array(float(len(full)))),
                                             rel=1e-5)
    assert [r.tokens for r in results] != [r.tokens for r in plain]
    # batch-independent, with inputs leaving the batch
    assert [r.tokens for r in results] == [search.search(feats[b:b + 1])[0].tokens for b in range(5)]


@pytest.mark.parametrize("k", [1, 3])
def test_banned_final_words_change_the_last_word(k):
    model = MarkovModel(vocab_size=12, seed=5, scale=1.5, eos_bonus=1.0)
    feats = model.features(6, seed=2)
    penalty = LengthPenalty(1.0, 0.0)
    plain = BeamSearch([model], beam_size=k, max_output_length=8).search(feats)
    last_words = sorted({r.tokens[-1] for r in plain if r.tokens and r.nbest[0].finished})
    banned = last_words[:2]
    results = BeamSearch([model], beam_size=k, max_output_length=8, banned_final_ids=banned).search(feats)
    changed = 0
    for b, (before, after) in enumerate(zip(plain, results)):
        if after.nbest[0].finished and after.tokens:
            assert after.tokens[-1] not in banned
        changed += before.tokens != after.tokens

        def allowed(tokens, word):
            return not (word == EOS and tokens and tokens[-1] in banned)
        tokens, score = reference_beam_search(model.log_probs(feats[b].asnumpy()), k, 8, penalty, allowed)
        assert tuple(after.tokens) == tokens
        assert after.score == pytest.approx(score, rel=1e-4, abs=1e-5)
    assert changed >= 1
    assert DANGLING_WORDS[:3] == ("a", "an", "the") and "with" in DANGLING_WORDS


def test_nbest_sorted_and_distinct():
    model = MarkovModel(vocab_size=10, seed=2, scale=1.0)
    feats = model.features(3, seed=5)
    results = BeamSearch([model], beam_size=5, max_output_length=6, nbest_size=4).search(feats)
    for r in results:
        assert len(r.nbest) == 4
        keys = [(not h.finished, h.score) for h in r.nbest]  # finished captions first, then by score
        assert keys == sorted(keys)
        assert len({tuple(h.tokens) for h in r.nbest}) == 4
        assert r.nbest[0].tokens == r.tokens


def test_max_output_length_cuts():
    model = MarkovModel(vocab_size=8, seed=1)
    model.table[:, EOS] = -1e4  # never finishes
    feats = model.features(2, seed=0)
    results = BeamSearch([model], beam_size=3, max_output_length=5).search(feats)
    for r in results:
        assert len(r.tokens) == 5
        assert not r.nbest[0].finished
        assert EOS not in r.tokens


def test_ensemble_modes():
    a, b = MarkovModel(vocab_size=7, seed=1), MarkovModel(vocab_size=7, seed=2)
    feats = a.features(2, seed=6)
    penalty = LengthPenalty(0.0, 0.0)
    for mode in ("linear", "log_linear"):
        result = BeamSearch([a, b], beam_size=64, max_output_length=4, ensemble_mode=mode,
                            length_penalty=penalty).search(feats)
        for i, r in enumerate(result):
            la, lb = a.log_probs(feats[i].asnumpy()), b.log_probs(feats[i].asnumpy())
            if mode == "linear":
                lp = np.logaddexp(la, lb) - np.log(2)
            else:
                lp = (la + lb) / 2
            tokens, score = brute_force(lp, 4, penalty)
            assert tuple(r.tokens) == tokens
            assert r.score == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_softmax_temperature_changes_scores():
    model = MarkovModel(vocab_size=7, seed=3)
    feats = model.features(1, seed=1)
    penalty = LengthPenalty(0.0, 0.0)
    r = BeamSearch([model], beam_size=64, max_output_length=4, length_penalty=penalty,
                   softmax_temperature=2.0).search(feats)[0]
    bias = feats[0].asnumpy().mean(axis=(1, 2)) @ model.proj
    logits = (model.table + bias) / 2.0
    lp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    tokens, score = brute_force(lp, 4, penalty)
    assert tuple(r.tokens) == tokens
    assert r.score == pytest.approx(score, rel=1e-4, abs=1e-5)


def test_beam_prune():
    model = MarkovModel(vocab_size=10, seed=9, scale=1.0)
    feats = model.features(5, seed=9)
    plain = BeamSearch([model], beam_size=4, max_output_length=6, nbest_size=4).search(feats)
    loose = BeamSearch([model], beam_size=4, max_output_length=6, beam_prune=1e9, nbest_size=4).search(feats)
    tight = BeamSearch([model], beam_size=4, max_output_length=6, beam_prune=1e-3, nbest_size=4).search(feats)
    assert [[(h.tokens, round(h.score, 5)) for h in r.nbest] for r in plain] == \
        [[(h.tokens, round(h.score, 5)) for h in r.nbest] for r in loose]
    # a tight threshold drops the open hypotheses once one has finished: fewer survive, the best is finished
    assert sum(len(r.nbest) for r in tight) < sum(len(r.nbest) for r in plain)
    assert all(t.nbest[0].finished for t, p in zip(tight, plain) if p.nbest[0].finished)
    assert any(p.nbest[0].finished for p in plain)


def test_special_symbols_are_never_words():
    model = MarkovModel(vocab_size=8, seed=4)
    model.table[:, BOS] = 10.0  # a model that loves <s> and <pad>
    model.table[:, PAD] = 9.0
    feats = model.features(3, seed=1)
    for k in (1, 3):
        for r in BeamSearch([model], beam_size=k, max_output_length=6, nbest_size=k).search(feats):
            for h in r.nbest:
                assert BOS not in h.tokens and PAD not in h.tokens and EOS not in h.tokens
                assert len(h.tokens) >= 1 or h.finished


# --- the real model's fast path: static states at one row per input, the output weight normalised once ----------

def caption_model(decoder: str = "rnn", weight_normalization: bool = True, vocab_size: int = 14, **kwargs):
    from captioning.decoder import RecurrentDecoderConfig, TransformerDecoderConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig
    sections = {"rnn": RecurrentDecoderConfig(num_hidden=16, **kwargs)} if decoder == "rnn" else \
        {"transformer": TransformerDecoderConfig(model_size=16, attention_heads=2, feed_forward_num_hidden=16)}
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(5, 2, 3), num_hidden=16), vocab_size=vocab_size,
                         decoder=decoder, num_embed=16, weight_normalization=weight_normalization, **sections)
    mx.random.seed(3)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier(magnitude=3.0))
    model.hybridize()
    return model


def caption_features(batch_size: int, seed: int = 0) -> mx.nd.NDArray:
    return mx.nd.array(np.random.RandomState(seed).uniform(0, 2, size=(batch_size, 5, 2, 3)))


class PlainContract:
    """A model that declares no static states: the search repeats and reorders every state, as before the fast
    path."""
    num_static_states = 0

    def __init__(self, model) -> None:
        self.model = model
        self.shapes: List[Tuple[int, ...]] = []

    def encode(self, features):
        return self.model.encode(features)

    def step_constants(self, ctx):
        return self.model.step_constants(ctx)

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        self.shapes.append(tuple(s.shape[0] for s in states))
        return self.model.decode_step(prev_word, states, constants=constants)


def test_decode_step_with_shared_static_states_is_exact():
    model = caption_model()
    n = model.num_static_states
    assert n == 2
    states = model.encode(caption_features(2))
    k = 3
    repeated = [mx.nd.repeat(s, repeats=k, axis=0) for s in states]
    shared = states[:n] + repeated[n:]
    assert shared[0].shape[0] == 2 and shared[n].shape[0] == 6
    prev = mx.nd.array([2, 5, 6, 7, 8, 9])
    logits, attention, new_states = model.decode_step(prev, repeated)
    fast_logits, fast_attention, fast_states = model.decode_step(prev, shared, beam_size=k)
    np.testing.assert_array_equal(fast_logits.asnumpy(), logits.asnumpy())
    np.testing.assert_array_equal(fast_attention.asnumpy(), attention.asnumpy())
    assert all(a is b for a, b in zip(fast_states[:n], states[:n]))   # passed through, still one row per input
    for a, b in zip(fast_states[n:], new_states[n:]):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert len({tuple(logits[r].asnumpy()) for r in range(6)}) == 6   # the rows really differ


@pytest.mark.parametrize("decoder,kwargs", [("rnn", {}), ("rnn", {"attention_type": "coverage"}),
                                            ("transformer", {})])
def test_fast_search_equals_plain_contract_search(decoder, kwargs):
    model = caption_model(decoder, **kwargs)
    features = caption_features(5, seed=4)
    plain_model = PlainContract(model)
    fast = BeamSearch([model], beam_size=3, max_output_length=6, nbest_size=3).search(features)
    plain = BeamSearch([plain_model], beam_size=3, max_output_length=6, nbest_size=3).search(features)
    n = model.num_static_states
    assert n >= 1 and BeamSearch([model], 3, 6)._num_shared(model) == n
    assert BeamSearch([model], 1, 6)._num_shared(model) == 0       # greedy search: nothing to share
    assert plain_model.shapes[0][:n] == (15,) * n                    # the plain search repeated them
    for a, b in zip(fast, plain):
        assert [h.tokens for h in a.nbest] == [h.tokens for h in b.nbest]
        assert [h.score for h in a.nbest] == [h.score for h in b.nbest]
        for ha, hb in zip(a.nbest, b.nbest):
            np.testing.assert_array_equal(ha.attention, hb.attention)
    assert len({r.score for r in fast}) == len(fast)   # the inputs' searches really differ


def test_fast_search_ensemble_of_a_model_with_itself():
    model = caption_model()
    features = caption_features(4, seed=2)
    single = BeamSearch([model], beam_size=3, max_output_length=7, nbest_size=3).search(features)
    # log-linear: (lp + lp) / 2 == lp exactly, so the ensemble path must give the very same search
    pair = BeamSearch([model, model], beam_size=3, max_output_length=7, nbest_size=3,
                      ensemble_mode="log_linear").search(features)
    assert [[(h.tokens, h.score) for h in r.nbest] for r in single] == \
        [[(h.tokens, h.score) for h in r.nbest] for r in pair]


def test_step_uses_the_output_weight_normalised_by_the_last_encode():
    from captioning.model import CaptionModel
    model = caption_model()
    features = caption_features(2, seed=1)
    words = mx.nd.array([[2, 5, 6], [2, 7, 4]])

    def first_step_logits(m, states=None):
        states = m.encode(features) if states is None else states
        return m.decode_step(words[:, 0], states)[0].asnumpy()

    before = first_step_logits(model)
    np.testing.assert_allclose(before, model(features, words).asnumpy()[:, 0], rtol=1e-4, atol=1e-5)
    scale = model.output_layer.scale
    scale.set_data(scale.data() * 3.0)
    after = first_step_logits(model)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, model(features, words).asnumpy()[:, 0], rtol=1e-4, atol=1e-5)
    # a model that has not encoded anything normalises the weight itself
    twin = CaptionModel(model.config)
    twin.initialize()
    for name, param in model.collect_params().items():
        twin.collect_params()[name.replace(model.prefix, twin.prefix, 1)].set_data(param.data())
    twin.hybridize()
    np.testing.assert_allclose(first_step_logits(twin, model.encode(features)), after, rtol=1e-5, atol=1e-6)


class EndsAt:
    """Wraps a `StepModel`: the captions of an input with features x have ``int(4 * x[0, 0, 0])`` words (``</s>``
    impossible before, all but certain then). The counter is one more state: ``(N, 2)``, [step, length]."""

    def __init__(self, model) -> None:
        self.model = model
        self.num_static_states = model.num_static_states

    @staticmethod
    def lengths(features) -> List[int]:
        return [int(4 * x) for x in features[:, 0, 0, 0].asnumpy()]

    def encode(self, features):
        lengths = mx.nd.floor(features[:, 0, 0, 0] * 4).reshape((-1, 1))
        return list(self.model.encode(features)) + [mx.nd.concat(lengths * 0, lengths, dim=1)]

    def step_constants(self, ctx):
        return self.model.step_constants(ctx)

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        counter = states[-1]
        logits, attention, new_states = self.model.decode_step(prev_word, states[:-1], beam_size, constants)
        eos = mx.nd.one_hot(mx.nd.array([EOS]), logits.shape[1])
        ending = (mx.nd.slice_axis(counter, axis=1, begin=0, end=1) >=
                  mx.nd.slice_axis(counter, axis=1, begin=1, end=2)) * 2e4 - 1e4
        logits = mx.nd.broadcast_mul(logits, 1 - eos) + mx.nd.broadcast_mul(ending, eos)
        return logits, attention, list(new_states) + [counter + mx.nd.array([[1, 0]])]


@pytest.mark.parametrize("decoder,kwargs", [("rnn", {}), ("rnn", {"attention_type": "coverage"}),
                                            ("transformer", {})])
def test_shrinking_search_on_a_real_model(decoder, kwargs):
    """Inputs leave the batch as they finish: the same captions, scores and attention as the search that keeps
    every state at one row per beam row (plain contract), and as each input alone; static states leave too."""
    model = caption_model(decoder, **kwargs)
    features = caption_features(8, seed=4)
    lengths = EndsAt.lengths(features)
    assert len(set(lengths)) >= 4 and max(lengths) >= 6
    counter = RowCounter(EndsAt(model))
    fast = BeamSearch([counter], beam_size=3, max_output_length=9, nbest_size=3).search(features)
    plain = BeamSearch([EndsAt(PlainContract(model))], beam_size=3, max_output_length=9, nbest_size=3
                       ).search(features)
    alone = [BeamSearch([EndsAt(model)], beam_size=3, max_output_length=9, nbest_size=3).search(
        features[b:b + 1])[0] for b in range(8)]
    assert [len(r.tokens) for r in fast] == [min(n, 9) for n in lengths]
    assert _hypotheses(fast) == _hypotheses(plain)
    # alone, the model's products run on fewer rows (as they did before inputs left the batch): scores and
    # attention may differ in the last bits
    assert [[h.tokens for h in r.nbest] for r in fast] == [[h.tokens for h in r.nbest] for r in alone]
    for a, b in zip(fast, alone):
        for ha, hb in zip(a.nbest, b.nbest):
            assert ha.score == pytest.approx(hb.score, rel=1e-6)
            np.testing.assert_allclose(ha.attention, hb.attention, rtol=1e-5, atol=1e-7)
    assert counter.rows[0] == 24 and counter.rows[-1] < 24 and counter.rows == sorted(counter.rows, reverse=True)
    assert len({tuple(r.tokens) for r in fast}) >= 6

