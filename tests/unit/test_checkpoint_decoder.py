"""CheckpointDecoder: fixed seeded sample of images, all references of each image (repeated lines, several target
files), BLEU/chrF from sacrebleu and CIDEr-D x100."""
import numpy as np
import pytest
import sacrebleu

from captioning import constants as C
from captioning import features
from captioning.checkpoint_decoder import CheckpointDecoder
from captioning.cider import corpus_cider
from captioning.utils import CaptioningError

from .test_beam_search import MarkovModel


class Store:
    def __init__(self, features):
        self.features = features
        self.requested = []

    def __len__(self):
        return len(self.features)

    def get_batch(self, indices):
        self.requested.extend(indices)
        return self.features[list(indices)]


def setup_model():
    model = MarkovModel(vocab_size=10, seed=1, scale=1.5, bias_scale=0.5)
    model.table[:, C.EOS_ID] = model.table.max(axis=1)
    vocab = {s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}
    for i, w in enumerate(["a", "dog", "runs", "cat", "sits", "here"]):
        vocab[w] = 4 + i
    return model, vocab, model.features(20, seed=2).asnumpy()


def test_scores_match_sacrebleu_and_cider():
    model, vocab, feats = setup_model()
    decoder = CheckpointDecoder(Store(feats), ["a dog runs"] * 20, sample_size=-1, beam_size=2, batch_size=6,
                                max_output_length=6)
    hypotheses = decoder.decode(model, vocab)
    assert len(hypotheses) == 20
    # two references per image, partly right so that the scores are neither 0 nor 100
    first = ["a dog runs"] * 20
    first[:10] = hypotheses[:10]
    second = ["dog sits here"] * 20   # images 2, 5, 7, 8 (empty captions) have no "a": its idf is not 0
    decoder.references = [[a, b] for a, b in zip(first, second)]
    metrics = decoder.decode_and_evaluate(model, vocab)
    assert metrics["bleu-val"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [first, second],
                                                                      tokenize="none").score)
    assert metrics["chrf-val"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [first, second]).score)
    assert metrics["cider-val"] == pytest.approx(100 * corpus_cider(hypotheses, decoder.references))
    assert 0 < metrics["bleu-val"] < 100 and metrics["cider-val"] > 0


def test_sample_is_fixed_and_seeded():
    model, vocab, feats = setup_model()
    store = Store(feats)
    a = CheckpointDecoder(store, ["x"] * 20, sample_size=5, seed=3, batch_size=2)
    b = CheckpointDecoder(Store(feats), ["x"] * 20, sample_size=5, seed=3)
    c = CheckpointDecoder(Store(feats), ["x"] * 20, sample_size=5, seed=4)
    assert a.indices == b.indices and len(a.indices) == 5 and a.indices != c.indices
    a.decode_and_evaluate(model, vocab)
    a.decode_and_evaluate(model, vocab)
    assert store.requested == a.indices * 2
    assert CheckpointDecoder(store, ["x"] * 20, sample_size=50).indices == list(range(20))


def test_with_a_real_caption_model():
    from captioning.decoder import RecurrentDecoderConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig
    vocab = {s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}
    vocab.update({"a": 4, "dog": 5})
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(4, 2, 2), num_hidden=8), vocab_size=6,
                         rnn=RecurrentDecoderConfig(num_hidden=8), num_embed=8)
    model = CaptionModel(config)
    model.initialize()
    model.hybridize()
    feats = np.random.RandomState(0).rand(7, 4, 2, 2).astype(np.float32)
    decoder = CheckpointDecoder(Store(feats), ["a dog"] * 7, sample_size=-1, batch_size=3, max_output_length=4)
    metrics = decoder.decode_and_evaluate(model, vocab)
    assert set(metrics) == {"bleu-val", "chrf-val", "cider-val"}
    assert all(0 <= v <= 100 for k, v in metrics.items() if k != "cider-val") and metrics["cider-val"] >= 0


def test_length_mismatch_is_an_error():
    with pytest.raises(CaptioningError, match="3 validation features but 2 references"):
        CheckpointDecoder(Store(np.zeros((3, 4, 1, 2))), ["a", "b"], sample_size=1)


def write_features(root, names, seed=0):
    rng = np.random.RandomState(seed)
    root.mkdir(exist_ok=True)
    for name in dict.fromkeys(names):
        features.save_feature(str(root / name), rng.randn(4, 1, 2).astype(np.float32))
    features.write_feature_sizes(str(root), features.FeatureSizes((3, 8, 8), (4, 1, 2)))


@pytest.mark.parametrize("mode", ["lazy", "memory"])
def test_from_files_groups_repeated_lines_of_an_image(tmp_path, mode):
    root = tmp_path / "feats"
    names = ["b.npy", "a.npy", "b.npy", "c.npy", "a.npy", "b.npy"]
    write_features(root, names)
    (tmp_path / "val.features").write_text("\n".join(names) + "\n")
    (tmp_path / "val.captions").write_text("b is one of them\na is the first\nb  is number two\n\n"
                                           "a is the second\nb is a third one\n")
    decoder = CheckpointDecoder.from_files(str(root), str(tmp_path / "val.features"), [str(tmp_path / "val.captions")],
                                           mode, sample_size=-1, seed=1, beam_size=2, batch_size=2,
                                           max_output_length=5)
    # c has only an empty caption: left out; b's references in line order, whitespace normalised
    assert decoder.references == [["b is one of them", "b is number two", "b is a third one"],
                                  ["a is the first", "a is the second"]]
    assert decoder.rows == [0, 1]
    model, vocab, _ = setup_model()
    hypotheses = decoder.decode(model, vocab)
    assert len(hypotheses) == 2     # each image captioned once
    scores = decoder.evaluate(["b is number two", "a is the first"])
    assert scores["bleu-val"] == pytest.approx(100.0) and scores["cider-val"] > 0
    # the features of an image are those of its lines
    expected = features.load_feature(str(root / "a.npy"), None, "x")
    np.testing.assert_array_equal(decoder.features.get_batch([decoder.rows[1]])[0], expected)


def test_from_files_uses_the_store_it_is_given(tmp_path):
    """Training passes its validation store, so the validation features are held once; a store over another
    number of lines is refused."""
    from captioning import features
    root = tmp_path / "feats"
    names = ["p.npy", "q.npy", "p.npy"]
    write_features(root, names, seed=4)
    (tmp_path / "val.features").write_text("\n".join(names) + "\n")
    (tmp_path / "val.captions").write_text("p one\nq one\np two\n")
    store = features.open_feature_store(str(root), names, mode="memory")
    decoder = CheckpointDecoder.from_files(str(root), str(tmp_path / "val.features"), [str(tmp_path / "val.captions")],
                                           "memory", -1, 1, 1, 2, 4, store=store)
    assert decoder.features is store and decoder.references == [["p one", "p two"], ["q one"]]
    with pytest.raises(CaptioningError, match="val.features: the feature store has 2 rows for 3 lines"):
        CheckpointDecoder.from_files(str(root), str(tmp_path / "val.features"), [str(tmp_path / "val.captions")],
                                     "memory", -1, 1, 1, 2, 4, store=features.open_feature_store(str(root), names[:2],
                                                                                                 mode="memory"))


def test_from_files_several_target_files_are_several_references(tmp_path):
    root = tmp_path / "feats"
    names = ["x.npy", "y.npy", "z.npy"]
    write_features(root, names, seed=1)
    (tmp_path / "val.features").write_text("\n".join(names) + "\n")
    targets = []
    for k in range(3):
        path = tmp_path / ("val.captions.%d" % k)
        path.write_text("".join("%s ref %d\n" % (n[0], k) for n in names))
        targets.append(str(path))
    decoder = CheckpointDecoder.from_files(str(root), str(tmp_path / "val.features"), targets, "lazy",
                                           sample_size=2, seed=5, beam_size=1, batch_size=4, max_output_length=4)
    assert decoder.references == [["%s ref %d" % (n, k) for k in range(3)] for n in "xyz"]
    assert len(decoder.indices) == 2
    hypotheses = ["%s ref 1" % "xyz"[i] for i in decoder.indices]
    hypotheses[1] = "nothing like it"
    refs = [decoder.references[i] for i in decoder.indices]
    scores = decoder.evaluate(hypotheses)
    assert scores["bleu-val"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [list(s) for s in zip(*refs)],
                                                                     tokenize="none").score)
    assert scores["cider-val"] == pytest.approx(100 * corpus_cider(hypotheses, refs))
    # a target file with another number of lines names itself
    (tmp_path / "short.captions").write_text("x ref\n")
    with pytest.raises(CaptioningError, match="short.captions: 1 lines, but the validation list .* has 3"):
        CheckpointDecoder.from_files(str(root), str(tmp_path / "val.features"), targets + [str(tmp_path /
                                     "short.captions")], "lazy", -1, 1, 1, 1, 4)


def test_from_files_refuses_names_outside_the_root_unless_allowed(tmp_path):
    root = tmp_path / "feats"
    write_features(root, ["x.npy"], seed=1)
    write_features(tmp_path / "elsewhere", ["y.npy"], seed=2)
    outside = str(tmp_path / "elsewhere" / "y.npy")
    (tmp_path / "val.features").write_text("x.npy\n%s\n" % outside)
    (tmp_path / "val.captions").write_text("x ref\ny ref\n")
    args = (str(root), str(tmp_path / "val.features"), [str(tmp_path / "val.captions")], "lazy", -1, 1, 1, 1, 4)
    with pytest.raises(CaptioningError, match="val.features, line 2"):
        CheckpointDecoder.from_files(*args)
    decoder = CheckpointDecoder.from_files(*args, allow_absolute=True)
    assert decoder.references == [["x ref"], ["y ref"]]
