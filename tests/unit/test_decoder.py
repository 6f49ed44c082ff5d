"""Every decoder and attention type: step-by-step decoding with teacher-forced words gives the logits of the
whole-caption forward pass (inference mode), hybridized or not, and with fixed parameters (step constants)."""
import mxnet as mx
import numpy as np
import pytest

from captioning.decoder import (ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig,
                                create_decoder)
from captioning.encoder import ImageEncoderConfig
from captioning.model import CaptionModel, ModelConfig

B, T, V, C, GRID = 3, 4, 20, 6, (2, 3)


def tiny_model(decoder="rnn", num_embed=16, weight_normalization=False, **kwargs):
    encoder = ImageEncoderConfig(feature_shape=(C,) + GRID, num_hidden=16,
                                 positional_embedding=kwargs.pop("positional", "learned"),
                                 global_descriptor=kwargs.pop("global_descriptor", True))
    sections = {}
    if decoder == "rnn":
        sections["rnn"] = RecurrentDecoderConfig(num_hidden=16, **kwargs)
    elif decoder == "transformer":
        sections["transformer"] = TransformerDecoderConfig(model_size=16, attention_heads=2,
                                                           feed_forward_num_hidden=24, **kwargs)
    else:
        sections["cnn"] = ConvolutionalDecoderConfig(num_hidden=16, **kwargs)
    mx.random.seed(11)
    model = CaptionModel(ModelConfig(encoder=encoder, vocab_size=V, decoder=decoder, num_embed=num_embed,
                                     weight_normalization=weight_normalization, **sections))
    model.initialize(mx.init.Xavier(magnitude=2.5))
    return model


def teacher_forced_gap(model) -> float:
    mx.random.seed(12)
    features = mx.nd.random.uniform(0, 2, shape=(B, C) + GRID)
    words = mx.nd.array(np.random.RandomState(3).randint(0, V, size=(B, T)))
    logits = model(features, words).asnumpy()
    assert logits.shape == (B, T, V) and np.abs(logits).max() > 1e-3
    states = model.encode(features)
    for s in states:
        assert s.shape[0] == B
    gap = 0.0
    for t in range(T):
        step_logits, attention, states = model.decode_step(words[:, t], states)
        assert step_logits.shape == (B, V)
        assert attention.shape == (B, model.num_positions)
        np.testing.assert_allclose(attention.asnumpy().sum(axis=1), 1.0, rtol=1e-4)
        gap = max(gap, float(np.abs(step_logits.asnumpy() - logits[:, t]).max()))
    return gap


RNN_CASES = [
    {},
    {"input_feeding": False},
    {"cell_type": "gru"},
    {"cell_type": "gru-ln", "input_feeding": False, "state_init": "avg"},
    {"cell_type": "lstm-ln", "num_layers": 3, "residual_connections": True, "layer_normalization": True},
    {"num_layers": 2, "attention_in_upper_layers": True, "input_feeding": False, "dropout_recurrent": 0.3},
    {"num_layers": 2, "attention_in_upper_layers": True, "attention_type": "mhdot", "attention_mhdot_heads": 4},
    {"attention_type": "dot", "state_init": "zero"},
    {"attention_type": "dot", "scale_dot_attention": True, "attention_num_hidden": 8, "input_feeding": False},
    {"attention_type": "bilinear", "context_gating": True},
    {"attention_type": "location", "input_feeding": False},
    {"attention_type": "fixed"},
    {"attention_type": "mlp", "attention_use_prev_word": True, "attention_num_hidden": 12},
    {"attention_type": "coverage"},
    {"attention_type": "coverage", "input_feeding": False, "attention_coverage_type": "sigmoid",
     "attention_coverage_num_hidden": 2},
    {"attention_type": "coverage", "attention_coverage_type": "gru", "attention_coverage_num_hidden": 2},
]


MODES = ["imperative", "hybridized", "fixed"]


def prepare(model, mode: str):
    """``hybridized``: hybridize; ``fixed``: hybridize and fix the parameters (steps take the step constants)."""
    if mode != "imperative":
        model.hybridize()
    if mode == "fixed":
        model.fix_parameters()
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", RNN_CASES, ids=lambda o: ",".join("%s=%s" % kv for kv in o.items()) or "default")
def test_rnn_step_equals_forward(options, mode):
    model = prepare(tiny_model("rnn", **dict(options)), mode)
    assert teacher_forced_gap(model) < 1e-4


@pytest.mark.parametrize("decoder, options", [
    ("transformer", {}),
    ("transformer", {"num_layers": 2, "positional_embedding": "learned", "activation_type": "swish1",
                     "preprocess": "", "postprocess": "drn"}),
    ("cnn", {}),
    ("cnn", {"num_layers": 2, "kernel_width": 2, "project_qkv": True, "positional_embedding": "fixed"}),
    ("cnn", {"kernel_width": 1, "activation_type": "relu", "positional_embedding": "none"}),
])
@pytest.mark.parametrize("mode", MODES)
def test_other_decoders_step_equals_forward(decoder, options, mode):
    model = prepare(tiny_model(decoder, **dict(options)), mode)
    assert teacher_forced_gap(model) < 1e-4


@pytest.mark.parametrize("decoder", ["rnn", "transformer", "cnn"])
def test_fixed_parameters_step_like_free_ones_with_weight_normalization(decoder):
    """Fixed parameters: the step constants (normalised output weight, the RNN's embedding table) give the same
    logits as the free model, whose encode normalises the weight; both follow teacher forcing."""
    free = tiny_model(decoder, weight_normalization=True)
    fixed = prepare(tiny_model(decoder, weight_normalization=True), "fixed")
    assert teacher_forced_gap(free) < 1e-4 and teacher_forced_gap(fixed) < 1e-4
    features = mx.nd.random.uniform(0, 2, shape=(B, C) + GRID)
    words = mx.nd.array([4, 5, 6])
    expected = free.decode_step(words, free.encode(features))[0].asnumpy()
    np.testing.assert_allclose(fixed.decode_step(words, fixed.encode(features))[0].asnumpy(), expected,
                               rtol=1e-5, atol=1e-6)
    constants = fixed.step_constants(mx.cpu())
    assert len(constants.arrays) == 1 + fixed.decoder.num_step_constants
    assert fixed.step_constants(mx.cpu()) is constants     # computed once per device


@pytest.mark.parametrize("decoder, options", [("rnn", {}), ("rnn", {"input_feeding": False}),
                                              ("transformer", {}), ("cnn", {})])
def test_hybridized_equals_imperative(decoder, options):
    model = tiny_model(decoder, **dict(options))
    features = mx.nd.random.uniform(0, 2, shape=(B, C) + GRID)
    words = mx.nd.array(np.random.RandomState(4).randint(0, V, size=(B, T)))
    imperative = model(features, words).asnumpy()
    states = model.encode(features)
    step_imperative = model.decode_step(words[:, 0], states)[0].asnumpy()
    model.hybridize()
    np.testing.assert_allclose(model(features, words).asnumpy(), imperative, rtol=1e-4, atol=1e-5)
    states = model.encode(features)
    np.testing.assert_allclose(model.decode_step(words[:, 0], states)[0].asnumpy(), step_imperative,
                               rtol=1e-4, atol=1e-5)
    assert teacher_forced_gap(model) < 1e-4


def test_transformer_needs_no_projection_when_sizes_match_and_projects_otherwise():
    assert not hasattr(create_decoder("transformer", TransformerDecoderConfig(model_size=16, attention_heads=2),
                                      16, 16, 7), "embed_proj")
    model = tiny_model("transformer", num_embed=12)
    assert teacher_forced_gap(model) < 1e-4


def test_unknown_decoder():
    with pytest.raises(ValueError, match="unknown decoder"):
        create_decoder("lstm", None, 16, 16, 7)


@pytest.mark.parametrize("decoder,kwargs", [
    ("rnn", {}), ("rnn", {"attention_use_prev_word": True, "layer_normalization": True}),
    ("rnn", {"num_layers": 2, "attention_in_upper_layers": True}), ("rnn", {"attention_type": "coverage"}),
    ("rnn", {"attention_type": "dot"}), ("rnn", {"attention_type": "mhdot", "attention_mhdot_heads": 2}),
    ("transformer", {}), ("cnn", {})])
def test_step_with_static_states_shared_by_the_beam_is_exact(decoder, kwargs):
    """``step(..., beam_size=K)`` on static states at one row per input (mlp attention uses them as they are,
    the other types repeat them) gives exactly the step on states repeated for every beam row."""
    model = tiny_model(decoder, **kwargs)
    k = 3
    mx.random.seed(13)
    encoded = model.encoder(mx.nd.random.uniform(0, 2, shape=(B, C) + GRID))
    states = model.decoder.init_states(mx.nd, encoded)
    n = model.decoder.num_static_states
    repeated = [mx.nd.repeat(s, repeats=k, axis=0) for s in states]
    # the rows of an input differ: different words and, after a first step, different recurrent states
    embedded = model.embedding(mx.nd.array(np.random.RandomState(4).randint(4, V, size=B * k)))
    _, _, first = model.decoder.step(mx.nd, embedded, repeated)
    repeated = repeated[:n] + list(first)
    shared = states[:n] + list(first)
    embedded = model.embedding(mx.nd.array(np.random.RandomState(5).randint(4, V, size=B * k)))
    hidden, probs, new_states = model.decoder.step(mx.nd, embedded, repeated)
    fast_hidden, fast_probs, fast_states = model.decoder.step(mx.nd, embedded, shared, beam_size=k)
    np.testing.assert_array_equal(fast_hidden.asnumpy(), hidden.asnumpy())
    np.testing.assert_array_equal(fast_probs.asnumpy(), probs.asnumpy())
    assert len(fast_states) == len(new_states)
    for a, b in zip(fast_states, new_states):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert len({tuple(row) for row in hidden.asnumpy().round(6)}) == B * k


@pytest.mark.parametrize("options", [{}, {"context_gating": True}], ids=["mlp", "context-gating"])
def test_hidden_dropout_drops_the_hidden_layers_input_not_the_hidden_state(options):
    """As in Sockeye, --rnn-decoder-hidden-dropout acts on [RNN output; context] before the attentional hidden layer
    (its gate, with context gating): in training the hidden state that the output layer and input feeding see is a
    tanh of dropped-out inputs (no unit set to zero), yet differs from the predict-mode state; a mask on the state
    itself would zero about half its units at p = 0.5."""
    model = tiny_model(hidden_dropout=0.5, **options)
    decoder = model.decoder
    rng = np.random.RandomState(4)
    rnn_output = mx.nd.array(rng.uniform(-1, 1, size=(64, 16)))
    context = mx.nd.array(rng.uniform(-1, 1, size=(64, decoder.attention.context_size)))
    embedded = mx.nd.array(rng.uniform(-1, 1, size=(64, 16)))
    predicted = decoder._attentional_hidden(mx.nd, rnn_output, context, embedded).asnumpy()
    with mx.autograd.train_mode():
        trained = decoder._attentional_hidden(mx.nd, rnn_output, context, embedded).asnumpy()
    assert trained.shape == predicted.shape == (64, 16)
    assert np.count_nonzero(trained == 0.0) == 0
    assert np.abs(trained - predicted).max() > 1e-3
