"""Attention types: probabilities, contexts, coverage, and the all-steps path against the step path."""
import mxnet as mx
import numpy as np
import pytest

from captioning import attention as attention_module
from captioning.attention import create_attention

N, L, D, Q, A = 3, 7, 12, 10, 8


def make(kind, **kwargs):
    mx.random.seed(1)
    attention = create_attention(kind, query_size=Q, source_size=D, num_positions=L, num_hidden=A, embed_size=5, **kwargs)
    attention.initialize(mx.init.Xavier(magnitude=3))
    return attention


def inputs():
    mx.random.seed(2)
    return (mx.nd.random.uniform(-1, 1, shape=(N, L, D)), mx.nd.random.uniform(-1, 1, shape=(N, Q)),
            mx.nd.random.uniform(-1, 1, shape=(N, 5)))


KINDS = [("mlp", {}), ("mlp", {"use_prev_word": True, "layer_normalization": True}), ("dot", {}),
         ("dot", {"scale_dot": True}), ("bilinear", {}), ("mhdot", {"heads": 2}), ("location", {}), ("fixed", {}),
         ("coverage", {}), ("coverage", {"coverage_type": "tanh", "coverage_num_hidden": 2}),
         ("coverage", {"coverage_type": "gru", "coverage_num_hidden": 3})]


@pytest.mark.parametrize("kind, kwargs", KINDS)
def test_step_probabilities_and_context(kind, kwargs):
    attention = make(kind, **kwargs)
    encoded, query, word = inputs()
    pre = attention.precompute(mx.nd, encoded)
    assert len(pre) == attention.num_precomputed == {"mlp": 2, "dot": 2, "bilinear": 2, "mhdot": 2, "location": 1,
                                                     "fixed": 1}.get(kind, 2 if kwargs.get("coverage_type", "count")
                                                                     == "count" else 3)
    context, probs, state = attention.step(mx.nd, pre, query, word, attention.initial_state(mx.nd, encoded))
    probs = probs.asnumpy()
    assert probs.shape == (N, L)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert context.shape == (N, attention.context_size)
    if kind != "mhdot":   # the context is the probability-weighted sum of the positions
        np.testing.assert_allclose(context.asnumpy(), np.einsum("nl,nld->nd", probs, encoded.asnumpy()),
                                   rtol=1e-4, atol=1e-5)
    if kind == "fixed":
        np.testing.assert_allclose(probs, 1.0 / L, rtol=1e-6)
    elif kind != "location":   # scores depend on the image
        assert probs.std() > 1e-4
    assert len(state) == (1 if kind == "coverage" else 0)


def test_dot_attention_without_key_projection_precomputes_one_array():
    attention = create_attention("dot", query_size=D, source_size=D, num_positions=L, num_hidden=D)
    attention.initialize()
    assert attention.num_precomputed == len(attention.precompute(mx.nd, inputs()[0])) == 1


def test_count_coverage_accumulates_probabilities():
    attention = make("coverage")
    encoded, query, word = inputs()
    pre = attention.precompute(mx.nd, encoded)
    state = attention.initial_state(mx.nd, encoded)
    assert state[0].shape == (N, L, 1) and state[0].asnumpy().sum() == 0
    total = np.zeros((N, L))
    for step in range(3):
        _, probs, state = attention.step(mx.nd, pre, query * (step + 1), word, state)
        total += probs.asnumpy()
    np.testing.assert_allclose(state[0].asnumpy()[:, :, 0], total, rtol=1e-5)


def test_coverage_changes_later_scores():
    attention = make("coverage", coverage_type="tanh", coverage_num_hidden=2)
    encoded, query, word = inputs()
    pre = attention.precompute(mx.nd, encoded)
    state = attention.initial_state(mx.nd, encoded)
    _, first, state = attention.step(mx.nd, pre, query, word, state)
    _, second, _ = attention.step(mx.nd, pre, query, word, state)
    assert np.abs(first.asnumpy() - second.asnumpy()).max() > 1e-6


@pytest.mark.parametrize("kind, kwargs", [k for k in KINDS if k[0] not in ("mlp", "coverage")])
def test_all_steps_at_once_equals_step_by_step(kind, kwargs):
    attention = make(kind, **kwargs)
    encoded, _, _ = inputs()
    queries = mx.nd.random.uniform(-1, 1, shape=(N, 4, Q))
    pre = attention.precompute(mx.nd, encoded)
    contexts, probs = attention.sequence(mx.nd, pre, queries)
    for t in range(4):
        context, prob, _ = attention.step(mx.nd, pre, queries[:, t], None, [])
        np.testing.assert_allclose(contexts[:, t].asnumpy(), context.asnumpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probs[:, t].asnumpy(), prob.asnumpy(), rtol=1e-5, atol=1e-6)


def test_scaled_dot_is_flatter_than_unscaled():
    encoded, query, _ = inputs()
    plain, scaled = make("dot"), make("dot", scale_dot=True)
    scaled.query_proj.weight.set_data(plain.query_proj.weight.data())
    scaled.key_proj.weight.set_data(plain.key_proj.weight.data())
    p_plain = plain.step(mx.nd, plain.precompute(mx.nd, encoded), query * 5, None, [])[1].asnumpy()
    p_scaled = scaled.step(mx.nd, scaled.precompute(mx.nd, encoded), query * 5, None, [])[1].asnumpy()
    assert p_scaled.max(axis=1).mean() < p_plain.max(axis=1).mean()


def test_mhdot_heads_must_divide_size():
    with pytest.raises(ValueError, match="divisible"):
        create_attention("mhdot", query_size=Q, source_size=D, num_positions=L, num_hidden=A, heads=3)


def test_unknown_type():
    with pytest.raises(ValueError, match="unknown attention type"):
        create_attention("nope", query_size=Q, source_size=D, num_positions=L, num_hidden=A)


def _reference_mlp_probs(attention, encoded, query, word, coverage=None):
    """softmax over positions of v^T tanh(W_k k + W_q q [+ W_w w] [+ W_c c]) in numpy (no layer normalisation)."""
    weight = {name.split("_", 1)[1]: p.data().asnumpy() for name, p in attention.collect_params().items()}
    hidden = encoded @ weight["k_weight"].T + (query @ weight["q_weight"].T)[:, None, :]
    if attention.use_prev_word:
        hidden = hidden + (word @ weight["w_weight"].T)[:, None, :]
    if coverage is not None:
        hidden = hidden + coverage @ weight["c_weight"].T
    scores = np.tanh(hidden) @ weight["v_weight"][0]
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind, kwargs", [("mlp", {}), ("mlp", {"use_prev_word": True}), ("coverage", {})])
@pytest.mark.parametrize("beam_size", [1, 2])
def test_mlp_probabilities_equal_the_tanh_formula(kind, kwargs, beam_size):
    """The sigmoid form of the mlp scores gives Bahdanau's probabilities, also with the beam's shared keys."""
    attention = make(kind, **kwargs)
    for p in attention.collect_params().values():   # larger weights: hidden units well into tanh's curved range
        p.set_data(p.data() * 3)
    encoded, query, word = inputs()
    coverage = attention.initial_state(mx.nd, encoded)
    if kind == "coverage":
        coverage = [mx.nd.random.uniform(0, 2, shape=(N, L, 1))]
    pre = attention.precompute(mx.nd, encoded)
    if beam_size > 1 and kind == "mlp":   # N inputs, each with beam_size rows of their own query
        rows = mx.nd.random.uniform(-1, 1, shape=(N * beam_size, Q))
        words = mx.nd.random.uniform(-1, 1, shape=(N * beam_size, 5))
        _, probs, _ = attention.step(mx.nd, pre, rows, words, [], beam_size=beam_size)
        expected = _reference_mlp_probs(attention, np.repeat(encoded.asnumpy(), beam_size, axis=0),
                                        rows.asnumpy(), words.asnumpy())
    else:
        _, probs, _ = attention.step(mx.nd, pre, query, word, coverage)
        expected = _reference_mlp_probs(attention, encoded.asnumpy(), query.asnumpy(), word.asnumpy(),
                                        coverage[0].asnumpy() if coverage else None)
    assert expected.max(axis=1).mean() > 1.5 / L   # not uniform: the scores matter
    np.testing.assert_allclose(probs.asnumpy(), expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("kind, kwargs, cls", [
    ("mlp", {}, attention_module.MlpAttention), ("coverage", {}, attention_module.MlpCovAttention),
    ("coverage", {"coverage_type": "relu"}, attention_module.ActivationCovAttention),
    ("coverage", {"coverage_type": "gru"}, attention_module.GRUCovAttention),
    ("dot", {}, attention_module.DotAttention), ("bilinear", {}, attention_module.BilinearAttention),
    ("mhdot", {"heads": 2}, attention_module.MultiHeadDotAttention),
    ("location", {}, attention_module.LocationAttention), ("fixed", {}, attention_module.FixedAttention)])
def test_each_type_name_gives_its_own_class(kind, kwargs, cls):
    attention = create_attention(kind, query_size=Q, source_size=D, num_positions=L, num_hidden=A, **kwargs)
    assert type(attention) is cls
    assert attention.stepwise == (kind in ("mlp", "coverage"))
