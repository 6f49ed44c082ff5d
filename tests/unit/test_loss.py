import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from captioning import loss as L


def reference(logits, labels, eps, normalization):
    """numpy: gradient of the smoothed cross-entropy and the unsmoothed nll / valid / correct sums."""
    B, T, V = logits.shape
    x = logits.reshape(-1, V)
    y = labels.reshape(-1).astype(int)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    target = np.full_like(p, eps / (V - 1))
    target[np.arange(len(y)), y] = 1 - eps
    valid = (y != 0)
    grad = (p - target) * valid[:, None]
    grad /= valid.sum() if normalization == "valid" else B
    nll = -np.log(p[np.arange(len(y)), y])
    correct = (p.argmax(-1) == y)
    return grad.reshape(B, T, V), (nll * valid).sum(), valid.sum(), (correct * valid).sum()


@pytest.mark.parametrize("normalization", ["valid", "batch"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("hybridize", [False, True])
def test_gradient_and_stats_match_reference(normalization, eps, hybridize):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 7)).astype(np.float32)
    labels = np.array([[4, 5, 3, 0], [6, 3, 0, 0], [1, 2, 5, 3]], dtype=np.float32)
    block = L.CrossEntropyLoss(L.LossConfig(vocab_size=7, label_smoothing=eps, normalization=normalization))
    if hybridize:
        block.hybridize()
    x = mx.nd.array(logits)
    x.attach_grad()
    with autograd.record():
        out, stats = block(x, mx.nd.array(labels))
    out.backward()
    grad, nll, valid, correct = reference(logits, labels, eps, normalization)
    np.testing.assert_allclose(x.grad.asnumpy(), grad, atol=1e-6)
    np.testing.assert_allclose(stats.asnumpy(), [nll, valid, correct], rtol=1e-5)
    assert valid == 9


def test_metrics_from_stats():
    m = L.metrics_from_stats((math.log(20.0) * 10, 10, 4), "val")
    assert m["perplexity-val"] == pytest.approx(20.0)
    assert m["accuracy-val"] == pytest.approx(0.4)
