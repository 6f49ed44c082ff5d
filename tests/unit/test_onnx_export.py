"""export_onnx and onnx_model: every decoder and attention type exports, and the exported graphs run by onnxruntime
give the MXNet model's encode and decode_step (beam rows, shared static states and reordered rows included);
int8 quantizes the big matrix products; a damaged or foreign export folder is refused in one line."""
import json
import os
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
from captioning import constants as C
from captioning import export_onnx
from captioning import onnx_model as O
from captioning.decoder import ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig
from captioning.encoder import ImageEncoderConfig
from captioning.model import CaptionModel, ModelConfig, load_model, save_model_config
from captioning.utils import CaptioningError
from captioning.vocab import build_vocab, save_vocab

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

WORDS = "a dog cat runs on the red grass"
FEATURES = (5, 2, 3)
HIDDEN = 16


def make_folder(path, decoder="rnn", feature_shape=FEATURES, encoder=None, model=None, **options):
    """A model folder with random parameters (seeded): config, version, vocabulary, params.best."""
    vocab = build_vocab([WORDS])
    sections = {"rnn": lambda: RecurrentDecoderConfig(num_hidden=HIDDEN, **options),
                "transformer": lambda: TransformerDecoderConfig(model_size=HIDDEN, attention_heads=2,
                                                                feed_forward_num_hidden=HIDDEN, **options),
                "cnn": lambda: ConvolutionalDecoderConfig(num_hidden=HIDDEN, **options)}
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=feature_shape, num_hidden=HIDDEN, **(encoder or {})),
                         vocab_size=len(vocab), decoder=decoder, num_embed=HIDDEN, max_output_length=7,
                         **{decoder: sections[decoder]()}, **(model or {}))
    mx.random.seed(11)
    network = CaptionModel(config)
    network.initialize(mx.init.Xavier(magnitude=2.5))
    network(mx.nd.zeros((1,) + tuple(feature_shape)), mx.nd.zeros((1, 1)))
    os.makedirs(path)
    save_model_config(config, str(path))
    save_vocab(vocab, os.path.join(path, C.VOCAB_TRG_NAME))
    network.save_parameters(os.path.join(path, C.PARAMS_BEST_NAME))
    return str(path)


def export(folder, output, **kwargs):
    return export_onnx.export(export_onnx.ExportConfig(model_folder=folder, output=str(output), **kwargs))


def assert_close(expected, got, what):
    expected = expected.asnumpy() if hasattr(expected, "asnumpy") else expected
    assert expected.shape == got.shape, what
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=what)


def compare_steps(model, runtime, beam_size, steps=4, drop_after=None):
    """Run both models from the same features for ``steps`` steps (each feeding its own states back, rows
    reordered between steps as a beam search does; after step ``drop_after`` the first input leaves the batch,
    its static states too) and compare every output."""
    rng = np.random.RandomState(3)
    features = rng.uniform(0, 2, (2,) + tuple(model.config.encoder.feature_shape)).astype(np.float32)
    states, got_states = model.encode(mx.nd.array(features)), runtime.encode(features)
    for i, (a, b) in enumerate(zip(states, got_states)):
        assert_close(a, b, "encode state %d" % i)
    n = model.num_static_states
    if beam_size > 1:
        states = states[:n] + [mx.nd.repeat(s, beam_size, axis=0) for s in states[n:]]
        got_states = got_states[:n] + [np.repeat(s, beam_size, axis=0) for s in got_states[n:]]
    constants = model.step_constants(mx.cpu())
    rows = 2 * beam_size
    for step in range(steps):
        words = rng.randint(0, model.config.vocab_size, rows).astype(np.float32)
        logits, attention, states = model.decode_step(mx.nd.array(words), states, beam_size, constants)
        got_logits, got_attention, got_states = runtime.decode_step(words, got_states, beam_size)
        assert_close(logits, got_logits, "logits, step %d" % step)
        assert_close(attention, got_attention, "attention, step %d" % step)
        assert len(states) == len(got_states)
        for i, (a, b) in enumerate(zip(states, got_states)):
            assert_close(a, b, "state %d after step %d" % (i, step))
        # reorder the beam rows within each input, as a search does
        order = np.concatenate([k * beam_size + rng.permutation(beam_size) for k in range(rows // beam_size)])
        states = states[:n] + [mx.nd.take(s, mx.nd.array(order)) for s in states[n:]]
        got_states = got_states[:n] + [s[order] for s in got_states[n:]]
        if step == drop_after:     # the first input's rows leave; with K > 1 its static row too
            static_rows = slice(1, None) if beam_size > 1 else slice(beam_size, None)
            states = [s[static_rows] if i < n else s[beam_size:] for i, s in enumerate(states)]
            got_states = [s[static_rows] if i < n else s[beam_size:] for i, s in enumerate(got_states)]
            rows -= beam_size


RNN_ATTENTIONS = [
    dict(attention_type="mlp"),
    dict(attention_type="mlp", attention_use_prev_word=True, layer_normalization=True, cell_type="lstm-ln"),
    dict(attention_type="coverage", attention_coverage_type="count"),
    dict(attention_type="coverage", attention_coverage_type="tanh", attention_coverage_num_hidden=2),
    dict(attention_type="coverage", attention_coverage_type="gru", attention_coverage_num_hidden=2),
    dict(attention_type="dot", attention_num_hidden=8, scale_dot_attention=True),
    dict(attention_type="bilinear", cell_type="gru"),
    dict(attention_type="mhdot", attention_mhdot_heads=2),
    dict(attention_type="location", input_feeding=False, state_init="zero"),
    dict(attention_type="fixed", state_init="avg", cell_type="gru-ln"),
    dict(attention_type="mlp", num_layers=2, attention_in_upper_layers=True, context_gating=True,
         residual_connections=True),
]
CASES = [("rnn", options, {}, {}) for options in RNN_ATTENTIONS] + [
    ("rnn", {}, dict(global_descriptor=True, positional_embedding="fixed"), dict(weight_normalization=True)),
    ("rnn", {}, dict(positional_embedding="learned"), dict(weight_tying=True)),
    ("transformer", {}, {}, {}),
    ("transformer", dict(num_layers=2, positional_embedding="learned", preprocess="", postprocess="rn"), {},
     dict(weight_normalization=True)),
    ("cnn", {}, {}, {}),
    ("cnn", dict(kernel_width=1, project_qkv=True, activation_type="relu", num_layers=2), {}, {}),
]


def _case_id(case):
    decoder, options, encoder, model = case
    return "-".join([decoder] + ["%s=%s" % item for item in sorted({**options, **encoder, **model}.items())])


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_exported_graphs_equal_the_mxnet_model(case, tmp_path):
    decoder, options, encoder, model_options = case
    folder = make_folder(tmp_path / "model", decoder, encoder=encoder, model=model_options, **options)
    manifest = export(folder, tmp_path / "export")
    model, _ = load_model(folder, hybridize=True)
    model.fix_parameters()
    runtime = O.OnnxCaptionModel(str(tmp_path / "export"), threads=1)
    assert runtime.num_static_states == model.num_static_states == manifest["num_static_states"]
    assert runtime.feature_shape == FEATURES and runtime.vocab_size == model.config.vocab_size
    assert runtime.step_constants() is None and runtime.max_output_length == 7
    compare_steps(model, runtime, beam_size=1)
    compare_steps(model, runtime, beam_size=3, steps=3)
    compare_steps(model, runtime, beam_size=2, steps=3, drop_after=1)


def test_feature_maps_of_one_position_and_of_other_grids(tmp_path):
    for shape in [(6, 1, 1), (3, 4, 2)]:
        folder = make_folder(tmp_path / ("model%d" % shape[0]), feature_shape=shape)
        export(folder, tmp_path / ("export%d" % shape[0]))
        model, _ = load_model(folder)
        model.fix_parameters()
        runtime = O.OnnxCaptionModel(str(tmp_path / ("export%d" % shape[0])))
        assert runtime.feature_shape == shape
        compare_steps(model, runtime, beam_size=2, steps=2)


def test_the_manifest_describes_the_folder(tmp_path):
    folder = make_folder(tmp_path / "model")
    manifest = export(folder, tmp_path / "export")
    written = json.loads((tmp_path / "export" / O.MANIFEST_NAME).read_text())
    assert written == manifest and O.is_export(str(tmp_path / "export"))
    assert sorted(written["files"]) == sorted(["encode.onnx", "step.onnx", "vocab.trg.0.json", "config.yaml"])
    for name, digest in written["files"].items():
        assert O.sha256_file(str(tmp_path / "export" / name)) == digest
    assert written["feature_shape"] == list(FEATURES) and written["attention_positions"] == 6
    assert written["quantize"] is None and written["image_encoder"] is None
    assert written["source"]["params"] == C.PARAMS_BEST_NAME
    assert (tmp_path / "export" / "config.yaml").read_bytes() == (tmp_path / "model" / C.CONFIG_NAME).read_bytes()
    assert not O.is_export(folder)
    step = onnx.load(str(tmp_path / "export" / "step.onnx"))
    assert [i.name for i in step.graph.input] == O.step_input_names(written["num_states"])
    assert step.opset_import[0].version == export_onnx.OPSET
    # the batch axis of every input is dynamic
    assert all(not i.type.tensor_type.shape.dim[0].HasField("dim_value") for i in step.graph.input)


def test_int8_quantizes_the_big_products_and_stays_close(tmp_path):
    folder = make_folder(tmp_path / "model", model=dict(weight_normalization=True))
    export(folder, tmp_path / "fp32")
    manifest = export(folder, tmp_path / "int8", quantize="int8")
    assert manifest["quantize"] == "int8"
    step = onnx.load(str(tmp_path / "int8" / "step.onnx"))
    ops = [node.op_type for node in step.graph.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and "Gemm" not in ops
    assert export_onnx.constant_matmuls(step) == []        # every product by a weight is in int8
    floats = {i.name: list(i.dims) for i in step.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    # neither the (normalised) output layer nor the RNN's recurrent, the attention's query or the hidden layer's
    # weights are left in float32
    leftover = [name for name, dims in floats.items() if sorted(dims) == sorted([manifest["vocab_size"], HIDDEN])
                or any(key in name for key in ("h2h_weight", "att_q_weight", "hidden_weight"))]
    assert not leftover, leftover
    # the RNN's table of projected embeddings (V x 4H) is stored in int8
    int8 = {i.name: list(i.dims) for i in step.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert [manifest["vocab_size"], 4 * HIDDEN] in int8.values()
    assert [manifest["vocab_size"], 4 * HIDDEN] not in floats.values()
    assert len({node.name for node in step.graph.node}) == len(step.graph.node)
    assert sum(1 for op in ops if op == "MatMulInteger") >= 4
    fp32 = O.OnnxCaptionModel(str(tmp_path / "fp32"))
    int8 = O.OnnxCaptionModel(str(tmp_path / "int8"))
    features = np.random.RandomState(0).uniform(0, 2, (2,) + FEATURES).astype(np.float32)
    states, states8 = fp32.encode(features), int8.encode(features)
    words = np.array([C.BOS_ID, C.BOS_ID], dtype=np.float32)
    for _ in range(3):
        logits, _, states = fp32.decode_step(words, states)
        logits8, _, states8 = int8.decode_step(words, states8)
        spread = float(logits.max() - logits.min())
        assert np.abs(logits8 - logits).max() < 0.1 * spread
        assert np.abs(logits8 - logits).max() > 0.0        # it did change something
        words = logits.argmax(axis=1).astype(np.float32)
    assert os.path.getsize(tmp_path / "int8" / "step.onnx") < os.path.getsize(tmp_path / "fp32" / "step.onnx")


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    folder = make_folder(root / "model")
    export(folder, root / "export")
    return root / "export"


def copy_of(exported, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(exported, target)
    return target


def test_a_missing_graph_is_named(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "step.onnx").unlink()
    with pytest.raises(CaptioningError, match=r"step\.onnx: missing"):
        O.OnnxCaptionModel(str(folder))


def test_an_altered_graph_fails_its_checksum(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    with open(folder / "encode.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CaptioningError, match=r"encode\.onnx: its sha256 differs"):
        O.OnnxCaptionModel(str(folder))


def test_a_graph_with_other_inputs_is_refused(exported, tmp_path):
    from onnx import TensorProto, helper
    folder = copy_of(exported, tmp_path)
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["state_0"])], "other",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("state_0", TensorProto.FLOAT, [None, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / "encode.onnx"))
    manifest = json.loads((folder / O.MANIFEST_NAME).read_text())
    manifest["files"]["encode.onnx"] = O.sha256_file(str(folder / "encode.onnx"))
    (folder / O.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CaptioningError, match=r"encode\.onnx: the graph's inputs are \(images\) but the export "
                                              r"needs \(features\)"):
        O.OnnxCaptionModel(str(folder))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="other"), "not a manifest of captioning.export_onnx"),
    (lambda m: m.update(format_version=99), "export format version 99"),
    (lambda m: m["files"].update({"../x": "00"}), "not a plain name"),
    (lambda m: m["files"].pop("step.onnx"), "lists no step.onnx"),
    (lambda m: m.update(num_states="3"), "'num_states' must be"),
])
def test_a_bad_manifest_is_refused(exported, tmp_path, change, message):
    folder = copy_of(exported, tmp_path)
    manifest = json.loads((folder / O.MANIFEST_NAME).read_text())
    change(manifest)
    (folder / O.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CaptioningError, match=message):
        O.OnnxCaptionModel(str(folder))


def test_features_of_another_shape_are_refused(exported):
    runtime = O.OnnxCaptionModel(str(exported))
    with pytest.raises(CaptioningError, match=r"features of shape \(5, 3, 2\), the exported model takes"):
        runtime.encode(np.zeros((1, 5, 3, 2), np.float32))


def test_is_export_needs_the_manifest(exported, tmp_path):
    assert O.is_export(str(exported))
    folder = copy_of(exported, tmp_path)
    (folder / O.MANIFEST_NAME).write_text("{not json")
    assert not O.is_export(str(folder)) and not O.is_export(str(tmp_path / "nothing"))


def test_an_existing_output_is_replaced_only_when_it_is_an_export(exported, tmp_path):
    model = make_folder(tmp_path / "model")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(CaptioningError, match="exists; give another --output, or --overwrite-output"):
        export(model, other)
    with pytest.raises(CaptioningError, match="holds no manifest.json of captioning.export_onnx"):
        export(model, other, overwrite_output=True)
    assert (other / "keep.txt").read_text() == "mine"
    earlier = copy_of(exported, tmp_path)
    (earlier / "stray.txt").write_text("x")
    export(model, earlier, overwrite_output=True)
    assert not (earlier / "stray.txt").exists() and O.is_export(str(earlier))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "model", "other"]   # no temporary folder left
    with pytest.raises(CaptioningError, match="holds the model folder"):
        export(model, tmp_path, overwrite_output=True)


def test_an_operator_that_does_not_convert_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    model = make_folder(tmp_path / "model")

    def refuse(*args, **kwargs):
        raise AttributeError("No conversion function registered for op type _contrib_Foo yet.")

    monkeypatch.setattr(mx.onnx, "export_model", refuse)
    with pytest.raises(CaptioningError) as info:
        export(model, tmp_path / "out" / "export")
    assert str(info.value) == ("%s: its encode graph cannot be exported to ONNX (No conversion function registered "
                               "for op type _contrib_Foo yet.)" % model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]       # nor the parent folder it made


def test_an_unfaithful_export_is_refused(tmp_path, monkeypatch):
    model = make_folder(tmp_path / "model")
    original = export_onnx._finish_graph

    def perturbed(proto, spec):
        proto = original(proto, spec)
        if spec.kind == "step":       # scale the logits
            for node in proto.graph.node:
                if node.output[0] == O.LOGITS_OUTPUT:
                    node.op_type, node.input[:] = "Add", [node.input[0], node.input[0]]
        return proto

    monkeypatch.setattr(export_onnx, "_finish_graph", perturbed)
    with pytest.raises(CaptioningError, match="its logits differs from the MXNet model's .* cannot be exported "
                                              "faithfully"):
        export(model, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_reshape_codes_translate_as_mxnet_reshapes(tmp_path):
    """The translation of MXNet's special reshape codes, on every code, against MXNet's own reshape."""
    import onnxruntime as ort
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for shape in [(-3, -2), (0, -3, 0), (-4, -1, 2, -2), (-4, 1, -1, 0, 0, 0), (0, 0, -4, 2, -1, 0),
                  (-3, -3), (0, -1), (-2,)]:
        data = mx.sym.var("x")
        spec = export_onnx.GraphSpec("reshape", mx.sym.Group([mx.sym.reshape(data, shape=shape)]), {},
                                     {"x": (x.shape, (None, None, None, None))}, ["y"])
        proto = export_onnx._export_spec(spec, str(tmp_path), "test")
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], mx.nd.reshape(mx.nd.array(x), shape).asnumpy(),
                                      err_msg=str(shape))


def test_the_deploy_page_sketch_decodes_as_the_runtime_model(exported, tmp_path, capsys):
    """docs/deploy.md's numpy + onnxruntime greedy decode runs and gives the words `OnnxCaptionModel` gives."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    code = text.split("## From another Python")[1].split("```python\n")[1].split("```")[0]
    features = np.random.RandomState(1).uniform(0, 2, FEATURES).astype(np.float32)
    np.save(tmp_path / "photo.jpg.npy", features)
    code = code.replace('"models.onnx-export"', repr(str(exported))).replace('"photo.jpg.npy"',
                                                                               repr(str(tmp_path / "photo.jpg.npy")))
    exec(compile(code, "docs/deploy.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    runtime = O.OnnxCaptionModel(str(exported))
    vocab = O.load_vocab(str(exported))
    words = {i: w for w, i in vocab.items()}
    states, previous, caption = runtime.encode(features[None]), np.array([C.BOS_ID], np.float32), []
    for _ in range(runtime.max_output_length):
        logits, _, states = runtime.decode_step(previous, states)
        word = int(logits[0].argmax())
        if word == C.EOS_ID:
            break
        caption.append(words[word])
        previous = np.array([word], np.float32)
    assert caption and printed == " ".join(caption)
