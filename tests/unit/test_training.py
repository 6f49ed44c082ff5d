"""training.Trainer with a tiny stand-in model (in process): clipping, accumulation, devices, checkpoints, stopping,
resume."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from captioning import constants as C
from captioning import data_io as D
from captioning import loss as L
from captioning import lr_scheduler as S
from captioning import model as M
from captioning import optimizers as O
from captioning import training as T
from captioning import vocab as V

WORDS = ["red", "blue", "green", "circle", "square", "small", "big"]


class TinyModel(gluon.HybridBlock):
    """logits = W [embed(word); mean(features)]: enough to learn the synthetic captions below."""

    def __init__(self, vocab_size, dropout=0.2, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.embed = gluon.nn.Embedding(vocab_size, 8)
            self.image = gluon.nn.Dense(8, flatten=True)
            self.drop = gluon.nn.Dropout(dropout)
            self.out = gluon.nn.Dense(vocab_size, flatten=False)

    def hybrid_forward(self, F, features, target_input):
        img = F.expand_dims(self.image(features), axis=1)
        h = F.broadcast_add(self.embed(target_input), img)
        return self.out(self.drop(F.tanh(h)))


class Store:
    """Feature of item i: a one-hot of its colour word (so captions are predictable from the image)."""
    feature_shape = (3, 1, 1)

    def __init__(self, colours):
        self.colours = colours

    def __len__(self):
        return len(self.colours)

    def get_batch(self, indices):
        out = np.zeros((len(indices), 3, 1, 1), np.float32)
        for k, i in enumerate(indices):
            out[k, self.colours[i], 0, 0] = 1.0
        return out


def make_data(tmp_path, n, seed):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 3, n)
    captions = ["%s %s %s" % (rng.choice(["small", "big"]), WORDS[c], rng.choice(["circle", "square"]))
                for c in colours]
    (tmp_path / ("l%d" % seed)).write_text("\n".join("f%d" % i for i in range(n)) + "\n")
    (tmp_path / ("c%d" % seed)).write_text("\n".join(captions) + "\n")
    return str(tmp_path / ("l%d" % seed)), str(tmp_path / ("c%d" % seed)), colours


def build(tmp_path, contexts=None, batch_size=8, data_seed=0, dropout=0.2, **config):
    contexts = contexts or (mx.cpu(),)
    T.seed_everything(1)
    lst, caps, colours = make_data(tmp_path, 64, data_seed)
    vlst, vcaps, vcolours = make_data(tmp_path, 16, data_seed + 100)
    vocab = V.build_vocab(WORDS)
    data = D.load_parallel(lst, caps, vocab, 10)
    vdata = D.load_parallel(vlst, vcaps, vocab, 10)
    dcfg = D.DataConfig(batch_size=batch_size, max_seq_len=10, bucket_width=10, seed=4)
    train_iter = D.BatchIterator(data, Store(colours), list(range(64)), dcfg)
    val_iter = D.BatchIterator(vdata, Store(vcolours), list(range(16)), dcfg, shuffle=False)
    model = TinyModel(len(vocab), dropout=dropout, prefix="tiny_")
    model.hybridize()
    M.initialize_model(model, list(contexts), Store.feature_shape)
    out = tmp_path / "model"
    out.mkdir(exist_ok=True)
    optimizer = config.pop("optimizer", O.OptimizerConfig(name="adam", learning_rate=0.01))
    scheduler = config.pop("scheduler", S.SchedulerConfig(type="none", base_rate=optimizer.learning_rate))
    cfg = T.TrainingConfig(output_folder=str(out),
                           cross_entropy=L.LossConfig(vocab_size=len(vocab), label_smoothing=0.0),
                           optimizer=optimizer, scheduler=scheduler, **config)
    return T.Trainer(cfg, model, train_iter, val_iter, list(contexts)), out


def metric_rows(out):
    rows = []
    for line in (out / "metrics").read_text().splitlines():
        n, *pairs = line.split("\t")
        rows.append((int(n), {k: float(v) for k, v in (p.split("=") for p in pairs)}))
    return rows


def test_trains_and_writes_checkpoints(tmp_path):
    trainer, out = build(tmp_path, checkpoint_interval=10, max_updates=40, metrics=["perplexity", "accuracy"])
    state = trainer.fit()
    assert state.updates == 40 and state.checkpoint == 4 and state.finished
    rows = metric_rows(out)
    assert [n for n, _ in rows] == [1, 2, 3, 4]
    assert rows[-1][1]["perplexity-val"] < 0.7 * rows[0][1]["perplexity-val"]
    assert rows[-1][1]["accuracy-val"] > rows[0][1]["accuracy-val"]
    for n in range(5):
        assert (out / (C.PARAMS_NAME % n)).exists()
    assert os.readlink(out / C.PARAMS_BEST_NAME) == C.PARAMS_NAME % state.best_checkpoint
    # samples and epochs: 64 items in batches of 8 -> 8 batches per epoch
    assert state.samples == 40 * 8 and state.epoch == 5


def test_abs_clipping_limits_every_update(tmp_path):
    lr, threshold = 0.5, 1e-3
    trainer, _ = build(tmp_path, optimizer=O.OptimizerConfig(name="sgd", learning_rate=lr, clip_type="abs",
                                                           clip_threshold=threshold), dropout=0.0)
    before = {k: p.data().asnumpy().copy() for k, p in trainer.params.items()}
    trainer._update()
    deltas = [np.abs(p.data().asnumpy() - before[k]).max() for k, p in trainer.params.items()]
    assert max(deltas) == pytest.approx(lr * threshold, rel=1e-4)     # clipped (the raw gradients are larger)
    trainer2, _ = build(tmp_path, optimizer=O.OptimizerConfig(name="sgd", learning_rate=lr, clip_type="none"),
                        dropout=0.0)
    trainer2._update()
    deltas2 = [np.abs(p.data().asnumpy() - before[k]).max() for k, p in trainer2.params.items()]
    assert max(deltas2) > 10 * lr * threshold


def test_norm_clipping_limits_global_norm(tmp_path):
    lr, threshold = 1.0, 0.01
    trainer, _ = build(tmp_path, optimizer=O.OptimizerConfig(name="sgd", learning_rate=lr, clip_type="norm",
                                                           clip_threshold=threshold), dropout=0.0)
    before = {k: p.data().asnumpy().copy() for k, p in trainer.params.items()}
    trainer._update()
    norm = np.sqrt(sum(((p.data().asnumpy() - before[k]) ** 2).sum() for k, p in trainer.params.items()))
    assert norm == pytest.approx(lr * threshold, rel=1e-3)


def test_update_interval_averages_the_batches(tmp_path):
    sgd = O.OptimizerConfig(name="sgd", learning_rate=0.1, clip_type="none")
    acc, _ = build(tmp_path, optimizer=sgd, dropout=0.0, update_interval=2)
    assert all(p.grad_req == "add" for p in acc.params.values())
    ref, _ = build(tmp_path, optimizer=sgd, dropout=0.0)
    w0 = {k: p.data().asnumpy().copy() for k, p in ref.params.items()}
    # reference: the gradient of each of the two batches, averaged
    grads = []
    for _ in range(2):
        batch, _ = ref.train_iter.next_batch()
        ref._forward_backward(batch)
        grads.append({k: p.grad().asnumpy().copy() for k, p in ref.params.items()})
    acc._update()
    assert acc.state.updates == 1 and acc.train_iter.position == 2
    for k, p in acc.params.items():
        expected = w0[k] - 0.1 * (grads[0][k] + grads[1][k]) / 2
        np.testing.assert_allclose(p.data().asnumpy(), expected, rtol=1e-4, atol=1e-6)
        assert np.abs(p.grad().asnumpy()).max() == 0      # zeroed for the next accumulation


def test_two_devices_keep_identical_params(tmp_path):
    trainer, out = build(tmp_path, contexts=(mx.cpu(0), mx.cpu(1)), checkpoint_interval=10, max_updates=20)
    trainer.fit()
    for p in trainer.params.values():
        a, b = (d.asnumpy() for d in p.list_data())
        np.testing.assert_allclose(a, b)
    rows = metric_rows(out)
    assert rows[1][1]["perplexity-val"] < rows[0][1]["perplexity-val"]


def test_early_stopping_respects_min_updates(tmp_path):
    frozen = O.OptimizerConfig(name="sgd", learning_rate=0.0, clip_type="none")
    trainer, _ = build(tmp_path, optimizer=frozen, checkpoint_interval=2, max_num_checkpoint_not_improved=1,
                       max_updates=100)
    state = trainer.fit()
    assert state.checkpoint == 2 and "no improvement" in state.stop_reason
    trainer, _ = build(tmp_path / "x" if (tmp_path / "x").mkdir() is None else None, optimizer=frozen,
                       checkpoint_interval=2, max_num_checkpoint_not_improved=1, max_updates=100, min_updates=9)
    state = trainer.fit()
    assert state.checkpoint == 5 and state.updates == 10


def test_limits_epochs_and_final_checkpoint(tmp_path):
    trainer, out = build(tmp_path, checkpoint_interval=100, max_num_epochs=2)
    state = trainer.fit()
    assert state.epoch == 2 and state.updates == 16
    assert [n for n, _ in metric_rows(out)] == [1]        # a last checkpoint when a limit stops training
    assert "--max-num-epochs 2" in state.stop_reason


def test_keep_last_params(tmp_path):
    trainer, out = build(tmp_path, checkpoint_interval=2, max_updates=10, keep_last_params=2,
                         keep_initializations=True)
    trainer.fit()
    kept = sorted(p for p in os.listdir(out) if p.startswith("params.0"))
    best = int(os.readlink(out / C.PARAMS_BEST_NAME).rsplit(".", 1)[1])
    assert set(kept) == {C.PARAMS_NAME % n for n in {0, 4, 5, best}}


def test_plateau_reduce_with_param_reset(tmp_path):
    sched = S.SchedulerConfig(type="plateau-reduce", base_rate=0.0, reduce_factor=0.5, reduce_num_not_improved=1)
    trainer, _ = build(tmp_path, optimizer=O.OptimizerConfig(name="sgd", learning_rate=0.0), scheduler=sched,
                       checkpoint_interval=2, max_updates=6, lr_decay_param_reset=True,
                       lr_decay_opt_states_reset="initial", max_num_checkpoint_not_improved=-1)
    trainer.fit()
    assert trainer.scheduler.num_not_improved == 0 and trainer.state.best_checkpoint == 1


def test_resume_in_process_is_exact(tmp_path):
    kw = dict(checkpoint_interval=5, max_updates=20, max_num_checkpoint_not_improved=-1)
    straight, out1 = build(tmp_path / "a" if (tmp_path / "a").mkdir() is None else None, **kw)
    straight.fit()
    # interrupted after 10 updates: a fresh Trainer (fresh model, other RNG state) on the same folder continues
    first, out2 = build(tmp_path / "b" if (tmp_path / "b").mkdir() is None else None, **dict(kw, max_updates=10))
    first.fit()
    (out2 / "metrics").write_text((out2 / "metrics").read_text() + "3\tgarbage=1\n")   # killed mid-checkpoint
    state_file = out2 / C.TRAINING_STATE_DIRNAME / T.STATE_FILE
    import json
    state = json.loads(state_file.read_text())
    state["training"]["finished"] = False
    state_file.write_text(json.dumps(state))
    T.seed_everything(99)
    second, _ = build(tmp_path / "b", **kw)
    mx.random.seed(1234)
    second.fit()
    a = [(n, {k: round(v, 5) for k, v in m.items() if k != "time-elapsed"}) for n, m in metric_rows(out1)]
    b = [(n, {k: round(v, 5) for k, v in m.items() if k != "time-elapsed"}) for n, m in metric_rows(out2)]
    assert a == b and len(a) == 4


def test_max_samples_and_max_seconds(tmp_path):
    trainer, _ = build(tmp_path, checkpoint_interval=100, max_samples=20)
    state = trainer.fit()
    assert state.updates == 3 and state.samples == 24 and "--max-samples 20" in state.stop_reason
    trainer, _ = build(tmp_path / "s" if (tmp_path / "s").mkdir() is None else None, checkpoint_interval=2,
                       max_seconds=0, max_updates=100)
    state = trainer.fit()
    assert state.checkpoint == 1 and "--max-seconds 0" in state.stop_reason


def test_initialize_from_params_file(tmp_path):
    from captioning import utils
    trainer, out = build(tmp_path, checkpoint_interval=2, max_updates=2)
    trainer.fit()
    source = str(out / (C.PARAMS_NAME % 1))
    model = TinyModel(len(V.build_vocab(WORDS)), prefix="tiny_")
    M.initialize_model(model, [mx.cpu()], Store.feature_shape, params_file=source)
    for name, p in model.collect_params().items():
        np.testing.assert_allclose(p.data().asnumpy(), trainer.params[name].data().asnumpy(), rtol=1e-6)
    bigger = TinyModel(len(V.build_vocab(WORDS)), prefix="tiny_")
    with bigger.name_scope():
        bigger.extra = gluon.nn.Dense(2, in_units=2)
    with pytest.raises(utils.CaptioningError, match="--allow-missing-params"):
        M.initialize_model(bigger, [mx.cpu()], Store.feature_shape, params_file=source)
    bigger = TinyModel(len(V.build_vocab(WORDS)), prefix="tiny_")
    with bigger.name_scope():
        bigger.extra = gluon.nn.Dense(2, in_units=2)
    M.initialize_model(bigger, [mx.cpu()], Store.feature_shape, params_file=source, allow_missing=True)
    np.testing.assert_allclose(bigger.out.weight.data().asnumpy(), trainer.model.out.weight.data().asnumpy())
    # another vocabulary size: no flag makes that fit, so none is suggested
    other_vocab = TinyModel(len(V.build_vocab(WORDS)) + 3, prefix="tiny_")
    with pytest.raises(utils.CaptioningError, match="same architecture and vocabulary") as info:
        M.initialize_model(other_vocab, [mx.cpu()], Store.feature_shape, params_file=source)
    assert "--allow-missing-params" not in str(info.value)


def test_non_finite_loss_stops_with_an_error_naming_the_update(tmp_path):
    from captioning import utils
    trainer, _ = build(tmp_path, checkpoint_interval=100, max_updates=50)
    trainer.model.embed.weight.set_data(mx.nd.full(trainer.model.embed.weight.shape, np.nan))
    with pytest.raises(utils.CaptioningError, match=r"update 1: the training loss is not finite .* last good "
                                                    r"checkpoint is 0"):
        trainer.fit()


def test_a_failed_params_write_is_a_one_line_error(tmp_path, monkeypatch):
    from captioning import utils
    trainer, out = build(tmp_path, checkpoint_interval=2, max_updates=4)

    def full_disk(path):
        raise mx.base.MXNetError("Traceback (most recent call last):\n  File \"local_filesys.cc\", line 38\n"
                                 "MXNetError: Check failed: std::fwrite(ptr, 1, size, fp_) == size: FileStream.Write "
                                 "incomplete")
    monkeypatch.setattr(trainer.model, "save_parameters", full_disk)
    with pytest.raises(utils.CaptioningError, match=r"params.00000: cannot write \(the disk is full"):
        trainer.fit()
    assert not [n for n in os.listdir(out) if n.startswith(".params")]     # no temporary file left


def test_optimizer_states_round_trip_without_pickle(tmp_path):
    from captioning import training_state as TS
    trainer, _ = build(tmp_path, checkpoint_interval=100, max_updates=3, dropout=0.0)
    trainer.fit()
    snapshot = TS.get_optimizer_states(trainer.gluon_trainer)
    TS.save_optimizer_states(snapshot, str(tmp_path), "opt")
    arrays, meta = TS.load_optimizer_states(str(tmp_path), "opt")
    assert meta["index_update_counts"]["0"] and all(v == 3 for v in meta["index_update_counts"]["0"].values())
    other, _ = build(tmp_path / "o" if (tmp_path / "o").mkdir() is None else None, dropout=0.0)
    TS.set_optimizer_states(other.gluon_trainer, (arrays, meta), "opt")
    for index, state in trainer.gluon_trainer._updaters[0].states.items():
        for a, b in zip(state, other.gluon_trainer._updaters[0].states[index]):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert other.gluon_trainer._optimizer._index_update_count == trainer.gluon_trainer._optimizer._index_update_count
    # a snapshot of another optimizer is refused
    sgd, _ = build(tmp_path / "s" if (tmp_path / "s").mkdir() is None else None,
                   optimizer=O.OptimizerConfig(name="sgd", learning_rate=0.1))
    from captioning import utils
    with pytest.raises(utils.CaptioningError, match="states of the adam optimizer, not of sgd"):
        TS.set_optimizer_states(sgd.gluon_trainer, (arrays, meta), "opt")


def test_resume_refuses_damaged_state_files(tmp_path):
    """Issue 11 items 1 and 7 in process: a pickle in place of the optimizer arrays, a truncated or wrongly typed
    state.json are one-line errors naming the file (nothing is unpickled)."""
    import json
    from captioning import utils
    trainer, out = build(tmp_path, checkpoint_interval=2, max_updates=2)
    trainer.fit()
    state_dir = out / C.TRAINING_STATE_DIRNAME
    good_npz = (state_dir / "optimizer_states.npz").read_bytes()
    ran = []

    class Payload:
        def __reduce__(self):
            return (ran.append, ("ran",))

    np.save(state_dir / "x.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    os.replace(state_dir / "x.npy", state_dir / "optimizer_states.npz")
    with pytest.raises(utils.CaptioningError, match=r"optimizer_states.npz: cannot read the optimizer states"):
        build(tmp_path, checkpoint_interval=2, max_updates=4)[0].fit()
    assert ran == []
    (state_dir / "optimizer_states.npz").write_bytes(good_npz)
    state_file = state_dir / T.STATE_FILE
    good = state_file.read_text()
    state_file.write_text(good[:40])
    with pytest.raises(utils.CaptioningError, match=r"state.json: cannot read .*--overwrite-output"):
        build(tmp_path, checkpoint_interval=2, max_updates=4)[0].fit()
    values = json.loads(good)
    values["training"]["updates"] = "two"
    state_file.write_text(json.dumps(values))
    with pytest.raises(utils.CaptioningError, match=r"damaged training state \('training'.updates is 'two'\)"):
        build(tmp_path, checkpoint_interval=2, max_updates=4)[0].fit()
    values = json.loads(good)
    values["iterator"] = {"epoch": 0}
    state_file.write_text(json.dumps(values))
    with pytest.raises(utils.CaptioningError, match=r"state.json: damaged training state \(KeyError"):
        build(tmp_path, checkpoint_interval=2, max_updates=4)[0].fit()
    state_file.write_text(good)
    assert build(tmp_path, checkpoint_interval=2, max_updates=4)[0].fit().updates == 4
