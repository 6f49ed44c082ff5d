"""The fine-tuned CNN layers: cutting the CNN's graph, gradients into the layers, frozen batch-norm statistics."""
import json

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from captioning import finetune, model as model_module, synthetic
from captioning.cnn import CNNConfig
from captioning.encoder import ImageEncoderConfig
from captioning.model import CaptionModel, ModelConfig
from captioning.decoder import ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig
from captioning.utils import CaptioningError

START, END = "stage4_unit1_plus", "stage4_unit2_conv2"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A small gallery-style CNN checkpoint (random weights) and its layers' config, S -> L as above."""
    prefix = str(tmp_path_factory.mktemp("cnn") / "net")
    symbol = synthetic.build_symbol(widths=(4, 4, 8, 8), num_classes=5)
    args, auxs = synthetic.init_params(symbol, seed=3, image_size=32)
    rng = np.random.RandomState(0)
    for name in auxs:     # statistics other than 0/1, so that using them (or not) shows
        auxs[name] = mx.nd.array(rng.uniform(0.5, 1.5, auxs[name].shape) if name.endswith("var")
                                 else rng.uniform(-0.5, 0.5, auxs[name].shape))
    synthetic.save_checkpoint(prefix, symbol, args, auxs, epoch=0)
    config = finetune.create_config(CNNConfig(model_path=prefix, layer=END, epoch=0, image_size=(3, 32, 32)), START,
                                    learning_rate_multiplier=1.0, start_update=0)
    return prefix, symbol, config


def test_the_cut_graph_computes_what_the_cnn_computes_between_the_layers(cnn):
    prefix, symbol, config = cnn
    assert config.input_shape == (8, 2, 2) and config.output_shape == (8, 2, 2)
    images = mx.nd.array(np.random.RandomState(1).uniform(0, 255, (2, 3, 32, 32)))
    _, arg_params, aux_params = mx.model.load_checkpoint(prefix, 0)
    internals = symbol.get_internals()

    def run(out, **inputs):
        executor = out.bind(mx.cpu(), dict(arg_params, **inputs), aux_states=aux_params, grad_req="null")
        return executor.forward(is_train=False)[0]

    middle = run(internals[START + "_output"], data=images)
    expected = run(internals[END + "_output"], data=images)
    layers = finetune.create_layers(config)
    layers.initialize(mx.init.Zero())
    finetune.load_cnn_parameters(layers, config, [mx.cpu()])
    np.testing.assert_allclose(layers(middle).asnumpy(), expected.asnumpy(), rtol=1e-4, atol=1e-5)
    # the CNN's parameter names, every batch norm on its stored statistics
    names = symbol.list_arguments() + symbol.list_auxiliary_states()
    assert set(layers.collect_params().keys()) == {n for n in names if n.startswith("stage4_unit2_")}
    nodes = json.loads(config.symbol)["nodes"]
    assert all(n["attrs"]["use_global_stats"] == "True" for n in nodes if n["op"] == "BatchNorm")


@pytest.mark.parametrize("start, end, message", [
    ("stage4_unit2_conv2", "stage4_unit1_plus", "does not come before"),
    ("stage4_unit2_bn1", "stage4_unit2_plus", "does not cut the CNN"),     # the block's shortcut goes around it
    ("stage9_unit1_plus", END, "has no layer 'stage9_unit1_plus'"),
    (START, "no_such_layer", "has no layer 'no_such_layer'"),
])
def test_cut_errors_name_the_layer(cnn, start, end, message):
    _, symbol, _ = cnn
    with pytest.raises(CaptioningError, match=message):
        finetune.cut_between(symbol.tojson(), start, end, "net-symbol.json")


DECODERS = {"rnn": dict(rnn=RecurrentDecoderConfig(num_hidden=8, hidden_dropout=0.0)),
            "transformer": dict(transformer=TransformerDecoderConfig(model_size=8, attention_heads=2,
                                                                     feed_forward_num_hidden=16)),
            "cnn": dict(cnn=ConvolutionalDecoderConfig(num_hidden=8))}


def _model(config: finetune.FineTuneConfig, decoder: str = "rnn") -> CaptionModel:
    model_config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=config.output_shape, num_hidden=8),
                               vocab_size=12, decoder=decoder, num_embed=8, fine_tune=config, **DECODERS[decoder])
    model = CaptionModel(model_config)
    model.hybridize()
    model_module.initialize_model(model, [mx.cpu()], config.input_shape, num_embed=8)
    return model


def _loss(model, features, words):
    logits = model(features, words)
    return -mx.nd.pick(mx.nd.log_softmax(logits, axis=-1), words, axis=-1).sum()


def test_gradients_reach_the_cnn_layers_and_match_finite_differences(cnn):
    mx.random.seed(2)
    model = _model(cnn[2])
    rng = np.random.RandomState(4)
    features = mx.nd.array(rng.uniform(0, 2, (3,) + tuple(cnn[2].input_shape)))
    words = mx.nd.array(rng.randint(4, 12, (3, 5)))
    weight = model.image_layers.collect_params()["stage4_unit2_conv1_weight"]
    with autograd.record():
        loss = _loss(model, features, words)
    loss.backward()
    grad = weight.grad().asnumpy().copy()
    assert np.abs(grad).max() > 0, "no gradient reached the CNN layers"
    # central differences at the three largest gradient entries
    values = weight.data().asnumpy().copy()
    for flat in np.argsort(-np.abs(grad).reshape(-1))[:3]:
        index = np.unravel_index(flat, grad.shape)
        eps = 1e-2
        costs = []
        for sign in (1, -1):
            changed = values.copy()
            changed[index] += sign * eps
            weight.set_data(mx.nd.array(changed))
            costs.append(float(_loss(model, features, words).asscalar()))
        weight.set_data(mx.nd.array(values))
        numeric = (costs[0] - costs[1]) / (2 * eps)
        assert numeric == pytest.approx(float(grad[index]), rel=0.05, abs=1e-3)


def test_training_updates_the_layers_but_not_their_batch_norm_statistics(cnn):
    model = _model(cnn[2])
    params = model.image_layers.collect_params()
    before = {name: p.data().asnumpy().copy() for name, p in params.items()}
    trainer = mx.gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": 0.5})
    rng = np.random.RandomState(5)
    for _ in range(3):
        features = mx.nd.array(rng.uniform(0, 2, (4,) + tuple(cnn[2].input_shape)))
        words = mx.nd.array(rng.randint(4, 12, (4, 5)))
        with autograd.record(train_mode=True):
            loss = _loss(model, features, words)
        loss.backward()
        trainer.step(4)
    for name, p in params.items():
        changed = not np.array_equal(p.data().asnumpy(), before[name])
        assert changed == (not name.endswith(("_moving_mean", "_moving_var"))), name


def test_held_fixed_the_layers_get_no_gradient(cnn):
    model = _model(cnn[2])
    finetune.set_trainable(model.image_layers, False)
    assert all(p.grad_req == "null" for p in model.image_layers.collect_params().values())
    features = mx.nd.ones((2,) + tuple(cnn[2].input_shape))
    words = mx.nd.array([[4, 5, 6], [7, 8, 9]])
    with autograd.record():
        loss = _loss(model, features, words)
    loss.backward()
    assert model.encoder.collect_params()["caption_model_encoder_projection_weight"].grad().abs().sum() > 0
    finetune.set_trainable(model.image_layers, True)
    weight = model.image_layers.collect_params()["stage4_unit2_conv2_weight"]
    with autograd.record():
        loss = _loss(model, features, words)
    loss.backward()
    assert weight.grad_req == "write" and float(weight.grad().abs().sum().asscalar()) > 0
    assert model.image_layers.collect_params()["stage4_unit2_bn1_moving_mean"].grad_req == "null"


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_trains_and_captions_through_the_layers(cnn, decoder):
    model = _model(cnn[2], decoder)
    rng = np.random.RandomState(6)
    features = mx.nd.array(rng.uniform(0, 2, (2,) + tuple(cnn[2].input_shape)))
    with autograd.record(train_mode=True):
        loss = _loss(model, features, mx.nd.array(rng.randint(4, 12, (2, 4))))
    loss.backward()
    grad = model.image_layers.collect_params()["stage4_unit2_conv2_weight"].grad()
    assert float(grad.abs().sum().asscalar()) > 0
    # inference: the features of layer S go through the layers before the encoder
    model.fix_parameters()
    states = model.encode(features)
    layers_out = model.image_layers(features)
    assert layers_out.shape == (2,) + tuple(cnn[2].output_shape)
    logits, _, _ = model.decode_step(mx.nd.full((2,), 2), states)
    assert logits.shape == (2, 12) and np.isfinite(logits.asnumpy()).all()
