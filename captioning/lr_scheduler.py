"""Learning-rate schedules (Sockeye's), driven by the training loop rather than by the optimizer.

The loop asks ``scheduler.learning_rate(num_updates)`` before every update and tells plateau-reduce about each
checkpoint with ``new_evaluation_result(improved)``. Every scheduler's state is a small dict
(``state_dict``/``load_state_dict``) saved with the training state, so a resumed run continues the same schedule.

Warm-up (``--learning-rate-warmup W``) multiplies any schedule by ``min(1, t / W)``: linear from 0 to the rate.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import utils
from .config import Config

logger = logging.getLogger(__name__)

PLATEAU_REDUCE = "plateau-reduce"
FIXED_STEP = "fixed-step"
INV_SQRT_T = "fixed-rate-inv-sqrt-t"
INV_T = "fixed-rate-inv-t"
NONE = "none"
SCHEDULER_TYPES = [PLATEAU_REDUCE, FIXED_STEP, INV_SQRT_T, INV_T, NONE]


@dataclass
class SchedulerConfig(Config):
    type: str = PLATEAU_REDUCE
    base_rate: float = 0.0002
    warmup: int = 0                                  # updates of linear warm-up
    reduce_factor: float = 0.7                       # plateau-reduce
    reduce_num_not_improved: int = 8                 # plateau-reduce
    schedule: List[Tuple[float, int]] = field(default_factory=list)   # fixed-step: (rate, updates) pairs
    half_life: float = 10        # inv-t / inv-sqrt-t: in checkpoints (10, not 10.0: as args.yaml has always held it)
    checkpoint_interval: int = 4000                  # to turn the half life into updates


def check_kvstore(config: SchedulerConfig, kvstore: str) -> None:
    """``--kvstore dist_async``: the parameter servers keep the optimizer they received at the start, so a
    learning-rate schedule (or warm-up) would never be applied: refused. The one check of the CLI and the API."""
    if "async" in kvstore:
        utils.check_condition(config.type == NONE and config.warmup == 0,
                              "--kvstore dist_async applies only a constant learning rate (the parameter servers "
                              "never see a schedule): use --learning-rate-scheduler-type none without "
                              "--learning-rate-warmup, or --kvstore dist_sync")


def parse_schedule(text: str) -> List[Tuple[float, int]]:
    """``"0.0003:1000,0.0001:2000"`` -> ``[(0.0003, 1000), (0.0001, 2000)]``; ``ValueError`` if malformed."""
    schedule = []
    for item in text.split(","):
        try:
            rate, updates = item.split(":")
            schedule.append((float(rate), int(updates)))
        except ValueError:
            raise ValueError("--learning-rate-schedule: expected RATE:UPDATES,RATE:UPDATES,... got %r" % text) \
                from None
        if schedule[-1][1] <= 0 or schedule[-1][0] <= 0:
            raise ValueError("--learning-rate-schedule %r: rates and update counts must be positive" % text)
    return schedule


class LearningRateScheduler:
    """The base: a constant rate (type ``none``) with optional warm-up."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config

    def learning_rate(self, num_updates: int) -> float:
        """The rate of update number ``num_updates`` (1-based)."""
        rate = self._rate(num_updates)
        if self.config.warmup > 0 and num_updates < self.config.warmup:
            rate *= max(num_updates, 0) / self.config.warmup
        return rate

    def _rate(self, num_updates: int) -> float:
        return self.config.base_rate

    def new_evaluation_result(self, improved: bool) -> bool:
        """Tell the scheduler about a checkpoint; True if it reduced the rate."""
        return False

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class PlateauReduceScheduler(LearningRateScheduler):
    """Multiply the rate by ``reduce_factor`` after ``reduce_num_not_improved`` checkpoints in a row without
    improvement of the optimised metric (then count again from zero)."""

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(config)
        self.rate = config.base_rate
        self.num_not_improved = 0

    def _rate(self, num_updates: int) -> float:
        return self.rate

    def new_evaluation_result(self, improved: bool) -> bool:
        if improved:
            self.num_not_improved = 0
            return False
        self.num_not_improved += 1
        if 0 < self.config.reduce_num_not_improved <= self.num_not_improved and self.config.reduce_factor < 1.0:
            old, self.rate = self.rate, self.rate * self.config.reduce_factor
            self.num_not_improved = 0
            logger.info("Learning rate reduced from %.6g to %.6g after %d checkpoints without improvement",
                        old, self.rate, self.config.reduce_num_not_improved)
            return True
        return False

    def state_dict(self) -> Dict[str, Any]:
        return {"rate": self.rate, "num_not_improved": self.num_not_improved}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rate = float(state["rate"])
        self.num_not_improved = int(state["num_not_improved"])


class FixedStepScheduler(LearningRateScheduler):
    """Rate r_i for the n_i updates after the previous steps; after the last step its rate stays."""

    def _rate(self, num_updates: int) -> float:
        end = 0
        for rate, updates in self.config.schedule:
            end += updates
            if num_updates <= end:
                return rate
        return self.config.schedule[-1][0]


class InvSqrtTScheduler(LearningRateScheduler):
    """``base / sqrt(1 + 3 t / H)``: half the rate after the half life H (in updates)."""

    def _rate(self, num_updates: int) -> float:
        half_life = max(self.config.half_life * self.config.checkpoint_interval, 1.0)
        return self.config.base_rate / math.sqrt(1.0 + 3.0 * num_updates / half_life)


class InvTScheduler(LearningRateScheduler):
    """``base / (1 + t / H)``: half the rate after the half life H (in updates)."""

    def _rate(self, num_updates: int) -> float:
        half_life = max(self.config.half_life * self.config.checkpoint_interval, 1.0)
        return self.config.base_rate / (1.0 + num_updates / half_life)


_SCHEDULERS = {PLATEAU_REDUCE: PlateauReduceScheduler, FIXED_STEP: FixedStepScheduler, INV_SQRT_T: InvSqrtTScheduler,
               INV_T: InvTScheduler, NONE: LearningRateScheduler}


def create_scheduler(config: SchedulerConfig) -> LearningRateScheduler:
    """The scheduler of ``config.type``."""
    if config.type not in _SCHEDULERS:
        raise ValueError("unknown learning-rate scheduler %r (choose from %s)" % (config.type, SCHEDULER_TYPES))
    if config.type == FIXED_STEP and not config.schedule:
        raise ValueError("--learning-rate-scheduler-type fixed-step needs --learning-rate-schedule")
    return _SCHEDULERS[config.type](config)


def optional_schedule(text: Optional[str]) -> List[Tuple[float, int]]:
    """`parse_schedule` of an optional flag value."""
    return parse_schedule(text) if text else []
