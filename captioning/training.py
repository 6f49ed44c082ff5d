"""`Trainer`: the update loop, gradient clipping, checkpoints, the metrics file, early stopping and exact resume.

One update = ``update_interval`` batches, each split across the devices (``gluon.utils.split_and_load``); gradients
are summed (``grad_req='add'`` when accumulating), reduced across devices and workers, averaged by the optimizer's
``rescale_grad``, clipped (by value in the optimizer, or by global norm here) and applied. Every
``checkpoint_interval`` updates: validation perplexity (+accuracy), optional caption decoding (BLEU/chrF), a
``params.NNNNN`` file, a ``metrics`` line, ``params.best``, the learning-rate schedule's reaction, and the training
state (params, optimizer states, schedule, data iterator, RNG states, counters) for resuming. ``params.00000`` and
a state at checkpoint 0 are written before the first update.

Exactness of resume: MXNet cannot report its random generator's state, so the generator is re-seeded right after
every checkpoint with a value derived from the seed and the checkpoint number; a resumed run re-seeds the same way
and draws the same dropout masks. numpy's and Python's generators are saved and restored.

Distributed (``--kvstore dist_*``): every worker trains on its shard of each epoch's batches; only rank 0 validates
and writes files; its decisions (improved, stop) are broadcast through the kvstore so all workers act alike.
"""
import glob
import json
import logging
import os
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import constants as C
from . import data_io
from . import loss as loss_module
from . import lr_scheduler
from . import objective as objective_module
from . import optimizers
from . import utils
from .config import Config

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_PARAMS = "params"
STATE_OPTIMIZER = "optimizer_states"
STATE_OPTIMIZER_INITIAL = "optimizer_states.initial"
STATE_OPTIMIZER_BEST = "optimizer_states.best"
_BROADCAST_KEY = 1 << 24          # kvstore keys for rank 0's decisions (the gluon.Trainer uses 0..num_params-1)


@dataclass
class TrainingConfig(Config):
    output_folder: str
    cross_entropy: loss_module.LossConfig            # the cross-entropy (label smoothing); validation perplexity
    loss: str = C.LOSS_CROSS_ENTROPY                 # the training objective: cross-entropy | self-critical
    self_critical_samples: int = 5
    self_critical_baseline: str = C.SELF_CRITICAL_BASELINE_MEAN
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
    seed: int = 13
    kvstore: str = "device"
    log_interval: int = 50                      # updates between speed lines in the log


@dataclass
class TrainingState:
    """Counters and early-stopping state (saved as JSON in training_state/state.json)."""
    updates: int = 0
    samples: int = 0
    checkpoint: int = 0
    epoch: int = 0
    seconds: float = 0.0                        # training time before the current session
    best_metric: Optional[float] = None
    best_checkpoint: int = 0
    num_not_improved: int = 0
    finished: bool = False
    stop_reason: str = ""


class Trainer:
    """Trains ``model`` (a `model.CaptionModel` with initialised parameters on ``contexts``) on ``train_iter``,
    validating on ``val_iter`` at each checkpoint, into ``config.output_folder``."""

    def __init__(self, config: TrainingConfig, model: gluon.Block, train_iter: data_io.BatchIterator,
                 val_iter: data_io.BatchIterator, contexts: Sequence[mx.Context],
                 checkpoint_decoder: Optional[Any] = None, vocab: Optional[Dict[str, int]] = None,
                 kvstore: Optional[Any] = None, objective: Optional[objective_module.Objective] = None) -> None:
        self.config = config
        self.model = model
        self.train_iter = train_iter
        self.val_iter = val_iter
        self.contexts = list(contexts)
        self.checkpoint_decoder = checkpoint_decoder
        self.vocab = vocab
        self.kv = kvstore
        self.is_dist = kvstore is not None and "dist" in kvstore.type
        self.rank = kvstore.rank if self.is_dist else 0
        self.num_workers = kvstore.num_workers if self.is_dist else 1
        self.is_primary = self.rank == 0
        self.folder = config.output_folder
        self.state = TrainingState()
        self.scheduler = lr_scheduler.create_scheduler(config.scheduler)
        self.objective = objective if objective is not None else \
            objective_module.CrossEntropyObjective(config.cross_entropy)
        self.loss = loss_module.CrossEntropyLoss(config.cross_entropy)   # validation
        self.loss.hybridize()
        self.params = model.collect_params()
        if config.update_interval > 1:
            for p in self.params.values():
                if p.grad_req != "null":
                    p.grad_req = "add"
        # dist_async needs the servers to update the parameters; everywhere else each device/worker updates its
        # copy with the reduced gradients (so norm clipping can see them, and optimizer states can be saved)
        self.server_updates = self.is_dist and "async" in kvstore.type
        self.trainer = gluon.Trainer(self.params, optimizers.create_optimizer(config.optimizer),
                                     kvstore=kvstore if kvstore is not None else config.kvstore,
                                     update_on_kvstore=self.server_updates)
        self.metric_lines: List[str] = []
        self._session_start = time.time()
        self._speed_mark = (time.time(), 0, 0, 0)
        self._initial_states: Optional[bytes] = None
        self._best_states: Optional[bytes] = None
        self._images_seen = 0
        self._pending: Optional[mx.nd.NDArray] = None
        self._last_marker: Optional[mx.nd.NDArray] = None

    # ---------------------------------------------------------------------------------------------------------
    # the loop
    # ---------------------------------------------------------------------------------------------------------
    def fit(self, resume: Optional[bool] = None) -> TrainingState:
        """Train until a stopping criterion holds. ``resume``: continue from ``training_state/`` (default: when it
        exists)."""
        if resume is None:
            resume = self._has_state()
        if resume:
            self._load_state()
            if self.state.finished:
                logger.info("Training in %s has already finished (%s); best checkpoint %d (%s=%.4f). Use "
                            "--overwrite-output to train again.", self.folder, self.state.stop_reason,
                            self.state.best_checkpoint, self.config.optimized_metric, self.state.best_metric or 0.0)
                return self.state
            logger.info("Resuming from checkpoint %d (update %d, epoch %d)", self.state.checkpoint,
                        self.state.updates, self.state.epoch)
        else:
            self._start()
        self._reseed()
        self._session_start = time.time()
        self._speed_mark = (time.time(), self.state.updates, self.state.samples, 0)
        self._images_seen = 0
        updates_since_checkpoint = 0
        while True:
            stop_reason = self._limit_reached()
            if stop_reason:
                if updates_since_checkpoint:
                    self._checkpoint()
                self._finish(stop_reason)
                break
            self._update()
            updates_since_checkpoint += 1
            if self.state.updates % self.config.log_interval == 0:
                self._log_speed()
            if self.state.updates % self.config.checkpoint_interval == 0:
                updates_since_checkpoint = 0
                stop_reason = self._checkpoint()
                if stop_reason:
                    self._finish(stop_reason)
                    break
        return self.state

    def _update(self) -> None:
        """One update of ``update_interval`` batches."""
        num_grads = 0
        for _ in range(self.config.update_interval):
            batch, end_of_epoch = self.train_iter.next_batch()
            num_grads += self._forward_backward(batch)
            self.state.samples += batch.labels.shape[0] * self.num_workers
            self._images_seen += len(np.unique(self.train_iter.image_ids[batch.indices]))
            if end_of_epoch:
                self.state.epoch = self.train_iter.epoch
                logger.info("Epoch %d finished (update %d)", self.state.epoch, self.state.updates + 1)
        self.state.updates += 1
        self.trainer.set_learning_rate(self.scheduler.learning_rate(self.state.updates))
        scale = num_grads * self.num_workers       # gradients are sums over devices, batches and workers
        if self.server_updates:
            if self.config.optimizer.clip_type == optimizers.CLIP_NORM:
                self._clip_norm(scale)
            self.trainer.step(scale)
        else:
            self.trainer.allreduce_grads()
            if self.config.optimizer.clip_type == optimizers.CLIP_NORM:
                self._clip_norm(scale)
            self.trainer.update(scale)
        if self.config.update_interval > 1:
            self.params.zero_grad()
        # keep the Python side at most one update ahead of the engine (bounded memory, honest timings)
        if self._pending is not None:
            self._pending.wait_to_read()
        self._pending = self._last_marker

    def _forward_backward(self, batch: data_io.Batch) -> int:
        """Forward and backward of one batch split across the devices; returns the number of device shares."""
        shares = split_batch(batch, self.contexts, self.train_iter.image_ids[batch.indices])
        self.objective.forward_backward(self.model, shares)
        # a tiny copy of a gradient: once it is computed, this batch's backward pass is done
        grad = next(p for p in self.params.values() if p.grad_req != "null").list_grad()[0]
        self._last_marker = grad.reshape((-1,))[0:1]
        return len(shares)

    def _clip_norm(self, scale: int) -> None:
        """Clip the averaged gradient's global norm at the threshold (the gradients are ``scale`` x average)."""
        threshold = self.config.optimizer.clip_threshold
        if threshold <= 0:
            return
        grouped = [[p.list_grad()[k] for p in self.params.values() if p.grad_req != "null"]
                   for k in range(len(self.contexts))]
        optimizers.clip_global_norm(grouped[0], threshold * scale, copies=grouped[1:])

    # ---------------------------------------------------------------------------------------------------------
    # limits and checkpoints
    # ---------------------------------------------------------------------------------------------------------
    def _limit_reached(self) -> str:
        c, s = self.config, self.state
        if c.max_updates is not None and s.updates >= c.max_updates:
            return "--max-updates %d reached" % c.max_updates
        if c.max_samples is not None and s.samples >= c.max_samples:
            return "--max-samples %d reached" % c.max_samples
        if c.max_num_epochs is not None and s.epoch >= c.max_num_epochs:
            return "--max-num-epochs %d reached" % c.max_num_epochs
        return ""

    def _minimums_met(self) -> bool:
        c, s = self.config, self.state
        return ((c.min_updates is None or s.updates >= c.min_updates)
                and (c.min_samples is None or s.samples >= c.min_samples)
                and (c.min_num_epochs is None or s.epoch >= c.min_num_epochs))

    def _elapsed(self) -> float:
        return self.state.seconds + (time.time() - self._session_start)

    def _checkpoint(self) -> str:
        """Validate, write params/metrics/state; returns a stop reason or ''."""
        self.state.checkpoint += 1
        checkpoint = self.state.checkpoint
        train = self.objective.metrics()
        learning_rate = self.trainer.learning_rate
        improved = stop = False
        if self.is_primary:
            metrics = {}
            val = loss_module.metrics_from_stats(self.validate(), "val")
            for name in self.config.metrics:
                if "%s-train" % name in train:
                    metrics["%s-train" % name] = train["%s-train" % name]
                metrics["%s-val" % name] = val["%s-val" % name]
            metrics.update((k, v) for k, v in train.items() if k.rsplit("-", 1)[0] not in C.METRICS_OPTIMIZABLE)
            if self.checkpoint_decoder is not None:
                start = time.time()
                metrics.update(self.checkpoint_decoder.decode_and_evaluate(self.model, self.vocab))
                logger.info("Checkpoint %d: decoding took %.1fs", checkpoint, time.time() - start)
            value = self._optimized_value(metrics, val)
            improved = self._is_better(value)
            metrics["learning-rate"] = learning_rate
            metrics["time-elapsed"] = self._elapsed()
            metrics.update(self._gpu_memory())
            self._write_params(checkpoint)
            if improved:
                self.state.best_metric, self.state.best_checkpoint = value, checkpoint
                self.state.num_not_improved = 0
                self._link_best(checkpoint)
            else:
                self.state.num_not_improved += 1
            self._write_metrics(checkpoint, metrics)
            self._cleanup_params()
            logger.info("Checkpoint %d (update %d, epoch %d): %s; best %s=%.4f at checkpoint %d%s", checkpoint,
                        self.state.updates, self.state.epoch,
                        " ".join("%s=%.4f" % kv for kv in metrics.items() if kv[0] != "time-elapsed"),
                        self.config.optimized_metric, self.state.best_metric, self.state.best_checkpoint,
                        "" if improved else " (%d without improvement)" % self.state.num_not_improved)
            limit = self.config.max_num_checkpoint_not_improved
            stop = 0 <= limit <= self.state.num_not_improved and self._minimums_met()
            max_seconds = self.config.max_seconds
            time_up = max_seconds is not None and self._elapsed() >= max_seconds
            stop_code = 1 if stop else (2 if time_up else 0)
        else:
            stop_code = 0
        if self.is_dist:
            improved, stop_code, best = self._broadcast([float(improved), float(stop_code),
                                                         float(self.state.best_checkpoint)])
            improved = bool(improved)
            if not self.is_primary:
                self.state.num_not_improved = 0 if improved else self.state.num_not_improved + 1
                self.state.best_checkpoint = int(best)
        if improved and self.config.lr_decay_opt_states_reset == "best" and not self.server_updates:
            self._best_states = self._optimizer_states_bytes()
        if self.scheduler.new_evaluation_result(improved):
            self._after_rate_reduction()
        self._reseed()
        self._save_state()
        if stop_code == 1:
            return "no improvement of %s in %d checkpoints" % (self.config.optimized_metric,
                                                              self.config.max_num_checkpoint_not_improved)
        if stop_code == 2:
            return "--max-seconds %d reached" % self.config.max_seconds
        return ""

    def _optimized_value(self, metrics: Dict[str, float], val: Dict[str, float]) -> float:
        name = self.config.optimized_metric
        key = "%s-val" % name
        if key in metrics:
            return metrics[key]
        if key in val:
            return val[key]
        raise utils.CaptioningError("--optimized-metric %s needs --decode-and-evaluate (not 0)" % name)

    def _is_better(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None:
            return True
        return value > best if C.METRIC_MAXIMIZE[self.config.optimized_metric] else value < best

    def validate(self) -> np.ndarray:
        """Summed loss stats over the validation data (no dropout)."""
        total = [loss_module.new_stats(ctx) for ctx in self.contexts]
        for batch in self.val_iter:
            for k, share in enumerate(split_batch(batch, self.contexts, batch.indices)):
                _, stats = self.loss(self.model(share.features, share.target_input), share.labels)
                total[k] += stats.astype("float64")
        return sum(t.asnumpy() for t in total)

    def _after_rate_reduction(self) -> None:
        if self.config.lr_decay_param_reset and self.state.best_checkpoint > 0:
            logger.info("Learning rate reduced: going back to the params of checkpoint %d",
                        self.state.best_checkpoint)
            self.model.load_parameters(self._params_path(self.state.best_checkpoint), ctx=self.contexts)
        states = {"initial": self._initial_states, "best": self._best_states}.get(
            self.config.lr_decay_opt_states_reset)
        if states is not None:
            logger.info("Learning rate reduced: optimizer states reset to the %s ones",
                        self.config.lr_decay_opt_states_reset)
            self._load_optimizer_states_bytes(states)

    # ---------------------------------------------------------------------------------------------------------
    # files
    # ---------------------------------------------------------------------------------------------------------
    def _params_path(self, checkpoint: int) -> str:
        return os.path.join(self.folder, C.PARAMS_NAME % checkpoint)

    def _write_params(self, checkpoint: int) -> None:
        with utils.atomic_path(self._params_path(checkpoint)) as tmp:
            self.model.save_parameters(tmp)

    def _link_best(self, checkpoint: int) -> None:
        """``params.best`` -> ``params.NNNNN`` (a relative symbolic link, replaced atomically; a copy where links
        are not possible)."""
        best = os.path.join(self.folder, C.PARAMS_BEST_NAME)
        tmp = best + ".tmp-link"
        try:
            if os.path.lexists(tmp):
                os.remove(tmp)
            os.symlink(C.PARAMS_NAME % checkpoint, tmp)
            os.replace(tmp, best)
        except OSError:
            with utils.atomic_path(best) as tmp_copy:
                shutil.copyfile(self._params_path(checkpoint), tmp_copy)

    def _write_metrics(self, checkpoint: int, metrics: Dict[str, float]) -> None:
        line = "%d\t%s" % (checkpoint, "\t".join("%s=%s" % (k, _format(v)) for k, v in metrics.items()))
        self.metric_lines.append(line)
        utils.atomic_write_text(os.path.join(self.folder, C.METRICS_NAME),
                                "".join(row + "\n" for row in self.metric_lines))

    def _cleanup_params(self) -> None:
        keep = self.config.keep_last_params
        if keep < 0:
            return
        numbers = sorted(int(p.rsplit(".", 1)[1]) for p in glob.glob(os.path.join(self.folder, C.PARAMS_PREFIX + "*"))
                         if p.rsplit(".", 1)[1].isdigit())
        protected = set(numbers[-keep:]) if keep > 0 else set()
        protected.add(self.state.best_checkpoint)
        if self.config.keep_initializations:
            protected.add(0)
        for number in numbers:
            if number not in protected:
                os.remove(self._params_path(number))

    def _gpu_memory(self) -> Dict[str, float]:
        used = 0.0
        for ctx in self.contexts:
            if ctx.device_type == "gpu":
                free, total = mx.context.gpu_memory_info(ctx.device_id)
                used += (total - free) / 2 ** 20
        return {"used-gpu-memory": used} if used else {}

    def _log_speed(self) -> None:
        if self._pending is not None:
            self._pending.wait_to_read()
        now = time.time()
        start, updates0, samples0, images0 = self._speed_mark
        seconds = max(now - start, 1e-9)
        samples = self.state.samples - samples0
        images = self._images_seen - images0
        logger.info("Epoch %d, update %d: %.1f samples/s (captions), %.1f images/s, learning rate %.3g",
                    self.state.epoch, self.state.updates, samples / seconds, images * self.num_workers / seconds,
                    self.trainer.learning_rate)
        self._speed_mark = (time.time(), self.state.updates, self.state.samples, self._images_seen)

    # ---------------------------------------------------------------------------------------------------------
    # state
    # ---------------------------------------------------------------------------------------------------------
    def _state_dir(self) -> str:
        return os.path.join(self.folder, C.TRAINING_STATE_DIRNAME)

    def _has_state(self) -> bool:
        if self.is_primary:
            recover_interrupted_state_swap(self.folder)
        return os.path.isfile(os.path.join(self._state_dir(), STATE_FILE))

    def _start(self) -> None:
        """Checkpoint 0: the initial params, and a state to resume from if killed before checkpoint 1."""
        if self.is_primary:
            self._write_params(0)
            utils.atomic_write_text(os.path.join(self.folder, C.METRICS_NAME), "")
        if self.config.lr_decay_opt_states_reset in ("initial", "best") and not self.server_updates:
            self._initial_states = self._optimizer_states_bytes()
            self._best_states = self._initial_states
        self._reseed()
        self._save_state()

    def _reseed(self) -> None:
        """Re-seed MXNet's generator from (seed, checkpoint, rank): dropout after a checkpoint is the same in an
        interrupted-and-resumed run as in one that went straight through."""
        mx.random.seed((self.config.seed * 1000003 + self.state.checkpoint * 7919 + self.rank) % (2 ** 31))

    def _optimizer_states_bytes(self) -> bytes:
        fd, tmp = tempfile.mkstemp(prefix="optstates.", dir=self.folder)
        os.close(fd)
        try:
            self.trainer.save_states(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.remove(tmp)

    def _load_optimizer_states_bytes(self, states: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix="optstates.", dir=self.folder)
        with os.fdopen(fd, "wb") as f:
            f.write(states)
        try:
            self.trainer.load_states(tmp)
        finally:
            os.remove(tmp)

    def _save_state(self) -> None:
        """Write training_state/ atomically: a new folder under a temporary name, then swapped in."""
        if not self.is_primary:
            return
        tmp = tempfile.mkdtemp(prefix=C.TRAINING_STATE_DIRNAME + ".tmp-", dir=self.folder)
        try:
            self.model.save_parameters(os.path.join(tmp, STATE_PARAMS))
            if not self.server_updates:
                self.trainer.save_states(os.path.join(tmp, STATE_OPTIMIZER))
            for name, states in ((STATE_OPTIMIZER_INITIAL, self._initial_states),
                                 (STATE_OPTIMIZER_BEST, self._best_states)):
                if states is not None:
                    with open(os.path.join(tmp, name), "wb") as f:
                        f.write(states)
            state = {"training": vars(self.state).copy(), "scheduler": self.scheduler.state_dict(),
                     "iterator": self.train_iter.state_dict(), "numpy_rng": _numpy_state(),
                     "python_rng": _python_state(), "metrics": self.metric_lines}
            state["training"]["seconds"] = self._elapsed()
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            final = self._state_dir()
            old = None
            if os.path.exists(final):
                old = final + ".old"
                if os.path.exists(old):
                    shutil.rmtree(old)
                os.rename(final, old)
            os.rename(tmp, final)
            if old:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _load_state(self) -> None:
        directory = self._state_dir()
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        self.state = TrainingState(**state["training"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_iter.load_state_dict(state["iterator"])
        np.random.set_state(_numpy_state_from(state["numpy_rng"]))
        random.setstate(_python_state_from(state["python_rng"]))
        self.model.load_parameters(os.path.join(directory, STATE_PARAMS), ctx=self.contexts)
        if os.path.exists(os.path.join(directory, STATE_OPTIMIZER)) and not self.server_updates:
            self.trainer.load_states(os.path.join(directory, STATE_OPTIMIZER))
        for name, attr in ((STATE_OPTIMIZER_INITIAL, "_initial_states"), (STATE_OPTIMIZER_BEST, "_best_states")):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    setattr(self, attr, f.read())
        self.metric_lines = list(state["metrics"])[:self.state.checkpoint]
        if self.is_primary:  # the metrics file may hold lines of checkpoints after the state (killed in between)
            utils.atomic_write_text(os.path.join(self.folder, C.METRICS_NAME),
                                    "".join(l + "\n" for l in self.metric_lines))

    def _finish(self, reason: str) -> None:
        self.state.finished = True
        self.state.stop_reason = reason
        self._save_state()
        logger.info("Training stopped: %s. %d updates, %d epochs, %d samples in %.1fs. Best checkpoint: %d "
                    "(%s-val=%s)", reason, self.state.updates, self.state.epoch, self.state.samples, self._elapsed(),
                    self.state.best_checkpoint, self.config.optimized_metric,
                    "%.4f" % self.state.best_metric if self.state.best_metric is not None else "n/a")

    def _broadcast(self, values: List[float]) -> List[float]:
        """Rank 0's ``values`` on every worker (a fresh kvstore key per checkpoint: init takes rank 0's value)."""
        key = _BROADCAST_KEY + self.state.checkpoint
        data = mx.nd.array(values, dtype="float32")
        out = mx.nd.zeros_like(data)
        self.kv.init(key, data)
        self.kv.pull(key, out=out)
        return [float(v) for v in out.asnumpy()]


def split_batch(batch: data_io.Batch, contexts: Sequence[mx.Context], image_ids: np.ndarray) -> \
        List[objective_module.BatchShare]:
    """The batch cut into one share per device (fewer when it has fewer rows than devices), loaded there."""
    n = min(len(contexts), batch.labels.shape[0])
    used = list(contexts[:n])
    parts = [gluon.utils.split_and_load(array, used, even_split=False)
             for array in (batch.features, batch.target_input, batch.labels)]
    ids = np.array_split(np.asarray(image_ids, dtype=np.int64), n)    # the rows split_and_load gives each device
    return [objective_module.BatchShare(ctx=ctx, features=f, target_input=x, labels=y, image_ids=i)
            for ctx, f, x, y, i in zip(used, *parts, ids)]


def recover_interrupted_state_swap(folder: str) -> None:
    """If a run was killed while swapping training_state folders, put the complete old one back."""
    final = os.path.join(folder, C.TRAINING_STATE_DIRNAME)
    old = final + ".old"
    if not os.path.exists(final) and os.path.isdir(old):
        os.rename(old, final)
    for tmp in glob.glob(os.path.join(folder, C.TRAINING_STATE_DIRNAME + ".tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)


def _format(value: float) -> str:
    return "%.6g" % value if isinstance(value, float) else str(value)


def _numpy_state() -> List[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_state_from(state: List[Any]) -> Any:
    return (state[0], np.array(state[1], dtype=np.uint32), state[2], state[3], state[4])


def _python_state() -> List[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_state_from(state: List[Any]) -> Any:
    return (state[0], tuple(state[1]), state[2])


# -------------------------------------------------------------------------------------------------------------
# set-up helpers for train.py
# -------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed MXNet, numpy and Python's generators."""
    mx.random.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def initialize_model(model: gluon.Block, contexts: Sequence[mx.Context], feature_shape: Sequence[int],
                     weight_init: str = "xavier", scale: float = 3.0, factor_type: str = "avg",
                     rand_type: str = "uniform", embed_init: str = "default", num_embed: int = 512,
                     params_file: Optional[str] = None, allow_missing: bool = False,
                     ignore_extra: bool = False) -> None:
    """Initialise every parameter (shapes resolved by one tiny forward pass), then optionally load
    ``params_file`` (``--params``) over them."""
    if weight_init == "xavier":
        init = mx.init.Xavier(rnd_type=rand_type, factor_type=factor_type, magnitude=scale)
    else:
        init = mx.init.Uniform(scale=scale)
    params = model.collect_params()
    if embed_init == "normal":
        for name, p in params.items():
            if "embed" in name and name.endswith("weight"):
                p.initialize(mx.init.Normal(sigma=num_embed ** -0.5), ctx=list(contexts))
    with warnings.catch_warnings():   # the embeddings initialised above
        warnings.filterwarnings("ignore", message=".*already initialized.*")
        model.initialize(init, ctx=list(contexts))
    dummy_features = mx.nd.zeros((1,) + tuple(int(d) for d in feature_shape), ctx=contexts[0])
    dummy_words = mx.nd.full((1, 1), C.BOS_ID, ctx=contexts[0])
    model(dummy_features, dummy_words)
    if params_file is not None:
        try:
            model.load_parameters(params_file, ctx=list(contexts), allow_missing=allow_missing,
                                  ignore_extra=ignore_extra)
        except (AssertionError, ValueError, mx.base.MXNetError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise utils.CaptioningError("--params %s: cannot load (%s); --allow-missing-params and "
                                        "--ignore-extra-params accept a partial match" % (params_file, first)) \
                from None
        logger.info("Initialised the model from %s", params_file)
    num = sum(int(np.prod(p.shape)) for p in params.values())
    logger.info("Model: %d parameters (%.1f MB)", num, num * 4 / 2 ** 20)
