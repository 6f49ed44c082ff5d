"""CheckpointDecoder: fixed seeded sample, BLEU/chrF from sacrebleu, hypotheses file."""
import numpy as np
import pytest
import sacrebleu

from captioning import constants as C
from captioning.checkpoint_decoder import CheckpointDecoder

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


def test_scores_match_sacrebleu_and_file(tmp_path):
    model, vocab, feats = setup_model()
    decoder = CheckpointDecoder(Store(feats), ["a dog runs"] * 20, sample_size=-1, beam_size=2, batch_size=6,
                                max_output_length=6)
    hypotheses = decoder.decode(model, vocab)
    assert len(hypotheses) == 20
    references = ["a dog runs"] * 20
    # make the references partly right so that BLEU is neither 0 nor 100
    references[:10] = hypotheses[:10]
    decoder.references = references
    out = tmp_path / "decode.output.00001"
    metrics = decoder.decode_and_evaluate(model, vocab, output_path=str(out))
    assert metrics["bleu-val"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references],
                                                                      tokenize="none").score)
    assert metrics["chrf-val"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert 0 < metrics["bleu-val"] <= 100
    assert out.read_text().splitlines() == hypotheses


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
    import mxnet as mx
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
    assert set(metrics) == {"bleu-val", "chrf-val"} and all(0 <= v <= 100 for v in metrics.values())


def test_length_mismatch_is_an_error():
    from captioning.utils import CaptioningError
    with pytest.raises(CaptioningError, match="3 validation features but 2 references"):
        CheckpointDecoder(Store(np.zeros((3, 4, 1, 2))), ["a", "b"], sample_size=1)
