"""Recurrent layers (LSTMLayer, GRULayer): fused kernel == step by step, cell maths, initialisers."""
import mxnet as mx
import numpy as np
import pytest

from captioning.rnn import LayerState, StackedOrthogonal, create_recurrent_layer

N, T, IN, H = 3, 5, 6, 8


def make(cell, **kwargs):
    mx.random.seed(4)
    layer = create_recurrent_layer(cell, IN, H, **kwargs)
    layer.initialize(mx.init.Xavier(magnitude=3))
    return layer


def initial_states(layer):
    return LayerState(*[mx.nd.random.uniform(-0.5, 0.5, shape=(N, H)) for _ in range(layer.num_states)])


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm-ln", "gru-ln"])
def test_sequence_equals_steps(cell):
    layer = make(cell)
    x = mx.nd.random.uniform(-1, 1, shape=(N, T, IN))
    states = initial_states(layer)
    sequence = layer.sequence(mx.nd, x, states, T).asnumpy()
    assert sequence.shape == (N, T, H)
    for t in range(T):
        h, states = layer.step(mx.nd, layer.project_inputs(mx.nd, x[:, t]), states)
        np.testing.assert_allclose(sequence[:, t], h.asnumpy(), rtol=1e-4, atol=1e-5)
    assert layer.can_fuse == (not cell.endswith("-ln"))


def test_lstm_step_matches_textbook_equations():
    layer = make("lstm")
    x = mx.nd.random.uniform(-1, 1, shape=(N, IN))
    h0, c0 = initial_states(layer)
    h, (h_state, c) = layer.step(mx.nd, layer.project_inputs(mx.nd, x), LayerState(h0, c0))
    p = {k[len(layer.prefix):]: v.data().asnumpy()
         for k, v in layer.collect_params().items()}
    gates = x.asnumpy() @ p["i2h_weight"].T + p["i2h_bias"] + h0.asnumpy() @ p["h2h_weight"].T + p["h2h_bias"]
    i, f, g, o = np.split(gates, 4, axis=1)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c_expected = sig(f) * c0.asnumpy() + sig(i) * np.tanh(g)
    np.testing.assert_allclose(c.asnumpy(), c_expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h.asnumpy(), sig(o) * np.tanh(c_expected), rtol=1e-4, atol=1e-5)


def test_project_inputs_in_parts_adds_up():
    layer = make("gru")
    x = mx.nd.random.uniform(-1, 1, shape=(N, IN))
    whole = layer.project_inputs(mx.nd, x)
    parts = layer.project_inputs(mx.nd, x[:, :2], begin=0, end=2) + \
        layer.project_inputs(mx.nd, x[:, 2:], begin=2, bias=False)
    np.testing.assert_allclose(whole.asnumpy(), parts.asnumpy(), rtol=1e-5, atol=1e-6)


def test_recurrent_dropout_mask_applies_to_hidden_state():
    layer = make("lstm")
    x = mx.nd.random.uniform(-1, 1, shape=(N, T, IN))
    states = initial_states(layer)
    ones = mx.nd.ones((N, H))
    np.testing.assert_allclose(layer.sequence(mx.nd, x, states, T, ones).asnumpy(),
                               layer.sequence(mx.nd, x, states, T).asnumpy(), rtol=1e-4, atol=1e-5)
    zeros = mx.nd.zeros((N, H))
    assert np.abs(layer.sequence(mx.nd, x, states, T, zeros).asnumpy()
                  - layer.sequence(mx.nd, x, states, T).asnumpy()).max() > 1e-4


def test_forget_bias_and_orthogonal_h2h():
    layer = make("lstm", forget_bias=1.5, h2h_init="orthogonal")
    bias = layer.i2h_bias.data().asnumpy()
    np.testing.assert_allclose(bias[H:2 * H], 1.5)
    np.testing.assert_allclose(np.delete(bias, np.s_[H:2 * H]), 0.0)
    w = layer.h2h_weight.data().asnumpy()            # (4H, H): orthonormal columns (up to the init's scale)
    gram = w.T @ w
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(H), atol=1e-4)


def test_stacked_orthogonal_blocks():
    layer = make("gru", h2h_init="orthogonal_stacked")
    w = layer.h2h_weight.data().asnumpy()
    for block in np.split(w, 3, axis=0):
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-4)
    arr = mx.nd.zeros((12, 4))
    StackedOrthogonal(3)._init_weight("w", arr)
    for block in np.split(arr.asnumpy(), 3, axis=0):
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)


def test_fed_input_in_one_product_with_the_state_matches_separate_products():
    layer = make("lstm")
    x = mx.nd.random.uniform(-1, 1, shape=(N, IN))
    states = initial_states(layer)
    separate, _ = layer.step(mx.nd, layer.project_inputs(mx.nd, x), states)
    fused, _ = layer.step(mx.nd, layer.project_inputs(mx.nd, x[:, :2], begin=0, end=2), states,
                          feed=x[:, 2:], feed_weight=layer.feed_weight(mx.nd, x, begin=2))
    np.testing.assert_allclose(fused.asnumpy(), separate.asnumpy(), rtol=1e-5, atol=1e-6)
