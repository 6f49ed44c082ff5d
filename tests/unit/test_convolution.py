"""Convolutional decoder layer: causality, step == sequence, GLU."""
import mxnet as mx
import numpy as np
import pytest

from captioning.convolution import ConvolutionalDecoderLayer

N, T, L, H, S = 2, 6, 5, 8, 10


def make(kernel_width=3, activation="glu", project_qkv=False, source_size=S):
    mx.random.seed(6)
    layer = ConvolutionalDecoderLayer(H, kernel_width, activation, source_size, project_qkv, dropout=0.0)
    layer.initialize(mx.init.Xavier(magnitude=3))
    return layer


@pytest.mark.parametrize("kernel_width, activation, project_qkv, source_size",
                         [(3, "glu", False, S), (1, "relu", True, S), (2, "tanh", False, H), (4, "glu", True, H)])
def test_step_equals_sequence_and_is_causal(kernel_width, activation, project_qkv, source_size):
    layer = make(kernel_width, activation, project_qkv, source_size)
    x = mx.nd.random.uniform(-1, 1, shape=(N, T, H))
    target = mx.nd.random.uniform(-1, 1, shape=(N, T, H))
    source_kv = layer.source_keys_values(mx.nd, mx.nd.random.uniform(-1, 1, shape=(N, L, source_size)))
    out, probs = layer.sequence(mx.nd, x, target, source_kv)
    assert out.shape == (N, T, H) and probs.shape == (N, T, L)
    np.testing.assert_allclose(probs.asnumpy().sum(-1), 1.0, rtol=1e-5)
    window = layer.initial_window(mx.nd, mx.nd.zeros((N, L, source_size)))
    assert window.shape == (N, max(kernel_width - 1, 1), H)
    for t in range(T):
        y, p, window = layer.step(mx.nd, x[:, t:t + 1], target[:, t:t + 1], source_kv, window)
        np.testing.assert_allclose(y.asnumpy()[:, 0], out[:, t].asnumpy(), rtol=1e-4, atol=1e-5)
    changed = x.copy()
    changed[:, 4:] = 3.0
    out_changed, _ = layer.sequence(mx.nd, changed, target, source_kv)
    np.testing.assert_allclose(out_changed[:, :4].asnumpy(), out[:, :4].asnumpy(), rtol=1e-5, atol=1e-6)


def test_receptive_field_is_kernel_width():
    layer = make(kernel_width=3)
    x = mx.nd.random.uniform(-1, 1, shape=(1, T, H))
    target = mx.nd.zeros((1, T, H))
    source_kv = layer.source_keys_values(mx.nd, mx.nd.zeros((1, L, S)))   # attention adds nothing
    conv = lambda inp: (layer.sequence(mx.nd, inp, target, source_kv)[0] - inp).asnumpy()  # noqa: E731
    changed = x.copy()
    changed[:, 1] = 2.0
    difference = np.abs(conv(changed) - conv(x)).max(axis=2)[0]
    assert (difference[1:4] > 1e-5).all() and (difference[[0, 4, 5]] < 1e-6).all()
