"""On a GPU (marked ``gpu``; skipped where MXNet sees none, as in CI): training runs there and its model captions on
the CPU; beam search and sampling on gpu(0) give what they give on the CPU. `benchmarks/gpu.sh` runs these with
MXNet's CUDA build."""
import mxnet as mx
import numpy as np
import pytest

from captioning import utils
from captioning.beam_search import BeamSearch
from captioning.sampling import Sampler

from ..unit.test_self_critical import tiny_model
from .test_train import TINY, read_metrics, run_train, train_args

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(utils.num_gpus_available() == 0, reason="no GPU (MXNet's CPU build or no card)")]


def _features(seed: int = 4, n: int = 6) -> np.ndarray:
    return np.random.RandomState(seed).rand(n, 4, 2, 2).astype(np.float32)


def _on(model, ctx):
    model.collect_params().reset_ctx(ctx)
    return model


def test_beam_search_on_the_gpu_gives_the_cpu_captions():
    features = _features()
    results = {}
    for ctx in (mx.cpu(), mx.gpu(0)):
        model = _on(tiny_model(seed=3), ctx)
        search = BeamSearch([model], beam_size=3, max_output_length=6, ctx=ctx)
        results[str(ctx)] = search.search(mx.nd.array(features, ctx=ctx))
    for cpu, gpu in zip(results["cpu(0)"], results["gpu(0)"]):
        assert cpu.tokens == gpu.tokens
        assert cpu.score == pytest.approx(gpu.score, rel=1e-4, abs=1e-5)


def test_sampling_on_the_gpu_reproduces_under_a_seed():
    model = _on(tiny_model(seed=3), mx.gpu(0))
    sampler = Sampler([model], num_samples=4, max_output_length=6, ctx=mx.gpu(0))
    features = mx.nd.array(_features(), ctx=mx.gpu(0))
    drawn = []
    for _ in range(2):
        mx.random.seed(11)
        drawn.append(sampler.sample(features).tokens)
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert drawn[0].shape[0] == 6 * 4


@pytest.mark.slow
def test_training_on_the_gpu(synthetic_features, tmp_path):
    out = tmp_path / "model"
    args = [a for a in train_args(synthetic_features, out, "--max-updates", "4", "--checkpoint-interval", "2",
                                  "--device-ids", "0") if a != "--use-cpu"]
    assert "--use-cpu" in TINY and "--use-cpu" not in args
    result = run_train(args)
    assert "gpu(0)" in result.stderr
    rows = read_metrics(out)
    assert [n for n, _ in rows] == [1, 2]
    assert all(np.isfinite(v["perplexity-val"]) for _, v in rows)
