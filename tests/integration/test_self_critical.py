"""python -m captioning.train --loss self-critical from a cross-entropy model: metrics (reward-train, cider-val),
--optimized-metric cider, and resume after kill -9 equal to an uninterrupted run."""
import os

import pytest

from .test_train import (assert_same_metrics, assert_same_params, kill_after_two_checkpoints, read_metrics,
                         run_train, train_args)

pytestmark = pytest.mark.slow

SELF_CRITICAL = ["--loss", "self-critical", "--self-critical-samples", "3", "--initial-learning-rate", "0.0001",
                 "--decode-and-evaluate", "12", "--optimized-metric", "cider", "--max-num-checkpoint-not-improved",
                 "-1", "--checkpoint-interval", "3", "--max-updates", "12"]


@pytest.fixture(scope="module")
def cross_entropy_model(synthetic_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("self_critical") / "xe"
    run_train(train_args(synthetic_features, out, "--checkpoint-interval", "10", "--max-updates", "20",
                         "--initial-learning-rate", "0.003"))
    return out


def test_self_critical_run_and_resume_after_kill(synthetic_features, cross_entropy_model, tmp_path):
    params = str(cross_entropy_model / "params.best")
    straight = tmp_path / "straight"
    run_train(train_args(synthetic_features, straight, "--params", params, *SELF_CRITICAL))
    expected = read_metrics(straight)
    assert [n for n, _ in expected] == [1, 2, 3, 4]
    for _, values in expected:
        assert {"reward-train", "sample-length-train", "cider-val", "bleu-val", "chrf-val"} <= set(values)
        assert values["reward-train"] >= 0 and 0 <= values["cider-val"] <= 1000
    ciders = [v["cider-val"] for _, v in expected]
    assert os.readlink(straight / "params.best") == "params.%05d" % (ciders.index(max(ciders)) + 1)

    killed = tmp_path / "killed"
    args = train_args(synthetic_features, killed, "--params", params, *SELF_CRITICAL)
    kill_after_two_checkpoints(args, killed, timeout=240)
    assert len(read_metrics(killed)) < 4
    run_train(args)
    assert_same_metrics(read_metrics(killed), expected)
    assert_same_params(straight / "params.00004", killed / "params.00004")


def test_self_critical_without_params_is_refused(synthetic_features, tmp_path):
    result = run_train(train_args(synthetic_features, tmp_path / "sc", "--loss", "self-critical"), check=False)
    assert result.returncode != 0 and "--params" in result.stderr and "Traceback" not in result.stderr
