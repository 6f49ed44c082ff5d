"""Transformer parts: multi-head attention, causality, pre/post-processing, step == sequence."""
import mxnet as mx
import numpy as np
import pytest

from captioning.transformer import PrePostProcess, TransformerDecoderLayer, causal_bias, multi_head_attend

N, T, L, D, S = 2, 5, 6, 8, 10


def make_layer(**kwargs):
    mx.random.seed(5)
    options = dict(activation="relu", preprocess="n", postprocess="dr", dropout_attention=0.0, dropout_act=0.0,
                   dropout_prepost=0.0)
    options.update(kwargs)
    layer = TransformerDecoderLayer(D, 2, 16, S, **options)
    layer.initialize(mx.init.Xavier(magnitude=3))
    return layer


def test_multi_head_attend_matches_numpy():
    q, k, v = (mx.nd.random.uniform(-1, 1, shape=(N, n, D)) for n in (3, 4, 4))
    context, probs = multi_head_attend(mx.nd, q, k, v, heads=2)
    qn, kn, vn = q.asnumpy(), k.asnumpy(), v.asnumpy()
    expected, expected_probs = [], []
    for h in range(2):
        s = qn[:, :, 4 * h:4 * h + 4] @ kn[:, :, 4 * h:4 * h + 4].transpose(0, 2, 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        expected.append(p @ vn[:, :, 4 * h:4 * h + 4])
        expected_probs.append(p)
    np.testing.assert_allclose(context.asnumpy(), np.concatenate(expected, axis=2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs.asnumpy(), np.mean(expected_probs, axis=0), rtol=1e-4, atol=1e-5)


def test_causal_bias():
    bias = causal_bias(mx.nd, 3, mx.nd.zeros((1,))).asnumpy()[0]
    assert bias.shape == (3, 3)
    assert (bias[np.tril_indices(3)] == 0).all() and (bias[np.triu_indices(3, 1)] < -1e8).all()


def test_layer_is_causal_and_step_equals_sequence():
    layer = make_layer(activation="gelu")
    x = mx.nd.random.uniform(-1, 1, shape=(N, T, D))
    source_kv = layer.source_keys_values(mx.nd, mx.nd.random.uniform(-1, 1, shape=(N, L, S)))
    out, probs = layer.sequence(mx.nd, x, source_kv, causal_bias(mx.nd, T, x))
    assert out.shape == (N, T, D) and probs.shape == (N, T, L)
    changed = x.copy()
    changed[:, 3:] = 5.0
    out_changed, _ = layer.sequence(mx.nd, changed, source_kv, causal_bias(mx.nd, T, x))
    np.testing.assert_allclose(out_changed[:, :3].asnumpy(), out[:, :3].asnumpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(out_changed[:, 3:].asnumpy() - out[:, 3:].asnumpy()).max() > 1e-3
    # step by step with a cache that starts with one hidden slot
    cache_k = cache_v = mx.nd.zeros((N, 1, D))
    bias = mx.nd.full((N, 1), -1e9)
    for t in range(T):
        bias = mx.nd.concat(bias, mx.nd.zeros((N, 1)), dim=1)
        head_bias = mx.nd.repeat(bias, repeats=2, axis=0).expand_dims(1)
        y, p, cache_k, cache_v = layer.step(mx.nd, x[:, t:t + 1], source_kv, cache_k, cache_v, head_bias)
        np.testing.assert_allclose(y.asnumpy()[:, 0], out[:, t].asnumpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p.asnumpy()[:, 0], probs[:, t].asnumpy(), rtol=1e-4, atol=1e-5)
    assert cache_k.shape == (N, T + 1, D)


def test_prepostprocess_sequences():
    x, previous = mx.nd.random.uniform(shape=(2, 4)), mx.nd.random.uniform(shape=(2, 4))
    residual = PrePostProcess("r", 4, 0.0)
    np.testing.assert_allclose(residual.apply(mx.nd, x, previous).asnumpy(), (x + previous).asnumpy())
    norm = PrePostProcess("n", 4, 0.0)
    norm.initialize()
    normalized = norm.apply(mx.nd, x).asnumpy()
    np.testing.assert_allclose(normalized.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.std(axis=1), 1.0, rtol=1e-2)
    with pytest.raises(ValueError, match="unknown step"):
        PrePostProcess("nx", 4, 0.0)


def test_heads_must_divide_model_size():
    with pytest.raises(ValueError, match="divisible"):
        TransformerDecoderLayer(D, 3, 16, S, "relu", "n", "dr", 0.0, 0.0, 0.0)
