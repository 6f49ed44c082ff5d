"""Sampler: reproducible under a seed, the right distribution (chi-square), top-k, temperature, costs, n-best."""
import mxnet as mx
import numpy as np
import pytest

from captioning import constants as C
from captioning.beam_search import SearchResult
from captioning.sampling import Sampler

from .test_beam_search import MarkovModel, sequence_cost

EOS = C.EOS_ID

# chi-square critical values at p = 0.001 by degrees of freedom (a correct sampler fails 1 run in 1000)
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59,
            11: 31.26, 12: 32.91}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's statistic, categories with an expectation under 5 pooled."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float((((obs - exp) ** 2)[keep] / exp[keep]).sum()), int(keep.sum() - 1)


def first_word_counts(model, features, num_samples, seed, **kwargs) -> np.ndarray:
    mx.random.seed(seed)
    samples = Sampler([model], num_samples=num_samples, max_output_length=1, **kwargs).sample(features)
    return np.bincount(samples.tokens[:, 0], minlength=model.vocab_size)


def step1_probs(model, features, temperature=1.0, top_k=0) -> np.ndarray:
    lp = model.log_probs(features.asnumpy()[0])[C.BOS_ID] / temperature
    lp[[C.PAD_ID, C.BOS_ID]] = -np.inf
    if top_k:
        lp[lp < np.sort(lp)[-top_k]] = -np.inf
    p = np.exp(lp - lp.max())
    return p / p.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_first_word_follows_the_softmax(temperature):
    model = MarkovModel(vocab_size=10, seed=3, scale=1.0)
    features = model.features(1, seed=1)
    counts = first_word_counts(model, features, 6000, seed=11, temperature=temperature)
    probs = step1_probs(model, features, temperature)
    stat, dof = chi_square(counts, probs)
    assert dof >= 4 and stat < CHI2_999[dof], (counts, probs * counts.sum())
    # and not the distribution of another temperature: the test can tell them apart
    other = step1_probs(model, features, 3.0 - temperature)
    stat_other, dof_other = chi_square(counts, other)
    assert stat_other > CHI2_999[dof_other]
    assert counts[C.PAD_ID] == counts[C.BOS_ID] == 0


def test_top_k_samples_only_the_k_best_words_in_proportion():
    model = MarkovModel(vocab_size=10, seed=3, scale=1.0)
    features = model.features(1, seed=1)
    counts = first_word_counts(model, features, 3000, seed=2, top_k=3)
    probs = step1_probs(model, features, top_k=3)
    assert set(np.flatnonzero(counts)) == set(np.flatnonzero(probs)) and len(np.flatnonzero(probs)) == 3
    stat, dof = chi_square(counts, probs)
    assert stat < CHI2_999[dof]


def test_reproducible_under_a_seed_and_independent_of_static_states():
    features = MarkovModel().features(5, seed=4)
    runs = []
    for seed, static in ((7, False), (7, False), (8, False), (7, True)):
        model = MarkovModel(vocab_size=12, seed=0, scale=1.0, static=static)
        mx.random.seed(seed)
        runs.append(Sampler([model], num_samples=4, max_output_length=8).sample(features).tokens)
    assert runs[0].shape[0] == 20
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    np.testing.assert_array_equal(runs[0], runs[3])   # one row per input for static states: the same samples


def test_samples_are_well_formed_and_costs_exact():
    model = MarkovModel(vocab_size=9, seed=5, scale=1.0, eos_bonus=1.0)
    features = model.features(3, seed=2)
    mx.random.seed(1)
    samples = Sampler([model], num_samples=5, max_output_length=6).sample(features)
    assert samples.tokens.shape[0] == 15 and samples.tokens.shape[1] <= 6
    assert samples.finished.any()
    for r, (row, n, done) in enumerate(zip(samples.tokens, samples.lengths, samples.finished)):
        assert (row[n:] == C.PAD_ID).all() and (row[:n] >= C.UNK_ID).all() and (row[:n] != C.BOS_ID).all()
        assert done == (EOS in row[:n]) and (not done or row[n - 1] == EOS) and list(row[:n]).count(EOS) <= 1
        lp = model.log_probs(features.asnumpy()[r // 5])
        assert samples.costs[r] == pytest.approx(sequence_cost(lp, tuple(int(w) for w in row[:n])), rel=1e-4)
    # with the maximum length reached, rows are cut without </s>
    mx.random.seed(1)
    short = Sampler([MarkovModel(vocab_size=9, seed=5, eos_bonus=-20.0)], num_samples=2,
                    max_output_length=3).sample(features)
    assert short.tokens.shape == (6, 3) and not short.finished.any() and (short.lengths == 3).all()


def test_search_returns_the_samples_as_nbest():
    model = MarkovModel(vocab_size=9, seed=5, scale=1.0, eos_bonus=1.0)
    features = model.features(2, seed=2)
    mx.random.seed(3)
    results = Sampler([model], num_samples=3, max_output_length=7).search(features)
    mx.random.seed(3)
    samples = Sampler([model], num_samples=3, max_output_length=7).sample(features)
    assert len(results) == 2 and all(isinstance(r, SearchResult) for r in results)
    captions = samples.captions()
    for b, result in enumerate(results):
        assert [h.tokens for h in result.nbest] == captions[b * 3:(b + 1) * 3]
        assert result.tokens == result.nbest[0].tokens and result.score == result.nbest[0].score
        for i, hyp in enumerate(result.nbest):
            r = b * 3 + i
            assert hyp.score == pytest.approx(samples.costs[r] / samples.lengths[r])   # length penalty alpha 1
            assert hyp.attention.shape == (len(hyp.tokens), 2)
            assert hyp.finished == samples.finished[r]


def test_ensemble_of_identical_models_samples_like_one():
    features = MarkovModel().features(3, seed=9)
    model = MarkovModel(vocab_size=10, seed=2, scale=1.0)
    mx.random.seed(4)
    one = Sampler([model], num_samples=2, max_output_length=6).sample(features)
    for mode in ("linear", "log_linear"):
        mx.random.seed(4)
        two = Sampler([model, model], num_samples=2, max_output_length=6, ensemble_mode=mode).sample(features)
        np.testing.assert_array_equal(one.tokens, two.tokens)
        np.testing.assert_allclose(one.costs, two.costs, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["rnn", "transformer", "cnn"])
def test_real_models_hybridized(decoder):
    from captioning.decoder import (ConvolutionalDecoderConfig, RecurrentDecoderConfig,
                                    TransformerDecoderConfig)
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig
    parts = {"rnn": {"rnn": RecurrentDecoderConfig(num_hidden=8)},
             "transformer": {"transformer": TransformerDecoderConfig(model_size=8, attention_heads=2,
                                                                     feed_forward_num_hidden=16, num_layers=1)},
             "cnn": {"cnn": ConvolutionalDecoderConfig(num_hidden=8, num_layers=1)}}[decoder]
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(4, 2, 2), num_hidden=8), decoder=decoder,
                         vocab_size=9, num_embed=8, **parts)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier(magnitude=3.0))
    model.hybridize()
    features = mx.nd.array(np.random.RandomState(0).rand(3, 4, 2, 2).astype(np.float32))
    mx.random.seed(6)
    samples = Sampler([model], num_samples=4, max_output_length=5).sample(features)
    mx.random.seed(6)
    again = Sampler([model], num_samples=4, max_output_length=5).sample(features)
    np.testing.assert_array_equal(samples.tokens, again.tokens)
    assert samples.tokens.shape[0] == 12 and len(np.unique(samples.tokens)) > 2
    # the costs are the model's own teacher-forced negative log-probabilities of the samples
    target_input = np.concatenate([np.full((12, 1), C.BOS_ID), samples.tokens[:, :-1]], axis=1)
    logits = model(mx.nd.repeat(features, 4, axis=0), mx.nd.array(target_input)).asnumpy()
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(lp, samples.tokens[:, :, None], axis=2)[:, :, 0] * (samples.tokens != 0)
    np.testing.assert_allclose(samples.costs, -picked.sum(1), rtol=1e-4, atol=1e-4)


def test_captions_with_and_without_the_end():
    from captioning.sampling import Samples
    samples = Samples(tokens=np.array([[5, 6, EOS, 0], [7, 8, 9, 10]]), lengths=np.array([3, 4]),
                      finished=np.array([True, False]), costs=np.zeros(2))
    assert samples.captions() == [[5, 6], [7, 8, 9, 10]]
    assert samples.captions(with_end=True) == [[5, 6, EOS], [7, 8, 9, 10]]


class CountingModel(MarkovModel):
    """Records the rows of every step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows = []

    def decode_step(self, prev_word, states, beam_size: int = 1, constants=None):
        self.rows.append(prev_word.shape[0])
        return super().decode_step(prev_word, states, beam_size, constants)


@pytest.mark.parametrize("static", [False, True])
def test_inputs_whose_samples_all_ended_leave_the_computation(static):
    n = 3
    model = CountingModel(vocab_size=9, seed=5, scale=1.0, eos_bonus=1.0, static=static)
    features = model.features(6, seed=2)
    mx.random.seed(1)
    samples = Sampler([model], num_samples=n, max_output_length=12).sample(features)
    # an input takes part in the steps up to its longest sample's end
    last = samples.lengths.reshape(-1, n).max(axis=1)
    assert model.rows == [n * int((last > t).sum()) for t in range(samples.tokens.shape[1])]
    assert model.rows[-1] < model.rows[0]
    for r, (row, length) in enumerate(zip(samples.tokens, samples.lengths)):
        lp = model.log_probs(features.asnumpy()[r // n])
        assert samples.costs[r] == pytest.approx(sequence_cost(lp, tuple(int(w) for w in row[:length])), rel=1e-4)
