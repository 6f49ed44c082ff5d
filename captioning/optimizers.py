"""Optimizer factory: MXNet's optimizers from a small config.

Gradient clipping by value (``--gradient-clipping-type abs``) is the optimizer's own ``clip_gradient``, applied to
every gradient after it is rescaled to a per-update average; clipping by global norm is done by the training loop
(`clip_global_norm`) because it needs all gradients at once.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import mxnet as mx

from .config import Config

logger = logging.getLogger(__name__)

CLIP_ABS = "abs"
CLIP_NORM = "norm"
CLIP_NONE = "none"
MOMENTUM_OPTIMIZERS = ("sgd", "nag")


@dataclass
class OptimizerConfig(Config):
    name: str = "adam"
    learning_rate: float = 0.0002
    weight_decay: float = 0.0
    momentum: Optional[float] = None
    clip_type: str = CLIP_ABS              # abs | norm | none
    clip_threshold: float = 1.0            # <= 0 disables clipping
    params: Dict[str, Any] = field(default_factory=dict)   # --optimizer-params


def optimizer_kwargs(config: OptimizerConfig) -> Dict[str, Any]:
    """The keyword arguments of ``mx.optimizer.create``; ``--optimizer-params`` override the named flags."""
    kwargs: Dict[str, Any] = {"learning_rate": config.learning_rate, "wd": config.weight_decay}
    if config.momentum is not None:
        if config.name in MOMENTUM_OPTIMIZERS:
            kwargs["momentum"] = config.momentum
        else:
            logger.warning("--momentum is ignored by the %s optimizer", config.name)
    if config.clip_type == CLIP_ABS and config.clip_threshold > 0:
        kwargs["clip_gradient"] = config.clip_threshold
    kwargs.update(config.params)
    return kwargs


def create_optimizer(config: OptimizerConfig) -> mx.optimizer.Optimizer:
    """An MXNet optimizer instance for ``config``. ``--optimizer-params`` it does not accept, or whose values do
    not work, raise ``ValueError`` naming them (checked by one update of a throw-away weight)."""
    kwargs = optimizer_kwargs(config)
    try:
        optimizer = mx.optimizer.create(config.name, **kwargs)
        # a value of the wrong kind (beta1:x) fails only when used: one update of a throw-away weight finds it
        probe = mx.optimizer.create(config.name, **kwargs)
        weight = mx.nd.ones((1,))
        probe.update(0, weight, mx.nd.ones((1,)), probe.create_state(0, weight))
        weight.wait_to_read()
    except (TypeError, ValueError, mx.base.MXNetError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError("--optimizer-params %s: not accepted by the %s optimizer (%s)"
                         % (",".join("%s:%s" % kv for kv in config.params.items()), config.name, message)) from None
    logger.info("Optimizer: %s %s", config.name, ", ".join("%s=%s" % kv for kv in sorted(kwargs.items())))
    return optimizer


def global_norm(grads: List[mx.nd.NDArray]) -> float:
    """The joint L2 norm of ``grads`` (one synchronisation)."""
    total = mx.nd.add_n(*[mx.nd.sum(mx.nd.square(g)).as_in_context(grads[0].context) for g in grads])
    return float(mx.nd.sqrt(total).asscalar())


def clip_global_norm(grads: List[mx.nd.NDArray], max_norm: float,
                     copies: Optional[List[List[mx.nd.NDArray]]] = None) -> float:
    """Scale ``grads`` (and the same gradients on other devices, ``copies``) in place so that their joint L2 norm
    is at most ``max_norm``; returns the norm before scaling."""
    norm = global_norm(grads)
    if norm > max_norm > 0:
        scale = max_norm / norm
        for group in [grads] + list(copies or []):
            for g in group:
                g *= scale
    return norm
