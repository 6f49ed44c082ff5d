"""CaptionModel: beam-search state contract, output layer (weight tying / normalisation), dropout, config, and
the model folder (save / load and its errors)."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
import yaml

from captioning import constants as C
from captioning.decoder import RecurrentDecoderConfig, TransformerDecoderConfig
from captioning.encoder import ImageEncoderConfig
from captioning.cnn import CNNConfig
from captioning.model import CaptionModel, ModelConfig, initialize_model, load_model, save_model_config
from captioning.utils import CaptioningError

V, GRID = 12, (2, 3)


def config(decoder="rnn", **kwargs):
    sections = {"rnn": RecurrentDecoderConfig(num_hidden=16, hidden_dropout=kwargs.pop("hidden_dropout", 0.0))} \
        if decoder == "rnn" else {"transformer": TransformerDecoderConfig(model_size=16, attention_heads=2,
                                                                          feed_forward_num_hidden=16)}
    encoder = ImageEncoderConfig(feature_shape=(5,) + GRID, num_hidden=16)
    return ModelConfig(encoder=encoder, vocab_size=V, decoder=decoder, num_embed=16, max_output_length=9,
                       **sections, **kwargs)


def model_of(cfg):
    mx.random.seed(21)
    model = CaptionModel(cfg)
    model.initialize(mx.init.Xavier(magnitude=2.5))
    return model


def batch(n=2, t=4):
    rng = np.random.RandomState(5)
    return (mx.nd.array(rng.uniform(0, 2, size=(n, 5) + GRID)), mx.nd.array(rng.randint(0, V, size=(n, t))))


@pytest.mark.parametrize("decoder", ["rnn", "transformer"])
def test_states_repeat_and_take_on_axis_0(decoder):
    model = model_of(config(decoder))
    model.hybridize()
    features, words = batch(2)
    beam = 3
    states = [mx.nd.repeat(s, repeats=beam, axis=0) for s in model.encode(features)]
    prev = mx.nd.repeat(words[:, 0], repeats=beam, axis=0)
    logits, attention, states = model.decode_step(prev, states)
    assert logits.shape == (2 * beam, V) and attention.shape == (2 * beam, model.num_positions)
    # rows of the same image are identical; reorder rows as beam search would and check they follow
    np.testing.assert_allclose(logits[0].asnumpy(), logits[2].asnumpy(), rtol=1e-5)
    rows = mx.nd.array([3, 3, 4, 0, 1, 2])
    reordered = [mx.nd.take(s, rows) for s in states]
    next_words = mx.nd.array([1, 2, 3, 4, 5, 6])
    got = model.decode_step(next_words, reordered)[0].asnumpy()
    for row, source in enumerate([3, 3, 4, 0, 1, 2]):
        single = [s[source:source + 1] for s in states]
        expected = model.decode_step(next_words[row:row + 1], single)[0].asnumpy()[0]
        np.testing.assert_allclose(got[row], expected, rtol=1e-4, atol=1e-5)


def test_static_states_are_passed_through():
    model = model_of(config())
    states = model.encode(batch()[0])
    _, _, new_states = model.decode_step(mx.nd.array([2, 2]), states)
    assert len(new_states) == len(states)
    for i in range(model.num_static_states):
        assert new_states[i] is states[i]


def test_weight_tying_shares_the_embedding():
    model = model_of(config(weight_tying=True))
    assert model.output_layer.weight is model.embedding.weight
    names = [name for name in model.collect_params() if name.endswith("weight") and "output" in name]
    assert names == []   # no separate output matrix
    with pytest.raises(CaptioningError, match="--weight-tying needs --num-embed"):
        CaptionModel(config(weight_tying=True).copy(num_embed=8))


def test_weight_normalization_rows_have_norm_g():
    model = model_of(config(weight_normalization=True))
    layer = model.output_layer
    layer.scale.set_data(mx.nd.array(np.arange(1, V + 1, dtype=np.float32).reshape(V, 1)))
    w = layer.normalized_weight(mx.nd, layer.weight.data(), layer.scale.data()).asnumpy()
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), np.arange(1, V + 1), rtol=1e-5)
    # and the logits use it
    x = mx.nd.random.uniform(shape=(2, 16))
    np.testing.assert_allclose(layer(x).asnumpy(), x.asnumpy() @ w.T + layer.bias.data().asnumpy(), rtol=1e-4,
                               atol=1e-5)


def test_gradients_reach_every_parameter():
    model = model_of(config(weight_normalization=True))
    model.hybridize()
    features, words = batch()
    with mx.autograd.record():
        loss = model(features, words).sum()
    loss.backward()
    for name, p in model.collect_params().items():
        assert np.abs(p.grad().asnumpy()).sum() > 0, name


def test_dropout_only_in_training_mode():
    model = model_of(config(hidden_dropout=0.5, embed_dropout=0.3))
    model.hybridize()
    features, words = batch()
    first, second = model(features, words).asnumpy(), model(features, words).asnumpy()
    np.testing.assert_array_equal(first, second)
    with mx.autograd.record(train_mode=True):
        trained = model(features, words).asnumpy()
    assert np.abs(trained - first).max() > 1e-4


def test_fixed_parameters_leave_training_mode_steps_as_they_were():
    """A model with fixed parameters steps through its step constants only in predict mode: in training mode
    (dropout active, as self-critical sampling with --self-critical-sample-dropout runs) it steps exactly as a
    free model, embedding and input dropout included."""
    cfg = config(embed_dropout=0.5)
    cfg.rnn.dropout_inputs = 0.3
    free, fixed = model_of(cfg), model_of(cfg)
    fixed.fix_parameters()
    assert fixed.parameters_fixed and not free.parameters_fixed
    features, words = batch(2)
    outputs = []
    for model in (free, fixed):
        mx.random.seed(3)
        with mx.autograd.train_mode():
            outputs.append(model.decode_step(words[:, 0], model.encode(features))[0].asnumpy())
    np.testing.assert_array_equal(outputs[1], outputs[0])
    with mx.autograd.predict_mode():
        predicted = fixed.decode_step(words[:, 0], fixed.encode(features))[0].asnumpy()
    assert np.abs(predicted - outputs[0]).max() > 1e-3    # dropout made the training-mode step differ


def test_parameters_fixed_for_a_block_step_as_a_model_fixed_for_good():
    """``with model.fixed_parameters():`` (the checkpoint decoder during training) steps bit for bit as a model
    whose parameters were fixed for good (the captioner's); after the block the model is free again."""
    cfg = config(weight_normalization=True)
    training, captioning = model_of(cfg), model_of(cfg)
    for model in (training, captioning):
        model.hybridize()
    captioning.fix_parameters()
    features, words = batch(2)
    free = training.decode_step(words[:, 0], training.encode(features))[0].asnumpy()
    with training.fixed_parameters():
        assert training.parameters_fixed
        inside = training.decode_step(words[:, 0], training.encode(features))[0].asnumpy()
    assert not training.parameters_fixed
    np.testing.assert_array_equal(inside, captioning.decode_step(words[:, 0], captioning.encode(features))[0].asnumpy())
    np.testing.assert_allclose(inside, free, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(training.decode_step(words[:, 0], training.encode(features))[0].asnumpy(), free)
    with captioning.fixed_parameters():
        pass
    assert captioning.parameters_fixed     # fixed for good stays fixed


def test_config_yaml_round_trip(tmp_path):
    cfg = config(weight_normalization=True, image_cnn=CNNConfig(model_path="cnn/x", layer="head"))
    save_model_config(cfg, str(tmp_path))
    assert ModelConfig.load(str(tmp_path / C.CONFIG_NAME)) == cfg
    assert (tmp_path / C.VERSION_NAME).read_text().strip()
    assert "image_cnn" in (tmp_path / C.CONFIG_NAME).read_text()
    assert "cnn_config" not in (tmp_path / C.CONFIG_NAME).read_text()


def test_format_1_folder_with_cnn_config_mapping_still_loads(tmp_path):
    """A config written before the typed image_cnn field (format_version 1, an untyped cnn_config mapping)."""
    folder, _, _ = write_folder(tmp_path, config())
    values = yaml.safe_load((folder / C.CONFIG_NAME).read_text())
    del values["image_cnn"]
    values.update(format_version=1, cnn_config={"model_path": "cnn/x", "layer": "head", "epoch": 0,
                                                "image_size": [3, 128, 128]})
    (folder / C.CONFIG_NAME).write_text(yaml.safe_dump(values))
    model, _ = load_model(str(folder))
    assert model.config.image_cnn == CNNConfig(model_path="cnn/x", layer="head", image_size=(3, 128, 128))
    assert model.config.format_version == C.MODEL_FORMAT_VERSION == 2
    assert model.config.cnn_config["layer"] == "head"      # the deprecated read-only view
    # the deprecated keyword still builds the typed field
    assert config(cnn_config={"model_path": "m", "layer": "l"}).image_cnn == CNNConfig(model_path="m", layer="l")


def test_wrong_typed_config_value_is_a_one_line_error(tmp_path):
    folder, _, _ = write_folder(tmp_path, config())
    values = yaml.safe_load((folder / C.CONFIG_NAME).read_text())
    values["vocab_size"] = "eighty"
    (folder / C.CONFIG_NAME).write_text(yaml.safe_dump(values))
    with pytest.raises(CaptioningError, match=r"config: not a valid model config .*vocab_size.*'eighty'"):
        load_model(str(folder))


def test_empty_or_corrupt_params_best_names_the_cause(tmp_path):
    folder, _, _ = write_folder(tmp_path, config())
    (folder / C.PARAMS_BEST_NAME).write_bytes(b"")
    with pytest.raises(CaptioningError, match="params.best: empty file, not parameters"):
        load_model(str(folder))
    (folder / C.PARAMS_BEST_NAME).write_bytes(b"\x00" * 40)
    with pytest.raises(CaptioningError) as error:
        load_model(str(folder))
    assert "params.best: cannot load the parameters (" in str(error.value)
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)


def test_normal_embed_init_touches_only_the_target_embedding():
    cfg = config("transformer").copy(num_embed=64)
    model = CaptionModel(cfg)
    initialize_model(model, [mx.cpu()], (5,) + GRID, embed_init="normal", num_embed=64, scale=30.0)
    embed = model.collect_params()["caption_model_target_embed_weight"].data().asnumpy()
    proj = [p for n, p in model.collect_params().items() if "embed_proj_weight" in n]
    assert proj and abs(embed.std() - 64 ** -0.5) < 0.03
    # the transformer's input projection keeps the (here very wide) Xavier initialisation
    assert proj[0].data().asnumpy().std() > 0.3


def write_folder(tmp_path, cfg=None, checkpoint=None):
    cfg = cfg or config()
    model = model_of(cfg)
    folder = tmp_path / "model"
    folder.mkdir()
    save_model_config(cfg, str(folder))
    vocab = {w: i for i, w in enumerate(C.VOCAB_SYMBOLS + ["w%d" % i for i in range(V - 4)])}
    (folder / C.VOCAB_TRG_NAME).write_text(json.dumps(vocab))
    name = C.PARAMS_BEST_NAME if checkpoint is None else C.PARAMS_NAME % checkpoint
    model.save_parameters(str(folder / name))
    return folder, model, vocab


@pytest.mark.parametrize("checkpoint", [None, 3])
def test_load_model_round_trip(tmp_path, checkpoint):
    folder, model, vocab = write_folder(tmp_path, config(weight_tying=True, weight_normalization=True), checkpoint)
    loaded, loaded_vocab = load_model(str(folder), checkpoint, mx.cpu())
    assert loaded_vocab == vocab
    features, words = batch()
    np.testing.assert_allclose(loaded(features, words).asnumpy(), model(features, words).asnumpy(), rtol=1e-5)


def test_the_captioner_loads_models_with_fixed_parameters(tmp_path):
    """``inference.load_models`` (the captioner's loader) fixes the parameters: its steps use the step
    constants, and give the logits of the saved model."""
    from captioning.inference import load_models
    folder, model, _ = write_folder(tmp_path, config(weight_normalization=True))
    (loaded,), _ = load_models([str(folder)], None, mx.cpu())
    assert loaded.parameters_fixed and not model.parameters_fixed
    features, words = batch()
    got = loaded.decode_step(words[:, 0], loaded.encode(features))[0].asnumpy()
    expected = model.decode_step(words[:, 0], model.encode(features))[0].asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert len(loaded.step_constants(mx.cpu()).arrays) == 1 + loaded.decoder.num_step_constants
    # other parameters loaded into the fixed model: its steps follow them
    other = model_of(config(weight_normalization=True))
    for param in other.collect_params().values():
        param.set_data(param.data() * 1.5)
    other.save_parameters(str(tmp_path / "other.params"))
    loaded.load_parameters(str(tmp_path / "other.params"), ctx=mx.cpu())
    got = loaded.decode_step(words[:, 0], loaded.encode(features))[0].asnumpy()
    expected = other.decode_step(words[:, 0], other.encode(features))[0].asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_load_model_errors(tmp_path):
    with pytest.raises(CaptioningError, match="no such model folder"):
        load_model(str(tmp_path / "absent"))
    folder, _, _ = write_folder(tmp_path)
    with pytest.raises(CaptioningError, match=r"params\.00007: missing \(checkpoints in the folder: params.best\)"):
        load_model(str(folder), 7)
    os.remove(folder / C.VOCAB_TRG_NAME)
    with pytest.raises(CaptioningError, match="vocab.trg.0.json: missing"):
        load_model(str(folder))
    text = (folder / C.CONFIG_NAME).read_text()
    (folder / C.CONFIG_NAME).write_text(text.replace("format_version: %d" % C.MODEL_FORMAT_VERSION,
                                                     "format_version: %d" % (C.MODEL_FORMAT_VERSION + 1)))
    with pytest.raises(CaptioningError, match="newer than this captioning"):
        load_model(str(folder))
    os.remove(folder / C.CONFIG_NAME)
    with pytest.raises(CaptioningError, match="config: missing"):
        load_model(str(folder))


def test_load_model_wrong_params_and_vocab_size(tmp_path):
    folder, _, vocab = write_folder(tmp_path)
    (folder / C.PARAMS_BEST_NAME).write_bytes(b"not a params file")
    with pytest.raises(CaptioningError, match="params.best: cannot load the parameters"):
        load_model(str(folder))
    vocab["extra"] = len(vocab)
    (folder / C.VOCAB_TRG_NAME).write_text(json.dumps(vocab))
    with pytest.raises(CaptioningError, match="13 words but the model config says 12"):
        load_model(str(folder))


def test_config_errors():
    with pytest.raises(CaptioningError, match="no 'transformer' section"):
        CaptionModel(config().copy(decoder="transformer"))
    bad = config("transformer")
    bad.transformer.preprocess = "nq"
    with pytest.raises(CaptioningError, match="--transformer-preprocess 'nq'"):
        CaptionModel(bad)


def test_teacher_forcing_graphs_skip_static_allocation_unless_asked():
    model = model_of(config())
    model.hybridize(static_alloc=True)
    features, words = batch()
    model(features, words)
    model.encode(features)
    flags = {graph.kind: dict(graph._flags) for graph in model._graphs.values()}
    assert flags["sequence"]["static_alloc"] is False and flags["encode"]["static_alloc"] is True
    model.hybridize(static_alloc=True, sequence_static_alloc=True)
    assert all(dict(graph._flags)["static_alloc"] for graph in model._graphs.values())
