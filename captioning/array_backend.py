"""Where a search's arrays live: MXNet NDArrays on a device, or numpy arrays on the host.

The searches (`beam_search`, `sampling`) are written once, against the small part of MXNet's operator namespace
they use (``F.take``, ``F.topk``, ``F.where``, ...). With MXNet models they run on ``mx.nd`` and their per-step
computations are hybridized blocks; with models that give numpy arrays (`onnx_model.OnnxCaptionModel`, run by
onnxruntime) they run on `NumpyOps`, which implements the same operators with MXNet's semantics on numpy arrays.
This module imports MXNet only when an MXNet backend is made, so a numpy search runs where MXNet cannot be imported.
"""
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

INF = float("inf")


def _axis(x: np.ndarray, axis: int) -> int:
    return axis if axis >= 0 else x.ndim + axis


SMALL_K = 16     # up to this k, top-k picks the minimum k times (a beam's rows are often all inf: select degrades)


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``keys (B, n)``, the indices of the k smallest, smallest first, the lower index first among
    equals (as a stable sort): k passes of argmin, each pass' choice then set above every other value."""
    top = np.finfo(np.float32).max      # +inf and NaN map to it, -inf to -top: a chosen entry (+inf) stays above
    work = np.clip(keys, -top, top).astype(np.float32, copy=False)
    nan = np.isnan(work)
    if nan.any():
        work[nan] = top
    rows = np.arange(keys.shape[0])
    order = np.empty((keys.shape[0], k), dtype=np.int64)
    for j in range(k):
        order[:, j] = work.argmin(axis=-1)
        work[rows, order[:, j]] = np.inf
    return order


class NumpyOps:
    """MXNet's ``mx.nd`` operators the searches use, on float32 numpy arrays (indices as floats, as MXNet's
    operators give them). ``ctx`` arguments are accepted and ignored."""

    # --- creation -------------------------------------------------------------------------------------------------
    @staticmethod
    def array(values: Any, ctx: Any = None, dtype: Any = np.float32) -> np.ndarray:
        return np.array(values, dtype=dtype)

    @staticmethod
    def zeros(shape: Union[int, Tuple[int, ...]], ctx: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    @staticmethod
    def full(shape: Union[int, Tuple[int, ...]], val: float, ctx: Any = None) -> np.ndarray:
        return np.full(shape, val, dtype=np.float32)

    @staticmethod
    def arange(start: float, stop: float, ctx: Any = None) -> np.ndarray:
        return np.arange(start, stop, dtype=np.float32)

    @staticmethod
    def ones_like(x: np.ndarray) -> np.ndarray:
        return np.ones_like(x)

    @staticmethod
    def zeros_like(x: np.ndarray) -> np.ndarray:
        return np.zeros_like(x)

    # --- shape and selection --------------------------------------------------------------------------------------
    @staticmethod
    def reshape(x: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        return x.reshape(shape)

    @staticmethod
    def take(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return x[np.asarray(indices).astype(np.int64)]

    @staticmethod
    def pick(x: np.ndarray, indices: np.ndarray, axis: int = -1) -> np.ndarray:
        assert _axis(x, axis) == x.ndim - 1 == 1, "pick along the last axis of a matrix"
        return x[np.arange(x.shape[0]), indices.astype(np.int64)]

    @staticmethod
    def repeat(x: np.ndarray, repeats: int, axis: int = 0) -> np.ndarray:
        return np.repeat(x, repeats, axis=axis)

    @staticmethod
    def concat(*arrays: np.ndarray, dim: int = 1) -> np.ndarray:
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def stack(*arrays: np.ndarray, axis: int = 0) -> np.ndarray:
        return np.stack(arrays, axis=axis)

    @staticmethod
    def slice_axis(x: np.ndarray, axis: int, begin: int, end: Optional[int]) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[_axis(x, axis)] = slice(begin, end)
        return x[tuple(index)]

    @staticmethod
    def broadcast_like(x: np.ndarray, like: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x, like.shape)

    @staticmethod
    def scatter_nd(data: np.ndarray, indices: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape, dtype=np.float32)
        out[tuple(indices.astype(np.int64))] = data
        return out

    @staticmethod
    def topk(x: np.ndarray, axis: int = -1, k: int = 1, ret_typ: str = "indices", is_ascend: bool = False
             ) -> Any:
        """The k smallest (``is_ascend``) or largest values along the last axis, in order; indices as floats."""
        assert _axis(x, axis) == x.ndim - 1, "topk along the last axis"
        keys = x if is_ascend else -x
        if k <= SMALL_K and k < x.shape[-1] and x.ndim == 2:
            order = _smallest(keys, k)
        else:   # a stable sort (NaN as +inf); partitions are no faster on the beam's rows of equal values
            order = np.argsort(np.where(np.isnan(keys), np.inf, keys), axis=-1, kind="stable")[..., :k]
        values = np.take_along_axis(x, order, axis=-1)
        if ret_typ == "value":
            return values
        indices = order.astype(np.float32)
        return (values, indices) if ret_typ == "both" else indices

    # --- arithmetic -----------------------------------------------------------------------------------------------
    @staticmethod
    def add_n(*arrays: np.ndarray) -> np.ndarray:
        total = arrays[0].copy()
        for x in arrays[1:]:
            total += x
        return total

    @staticmethod
    def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    @staticmethod
    def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    @staticmethod
    def where(condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(condition != 0, x, y).astype(np.float32, copy=False)

    @staticmethod
    def min(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
        return x.min(axis=axis, keepdims=keepdims)

    @staticmethod
    def cast(x: np.ndarray, dtype: str) -> np.ndarray:
        return x.astype(dtype)

    @staticmethod
    def sample_multinomial(probs: np.ndarray) -> np.ndarray:
        """One draw per row from the rows' distributions (numpy's global generator: ``np.random.seed``)."""
        cumulative = probs.cumsum(axis=-1)
        draws = np.random.random_sample(probs.shape[0]) * cumulative[:, -1]
        return np.minimum((cumulative <= draws[:, None]).sum(axis=-1), probs.shape[-1] - 1).astype(np.float32)

    @staticmethod
    def log(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):      # log(0) = -inf, as MXNet's (an ensemble's impossible words)
            return np.log(x)

    floor = staticmethod(np.floor)
    power = staticmethod(np.power)
    maximum = staticmethod(np.maximum)
    broadcast_add = staticmethod(np.add)
    broadcast_mul = staticmethod(np.multiply)
    broadcast_greater = staticmethod(np.greater)
    broadcast_lesser = staticmethod(np.less)
    broadcast_equal = staticmethod(np.equal)


NUMPY_OPS = NumpyOps()


class ArrayBackend:
    """Where a search's arrays live: ``ops`` (the operator namespace), ``ctx`` (passed to array creation),
    `compile` (a per-step computation ``fn(F, *arrays)`` made callable on arrays) and the host copies."""

    def __init__(self, ops: Any, ctx: Any) -> None:
        self.ops = ops
        self.ctx = ctx

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(F, *arrays)`` as a function of the arrays."""
        ops = self.ops
        return lambda *arrays: fn(ops, *arrays)

    def to_host(self, x: Any) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else x.asnumpy()

    def from_host(self, x: np.ndarray) -> Any:
        return self.ops.array(x, ctx=self.ctx, dtype=np.float32)

    def seed(self, seed: int) -> None:
        """Make the sampling reproducible (numpy's global generator draws the numpy backend's samples)."""
        np.random.seed(seed)


class MXNetBackend(ArrayBackend):
    """NDArrays on ``ctx``; per-step computations are hybridized Gluon blocks (static memory)."""

    def __init__(self, ctx: Any = None) -> None:
        import mxnet as mx
        super().__init__(mx.nd, ctx if ctx is not None else mx.cpu())

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        from mxnet import gluon

        class _Computation(gluon.HybridBlock):
            def hybrid_forward(self, F, *arrays):
                return fn(F, *arrays)

        block = _Computation()
        block.hybridize(static_alloc=True)
        return block

    def seed(self, seed: int) -> None:
        import mxnet as mx
        mx.random.seed(seed)
        super().seed(seed)


NUMPY = ArrayBackend(NUMPY_OPS, None)


def backend_for(backend: Optional[ArrayBackend], ctx: Any) -> ArrayBackend:
    """``backend`` if given, else MXNet on ``ctx`` (the CPU by default)."""
    return backend if backend is not None else MXNetBackend(ctx)

