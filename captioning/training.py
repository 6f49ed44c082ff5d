"""`Trainer`: the update loop, gradient clipping, checkpoints, early stopping and exact resume.

One update = ``update_interval`` batches, each cut into one `objective.BatchShare` per device (`split_batch`); the
`objective.Objective` records the forward pass and calls backward. Gradients are summed (``grad_req='add'`` when
accumulating), reduced across devices and workers, averaged by the optimizer's ``rescale_grad``, clipped (by value
in the optimizer, or by global norm here) and applied. Every ``checkpoint_interval`` updates a checkpoint runs four
steps: *evaluate* (validation perplexity and accuracy, optional caption decoding: BLEU/chrF/CIDEr), *decide*
(improved? stop?), *broadcast* (rank 0's decision to every worker of a distributed run) and *persist* (a
``params.NNNNN`` file, ``params.best``, a ``metrics`` line through `model_folder.ModelFolder`; the learning-rate
schedule's reaction; the training state through `training_state.TrainingStateStore`). ``params.00000`` and a state
at checkpoint 0 are written before the first update.

Exactness of resume: MXNet cannot report its random generator's state, so the generator is re-seeded right after
every checkpoint with a value derived from the seed and the checkpoint number; a resumed run re-seeds the same way
and draws the same dropout masks (and the same samples, for objectives that sample). NumPy's and Python's
generators are saved and restored. Objectives draw only from ``mx.random`` and ``np.random``.

Distributed (``--kvstore dist_*``): every worker trains on its shard of each epoch's batches; only rank 0 validates
and writes files; its decisions (improved, stop) are broadcast through the kvstore so all workers act alike. With
``dist_async`` the servers update the parameters with the optimizer they received at the start: a learning-rate
schedule would never reach them, so only a constant rate (``--learning-rate-scheduler-type none``) is accepted.
Processes of one machine (``--processes N``, `process_group`): every process reads the same batches and trains on
its part of each batch's rows; the gradients are summed through the processes' kvstore, so the update is that of
one process with the whole batch split over N devices.
"""
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import constants as C
from . import data_io, finetune
from . import loss as loss_module
from . import lr_scheduler
from . import model as model_module
from . import objective as objective_module
from . import optimizers
from . import training_state
from . import utils
from .config import Config
from .model import initialize_model  # noqa: F401 - re-exported for older callers (benchmarks)
from .model_folder import ModelFolder, metrics_line
from .training_state import STATE_FILE, TrainingState  # noqa: F401 - part of this module's interface

logger = logging.getLogger(__name__)

_BROADCAST_KEY = 1 << 24          # kvstore keys for rank 0's decisions (the gluon.Trainer uses 0..num_params-1)
_STATISTICS_KEY = 1 << 25         # the kvstore key of the objective's statistics (--processes)
STOP_NONE, STOP_NOT_IMPROVED, STOP_SECONDS = 0, 1, 2
# `Trainer._reseed` mixes (seed, checkpoint, rank) into one generator seed with two primes, so that neighbouring
# seeds, checkpoints and ranks give different seeds (unchanged values: resumed runs of earlier versions re-seed alike)
_RESEED_SEED_FACTOR = 1000003
_RESEED_CHECKPOINT_FACTOR = 7919


class CheckpointDecoder(Protocol):
    """What the Trainer asks of a checkpoint decoder (`checkpoint_decoder.CheckpointDecoder`)."""

    def decode_and_evaluate(self, model: Any, vocab: Dict[str, int]) -> Dict[str, float]:
        """Caption the validation sample with ``model``; metrics such as ``bleu-val``, ``cider-val``."""


@dataclass
class TrainingConfig(Config):
    """How to train (flags of the training groups of ``arguments.py``)."""
    output_folder: str
    cross_entropy: loss_module.LossConfig            # the cross-entropy (label smoothing); validation perplexity
    loss: str = C.LOSS_CROSS_ENTROPY                 # the training objective: cross-entropy | self-critical
    self_critical: objective_module.SelfCriticalConfig = field(default_factory=objective_module.SelfCriticalConfig)
    optimizer: optimizers.OptimizerConfig = field(default_factory=optimizers.OptimizerConfig)
    scheduler: lr_scheduler.SchedulerConfig = field(default_factory=lr_scheduler.SchedulerConfig)
    checkpoint_interval: int = 4000
    update_interval: int = 1
    max_updates: Optional[int] = None
    max_samples: Optional[int] = None
    max_num_epochs: Optional[int] = None
    max_seconds: Optional[int] = None
    min_updates: Optional[int] = None
    min_samples: Optional[int] = None
    min_num_epochs: Optional[int] = None
    max_num_checkpoint_not_improved: int = 32
    optimized_metric: str = C.METRIC_PERPLEXITY
    metrics: List[str] = field(default_factory=lambda: [C.METRIC_PERPLEXITY])
    keep_last_params: int = -1
    keep_initializations: bool = False
    lr_decay_param_reset: bool = False
    lr_decay_opt_states_reset: str = "off"      # off | initial | best
    seed: int = C.DEFAULT_SEED
    kvstore: str = "device"
    log_interval: int = 50                      # updates between speed lines in the log

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainingConfig":
        """Also reads the earlier layout, whose ``self_critical_*`` fields sat in this config."""
        values = dict(values)
        old = {key[len(_OLD_SELF_CRITICAL_PREFIX):]: values.pop(key) for key in list(values)
               if key.startswith(_OLD_SELF_CRITICAL_PREFIX)}
        if old:
            values["self_critical"] = {**values.get("self_critical", {}), **old}
        return super().from_dict(values)


_OLD_SELF_CRITICAL_PREFIX = "self_critical_"


class Trainer:
    """Trains ``model`` (a `model.CaptionModel` with initialised parameters on ``contexts``) on ``train_iter`` with
    ``objective`` (default: cross-entropy), validating on ``val_iter`` at each checkpoint, into
    ``config.output_folder``. ``optimizer``: a ready `mx.optimizer.Optimizer` (default: built from the config).
    ``fine_tune``: the model's `finetune.FineTuneConfig`, when it has CNN layers (``model.image_layers``)."""

    def __init__(self, config: TrainingConfig, model: model_module.CaptionModel, train_iter: data_io.BatchIterator,
                 val_iter: data_io.BatchIterator, contexts: Sequence[mx.Context],
                 checkpoint_decoder: Optional[CheckpointDecoder] = None, vocab: Optional[Dict[str, int]] = None,
                 kvstore: Optional[mx.kvstore.KVStoreBase] = None,
                 objective: Optional[objective_module.Objective] = None,
                 optimizer: Optional[mx.optimizer.Optimizer] = None, batch_part: Tuple[int, int] = (0, 1),
                 fine_tune: Optional[finetune.FineTuneConfig] = None) -> None:
        self.config, self.model, self.train_iter, self.val_iter = config, model, train_iter, val_iter
        self.contexts, self.checkpoint_decoder, self.vocab, self.kv = list(contexts), checkpoint_decoder, vocab, kvstore
        if checkpoint_decoder is not None and vocab is None:
            raise ValueError("a checkpoint decoder turns word ids into words: give the vocabulary (vocab)")
        self.is_dist = kvstore is not None      # a kvstore is given to the workers of a distributed run only
        self.rank = kvstore.rank if kvstore is not None else 0
        self.num_workers = kvstore.num_workers if kvstore is not None else 1
        self.is_primary = self.rank == 0
        # (k, n): this process trains on part k of n of every batch's rows (train --processes n: every process
        # reads the same batches); (0, 1): on whole batches (one process, or ps-lite workers with their own batches)
        self.batch_part = batch_part
        self.workers_per_batch = self.num_workers // batch_part[1]    # workers whose batches make one update
        self.folder = ModelFolder(config.output_folder)
        self.store = training_state.TrainingStateStore(config.output_folder)
        self.state = TrainingState()
        self.scheduler = lr_scheduler.create_scheduler(config.scheduler)
        self.objective = objective or objective_module.CrossEntropyObjective(config.cross_entropy)
        self.loss = loss_module.CrossEntropyLoss(config.cross_entropy)   # validation perplexity
        self.loss.hybridize()
        self.params = model.collect_params()
        self.server_updates = kvstore is not None and "async" in kvstore.type
        self.gluon_trainer = create_gluon_trainer(self.params, config, kvstore, self.server_updates, optimizer)
        self.metric_lines: List[str] = []
        self._session_start = time.time()
        self.speed = Speedometer(self.workers_per_batch)
        self._snapshots: Dict[str, Optional[training_state.OptimizerSnapshot]] = {
            training_state.OPTIMIZER_INITIAL: None, training_state.OPTIMIZER_BEST: None}
        self._pending: Optional[mx.nd.NDArray] = None
        self._last_marker: Optional[mx.nd.NDArray] = None
        self.fine_tune = fine_tune     # the model's fine-tuned CNN layers (model.image_layers), if any
        self._image_layers_learn: Optional[bool] = None    # those layers: learning now?

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self, resume: Optional[bool] = None) -> TrainingState:
        """Train until a stopping criterion holds. ``resume``: continue from ``training_state/`` (default: when it
        exists). A finished run whose limits (--max-updates, --max-num-epochs, --max-samples, --max-seconds) were
        raised since continues."""
        if resume is None:
            if self.is_primary:
                self.store.recover()
            resume = self.store.exists()
        if resume:
            self._load_state()
            if self.state.finished and not reopen(self.config, self.state):
                logger.info("Training in %s has already finished (%s); best checkpoint %d (%s=%.4f). Use "
                            "--overwrite-output to train again.", self.folder.path, self.state.stop_reason,
                            self.state.best_checkpoint, self.config.optimized_metric, self.state.best_metric or 0.0)
                return self.state
            logger.info("Resuming from checkpoint %d (update %d, epoch %d)", self.state.checkpoint,
                        self.state.updates, self.state.epoch)
        else:
            self._start()
        self._reseed()
        self._session_start = time.time()
        self.speed = Speedometer(self.workers_per_batch, self.state.samples)
        updates_since_checkpoint = 0
        while True:
            stop_reason = limit_reached(self.config, self.state)
            if stop_reason:
                if updates_since_checkpoint:
                    self._checkpoint()
                break
            self._update()
            updates_since_checkpoint += 1
            if self.state.updates % self.config.log_interval == 0:
                self._wait_for_pending(self.state.updates)
                self.speed.log(self.state, self.gluon_trainer.learning_rate)
            if self.state.updates % self.config.checkpoint_interval == 0:
                updates_since_checkpoint = 0
                stop_reason = self._checkpoint()
                if stop_reason:
                    break
        self._finish(stop_reason)
        return self.state

    def _update(self) -> None:
        """One update of ``update_interval`` batches."""
        self._image_layers_learning()
        num_grads = 0
        for _ in range(self.config.update_interval):
            batch, end_of_epoch = self.train_iter.next_batch()
            num_grads += self._forward_backward(batch)
            self.state.samples += batch.labels.shape[0] * self.workers_per_batch
            self.speed.images += len(np.unique(self.train_iter.image_ids[batch.indices]))
            if end_of_epoch:
                self.state.epoch = self.train_iter.epoch
                logger.info("Epoch %d finished (update %d)", self.state.epoch, self.state.updates + 1)
        self.state.updates += 1
        self.gluon_trainer.set_learning_rate(self.scheduler.learning_rate(self.state.updates))
        scale = num_grads * self.num_workers       # gradients are sums over devices, batches and workers
        if not self.server_updates:
            self._allreduce_grads()
        if self.config.optimizer.clip_type == optimizers.CLIP_NORM and self.config.optimizer.clip_threshold > 0:
            # the gradients are scale x the average: clip their global norm at scale x the threshold
            grouped = [[p.list_grad()[k] for p in self.params.values() if p.grad_req != "null"]
                       for k in range(len(self.contexts))]
            optimizers.clip_global_norm(grouped[0], self.config.optimizer.clip_threshold * scale,
                                        copies=grouped[1:])
        if self.server_updates:
            self.gluon_trainer.step(scale)
        else:
            self.gluon_trainer.update(scale)
        if self.config.update_interval > 1:
            self.params.zero_grad()
        # keep the Python side at most one update ahead of the engine (bounded memory, honest timings), and stop
        # on a non-finite gradient (the marker is the sum of one parameter's gradient)
        self._wait_for_pending(self.state.updates - 1)
        self._pending = self._last_marker

    def _image_layers_learning(self) -> None:
        """Fine-tuned CNN layers (`finetune`) learn from update ``start_update`` on; before, no gradient reaches
        them (the state follows the update count, so a resumed run is in the same phase)."""
        fine_tune = self.fine_tune
        if fine_tune is None:
            return
        learn = self.state.updates >= fine_tune.start_update
        if learn != self._image_layers_learn:
            finetune.set_trainable(self.model.image_layers, learn, accumulate=self.config.update_interval > 1)
            self._image_layers_learn = learn
            logger.info("Update %d: the CNN layers %s", self.state.updates + 1,
                        "learn (learning rate x %g)" % fine_tune.learning_rate_multiplier if learn else
                        "are held fixed until update %d" % (fine_tune.start_update + 1))

    def _allreduce_grads(self) -> None:
        """Sum the gradients over the devices and workers. The processes' kvstore (``--processes``) takes all of
        them in one call, so the processes meet once per update instead of once per parameter."""
        if self.batch_part[1] > 1:
            assert self.kv is not None
            keys, grads = zip(*[(i, p.list_grad()) for i, p in enumerate(self.params.values())
                                if p.grad_req != "null"])
            self.kv.pushpull(list(keys), list(grads))
        else:
            self.gluon_trainer.allreduce_grads()

    def _wait_for_pending(self, update: int) -> None:
        if self._pending is not None and not math.isfinite(float(self._pending.asscalar())):
            raise utils.CaptioningError(
                "update %d: the training loss is not finite (NaN or infinite gradients); the last good checkpoint "
                "is %d in %s: lower --initial-learning-rate or clip gradients (--gradient-clipping-threshold)"
                % (update, self.state.checkpoint, self.folder.path))

    def _forward_backward(self, batch: data_io.Batch) -> int:
        """Forward and backward of one batch split across the devices; returns the number of device shares."""
        part = data_io.batch_part(batch, *self.batch_part)
        shares = split_batch(part, self.contexts, self.train_iter.image_ids[part.indices])
        self.objective.forward_backward(self.model, shares)
        grad = next(p for p in self.params.values() if p.grad_req != "null").list_grad()[0]
        self._last_marker = mx.nd.sum(grad)
        return len(shares)

    def _sum_over_processes(self, sums: np.ndarray) -> np.ndarray:
        """An objective's statistics summed over the processes that share every batch (``--processes``)."""
        assert self.kv is not None
        array = mx.nd.array(sums, dtype=sums.dtype)
        self.kv.pushpull(_STATISTICS_KEY, array)
        return array.asnumpy()

    def _elapsed(self) -> float:
        return self.state.seconds + (time.time() - self._session_start)

    # -- checkpoints: evaluate -> decide -> broadcast -> persist -------------------------------------------------
    def _checkpoint(self) -> str:
        """Returns a stop reason or ''."""
        self.state.checkpoint += 1
        train = self.objective.metrics(self._sum_over_processes if self.batch_part[1] > 1 else None)
        improved, stop_code = False, STOP_NONE
        metrics: Dict[str, float] = {}
        if self.is_primary:
            metrics, value = self._evaluate(train)
            improved, stop_code = decide(self.config, self.state, value, self._elapsed())
        if self.is_dist:
            improved, stop_code = broadcast_decision(self.kv, self.state, improved, stop_code)
        self._persist(metrics, improved)
        if stop_code == STOP_NOT_IMPROVED:
            return "no improvement of %s in %d checkpoints" % (self.config.optimized_metric,
                                                              self.config.max_num_checkpoint_not_improved)
        return "--max-seconds %d reached" % (self.config.max_seconds or 0) if stop_code == STOP_SECONDS else ""

    def _evaluate(self, train: Dict[str, float]) -> Tuple[Dict[str, float], float]:
        """The checkpoint's metrics (training ones from the objective, validation, decoding, rate, time, memory)
        and the value of the optimised metric."""
        metrics: Dict[str, float] = {}
        val = loss_module.metrics_from_stats(validate(self.model, self.loss, self.val_iter, self.contexts), "val")
        for name in self.config.metrics:
            if "%s-train" % name in train:
                metrics["%s-train" % name] = train["%s-train" % name]
            metrics["%s-val" % name] = val["%s-val" % name]
        metrics.update((k, v) for k, v in train.items() if k.rsplit("-", 1)[0] not in C.METRICS_OPTIMIZABLE)
        bad = sorted(k for k, v in list(metrics.items()) + list(val.items()) if not math.isfinite(v))
        utils.check_condition(not bad, "checkpoint %d (update %d): %s not finite; the training diverged: lower "
                                       "--initial-learning-rate or clip gradients (--gradient-clipping-threshold)"
                              % (self.state.checkpoint, self.state.updates, ", ".join(bad)))
        if self.checkpoint_decoder is not None:
            start = time.time()
            with self.model.fixed_parameters():   # the captions the captioner will write with these parameters
                metrics.update(self.checkpoint_decoder.decode_and_evaluate(self.model, self.vocab or {}))
            logger.info("Checkpoint %d: decoding took %.1fs", self.state.checkpoint, time.time() - start)
        value = metric_value(self.config.optimized_metric, metrics, val)
        metrics["learning-rate"] = self.gluon_trainer.learning_rate
        metrics["time-elapsed"] = self._elapsed()
        metrics.update(gpu_memory(self.contexts))
        return metrics, value

    def _persist(self, metrics: Dict[str, float], improved: bool) -> None:
        """Files of the checkpoint (rank 0), the schedule's reaction, re-seeding, the training state."""
        checkpoint = self.state.checkpoint
        if self.is_primary:
            self.folder.write_params(self.model.save_parameters, checkpoint)
            if improved:
                self.folder.link_best(checkpoint)
            self.metric_lines.append(metrics_line(checkpoint, metrics))
            self.folder.write_metrics(self.metric_lines)
            protected = [self.state.best_checkpoint] + ([0] if self.config.keep_initializations else [])
            self.folder.cleanup_params(self.config.keep_last_params, protected)
            log_checkpoint(self.config, self.state, metrics, improved)
        if improved and self.config.lr_decay_opt_states_reset == "best" and not self.server_updates:
            self._snapshots[training_state.OPTIMIZER_BEST] = training_state.get_optimizer_states(self.gluon_trainer)
        if self.scheduler.new_evaluation_result(improved):
            self._after_rate_reduction()
        self._reseed()
        self._save_state()

    def _after_rate_reduction(self) -> None:
        if self.config.lr_decay_param_reset and self.state.best_checkpoint > 0:
            logger.info("Learning rate reduced: going back to the params of checkpoint %d",
                        self.state.best_checkpoint)
            self.model.load_parameters(self.folder.params_path(self.state.best_checkpoint), ctx=self.contexts)
        reset = self.config.lr_decay_opt_states_reset
        snapshot = self._snapshots.get({"initial": training_state.OPTIMIZER_INITIAL,
                                        "best": training_state.OPTIMIZER_BEST}.get(reset, ""))
        if snapshot is not None:
            logger.info("Learning rate reduced: optimizer states reset to the %s ones", reset)
            training_state.set_optimizer_states(self.gluon_trainer, snapshot, "optimizer states (%s)" % reset)

    # -- state ------------------------------------------------------------------------------------------------------
    def _start(self) -> None:
        """Checkpoint 0: the initial params, and a state to resume from if killed before checkpoint 1."""
        if self.is_primary:
            self.folder.create()
            self.folder.write_params(self.model.save_parameters, 0)
            self.folder.write_metrics([])
        if self.config.lr_decay_opt_states_reset in ("initial", "best") and not self.server_updates:
            initial = training_state.get_optimizer_states(self.gluon_trainer)
            self._snapshots = {training_state.OPTIMIZER_INITIAL: initial, training_state.OPTIMIZER_BEST: initial}
        self._reseed()
        self._save_state()

    def _reseed(self) -> None:
        """Re-seed MXNet's generator from (seed, checkpoint, rank): dropout (and sampling) after a checkpoint is the
        same in an interrupted-and-resumed run as in one that went straight through."""
        mx.random.seed((self.config.seed * _RESEED_SEED_FACTOR + self.state.checkpoint * _RESEED_CHECKPOINT_FACTOR
                        + self.rank) % (2 ** 31))

    def _save_state(self) -> None:
        if not self.is_primary:
            return
        values = {"training": dict(vars(self.state), seconds=self._elapsed()),
                  "scheduler": self.scheduler.state_dict(), "iterator": self.train_iter.state_dict(),
                  "metrics": self.metric_lines, **training_state.rng_states()}
        snapshots = dict(self._snapshots)
        if not self.server_updates:
            snapshots[training_state.OPTIMIZER] = training_state.get_optimizer_states(self.gluon_trainer)
        self.store.save(self.model.save_parameters, values, snapshots)

    def _load_state(self) -> None:
        saved = self.store.load()
        self.state = saved.training
        saved.restore(self.scheduler, self.train_iter)
        model_module.load_parameters(self.model, saved.params_path, self.contexts)
        if saved.optimizer is not None and not self.server_updates:
            training_state.set_optimizer_states(self.gluon_trainer, saved.optimizer, self.store.directory)
        self._snapshots = {training_state.OPTIMIZER_INITIAL: saved.optimizer_initial,
                           training_state.OPTIMIZER_BEST: saved.optimizer_best}
        self.metric_lines = list(saved.values["metrics"])[:self.state.checkpoint]
        if self.is_primary:  # the metrics file may hold lines of checkpoints after the state (killed in between)
            self.folder.write_metrics(self.metric_lines)

    def _finish(self, reason: str) -> None:
        self.state.finished = True
        self.state.stop_reason = reason
        self._save_state()
        logger.info("Training stopped: %s. %d updates, %d epochs, %d samples in %.1fs. Best checkpoint: %d "
                    "(%s-val=%s)", reason, self.state.updates, self.state.epoch, self.state.samples, self._elapsed(),
                    self.state.best_checkpoint, self.config.optimized_metric,
                    "%.4f" % self.state.best_metric if self.state.best_metric is not None else "n/a")


# -------------------------------------------------------------------------------------------------------------
# the loop's helpers
# -------------------------------------------------------------------------------------------------------------

class Speedometer:
    """Samples (captions) and distinct images per second between log lines."""

    def __init__(self, num_workers: int, samples: int = 0) -> None:
        self.num_workers = num_workers
        self.images = 0                     # distinct images per batch, summed (this worker)
        self.mark = (time.time(), samples, 0)

    def log(self, state: TrainingState, learning_rate: float) -> None:
        start, samples0, images0 = self.mark
        seconds = max(time.time() - start, 1e-9)
        logger.info("Epoch %d, update %d: %.1f samples/s (captions), %.1f images/s, learning rate %.3g",
                    state.epoch, state.updates, (state.samples - samples0) / seconds,
                    (self.images - images0) * self.num_workers / seconds, learning_rate)
        self.mark = (time.time(), state.samples, self.images)


def split_batch(batch: data_io.Batch, contexts: Sequence[mx.Context], image_ids: np.ndarray) -> \
        List[objective_module.BatchShare]:
    """The batch cut into one share per device (fewer when it has fewer rows than devices), loaded there: the one
    split of training (`Trainer._forward_backward`) and validation."""
    n = min(len(contexts), batch.labels.shape[0])
    used = list(contexts[:n])
    parts = [gluon.utils.split_and_load(array, used, even_split=False)
             for array in (batch.features, batch.target_input, batch.labels)]
    ids = np.array_split(np.asarray(image_ids, dtype=np.int64), n)    # the rows split_and_load gives each device
    return [objective_module.BatchShare(ctx=ctx, features=f, target_input=x, labels=y, image_ids=i)
            for ctx, f, x, y, i in zip(used, *parts, ids)]


def validate(model: gluon.Block, loss: loss_module.CrossEntropyLoss, batches: data_io.BatchIterator,
             contexts: Sequence[mx.Context]) -> np.ndarray:
    """Summed `loss.CrossEntropyLoss` stats of ``model`` over ``batches`` (no dropout)."""
    total = [loss_module.new_stats(ctx) for ctx in contexts]
    for batch in batches:
        for k, share in enumerate(split_batch(batch, contexts, batch.indices)):
            _, stats = loss(model(share.features, share.target_input), share.labels)
            total[k] += stats.astype("float64")
    return sum(t.asnumpy() for t in total)


def decide(config: TrainingConfig, state: TrainingState, value: float, elapsed: float) -> Tuple[bool, int]:
    """Did the optimised metric improve to ``value``? Stop (no improvement, or time up)? Updates ``state``'s
    early-stopping fields."""
    best = state.best_metric
    improved = best is None or (value > best if C.METRIC_MAXIMIZE[config.optimized_metric] else value < best)
    if improved:
        state.best_metric, state.best_checkpoint = value, state.checkpoint
        state.num_not_improved = 0
    else:
        state.num_not_improved += 1
    limit, seconds = config.max_num_checkpoint_not_improved, config.max_seconds
    if 0 <= limit <= state.num_not_improved and minimums_met(config, state):
        return improved, STOP_NOT_IMPROVED
    return improved, STOP_SECONDS if seconds is not None and elapsed >= seconds else STOP_NONE


def broadcast_decision(kv: mx.kvstore.KVStoreBase, state: TrainingState, improved: bool,
                       stop_code: int) -> Tuple[bool, int]:
    """Rank 0's decision on every worker (broadcast under a fresh kvstore key per checkpoint); the other workers
    update their early-stopping state from it."""
    key = _BROADCAST_KEY + state.checkpoint
    data = mx.nd.array([float(improved), float(stop_code), float(state.best_checkpoint)], dtype="float32")
    out = mx.nd.zeros_like(data)
    kv.broadcast(key, data, out=out)
    improved_value, stop_value, best = (float(v) for v in out.asnumpy())
    if kv.rank != 0:
        state.num_not_improved = 0 if improved_value else state.num_not_improved + 1
        state.best_checkpoint = int(best)
    return bool(improved_value), int(stop_value)


def log_checkpoint(config: TrainingConfig, state: TrainingState, metrics: Dict[str, float], improved: bool) -> None:
    shown = " ".join(("%s=%g" if name == "learning-rate" else "%s=%.4f") % (name, value)
                     for name, value in metrics.items() if name != "time-elapsed")
    logger.info("Checkpoint %d (update %d, epoch %d): %s; best %s=%.4f at checkpoint %d%s", state.checkpoint,
                state.updates, state.epoch, shown, config.optimized_metric, state.best_metric, state.best_checkpoint,
                "" if improved else " (%d without improvement)" % state.num_not_improved)


def reopen(config: TrainingConfig, state: TrainingState) -> bool:
    """A finished run stopped by a limit that is no longer reached (the command raised it) is continued: clears
    ``state.finished``."""
    seconds = config.max_seconds
    if not state.stop_reason.startswith("--max-") or limit_reached(config, state) or \
            (seconds is not None and state.seconds >= seconds):
        return False
    logger.info("The run stopped by %s; continuing it with the raised limits", state.stop_reason)
    state.finished, state.stop_reason = False, ""
    return True


def limit_reached(config: TrainingConfig, state: TrainingState) -> str:
    """The --max-updates / --max-samples / --max-num-epochs limit reached, as a stop reason, or ''."""
    if config.max_updates is not None and state.updates >= config.max_updates:
        return "--max-updates %d reached" % config.max_updates
    if config.max_samples is not None and state.samples >= config.max_samples:
        return "--max-samples %d reached" % config.max_samples
    if config.max_num_epochs is not None and state.epoch >= config.max_num_epochs:
        return "--max-num-epochs %d reached" % config.max_num_epochs
    return ""


def minimums_met(config: TrainingConfig, state: TrainingState) -> bool:
    return ((config.min_updates is None or state.updates >= config.min_updates)
            and (config.min_samples is None or state.samples >= config.min_samples)
            and (config.min_num_epochs is None or state.epoch >= config.min_num_epochs))


def metric_value(name: str, metrics: Dict[str, float], val: Dict[str, float]) -> float:
    """The validation value of the optimised metric ``name``."""
    key = "%s-val" % name
    if key in metrics:
        return metrics[key]
    if key in val:
        return val[key]
    raise utils.CaptioningError("--optimized-metric %s needs --decode-and-evaluate (not 0)" % name)


def gpu_memory(contexts: Sequence[mx.Context]) -> Dict[str, float]:
    """``{"used-gpu-memory": MiB}`` over the GPUs among ``contexts`` (empty on CPUs)."""
    used = 0.0
    for ctx in contexts:
        if ctx.device_type == "gpu":
            free, total = mx.context.gpu_memory_info(ctx.device_id)
            used += (total - free) / 2 ** 20
    return {"used-gpu-memory": used} if used else {}


def create_gluon_trainer(params: gluon.ParameterDict, config: TrainingConfig, kvstore: Optional[mx.kvstore.KVStoreBase],
                         server_updates: bool, optimizer: Optional[mx.optimizer.Optimizer]) -> gluon.Trainer:
    """The `gluon.Trainer` that reduces and applies the gradients. ``server_updates`` (dist_async): the servers
    update the parameters; everywhere else each device/worker updates its copy with the reduced gradients (so
    norm clipping can see them, and optimizer states can be saved). Gradients accumulate with
    ``update_interval`` > 1."""
    if config.update_interval > 1:
        for p in params.values():
            if p.grad_req != "null":
                p.grad_req = "add"
    if kvstore is not None:
        lr_scheduler.check_kvstore(config.scheduler, kvstore.type)
    return gluon.Trainer(params, optimizer or optimizers.create_optimizer(config.optimizer),
                         kvstore=kvstore if kvstore is not None else config.kvstore, update_on_kvstore=server_updates)


# -------------------------------------------------------------------------------------------------------------
# building a training from Python (what train.py does after parsing its flags)
# -------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed MXNet, numpy and Python's generators."""
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def create_trainer(config: TrainingConfig, model: gluon.Block, data: data_io.TrainingData,
                   contexts: Sequence[mx.Context], vocab: Dict[str, int], max_output_length: int,
                   checkpoint_decoder: Optional[CheckpointDecoder] = None,
                   kvstore: Optional[mx.kvstore.KVStoreBase] = None, batch_part: Tuple[int, int] = (0, 1),
                   initial_params: Optional[str] = None) -> Trainer:
    """A `Trainer` for ``model`` on ``data`` with the objective ``config.loss`` names; the optimizer is built (and
    checked) first. ``initial_params``: the params file ``model`` was initialised from (`model.initialize_model`'s
    ``params_file``); self-critical training refuses to start without one. Nothing is written until `Trainer.fit`."""
    objective_module.check_start(config.loss, initial_params)
    try:
        optimizer = optimizers.create_optimizer(config.optimizer)
    except ValueError as e:
        raise utils.CaptioningError(str(e)) from None
    objective = objective_module.create_objective(config, data_io.references_by_image(data.train_data), vocab,
                                                  max_output_length)
    fine_tune = model.config.fine_tune if isinstance(model, model_module.CaptionModel) else None
    return Trainer(config, model, data.train_iter, data.val_iter, contexts, checkpoint_decoder=checkpoint_decoder,
                   vocab=vocab, kvstore=kvstore, objective=objective, optimizer=optimizer, batch_part=batch_part,
                   fine_tune=fine_tune)
