"""Small blocks shared by the encoder and the decoders: positional embeddings, the output layer, helpers."""
import math
from typing import Optional, Tuple

import mxnet as mx
from mxnet import gluon

from . import constants as C

SINUSOID_BASE = 10000.0   # the longest wavelength of the fixed positional embeddings (Vaswani et al. 2017)
NORM_EPSILON = 1e-12      # added to squared row norms so that an all-zero weight row normalises to zero, not NaN

def sinusoids(F, positions, num_embed: int):
    """Fixed positional embeddings (Vaswani et al. 2017) of float ``positions`` of any shape ``S`` ->
    ``S + (num_embed,)``: ``[sin(p * f_0..f_{h-1}), cos(p * f_0..f_{h-1})]`` with ``h = num_embed // 2`` and
    ``f_i = 10000^(-i/h)`` (a zero column is appended when ``num_embed`` is odd). Computed in the graph."""
    half = num_embed // 2
    freqs = F.exp(arange(F, half, positions) * (-math.log(SINUSOID_BASE) / max(half, 1)))          # (h,)
    angles = F.broadcast_mul(F.expand_dims(positions, axis=-1), freqs)               # S + (h,)
    parts = [F.sin(angles), F.cos(angles)]
    if num_embed % 2:
        parts.append(F.zeros_like(F.slice_axis(angles, axis=-1, begin=0, end=1)))
    return F.concat(*parts, dim=-1)


def grid_sinusoids(F, grid: Tuple[int, int], num_embed: int, like):
    """2-D fixed embeddings of the positions of a row-major ``(H, W)`` grid -> ``(H*W, num_embed)``: the row's
    sinusoids in the first ``num_embed // 2`` channels, the column's in the others."""
    height, width = grid
    positions = arange(F, height * width, like)
    rows = F.floor(positions / width)
    columns = positions - rows * width
    half = num_embed // 2
    return F.concat(sinusoids(F, rows, half), sinusoids(F, columns, num_embed - half), dim=-1)


class PositionalEmbedding(gluon.HybridBlock):
    """Adds positions to a sequence: ``none``, ``fixed`` (sinusoids, no parameters) or ``learned`` (a
    ``(max_len, d)`` table; positions past the table reuse its last row)."""

    def __init__(self, kind: str, num_embed: int, max_len: int, scale_up_input: bool = False,
                 grid: Optional[Tuple[int, int]] = None, prefix: Optional[str] = None) -> None:
        super().__init__(prefix=prefix)
        if kind not in C.POSITIONAL_TYPES:
            raise ValueError("unknown positional embedding type %r" % kind)
        self.kind = kind
        self.num_embed = num_embed
        self.max_len = max_len
        # fixed embeddings of a row-major (H, W) grid are 2-D: half the channels encode the row, half the column
        self.grid = grid
        # the transformer scales embeddings by sqrt(d) before adding fixed positions (Vaswani et al.)
        self.scale = math.sqrt(num_embed) if scale_up_input and kind == C.POSITIONAL_FIXED else 1.0
        if kind == C.POSITIONAL_LEARNED:
            with self.name_scope():
                self.weight = self.params.get("weight", shape=(max_len, num_embed),
                                              init=mx.init.Normal(0.02))

    def add_to_sequence(self, F, x, seq_len: int):
        """``x (B, T, d)`` + positions ``0..T-1`` (``seq_len`` = T, a python int)."""
        if self.kind == C.POSITIONAL_NONE:
            return x
        if self.scale != 1.0:
            x = x * self.scale
        if self.kind == C.POSITIONAL_FIXED and self.grid is not None:
            table = grid_sinusoids(F, self.grid, self.num_embed, x)                     # (H*W, d)
        elif self.kind == C.POSITIONAL_FIXED:
            table = sinusoids(F, arange(F, seq_len, x), self.num_embed)                 # (T, d)
        else:
            table = F.take(param_value(F, self.weight, x), arange(F, seq_len, x), mode="clip")     # (T, d)
        return x + broadcast_batch(F, table, x)

    def add_at(self, F, x, positions):
        """``x (N, d)`` + the embedding of float ``positions (N,)``."""
        if self.kind == C.POSITIONAL_NONE:
            return x
        if self.scale != 1.0:
            x = x * self.scale
        if self.kind == C.POSITIONAL_FIXED:
            return x + sinusoids(F, positions, self.num_embed)
        return x + F.take(param_value(F, self.weight, x), positions, mode="clip")

    def hybrid_forward(self, F, x, **kwargs):
        raise NotImplementedError("use add_to_sequence / add_at")


def param_value(F, param: gluon.Parameter, like):
    """A parameter's value inside a graph being built by another block's ``hybrid_forward``: its variable when
    tracing symbolically, its array on ``like``'s device when running imperatively. Lets decoder parts be plain
    methods that take ``F`` (the hybridized wrapper that calls them owns the parameters through its children)."""
    return param.var() if F is mx.sym else param.data(like.context)


def broadcast_batch(F, table, like):
    """``table`` (any shape S) repeated for each row of ``like (B, ...)`` -> ``(B,) + S`` (shaped like ``like``
    when S is ``like``'s trailing shape). Done as a ``(B, 1) x (1, prod S)`` product: its backward pass (a matrix
    product) is much faster than the reduction behind ``broadcast_add``'s."""
    ones = F.ones_like(F.reshape(F.slice_axis(like, axis=1, begin=0, end=1), shape=(0, -1)))   # (B, k)
    ones = F.slice_axis(ones, axis=1, begin=0, end=1)                                            # (B, 1)
    return F.reshape_like(F.dot(ones, F.reshape(table, shape=(1, -1))), like)


def mean_positions(F, x):
    """``x (B, L, d)`` -> ``(B, 1, d)``, the mean over positions, as a batched product with ``1/L`` weights."""
    weights = F.ones_like(F.slice_axis(x, axis=2, begin=0, end=1))                  # (B, L, 1)
    weights = F.broadcast_div(weights, F.sum(weights, axis=1, keepdims=True))
    return F.batch_dot(weights, x, transpose_a=True)


def arange(F, stop: int, like):
    """``[0, 1, ..., stop-1]`` as float32, on ``like``'s device when imperative."""
    if F is mx.sym:
        return F.arange(0, stop)
    return F.arange(0, stop, ctx=like.context)


def zeros(F, like, size: int):
    """Zeros ``(N, size)`` for the batch of ``like`` (any array with the batch on axis 0), built in the graph."""
    column = F.sum(F.reshape(like, shape=(0, -1)), axis=1, keepdims=True) * 0.0    # (N, 1)
    return F.broadcast_axis(column, axis=1, size=size)


def repeat_rows(F, x, repeats: int):
    """``(B, ...) -> (B * repeats, ...)``: each row ``repeats`` times in a row (a broadcast: static decoder states
    shared by an input's beam rows)."""
    return F.reshape(F.broadcast_axis(F.reshape(x, shape=(-4, -1, 1, -2)), axis=1, size=repeats), shape=(-3, -2))


def split_steps(F, x, seq_len: int):
    """``(B, T, ...)`` -> a list of T ``(B, ...)`` arrays (one split op)."""
    if seq_len == 1:
        return [F.squeeze(x, axis=1)]
    return list(F.split(x, num_outputs=seq_len, axis=1, squeeze_axis=True))


def dense(F, x, weight, bias=None, num_hidden: int = 0):
    """``x (..., in) @ weight.T (+ bias)`` over the last axis (oneDNN FullyConnected, no flattening)."""
    if bias is None:
        return F.FullyConnected(x, weight, num_hidden=num_hidden, no_bias=True, flatten=False)
    return F.FullyConnected(x, weight, bias, num_hidden=num_hidden, flatten=False)


def tanh(F, x):
    """tanh through the ``Activation`` operator (oneDNN-vectorised on CPU; several times faster than ``F.tanh``)."""
    return F.Activation(x, act_type="tanh")


def sigmoid(F, x):
    """sigmoid through the ``Activation`` operator (oneDNN-vectorised on CPU)."""
    return F.Activation(x, act_type="sigmoid")


def activation(F, x, kind: str):
    """relu | swish1 | gelu | sigmoid | softrelu | tanh."""
    if kind == "swish1":
        return x * sigmoid(F, x)
    if kind == "gelu":
        return F.LeakyReLU(x, act_type="gelu")
    return F.Activation(x, act_type=kind)


class OutputLayer(gluon.HybridBlock):
    """Logits over the vocabulary: ``x (..., H) -> (..., V)``. With ``tied_weight`` the target embedding's
    ``(V, H)`` matrix is used (weight tying); with weight normalisation each row is ``w_v = g_v * v_v / ||v_v||``
    (Salimans & Kingma 2016), a learned scale ``g`` per word."""

    def __init__(self, vocab_size: int, num_hidden: int, weight_normalization: bool = False,
                 tied_weight: Optional[gluon.Parameter] = None, prefix: str = "output_") -> None:
        super().__init__(prefix=prefix)
        self.vocab_size = vocab_size
        self.weight_normalization = weight_normalization
        with self.name_scope():
            if tied_weight is None:
                self.weight = self.params.get("weight", shape=(vocab_size, num_hidden))
            else:
                self.weight = tied_weight   # registered here too; owned (and saved) by the embedding
            self.bias = self.params.get("bias", shape=(vocab_size,), init="zeros")
            if weight_normalization:
                self.scale = self.params.get("weight_norm_scale", shape=(vocab_size, 1), init="ones")

    def normalized_weight(self, F, weight, scale=None):
        """``g * v / ||v||`` row by row. The row norms and the row scaling go through matrix products with a
        row of ones rather than reductions and broadcasts, whose backward passes are slow in MXNet on CPU."""
        if scale is None:
            return weight
        ones = F.ones_like(F.slice_axis(weight, axis=0, begin=0, end=1))               # (1, H)
        squared_norms = F.FullyConnected(F.square(weight), ones, num_hidden=1, no_bias=True)   # (V, 1)
        factors = scale * F.rsqrt(squared_norms + NORM_EPSILON)                               # (V, 1)
        return weight * F.dot(factors, ones)

    def hybrid_forward(self, F, x, weight, bias, scale=None):
        return dense(F, x, self.normalized_weight(F, weight, scale), bias, self.vocab_size)
