"""Cross-entropy with label smoothing over padded caption batches, and the perplexity/accuracy metrics.

The loss block returns the softmax output (what ``backward`` starts from) and, separately and without gradient,
three sums of the batch: the unsmoothed negative log-likelihood of the labels, the number of valid (non-pad) label
positions, and the number of positions where the most likely word is the label. The training loop adds those sums
up on the device and reads them only at checkpoints, so no update waits for the metrics.

Label smoothing (Szegedy et al. 2016, as Sockeye): the target distribution puts ``1 - eps`` on the label and
``eps / (V - 1)`` on every other word. Padding positions (label ``<pad>`` = 0) contribute nothing.
"""
import math
from dataclasses import dataclass
from typing import Dict, Sequence, Union

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import constants as C
from .config import Config

NORMALIZATION_VALID = "valid"
NORMALIZATION_BATCH = "batch"


@dataclass
class LossConfig(Config):
    vocab_size: int
    label_smoothing: float = 0.1
    normalization: str = NORMALIZATION_VALID   # valid: per non-pad token; batch: per caption


class CrossEntropyLoss(gluon.HybridBlock):
    """(logits (B, T, V), labels (B, T)) -> (output, stats): ``output`` is the softmax (B*T, V) whose backward is
    the gradient of the label-smoothed cross-entropy, normalised per valid token (``valid``) or per caption
    (``batch``); ``stats`` (3,) = [sum of -log p(label), number of valid positions, number of correct argmaxes],
    without gradient."""

    def __init__(self, config: LossConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config

    def hybrid_forward(self, F, logits, labels):
        eps = self.config.label_smoothing
        flat_logits = F.reshape(logits, shape=(-1, 0), reverse=True)    # (B*T, V)
        flat_labels = F.reshape(labels, shape=(-1,))                      # (B*T,)
        valid = flat_labels != C.PAD_ID
        if self.config.normalization == NORMALIZATION_VALID:
            # the fused kernel: softmax forward, (p - smoothed target) / num_valid backward
            output = F.SoftmaxOutput(flat_logits, flat_labels, ignore_label=C.PAD_ID, use_ignore=True,
                                     normalization="valid", smooth_alpha=eps)
            probs = F.BlockGrad(output)
        else:
            log_probs = F.log_softmax(flat_logits, axis=-1)
            nll = -F.pick(log_probs, flat_labels, axis=-1)
            if eps > 0:
                others = -F.sum(log_probs, axis=-1) - nll
                token_loss = (1.0 - eps) * nll + eps / (self.config.vocab_size - 1) * others
            else:
                token_loss = nll
            num_captions = F.sum(F.ones_like(F.slice_axis(labels, axis=1, begin=0, end=1)))
            output = F.make_loss(F.broadcast_div(F.sum(token_loss * valid), num_captions))
            probs = F.BlockGrad(F.exp(log_probs))
        label_probs = F.pick(probs, flat_labels, axis=-1)
        nll_sum = F.sum(-F.log(F.maximum(label_probs, 1e-20)) * valid)
        num_valid = F.sum(valid)
        correct = F.sum((F.argmax(probs, axis=-1) == flat_labels) * valid)
        stats = F.BlockGrad(F.stack(nll_sum, num_valid, correct, axis=0).reshape((-1,)))
        return output, stats


def metrics_from_stats(stats: Union[Sequence[float], np.ndarray], prefix_suffix: str) -> Dict[str, float]:
    """``{"perplexity-<suffix>": exp(nll / n), "accuracy-<suffix>": correct / n}`` from summed loss stats."""
    nll_sum, num_valid, correct = (float(x) for x in stats)
    num_valid = max(num_valid, 1.0)
    return {"%s-%s" % (C.METRIC_PERPLEXITY, prefix_suffix): math.exp(min(nll_sum / num_valid, 700.0)),
            "%s-%s" % (C.METRIC_ACCURACY, prefix_suffix): correct / num_valid}


def new_stats(ctx: mx.Context) -> mx.nd.NDArray:
    """A zero accumulator for `CrossEntropyLoss`'s stats on ``ctx``."""
    return mx.nd.zeros((3,), ctx=ctx, dtype="float64")
