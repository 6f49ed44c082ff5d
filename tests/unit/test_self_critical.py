"""SelfCriticalObjective: rewards and baselines, the loss's sign and value, learning a rewarded caption, every
decoder type."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from captioning import constants as C
from captioning.cider import CiderD
from captioning.objective import BatchShare
from captioning.self_critical import (PolicyGradientLoss, SelfCriticalObjective, references_as_ids,
                                      teacher_forcing_arrays)

WORDS = ["a", "dog", "cat", "runs", "sits", "red"]
VOCAB = dict({s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}, **{w: 4 + i for i, w in enumerate(WORDS)})
RVOCAB = {i: w for w, i in VOCAB.items()}
EOS = C.EOS_ID


def tiny_model(decoder="rnn", seed=0):
    from captioning.decoder import (ConvolutionalDecoderConfig, RecurrentDecoderConfig,
                                    TransformerDecoderConfig)
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig
    # no dropout: the teacher-forced log-probabilities under autograd.record are those of inference
    parts = {"rnn": {"rnn": RecurrentDecoderConfig(num_hidden=16, hidden_dropout=0.0)},
             "transformer": {"transformer": TransformerDecoderConfig(
                 model_size=16, attention_heads=2, feed_forward_num_hidden=16, num_layers=1, dropout_attention=0.0,
                 dropout_act=0.0, dropout_prepost=0.0)},
             "cnn": {"cnn": ConvolutionalDecoderConfig(num_hidden=16, num_layers=1, hidden_dropout=0.0)}}[decoder]
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(4, 2, 2), num_hidden=16), decoder=decoder,
                         vocab_size=len(VOCAB), num_embed=16, **parts)
    mx.random.seed(seed)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier())
    model.hybridize()
    return model


def share_of(features: np.ndarray, image_ids) -> BatchShare:
    n = len(image_ids)
    return BatchShare(ctx=mx.cpu(), features=mx.nd.array(features[image_ids]), target_input=mx.nd.zeros((n, 3)),
                      labels=mx.nd.zeros((n, 3)), image_ids=np.asarray(image_ids))


def sequence_log_prob(model, features: np.ndarray, caption: str) -> float:
    tokens = np.array([[VOCAB[w] for w in caption.split()] + [EOS]])
    target_input, labels = teacher_forcing_arrays(tokens, step=1)
    logits = model(mx.nd.array(features[None]), mx.nd.array(target_input)).asnumpy()[0]
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(sum(lp[t, int(w)] for t, w in enumerate(labels[0])))


def test_teacher_forcing_arrays():
    tokens = np.array([[5, 6, EOS, 0], [7, 8, 9, 10]])
    target_input, labels = teacher_forcing_arrays(tokens, step=3)
    np.testing.assert_array_equal(labels, [[5, 6, EOS, 0, 0, 0], [7, 8, 9, 10, 0, 0]])
    np.testing.assert_array_equal(target_input, [[C.BOS_ID, 5, 6, 0, 0, 0], [C.BOS_ID, 7, 8, 9, 10, 0]])


def test_reference_ids_score_like_words():
    references = [["a dog runs", "a zebra runs"], ["a cat sits on a mat"], ["zebra and okapi"]]
    ids = references_as_ids(references, VOCAB)
    assert ids[0][1][1] < 0 and ids[2][0][0] == ids[0][1][1] and ids[2][0][1] != ids[2][0][2]
    samples = ["a dog runs", "a cat <unk> sits", "red"]
    by_words = CiderD(references).score(samples, [0, 1, 2])
    by_ids = CiderD(ids).score([[VOCAB[w] for w in s.split()] for s in samples], [0, 1, 2])
    np.testing.assert_allclose(by_ids, by_words, atol=1e-12)
    assert by_ids[0] > 0


def test_rewards_and_baselines():
    references = [["a dog runs"], ["a cat sits"], ["a red cat"]]
    mean = SelfCriticalObjective(references, VOCAB, num_samples=3, baseline="mean", max_output_length=5,
                                 reward_end=False)
    ids = lambda s: [VOCAB[w] for w in s.split()]  # noqa: E731
    captions = [ids(s) for s in ["a dog runs", "a dog", "cat", "a cat sits", "red cat", "a"]]
    rewards, baselines = mean.rewards(captions, np.array([0, 1]))
    expected = CiderD(references_as_ids(references, VOCAB)).score(captions, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(rewards, expected)
    np.testing.assert_allclose(baselines[:3], [(expected[1] + expected[2]) / 2, (expected[0] + expected[2]) / 2,
                                               (expected[0] + expected[1]) / 2])
    assert rewards[0] > rewards[1] > 0
    greedy = SelfCriticalObjective(references, VOCAB, num_samples=3, baseline="greedy", max_output_length=5,
                                   reward_end=False)
    _, baselines = greedy.rewards(captions, np.array([0, 1]), greedy=[ids("a dog"), ids("a cat sits")])
    np.testing.assert_allclose(baselines, [expected[1]] * 3 + [expected[3]] * 3)


def test_the_end_of_a_caption_is_rewarded():
    references = [["a red dog runs"], ["a cat sits"], ["a dog"]]
    ids = lambda s: [VOCAB[w] for w in s.split()]  # noqa: E731
    with_end = SelfCriticalObjective(references, VOCAB, num_samples=2, max_output_length=9)
    without = SelfCriticalObjective(references, VOCAB, num_samples=2, max_output_length=9, reward_end=False)
    # the same words, once ended with </s>, once cut (no </s>: a dangling caption or the maximum length)
    ended, cut = ids("a red dog runs") + [EOS], ids("a red dog runs")
    rewards, _ = with_end.rewards([ended, cut], np.array([0]))
    assert rewards[0] > rewards[1] > 0
    rewards, _ = without.rewards([ended[:-1], cut], np.array([0]))
    assert rewards[0] == rewards[1]
    np.testing.assert_array_equal(references_as_ids(references, VOCAB, end=True)[2], [[4, 5, EOS]])


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_loss_value_and_sign_of_its_gradient(advantage):
    model = tiny_model()
    features = np.random.RandomState(1).rand(1, 4, 2, 2).astype(np.float32)
    caption = "a dog runs"
    before = sequence_log_prob(model, features[0], caption)
    tokens = np.array([[VOCAB[w] for w in caption.split()] + [EOS]])
    target_input, labels = teacher_forcing_arrays(tokens)
    loss_block = PolicyGradientLoss()
    loss_block.hybridize()
    with autograd.record():
        loss = loss_block(model(mx.nd.array(features), mx.nd.array(target_input)), mx.nd.array(labels),
                          mx.nd.array([advantage]))
    loss.backward()
    assert loss.asscalar() == pytest.approx(-advantage * before, rel=1e-4)
    gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": 0.05}).step(1)
    after = sequence_log_prob(model, features[0], caption)
    assert (after - before) * advantage > 1e-3      # rewarded: more likely; penalised: less likely


def test_a_rewarded_caption_becomes_likely():
    # images 0-3 are described as "dog runs", 4-7 as "cat sits"; training sees images 0-3 only, so the best
    # CIDEr-D is "dog runs </s>" (7.5: no 4-grams)
    references = [["dog runs"]] * 4 + [["cat sits"]] * 4
    features = np.random.RandomState(2).rand(8, 4, 2, 2).astype(np.float32)
    model = tiny_model(seed=3)
    objective = SelfCriticalObjective(references, VOCAB, num_samples=6, baseline="mean", max_output_length=5)
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": 0.02})
    before = np.mean([sequence_log_prob(model, features[i], "dog runs") for i in range(4)])
    mx.random.seed(5)
    rewards = []
    for _ in range(30):
        objective.forward_backward(model, [share_of(features, [0, 1, 2, 3, 1])])
        trainer.step(1)
        rewards.append(objective.metrics()["reward-train"])
    after = np.mean([sequence_log_prob(model, features[i], "dog runs") for i in range(4)])
    assert before < np.log(0.05) and after > np.log(0.5), (before, after)
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 3.0, rewards


@pytest.mark.parametrize("decoder,baseline", [("rnn", "greedy"), ("transformer", "mean"), ("cnn", "mean")])
def test_every_decoder_type(decoder, baseline):
    references = [["a dog runs", "a red dog"], ["a cat sits"], ["a cat"]]
    features = np.random.RandomState(4).rand(3, 4, 2, 2).astype(np.float32)
    model = tiny_model(decoder, seed=1)
    objective = SelfCriticalObjective(references, VOCAB, num_samples=3, baseline=baseline, max_output_length=6)
    mx.random.seed(2)
    shares = [share_of(features, [2, 0, 2]), share_of(features, [1])]
    objective.forward_backward(model, shares)
    grads = [p.grad().asnumpy() for p in model.collect_params().values() if p.grad_req != "null"]
    assert all(np.isfinite(g).all() for g in grads) and sum(float(np.abs(g).sum()) for g in grads) > 0
    metrics = objective.metrics()
    assert set(metrics) == {"reward-train", "sample-length-train"} | ({"baseline-train"} if baseline == "greedy"
                                                                      else set())
    assert metrics["reward-train"] >= 0 and 1 <= metrics["sample-length-train"] <= 6
    assert objective.metrics()["reward-train"] == 0.0   # reset by the call before
    # the same seed draws the same samples: the same gradients
    mx.random.seed(2)
    objective.forward_backward(model, shares)
    again = [p.grad().asnumpy() for p in model.collect_params().values() if p.grad_req != "null"]
    for g, h in zip(grads, again):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6)


def test_the_mean_baseline_needs_two_samples():
    from captioning.utils import CaptioningError
    with pytest.raises(CaptioningError, match="--self-critical-samples 2 or more"):
        SelfCriticalObjective([["a dog"]], VOCAB, num_samples=1, baseline="mean")
    assert SelfCriticalObjective([["a dog"]], VOCAB, num_samples=1, baseline="greedy").num_samples == 1


def test_identical_samples_share_one_row_and_zero_advantages_are_left_out():
    from captioning.self_critical import distinct_rows
    tokens = np.array([[5, EOS], [5, EOS], [6, EOS],      # image 0: a repeated sample
                       [7, EOS], [7, EOS], [7, EOS],      # image 1: all the same (advantages 0)
                       [5, EOS], [8, EOS], [9, EOS]])     # image 2: [5, EOS] again, but another image
    advantages = np.array([0.5, 0.5, -1.0, 0.0, 0.0, 0.0, 1.0, -0.25, -0.75])
    rows, scaled = distinct_rows(tokens, advantages, 3)
    np.testing.assert_array_equal(rows, [0, 2, 6, 7, 8])
    # the mean over the kept rows equals the sum over all samples / 9
    np.testing.assert_allclose(scaled, np.array([1.0, -1.0, 1.0, -0.25, -0.75]) * 5 / 9, rtol=1e-6)
    rows, scaled = distinct_rows(tokens[3:6], advantages[3:6], 3)
    np.testing.assert_array_equal(rows, [0])
    assert scaled[0] == 0.0


def test_length_groups():
    from captioning.self_critical import length_groups
    lengths = np.array([3, 12, 4, 40, 11, 5, 6, 13, 2, 9])
    groups = length_groups(lengths, step=5, min_rows=3)
    # sorted by length; a group closes at a multiple-of-5 boundary once it has 3 rows; the rest is the last group
    assert [list(lengths[g]) for g in groups] == [[2, 3, 4, 5], [6, 9, 11, 12, 13], [40]]
    assert sorted(np.concatenate(groups)) == list(range(len(lengths)))
    assert len(length_groups(lengths, step=5, min_rows=100)) == 1
    assert [len(g) for g in length_groups(lengths, step=1, min_rows=1)] == [1] * 10


@pytest.mark.parametrize("step, min_rows", [(5, 16), (1, 1)], ids=["one-group", "a-group-per-length"])
def test_loss_equals_the_loss_of_every_sample_on_its_own_row(monkeypatch, step, min_rows):
    # the gradient of forward_backward (deduplicated rows, in length groups) equals the plain mean over all K
    # samples
    from captioning import self_critical
    monkeypatch.setattr(self_critical, "LENGTH_STEP", step)
    monkeypatch.setattr(self_critical, "MIN_GROUP_ROWS", min_rows)
    references = [["a dog runs", "a red dog"], ["a cat sits"]]
    features = np.random.RandomState(5).rand(2, 4, 2, 2).astype(np.float32)
    model = tiny_model(seed=2)
    objective = SelfCriticalObjective(references, VOCAB, num_samples=4, baseline="mean", max_output_length=4)
    mx.random.seed(9)
    samples = objective._searches(model, mx.cpu())[0].sample(mx.nd.array(features))
    rewards, baselines = objective.rewards(samples.captions(with_end=True), np.array([0, 1]))
    if min_rows == 1:
        assert len(set(samples.lengths)) > 1      # several groups
    mx.random.seed(9)
    objective.forward_backward(model, [share_of(features, [1, 0, 1])])
    params = [p for p in model.collect_params().values() if p.grad_req != "null"]
    dedup = [p.grad().asnumpy().copy() for p in params]
    target_input, labels = teacher_forcing_arrays(samples.tokens, 5)
    with autograd.record():
        loss = PolicyGradientLoss()(model(mx.nd.repeat(mx.nd.array(features), 4, axis=0), mx.nd.array(target_input)),
                                    mx.nd.array(labels), mx.nd.array(rewards - baselines))
    loss.backward()
    for p, g in zip(params, dedup):
        np.testing.assert_allclose(g, p.grad().asnumpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sample_dropout", [False, True])
def test_top_k_and_dropout_reach_the_sampler(monkeypatch, sample_dropout):
    from captioning.objective import create_objective
    from captioning.sampling import Sampler
    from captioning.loss import LossConfig
    from captioning.training import TrainingConfig
    from captioning.objective import SelfCriticalConfig
    config = TrainingConfig(output_folder="x", cross_entropy=LossConfig(vocab_size=len(VOCAB)),
                            loss=C.LOSS_SELF_CRITICAL,
                            self_critical=SelfCriticalConfig(samples=3, top_k=1, sample_dropout=sample_dropout))
    objective = create_objective(config, [["a dog runs"], ["a cat sits"]], VOCAB, max_output_length=6)
    assert (objective.top_k, objective.sample_dropout) == (1, sample_dropout)
    modes = []
    sample = Sampler.sample

    def recording(self, *args, **kwargs):
        modes.append(autograd.is_training())
        return sample(self, *args, **kwargs)
    monkeypatch.setattr(Sampler, "sample", recording)
    model = tiny_model(seed=1)
    scoring = []
    forward = type(model).forward

    def scored(self, *args):
        scoring.append(autograd.is_training())
        return forward(self, *args)
    monkeypatch.setattr(type(model), "forward", scored)
    features = np.random.RandomState(4).rand(2, 4, 2, 2).astype(np.float32)
    objective.forward_backward(model, [share_of(features, [0, 1])])
    assert modes == [sample_dropout]
    # the teacher-forced pass scores the samples in the mode they were drawn in: the gradient is that of the
    # policy that drew them (dropout off unless they were drawn with it)
    assert scoring and set(scoring) == {sample_dropout}
    # top-1 sampling is greedy: an image's 3 samples are the same caption, their advantages 0, so no gradient
    assert objective._searches(model, mx.cpu())[0].top_k == 1
    grads = [p.grad().asnumpy() for p in model.collect_params().values() if p.grad_req != "null"]
    assert sum(float(np.abs(g).sum()) for g in grads) == 0.0


@pytest.mark.parametrize("weight_normalization", [False, True])
def test_samples_come_from_the_parameters_of_each_update(weight_normalization):
    # the sampler's steps must read the parameters as they are at each update (not step constants derived from the
    # starting model and kept, e.g. after a checkpoint decode under fixed_parameters): after an update, the samples
    # and greedy captions of the training model are those of a fresh model loaded with the updated parameters
    import os
    import tempfile
    from captioning.model import CaptionModel
    model = tiny_model(seed=4)
    if weight_normalization:
        model = _weight_normalised(model)
    features = np.random.RandomState(6).rand(3, 4, 2, 2).astype(np.float32)
    references = [["a dog runs"], ["a cat sits"], ["a red cat"]]
    objective = SelfCriticalObjective(references, VOCAB, num_samples=4, baseline="mean", max_output_length=6)
    sampler, greedy = objective._searches(model, mx.cpu())
    trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": 5.0})
    with model.fixed_parameters():                  # a checkpoint decode before the update
        greedy.search(mx.nd.array(features))
    sampler.sample(mx.nd.array(features))
    mx.random.seed(3)
    objective.forward_backward(model, [share_of(features, [0, 1, 2])])
    trainer.step(1)
    mx.random.seed(11)
    after = sampler.sample(mx.nd.array(features)).tokens
    after_greedy = [r.tokens for r in greedy.search(mx.nd.array(features))]
    fresh = CaptionModel(model.config)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "params")
        model.save_parameters(path)
        fresh.load_parameters(path, ctx=mx.cpu())
    fresh.hybridize()
    fresh_objective = SelfCriticalObjective(references, VOCAB, num_samples=4, baseline="mean", max_output_length=6)
    fresh_sampler, fresh_greedy = fresh_objective._searches(fresh, mx.cpu())
    mx.random.seed(11)
    np.testing.assert_array_equal(after, fresh_sampler.sample(mx.nd.array(features)).tokens)
    assert after_greedy == [r.tokens for r in fresh_greedy.search(mx.nd.array(features))]
    # the step the searches run (with the constants they ask for) gives the updated model's logits
    words = mx.nd.array([C.BOS_ID, VOCAB["a"], VOCAB["cat"]])
    logits = [m.decode_step(words, m.encode(mx.nd.array(features)), 1, m.step_constants(mx.cpu()))[0].asnumpy()
              for m in (model, fresh)]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def _weight_normalised(model):
    from captioning.model import CaptionModel
    from dataclasses import replace
    mx.random.seed(4)
    wn = CaptionModel(replace(model.config, weight_normalization=True))
    wn.initialize(mx.init.Xavier())
    wn.hybridize()
    return wn
