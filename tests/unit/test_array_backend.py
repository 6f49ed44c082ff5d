"""The searches on numpy arrays (the backend of exported models) against the same searches on MXNet NDArrays."""
import os
import subprocess
import sys

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
import mxnet as mx
import numpy as np
import pytest

from captioning import constants as C
from captioning import lexical_constraints as lc
from captioning.array_backend import NUMPY, NUMPY_OPS
from captioning.beam_search import BeamSearch, LengthPenalty
from captioning.sampling import Sampler
from tests.unit.test_beam_search import MarkovModel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DriftingModel(MarkovModel):
    """`MarkovModel` whose next-word logits also drift with the step, so that no two captions tie (a Markov chain
    gives reordered captions the same cost, and the two backends may break ties differently)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drift = np.random.RandomState(kwargs.get("seed", 0) + 100).randn(self.vocab_size, self.vocab_size)

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        logits, attention, new_states = super().decode_step(prev_word, states, beam_size, constants)
        step = new_states[-1]
        return logits + mx.nd.take(mx.nd.array(self.drift), prev_word) * step * 0.3, attention, new_states


class HostModel:
    """A `StepModel` on numpy arrays (as `onnx_model.OnnxCaptionModel` gives them) wrapping an MXNet one."""

    def __init__(self, model) -> None:
        self.model = model
        self.num_static_states = model.num_static_states
        self.max_output_length = model.max_output_length

    def encode(self, features):
        assert isinstance(features, np.ndarray)
        return [s.asnumpy() for s in self.model.encode(mx.nd.array(features))]

    def step_constants(self, ctx):
        return None

    def decode_step(self, prev_words, states, beam_size=1, constants=None):
        assert isinstance(prev_words, np.ndarray) and all(isinstance(s, np.ndarray) for s in states)
        logits, attention, new_states = self.model.decode_step(mx.nd.array(prev_words),
                                                               [mx.nd.array(s) for s in states], beam_size)
        return logits.asnumpy(), attention.asnumpy(), [s.asnumpy() for s in new_states]


def _compare(mx_results, np_results):
    assert len(mx_results) == len(np_results)
    for a, b in zip(mx_results, np_results):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(a.attention, b.attention, rtol=1e-5, atol=1e-6)
        assert [h.tokens for h in a.nbest] == [h.tokens for h in b.nbest]
        assert [h.finished for h in a.nbest] == [h.finished for h in b.nbest]
        np.testing.assert_allclose([h.score for h in a.nbest], [h.score for h in b.nbest], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [
    dict(beam_size=1),
    dict(beam_size=4, nbest_size=3),
    dict(beam_size=3, stop="first", beam_prune=1.0),
    dict(beam_size=5, length_penalty=LengthPenalty(0.6, 2.0), softmax_temperature=1.5),
    dict(beam_size=3, no_repeat_ngram_size=2, banned_final_ids=(5, 6)),
    dict(beam_size=4, ensemble_mode="log_linear", nbest_size=2),
    dict(beam_size=4, ensemble_mode="linear"),
])
@pytest.mark.parametrize("static", [False, True])
def test_beam_search_on_numpy_arrays_equals_the_search_on_ndarrays(options, static):
    models = [DriftingModel(vocab_size=9, seed=2, eos_bonus=-1.0, static=static)]
    if "ensemble_mode" in options:
        models.append(DriftingModel(vocab_size=9, seed=7, eos_bonus=-0.5, static=static))
    features = models[0].features(6, seed=4)
    expected = BeamSearch(models, max_output_length=9, **options).search(features)
    got = BeamSearch([HostModel(m) for m in models], max_output_length=9, backend=NUMPY,
                     **options).search(features.asnumpy())
    _compare(expected, got)


def test_constrained_beam_search_on_numpy_arrays_equals_the_search_on_ndarrays():
    model = DriftingModel(vocab_size=10, seed=5, eos_bonus=-1.0, static=True)
    features = model.features(3, seed=2)
    constraints = [lc.Constraints([[7, 8]], [[6]]), None, lc.Constraints([[9]], [])]
    expected = BeamSearch([model], beam_size=4, max_output_length=8).search(features, constraints)
    got = BeamSearch([HostModel(model)], beam_size=4, max_output_length=8, backend=NUMPY).search(
        features.asnumpy(), constraints)
    _compare(expected, got)
    assert all(w in got[0].tokens for w in (7, 8)) and 6 not in got[0].tokens


def test_sampling_on_numpy_arrays():
    model = MarkovModel(vocab_size=9, seed=3, eos_bonus=-1.0, static=True)
    features = model.features(4, seed=1)
    # top-1 sampling is the greedy search
    greedy = BeamSearch([model], beam_size=1, max_output_length=8).search(features)
    top1 = Sampler([HostModel(model)], num_samples=2, max_output_length=8, top_k=1, backend=NUMPY).search(
        features.asnumpy())
    for g, s in zip(greedy, top1):
        assert [h.tokens for h in s.nbest] == [g.tokens, g.tokens]
    # reproducible with numpy's seed; never <pad> or <s> before the end; the costs are the model's
    runs = []
    for _ in range(2):
        NUMPY.seed(11)
        runs.append(Sampler([HostModel(model)], num_samples=5, max_output_length=8, backend=NUMPY).sample(
            features.asnumpy()))
    np.testing.assert_array_equal(runs[0].tokens, runs[1].tokens)
    samples = runs[0]
    assert len({tuple(c) for c in samples.captions()}) > 4          # samples differ
    log_probs = [model.log_probs(f) for f in features.asnumpy()]
    for row, (tokens, n) in enumerate(zip(samples.tokens, samples.lengths)):
        words = [int(w) for w in tokens[:n]]
        assert C.BOS_ID not in words and C.PAD_ID not in words
        prev, cost = C.BOS_ID, 0.0
        for w in words:
            cost -= log_probs[row // 5][prev, w]
            prev = w
        assert samples.costs[row] == pytest.approx(cost, rel=1e-4)


def test_numpy_sampling_follows_the_softmax():
    probs = np.array([[0.1, 0.6, 0.3], [0.0, 0.0, 1.0]], dtype=np.float32)
    np.random.seed(0)
    draws = np.stack([NUMPY_OPS.sample_multinomial(probs) for _ in range(4000)])
    assert (draws[:, 1] == 2).all()
    frequencies = np.bincount(draws[:, 0].astype(int), minlength=3) / len(draws)
    np.testing.assert_allclose(frequencies, probs[0], atol=0.03)


def test_numpy_operators_match_mxnets():
    rng = np.random.RandomState(0)
    x = rng.randn(3, 7).astype(np.float32)
    x[1, 2] = x[1, 5]          # a tie
    nd = mx.nd.array(x)
    for ascend in (True, False):
        values, indices = NUMPY_OPS.topk(x, axis=1, k=3, ret_typ="both", is_ascend=ascend)
        mx_values, mx_indices = mx.nd.topk(nd, axis=1, k=3, ret_typ="both", is_ascend=ascend)
        np.testing.assert_allclose(values, mx_values.asnumpy())
        np.testing.assert_array_equal(np.take_along_axis(x, indices.astype(int), axis=1), mx_values.asnumpy())
    np.testing.assert_allclose(NUMPY_OPS.log_softmax(x), mx.nd.log_softmax(nd, axis=-1).asnumpy(), rtol=1e-5)
    np.testing.assert_allclose(NUMPY_OPS.softmax(x), mx.nd.softmax(nd, axis=-1).asnumpy(), rtol=1e-5)
    idx = np.array([2, 0, 2, 1], dtype=np.float32)
    np.testing.assert_array_equal(NUMPY_OPS.take(x, idx), mx.nd.take(nd, mx.nd.array(idx)).asnumpy())
    picks = np.array([6, 0, 3], dtype=np.float32)
    np.testing.assert_array_equal(NUMPY_OPS.pick(x, picks), mx.nd.pick(nd, mx.nd.array(picks), axis=-1).asnumpy())
    cond = (x > 0).astype(np.float32)
    np.testing.assert_array_equal(NUMPY_OPS.where(cond, x, -x),
                                  mx.nd.where(mx.nd.array(cond), nd, -nd).asnumpy())
    np.testing.assert_array_equal(NUMPY_OPS.slice_axis(x, axis=1, begin=2, end=5),
                                  mx.nd.slice_axis(nd, axis=1, begin=2, end=5).asnumpy())
    indices = np.array([[0, 2, 1], [3, 3, 6]], dtype=np.float32)
    data = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(NUMPY_OPS.scatter_nd(data, indices, (3, 7)),
                                  mx.nd.scatter_nd(mx.nd.array(data), mx.nd.array(indices), shape=(3, 7)).asnumpy())


def test_the_searches_and_the_captioner_import_without_mxnet():
    """An exported model is captioned where MXNet cannot be imported: nothing on that path may import it."""
    code = ("import sys; sys.modules['mxnet'] = None\n"
            "import numpy as np\n"
            "from captioning import captioner, inference, beam_search, sampling\n"
            "from captioning.array_backend import NUMPY\n"
            "class M:\n"
            "    num_static_states = 0\n"
            "    def encode(self, f): return [f.reshape(len(f), -1)[:, :5].copy()]\n"
            "    def step_constants(self, ctx): return None\n"
            "    def decode_step(self, w, s, beam_size=1, constants=None):\n"
            "        logits = s[0] * 0 + (w == 2)[:, None] * np.array([0, 0, 0, 0, 5], np.float32)\n"
            "        logits[:, 3] += 1\n"
            "        return logits, np.ones((len(w), 2), np.float32) / 2, s\n"
            "r = beam_search.BeamSearch([M()], 2, 4, backend=NUMPY).search(np.ones((2, 5, 1, 1), np.float32))\n"
            "assert [x.tokens for x in r] == [[4], [4]], r\n"
            "print('no mxnet:', [m for m in sys.modules if m.startswith('mxnet') and sys.modules[m]])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no mxnet: []" in done.stdout


def test_numpy_topk_orders_ties_infinities_and_nan_as_a_stable_sort():
    """Top-k as the beam search uses it: rows full of ties and infinite costs (stopped rows, unused beam rows)."""
    rng = np.random.RandomState(1)
    for _ in range(300):
        n, rows = rng.randint(5, 60), rng.randint(1, 4)
        k = rng.randint(1, min(n, 20))
        x = rng.randint(0, 6, (rows, n)).astype(np.float32)
        x[rng.rand(rows, n) < 0.3] = np.inf
        x[rng.rand(rows, n) < 0.1] = -np.inf
        x[rng.rand(rows, n) < 0.05] = np.nan
        for ascend in (True, False):
            values, indices = NUMPY_OPS.topk(x, axis=-1, k=k, ret_typ="both", is_ascend=ascend)
            keys = x if ascend else -x
            expected = np.argsort(np.where(np.isnan(keys), np.inf, keys), axis=-1, kind="stable")[:, :k]
            np.testing.assert_array_equal(indices.astype(np.int64), expected)
            np.testing.assert_array_equal(values, np.take_along_axis(x, expected, axis=-1))
