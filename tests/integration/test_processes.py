"""train --processes N: the processes' kvstore (sums and broadcasts through shared memory), the supervisor, and
whole trainings that must equal one process's and resume exactly after kill -9."""
import os
import time

import numpy as np
import pytest

from captioning import process_group
from captioning.utils import CaptioningError

from .test_train import (assert_same_metrics, assert_same_params, kill_after_two_checkpoints, read_metrics,
                         run_train, train_args)

NO_DROPOUT = ["--rnn-decoder-hidden-dropout", "0", "--embed-dropout", "0"]


def _exchange(folder: str, group: process_group.ProcessGroup, rank: int) -> None:
    """Each process pushes (rank + 1) * base for two keys, three times, and broadcasts from rank 0."""
    import mxnet as mx
    kv = process_group.create_kvstore(group, rank)
    assert (kv.rank, kv.num_workers, kv.type) == (rank, group.size, process_group.KVSTORE_TYPE)
    results = {}
    for step in range(3):
        for key, shape in ((0, (3, 4)), (7, (5,))):
            base = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + step
            grad = mx.nd.array(base * (rank + 1))
            kv.pushpull(key, grad)
            results["sum-%d-%d" % (key, step)] = grad.asnumpy()
    value = mx.nd.array(np.full((2, 2), 10.0 + rank, dtype=np.float32))
    outs = [mx.nd.zeros((2, 2))]
    kv.broadcast(3, value, outs)
    results["broadcast"] = outs[0].asnumpy()
    np.savez(os.path.join(folder, "rank%d.npz" % rank), **results)


def _fail_on_rank_one(folder: str, group: process_group.ProcessGroup, rank: int) -> None:
    if rank == 1:
        raise CaptioningError("process 1 gives up")
    group.barrier.wait()          # would wait forever for process 1: the supervisor must stop it


def test_pushpull_sums_over_processes_and_broadcast_takes_rank_0(tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(process_group, "_SHM_ROOT", str(shm))
    assert process_group.run(_exchange, str(tmp_path), 3, threads=1) == 0
    results = [np.load(tmp_path / ("rank%d.npz" % r)) for r in range(3)]
    for step in range(3):
        for key, shape in ((0, (3, 4)), (7, (5,))):
            base = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + step
            for r in range(3):
                np.testing.assert_array_equal(results[r]["sum-%d-%d" % (key, step)], base * (1 + 2 + 3))
    for r in range(3):
        np.testing.assert_array_equal(results[r]["broadcast"], np.full((2, 2), 10.0))
    assert os.listdir(shm) == [], "shared arrays were left behind"


def test_a_failing_process_stops_the_others(tmp_path):
    start = time.time()
    assert process_group.run(_fail_on_rank_one, str(tmp_path), 2, threads=1) == 1
    assert time.time() - start < 60


def test_processes_train_as_one_process_with_the_whole_batch(synthetic_features, tmp_path):
    # per-caption loss normalisation: two parts of 4 captions make exactly one batch of 8 (with the default, each
    # part is normalised by its own words, as each device's is with several devices); plain SGD, as Adam's
    # g / sqrt(v) turns rounding differences of near-zero gradients into whole steps
    extra = ["--checkpoint-interval", "3", "--max-updates", "6", "--max-num-checkpoint-not-improved", "-1",
             "--loss-normalization-type", "batch", "--optimizer", "sgd", "--initial-learning-rate", "0.5"]
    extra += NO_DROPOUT
    one = tmp_path / "one"
    run_train(train_args(synthetic_features, one, *extra))
    two = tmp_path / "two"
    result = run_train(train_args(synthetic_features, two, "--processes", "2", *extra))
    assert "Training in 2 processes" in result.stderr
    a, b = read_metrics(one), read_metrics(two)
    assert [n for n, _ in a] == [n for n, _ in b] == [1, 2]
    for (_, va), (_, vb) in zip(a, b):
        assert set(va) == set(vb)
        for key in ("perplexity-train", "perplexity-val", "learning-rate"):
            assert va[key] == pytest.approx(vb[key], rel=1e-4), key
    import mxnet as mx
    a, b = mx.nd.load(str(one / "params.00002")), mx.nd.load(str(two / "params.00002"))
    for key in a:     # the same up to the order of float sums (six updates at learning rate 0.5)
        np.testing.assert_allclose(a[key].asnumpy(), b[key].asnumpy(), rtol=1e-3, atol=1e-4)


def test_processes_resume_after_kill_as_an_uninterrupted_run(synthetic_features, tmp_path):
    extra = ["--processes", "2", "--checkpoint-interval", "3", "--max-updates", "12",
             "--max-num-checkpoint-not-improved", "-1"]
    straight = tmp_path / "straight"
    run_train(train_args(synthetic_features, straight, *extra))
    expected = read_metrics(straight)
    assert len(expected) == 4

    killed = tmp_path / "killed"
    args = train_args(synthetic_features, killed, *extra)
    parent = kill_after_two_checkpoints(args, killed, timeout=180)      # kills the parent only
    time.sleep(1)        # the processes die with their parent; their shared arrays were gone before
    if os.path.isdir("/dev/shm"):
        left = [name for name in os.listdir("/dev/shm") if name.startswith("captioning-processes-%d-" % parent)]
        assert not left, left
    # the training processes die with their parent (and release the folder's lock)
    result = run_train(args)
    assert "continuing it" in result.stderr
    assert_same_metrics(read_metrics(killed), expected)
    assert_same_params(straight / "params.00004", killed / "params.00004")


@pytest.mark.parametrize("flags, message", [
    (["--processes", "2", "--batch-type", "word"], "--batch-type sentence"),
    (["--processes", "9", "--batch-size", "8"], "--batch-size of at least 9"),
    (["--processes", "2", "--kvstore", "dist_sync"], "does not combine with --kvstore dist_sync"),
])
def test_processes_refuses_what_it_cannot_split(synthetic_features, tmp_path, flags, message):
    out = tmp_path / "model"
    result = run_train(train_args(synthetic_features, out, *flags), check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
