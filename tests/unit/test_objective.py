"""objective: the Objective interface, cross-entropy through it, the factory, batch shares."""
import sys
import types

import mxnet as mx
import numpy as np
import pytest

from captioning import constants as C
from captioning import data_io as D
from captioning import loss as L
from captioning import objective as O
from captioning import training as T
from captioning import vocab as V


class Linear(mx.gluon.HybridBlock):
    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.embed = mx.gluon.nn.Embedding(vocab_size, 4)
            self.out = mx.gluon.nn.Dense(vocab_size, flatten=False)

    def hybrid_forward(self, F, features, target_input):
        return self.out(F.broadcast_add(self.embed(target_input), F.reshape(F.mean(features), shape=(1, 1, 1))))


def share(rows=3, length=4, vocab_size=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(4, vocab_size, (rows, length)).astype("float32")
    labels[0, -1] = C.PAD_ID
    target_input = np.concatenate([np.full((rows, 1), C.BOS_ID, "float32"), labels[:, :-1]], axis=1)
    return O.BatchShare(ctx=mx.cpu(), features=mx.nd.array(rng.normal(size=(rows, 2, 1, 1))),
                        target_input=mx.nd.array(target_input), labels=mx.nd.array(labels),
                        image_ids=np.arange(rows))


def test_cross_entropy_objective_gradients_and_metrics_match_the_loss_block():
    mx.random.seed(1)
    model = Linear(6)
    model.initialize(mx.init.Xavier())
    config = L.LossConfig(vocab_size=6, label_smoothing=0.1)
    objective = O.CrossEntropyObjective(config)
    s = share()
    objective.forward_backward(model, [s])
    grads = {k: p.grad().asnumpy().copy() for k, p in model.collect_params().items()}
    # reference: the loss block directly
    block = L.CrossEntropyLoss(config)
    with mx.autograd.record():
        out, stats = block(model(s.features, s.target_input), s.labels)
    out.backward()
    for k, p in model.collect_params().items():
        np.testing.assert_allclose(grads[k], p.grad().asnumpy(), rtol=1e-6, atol=1e-7)
    metrics = objective.metrics()
    assert metrics == L.metrics_from_stats(stats.asnumpy(), "train")
    assert metrics["perplexity-train"] > 1.0
    # reset after reading: no stats -> nll 0 -> perplexity 1
    assert objective.metrics()["perplexity-train"] == 1.0


def test_create_objective_cross_entropy_and_lazy_self_critical(monkeypatch):
    config = T.TrainingConfig(output_folder="x", cross_entropy=L.LossConfig(vocab_size=6))
    assert isinstance(O.create_objective(config, [["a b"]], {}, 10), O.CrossEntropyObjective)
    seen = {}

    class FakeSelfCritical:
        name = C.LOSS_SELF_CRITICAL

        def __init__(self, **kwargs):
            seen.update(kwargs)

    fake = types.ModuleType("captioning.self_critical")
    fake.SelfCriticalObjective = FakeSelfCritical
    monkeypatch.setitem(sys.modules, "captioning.self_critical", fake)
    config = config.copy(loss=C.LOSS_SELF_CRITICAL, self_critical=O.SelfCriticalConfig(samples=3, baseline="greedy"))
    objective = O.create_objective(config, [["a b", "c"]], {"a": 4}, 12)
    assert isinstance(objective, FakeSelfCritical)
    assert seen == {"references": [["a b", "c"]], "vocab": {"a": 4}, "num_samples": 3, "baseline": "greedy",
                    "max_output_length": 12, "top_k": 5, "sample_dropout": False}
    with pytest.raises(ValueError, match="unknown loss"):
        O.create_objective(config.copy(loss="nope"), [], {}, 1)


def test_split_batch_cuts_rows_and_image_ids_alike():
    batch = D.Batch(features=np.arange(5, dtype="float32").reshape(5, 1, 1, 1), target_input=np.zeros((5, 2)),
                    labels=np.arange(10, dtype="float32").reshape(5, 2), indices=np.arange(5))
    shares = T.split_batch(batch, [mx.cpu(0), mx.cpu(1)], np.array([7, 7, 8, 9, 9]))
    assert [s.ctx for s in shares] == [mx.cpu(0), mx.cpu(1)]
    assert [s.features.asnumpy().ravel().tolist() for s in shares] == [[0, 1, 2], [3, 4]]
    assert [s.image_ids.tolist() for s in shares] == [[7, 7, 8], [9, 9]]
    # fewer rows than devices: one share per row
    assert len(T.split_batch(batch._replace(labels=batch.labels[:1]), [mx.cpu(0), mx.cpu(1)], [3])) == 1


def test_image_ids_and_references_group_repeated_lines(tmp_path):
    (tmp_path / "l").write_text("a.npy\nb.npy\na.npy\n")
    (tmp_path / "c").write_text("a  red circle\nblue square\nred   circle\n")
    data = D.load_parallel(str(tmp_path / "l"), str(tmp_path / "c"), V.build_vocab(["red circle"]), 10)
    ids, names = D.image_ids(data.names)
    assert ids.tolist() == [0, 1, 0] and names == ["a.npy", "b.npy"]
    assert D.references_by_image(data) == [["a red circle", "red circle"], ["blue square"]]


def test_training_config_reads_the_earlier_flat_self_critical_layout():
    """Configs written before the self-critical settings had their own config still load."""
    values = T.TrainingConfig(output_folder="x", cross_entropy=L.LossConfig(vocab_size=6)).to_dict()
    del values["self_critical"]
    values.update(self_critical_samples=3, self_critical_baseline="greedy", self_critical_top_k=2,
                  self_critical_sample_dropout=True)
    config = T.TrainingConfig.from_dict(values)
    assert config.self_critical == O.SelfCriticalConfig(samples=3, baseline="greedy", top_k=2, sample_dropout=True)
    assert T.TrainingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="SelfCriticalConfig has no field"):
        T.TrainingConfig.from_dict({**values, "self_critical_bogus": 1})


def test_self_critical_without_initial_params_is_refused_by_the_api():
    """The check of train's --params holds for Python callers of `training.create_trainer` too."""
    from captioning.utils import CaptioningError
    config = T.TrainingConfig(output_folder="x", cross_entropy=L.LossConfig(vocab_size=6), loss=C.LOSS_SELF_CRITICAL)
    with pytest.raises(CaptioningError, match="--loss self-critical continues from a cross-entropy model"):
        T.create_trainer(config, None, None, [mx.cpu()], {}, 10)
    O.check_start(C.LOSS_SELF_CRITICAL, "xe/params.best")
    O.check_start(C.LOSS_CROSS_ENTROPY, None)


@pytest.mark.parametrize("scheduler, refused", [("plateau-reduce", True), ("none", False)])
def test_dist_async_schedule_check_is_the_apis(scheduler, refused):
    """One check of --kvstore dist_async: the Trainer's (through `lr_scheduler.check_kvstore`) is the CLI's."""
    import captioning.lr_scheduler as S
    from captioning.utils import CaptioningError
    config = S.SchedulerConfig(type=scheduler)
    S.check_kvstore(config, "dist_sync")
    if refused:
        with pytest.raises(CaptioningError, match="--kvstore dist_async applies only a constant learning rate"):
            S.check_kvstore(config, "dist_async")
        with pytest.raises(CaptioningError, match="dist_async"):
            S.check_kvstore(S.SchedulerConfig(type="none", warmup=10), "dist_async")
    else:
        S.check_kvstore(config, "dist_async")
