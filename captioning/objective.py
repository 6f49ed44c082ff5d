"""Training objectives: what the `training.Trainer` optimises, as one interface (`Objective`).

The Trainer cuts each batch into one `BatchShare` per device and hands all shares of the batch to the objective's
``forward_backward``, which records the forward pass itself (``autograd.record``), so it may first run an unrecorded
pass (e.g. sampling captions for self-critical training), and calls ``backward`` once. The Trainer then reduces the
gradients over devices and workers, divides them by the number of shares x workers, clips and updates. Each share's
loss must therefore be that share's mean per row (per caption, or per valid token for cross-entropy's ``valid``
normalisation): the Trainer knows nothing about the loss.

Randomness: objectives draw only from ``mx.random`` and ``np.random``. The Trainer re-seeds MXNet's generator after
every checkpoint and saves and restores NumPy's with the training state, so a resumed run draws the same numbers as
an uninterrupted one.

- `CrossEntropyObjective` (``--loss cross-entropy``): teacher-forced, label-smoothed cross-entropy (`loss.py`);
  metrics ``perplexity-train`` and ``accuracy-train``.
- ``--loss self-critical``: `self_critical.SelfCriticalObjective` (imported only when chosen).
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Protocol, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd

from . import constants as C
from . import loss as loss_module
from . import utils
from .config import Config

if TYPE_CHECKING:  # pragma: no cover
    from . import model
    from .training import TrainingConfig
    from .vocab import Vocab


Reduce = Callable[[np.ndarray], np.ndarray]    # sums of this process -> sums of every process


@dataclass
class SelfCriticalConfig(Config):
    """Settings of ``--loss self-critical`` (`self_critical.SelfCriticalObjective`). Each field names its flag."""
    samples: int = 5                                  # --self-critical-samples: captions sampled per image
    baseline: str = C.SELF_CRITICAL_BASELINE_MEAN     # --self-critical-baseline: mean | greedy
    top_k: int = 5                                    # --self-critical-top-k (0: the whole softmax)
    sample_dropout: bool = False                      # --self-critical-sample-dropout


def check_start(loss: str, initial_params: Optional[str]) -> None:
    """Self-critical training continues from a cross-entropy model: it needs the parameters it starts from
    (``--params``; `training.create_trainer`'s ``initial_params``)."""
    utils.check_condition(loss != C.LOSS_SELF_CRITICAL or initial_params is not None,
                          "--loss self-critical continues from a cross-entropy model: give its parameters with "
                          "--params XE_FOLDER/params.best")


@dataclass
class BatchShare:
    """One device's share of a training batch (the rows of the batch that device computes)."""
    ctx: mx.Context
    features: mx.nd.NDArray       # (b, C, H, W) on ctx
    target_input: mx.nd.NDArray   # (b, T) <s> w1 ... (teacher forcing input)
    labels: mx.nd.NDArray         # (b, T) w1 ... </s> (0 = <pad>)
    image_ids: np.ndarray         # (b,) int: index of each row's image in the training feature store


class Objective(Protocol):
    """A training objective: turns the shares of a batch into gradients, and keeps its training metrics."""
    name: str

    def forward_backward(self, model: "model.CaptionModel", shares: Sequence[BatchShare]) -> None:
        """Records the forward pass of every share (it calls autograd.record itself, so it may run an
        unrecorded pass first, e.g. sampling), and calls backward once. Each share's loss is that share's
        mean per row (the Trainer divides the summed gradients by the number of shares and workers)."""

    def metrics(self, reduce: Optional[Reduce] = None) -> Dict[str, float]:
        """Training metrics accumulated since the last call, then reset (e.g. perplexity-train). ``reduce``: applied
        to the accumulated sums before the metrics are computed from them (``--processes``: the sums of every
        process); every process must call it at the same point."""


class CrossEntropyObjective:
    """Label-smoothed cross-entropy with teacher forcing (`loss.CrossEntropyLoss`); metrics ``perplexity-train``
    and ``accuracy-train`` from the unsmoothed likelihood, summed on each device and read only by `metrics`."""
    name = C.LOSS_CROSS_ENTROPY

    def __init__(self, config: loss_module.LossConfig) -> None:
        self.loss = loss_module.CrossEntropyLoss(config)
        self.loss.hybridize()
        self._stats: Dict[mx.Context, mx.nd.NDArray] = {}

    def forward_backward(self, model: "model.CaptionModel", shares: Sequence[BatchShare]) -> None:
        outputs: List[mx.nd.NDArray] = []
        stats: List[mx.nd.NDArray] = []
        with autograd.record():
            for share in shares:
                output, share_stats = self.loss(model(share.features, share.target_input), share.labels)
                outputs.append(output)
                stats.append(share_stats)
        autograd.backward(outputs)
        for share, share_stats in zip(shares, stats):
            if share.ctx not in self._stats:
                self._stats[share.ctx] = loss_module.new_stats(share.ctx)
            self._stats[share.ctx] += share_stats.astype("float64")

    def metrics(self, reduce: Optional[Reduce] = None) -> Dict[str, float]:
        totals = sum(s.asnumpy() for s in self._stats.values()) if self._stats else np.zeros(3)
        for s in self._stats.values():
            s[:] = 0
        return loss_module.metrics_from_stats(reduce(totals) if reduce is not None else totals, "train")


def create_objective(config: "TrainingConfig", references: Sequence[Sequence[str]], vocab: "Vocab",
                     max_output_length: int) -> Objective:
    """The objective ``config.loss`` names. ``references[i]``: every training caption (tokens joined by single
    spaces) of training image i (the `BatchShare.image_ids`); used by self-critical training only."""
    if config.loss == C.LOSS_CROSS_ENTROPY:
        return CrossEntropyObjective(config.cross_entropy)
    if config.loss == C.LOSS_SELF_CRITICAL:
        from .self_critical import SelfCriticalObjective
        settings = config.self_critical
        return SelfCriticalObjective(references=references, vocab=vocab, num_samples=settings.samples,
                                     baseline=settings.baseline, max_output_length=max_output_length,
                                     top_k=settings.top_k, sample_dropout=settings.sample_dropout)
    raise ValueError("unknown loss %r (expected one of %s)" % (config.loss, ", ".join(C.LOSSES)))
