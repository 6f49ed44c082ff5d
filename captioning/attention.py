"""Attention of the RNN decoder over the encoded image positions: one class per type (Sockeye's attention types)
behind the `Attention` interface, and `create_attention`, which maps a type name to its class.

An attention scores the ``L`` positions of ``encoded (N, L, d)`` against a query (the RNN output) and returns the
context (the probability-weighted sum of the values) and the probabilities. Anything that depends only on the image
(projected keys, values) is computed once per image by ``precompute`` and carried in the decoder's static states,
not recomputed at each step; a type that carries something from step to step (coverage) starts it with
``initial_state``. Types:

- ``mlp`` (`MlpAttention`): ``v^T tanh(W_k k + W_q q [+ W_w prev_word] [+ W_c coverage])`` (Bahdanau et al.
  2015), computed as ``(2v)^T sigmoid(2 (W_k k + ...))``: ``tanh(h) = 2 sigmoid(2h) - 1``, and the constant
  ``-sum(v)`` of a row cancels in the softmax over positions, so the probabilities are the same (to float
  rounding). oneDNN's sigmoid is cheaper than its tanh on CPU, forward and backward, and that layer is the largest
  piece of a decoder step; the factor 2 is folded into the precomputed keys and the small per-step terms. With
  ``layer_normalization`` (not scale-free) the tanh stays.
- ``coverage``: ``mlp`` plus a coverage vector per position (Tu et al. 2016): ``count`` (`MlpCovAttention`) adds
  up the attention probabilities; ``tanh|sigmoid|relu|softrelu`` (`ActivationCovAttention`) are
  ``act(W_c c + W_s k + W_q q + W_p p)``; ``gru`` (`GRUCovAttention`) a GRU update.
- ``dot`` (`DotAttention`): ``k . q`` (keys and query projected to the attention size where their sizes differ;
  optionally scaled by ``1/sqrt(size)``); ``bilinear`` (`BilinearAttention`): ``(W k) . q``; ``mhdot``
  (`MultiHeadDotAttention`): multi-head scaled dot product with projected keys, values and query, heads
  concatenated and projected; ``location`` (`LocationAttention`): scores from the query alone (``W q``, one per
  position, Luong et al. 2015); ``fixed`` (`FixedAttention`): uniform weights (the context is the mean).

Parameters are attributes of the attention block (``key_proj``, ``query_proj``, ...): their names are those of the
saved parameter files, so a type's attribute names are part of the model format.
"""
import math
from typing import Callable, Dict, List, Tuple

import mxnet as mx
from mxnet import gluon

from . import layers

MLP = "mlp"
COVERAGE = "coverage"
COVERAGE_COUNT = "count"
COVERAGE_GRU = "gru"
GRU_GATES = 3            # reset, update and new gates of the coverage GRU


def _dense(units: int, in_units: int, prefix: str, use_bias: bool = False) -> gluon.nn.Dense:
    return gluon.nn.Dense(units, flatten=False, use_bias=use_bias, in_units=in_units, prefix=prefix)


class Attention(gluon.HybridBlock):
    """The interface of every attention type. ``query_size``: the RNN output size; ``source_size``: d;
    ``num_positions``: L; ``num_hidden``: the attention size.

    A type declares what it precomputes from the encoder states (``precompute``: ``[values, keys...]``, batch on
    axis 0; `num_precomputed` is read off it), what state it carries per step (``initial_state``; none by default),
    and how it attends: ``step`` (one query) and, for types that are not ``stepwise``, ``sequence`` (all queries of
    a caption at once)."""

    stepwise = False   # whether teacher forcing computes this attention one step at a time

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 prefix: str = "att_") -> None:
        super().__init__(prefix=prefix)
        self.query_size = query_size
        self.source_size = source_size
        self.num_positions = num_positions
        self.num_hidden = num_hidden

    @property
    def context_size(self) -> int:
        """Size of the context vector (the values' size)."""
        return self.source_size

    @property
    def num_precomputed(self) -> int:
        """How many arrays ``precompute`` returns (the decoder's static states): read off ``precompute`` itself,
        run on a placeholder symbol."""
        return len(self.precompute(mx.sym, mx.sym.var("encoded")))

    def precompute(self, F, encoded) -> List:
        """What depends only on the image, computed once: ``[values, keys...]`` (batch on axis 0). By default the
        encoded positions are values and keys."""
        return [encoded]

    def initial_state(self, F, encoded) -> List:
        """The state carried from step to step, before the first step: none by default."""
        return []

    def scores(self, F, pre: List, queries):
        """Scores ``(N, T, L)`` for queries ``(N, T, q)`` (types whose context is the probability-weighted sum of
        the values ``pre[0]``)."""
        raise NotImplementedError

    def sequence(self, F, pre: List, queries) -> Tuple:
        """Attention for T queries ``(N, T, q)`` at once (types that are not ``stepwise``): contexts
        ``(N, T, c)``, probs ``(N, T, L)``."""
        probs = F.softmax(self.scores(F, pre, queries), axis=-1)
        return F.batch_dot(probs, pre[0]), probs

    def step(self, F, pre: List, query, prev_word, state: List, beam_size: int = 1) -> Tuple:
        """One step: ``query (N, q)``, ``prev_word (N, E)`` -> context ``(N, c)``, probs ``(N, L)``, new state.
        With ``beam_size`` K > 1, ``pre`` has one row per input (B = N / K, an input's K rows consecutive); by
        default it is repeated for the K rows."""
        if beam_size > 1:
            pre = [layers.repeat_rows(F, p, beam_size) for p in pre]
        context, probs = self.sequence(F, pre, F.expand_dims(query, axis=1))
        return F.squeeze(context, axis=1), F.squeeze(probs, axis=1), state

    def hybrid_forward(self, F, *args, **kwargs):  # pragma: no cover - called through its methods
        raise NotImplementedError("attention is used through precompute / step / sequence")


class MlpAttention(Attention):
    """``mlp``: Bahdanau's MLP attention in the sigmoid form of the module docstring. Precomputes the values (the
    encoded positions) and the projected keys (doubled without layer normalisation); no state. ``use_prev_word``:
    the previous word's embedding (``embed_size``) joins the query."""

    stepwise = True   # its (N, L, a) hidden layer is cheapest per step

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 embed_size: int = 0, use_prev_word: bool = False, layer_normalization: bool = False,
                 prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, prefix)
        self.use_prev_word = use_prev_word
        self.layer_normalization = layer_normalization
        with self.name_scope():
            self.key_proj = _dense(num_hidden, source_size, "k_")
            self.query_proj = _dense(num_hidden, query_size, "q_")
            self.score = _dense(1, num_hidden, "v_")
            if use_prev_word:
                self.word_proj = _dense(num_hidden, embed_size, "w_")
            if layer_normalization:
                self.norm = gluon.nn.LayerNorm(in_channels=num_hidden, prefix="ln_")

    @property
    def _doubled(self) -> bool:
        """Whether scores are computed as ``(2v)^T sigmoid(2h)`` (the keys precomputed times 2)."""
        return not self.layer_normalization

    def precompute(self, F, encoded) -> List:
        keys = self.key_proj(encoded)
        return [encoded, keys * 2.0 if self._doubled else keys]

    def _query_hidden(self, F, query, prev_word):
        """The query's (and previous word's) share of the hidden layer, ``(N, 1, a)``, doubled like the keys."""
        hidden = F.expand_dims(self.query_proj(query), axis=1)
        if self.use_prev_word:
            hidden = hidden + F.expand_dims(self.word_proj(prev_word), axis=1)
        return hidden * 2.0 if self._doubled else hidden

    def _mlp_scores(self, F, keys, hidden):
        """Scores ``(N, L)`` of keys ``(N, L, a)`` and the query's ``hidden (N, 1, a)``, up to a constant per row.
        The query is spread over the L positions with a ``(N, L, 1) x (N, 1, a)`` batched matrix product instead of
        a broadcast add, whose backward pass (a reduction) is many times slower in MXNet on CPU."""
        ones = F.ones_like(F.slice_axis(keys, axis=2, begin=0, end=1))            # (N, L, 1)
        return self._squash(F, keys + F.batch_dot(ones, hidden))                 # (N, L, a)

    def _squash(self, F, hidden):
        """Scores ``(N, L)`` of the hidden layer ``(N, L, a)``: ``v^T tanh(LN(h))`` with layer normalisation, else
        ``(2v)^T sigmoid(h)`` of the doubled ``h``."""
        if not self._doubled:
            return F.reshape(self.score(layers.tanh(F, self.norm(hidden))), shape=(0, -1))
        return F.reshape(self.score(layers.sigmoid(F, hidden)), shape=(0, -1)) * 2.0

    def _shared_step(self, F, pre: List, hidden, beam_size: int) -> Tuple:
        """A beam step with ``pre`` at one row per input: the keys shared by an input's K rows, ``(B, 1, L, a) +
        (B, K, 1, a)`` in one broadcast (no (N, L, a) copy of the keys and values)."""
        hidden = F.broadcast_add(F.expand_dims(pre[1], axis=1), F.reshape(hidden, shape=(-4, -1, beam_size, -2)))
        probs = F.softmax(self._squash(F, F.reshape(hidden, shape=(-3, -2))), axis=-1)      # (N, L)
        context = F.batch_dot(F.reshape(probs, shape=(-4, -1, beam_size, -2)), pre[0])      # (B, K, c)
        return F.reshape(context, shape=(-3, -2)), probs

    def step(self, F, pre: List, query, prev_word, state: List, beam_size: int = 1) -> Tuple:
        hidden = self._query_hidden(F, query, prev_word)
        if beam_size > 1:
            context, probs = self._shared_step(F, pre, hidden, beam_size)
            return context, probs, state
        probs = F.softmax(self._mlp_scores(F, pre[1], hidden), axis=-1)                   # (N, L)
        return F.squeeze(F.batch_dot(F.expand_dims(probs, axis=1), pre[0]), axis=1), probs, state

    def sequence(self, F, pre: List, queries) -> Tuple:
        raise AssertionError("mlp attention runs one step at a time (step)")


class MlpCovAttention(MlpAttention):
    """``coverage`` with ``count`` coverage: MLP attention whose hidden layer also sees a coverage vector per
    position. Precomputes what `MlpAttention` does; state: the coverage ``(N, L, c)``, here the sum of the
    attention probabilities so far (c = 1)."""

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 embed_size: int = 0, use_prev_word: bool = False, layer_normalization: bool = False,
                 coverage_num_hidden: int = 1, prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, embed_size, use_prev_word,
                         layer_normalization, prefix)
        self.coverage_num_hidden = coverage_num_hidden
        with self.name_scope():
            self.cov_proj = _dense(num_hidden, coverage_num_hidden, "c_")

    def initial_state(self, F, encoded) -> List:
        """Coverage ``(N, L, c)`` zeros."""
        column = F.slice_axis(encoded, axis=2, begin=0, end=1) * 0.0            # (N, L, 1)
        return [F.broadcast_axis(column, axis=2, size=self.coverage_num_hidden)
                if self.coverage_num_hidden > 1 else column]

    def step(self, F, pre: List, query, prev_word, state: List, beam_size: int = 1) -> Tuple:
        if beam_size > 1:
            pre = [layers.repeat_rows(F, p, beam_size) for p in pre]
        coverage = state[0]
        hidden = self._query_hidden(F, query, prev_word)
        keys = pre[1] + self.cov_proj(coverage * 2.0 if self._doubled else coverage)   # linear, no bias
        probs = F.softmax(self._mlp_scores(F, keys, hidden), axis=-1)                  # (N, L)
        context = F.squeeze(F.batch_dot(F.expand_dims(probs, axis=1), pre[0]), axis=1)
        return context, probs, [self.update_coverage(F, pre, query, probs, coverage)]

    def update_coverage(self, F, pre: List, query, probs, coverage):
        """The coverage after a step with attention ``probs (N, L)``: the probabilities added up."""
        return coverage + F.expand_dims(probs, axis=2)


class ActivationCovAttention(MlpCovAttention):
    """``coverage`` with a learned coverage ``act(W_c c + W_s k + W_q q + W_p p)`` (``act``: tanh, sigmoid, relu
    or softrelu; ``coverage_num_hidden`` c units per position). Precomputes also the coverage's key term
    ``W_s k``; state: the coverage ``(N, L, c)``."""

    num_gates = 1

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 embed_size: int = 0, use_prev_word: bool = False, layer_normalization: bool = False,
                 coverage_num_hidden: int = 1, activation: str = "tanh", prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, embed_size, use_prev_word,
                         layer_normalization, coverage_num_hidden, prefix)
        self.activation = activation
        c = coverage_num_hidden * self.num_gates
        with self.name_scope():
            self.cov_source = _dense(c, source_size, "cov_s_", use_bias=True)
            self.cov_query = _dense(c, query_size, "cov_q_")
            self.cov_prob = _dense(c, 1, "cov_p_")
            self.cov_prev = _dense(c, coverage_num_hidden, "cov_c_")

    def precompute(self, F, encoded) -> List:
        return super().precompute(F, encoded) + [self.cov_source(encoded)]

    def _coverage_inputs(self, F, pre: List, query, probs):
        """The coverage's pre-activation from the keys, the query and the probabilities ``(N, L, c * gates)``."""
        p = F.expand_dims(probs, axis=2)                                          # (N, L, 1)
        ones = F.ones_like(p)
        return pre[2] + self.cov_prob(p) + F.batch_dot(ones, F.expand_dims(self.cov_query(query), axis=1))

    def update_coverage(self, F, pre: List, query, probs, coverage):
        pre_act = self._coverage_inputs(F, pre, query, probs)
        return F.Activation(pre_act + self.cov_prev(coverage), act_type=self.activation)


class GRUCovAttention(ActivationCovAttention):
    """``coverage`` with ``gru`` coverage: the coverage of each position is a GRU state updated from the keys, the
    query and the probabilities. Precomputes and carries what `ActivationCovAttention` does."""

    num_gates = GRU_GATES

    def update_coverage(self, F, pre: List, query, probs, coverage):
        x_r, x_z, x_n = F.split(self._coverage_inputs(F, pre, query, probs), num_outputs=GRU_GATES, axis=2)
        h_r, h_z, h_n = F.split(self.cov_prev(coverage), num_outputs=GRU_GATES, axis=2)
        r = layers.sigmoid(F, x_r + h_r)
        z = layers.sigmoid(F, x_z + h_z)
        n = layers.tanh(F, x_n + r * h_n)
        return (1.0 - z) * n + z * coverage


class DotAttention(Attention):
    """``dot``: scores ``k . q``, keys and query projected to the attention size where their sizes differ,
    optionally scaled by ``1/sqrt(size)``. Precomputes the values and (when projected) the keys; no state."""

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 scale_dot: bool = False, prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, prefix)
        self.scale_dot = scale_dot
        with self.name_scope():
            if source_size != num_hidden:
                self.key_proj = _dense(num_hidden, source_size, "k_")
            if query_size != num_hidden:
                self.query_proj = _dense(num_hidden, query_size, "q_")

    def precompute(self, F, encoded) -> List:
        return [encoded, self.key_proj(encoded)] if self.source_size != self.num_hidden else [encoded]

    def scores(self, F, pre: List, queries):
        q = self.query_proj(queries) if self.query_size != self.num_hidden else queries
        scores = F.batch_dot(q, pre[-1], transpose_b=True)
        return scores / math.sqrt(self.num_hidden) if self.scale_dot else scores


class BilinearAttention(Attention):
    """``bilinear``: scores ``(W k) . q``. Precomputes the values and ``W k``; no state."""

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, prefix)
        with self.name_scope():
            self.key_proj = _dense(query_size, source_size, "k_")

    def precompute(self, F, encoded) -> List:
        return [encoded, self.key_proj(encoded)]

    def scores(self, F, pre: List, queries):
        return F.batch_dot(queries, pre[1], transpose_b=True)


class LocationAttention(Attention):
    """``location``: scores from the query alone, ``W q`` (one per position). Precomputes nothing but the values;
    no state."""

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int,
                 prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, prefix)
        with self.name_scope():
            self.location = _dense(num_positions, query_size, "loc_", use_bias=True)

    def scores(self, F, pre: List, queries):
        return self.location(queries)


class FixedAttention(Attention):
    """``fixed``: uniform weights over the positions (the context is their mean). Precomputes nothing but the
    values; no state."""

    def sequence(self, F, pre: List, queries) -> Tuple:
        probs = F.ones_like(F.slice_axis(queries, axis=2, begin=0, end=1))     # (N, T, 1)
        probs = F.broadcast_axis(probs, axis=2, size=self.num_positions) / self.num_positions
        return F.batch_dot(probs, pre[0]), probs


class MultiHeadDotAttention(Attention):
    """``mhdot``: multi-head scaled dot-product attention with projected keys, values and query; the heads'
    contexts are concatenated and projected (context size: the attention size). Precomputes the projected values
    and keys; no state."""

    def __init__(self, query_size: int, source_size: int, num_positions: int, num_hidden: int, heads: int = 1,
                 prefix: str = "att_") -> None:
        super().__init__(query_size, source_size, num_positions, num_hidden, prefix)
        if num_hidden % heads:
            raise ValueError("mhdot attention: attention size %d is not divisible by %d heads" % (num_hidden, heads))
        self.heads = heads
        with self.name_scope():
            self.kv_proj = _dense(2 * num_hidden, source_size, "kv_")
            self.query_proj = _dense(num_hidden, query_size, "q_")
            self.out_proj = _dense(num_hidden, num_hidden, "o_")

    @property
    def context_size(self) -> int:
        return self.num_hidden

    def precompute(self, F, encoded) -> List:
        kv = self.kv_proj(encoded)
        keys = F.slice_axis(kv, axis=2, begin=0, end=self.num_hidden)
        values = F.slice_axis(kv, axis=2, begin=self.num_hidden, end=2 * self.num_hidden)
        return [values, keys]

    def sequence(self, F, pre: List, queries) -> Tuple:
        """Context ``(N, T, a)`` and head-averaged probabilities ``(N, T, L)``."""
        h, dh = self.heads, self.num_hidden // self.heads

        def split_heads(x):   # (N, T, a) -> (N, h, T, dh) -> (N*h, T, dh)
            return F.reshape(F.transpose(F.reshape(x, shape=(0, 0, h, dh)), axes=(0, 2, 1, 3)), shape=(-3, 0, 0))

        q = split_heads(self.query_proj(queries) * (1.0 / math.sqrt(dh)))
        probs = F.softmax(F.batch_dot(q, split_heads(pre[1]), transpose_b=True), axis=-1)   # (N*h, T, L)
        context = F.batch_dot(probs, split_heads(pre[0]))                                   # (N*h, T, dh)
        context = F.reshape(F.transpose(F.reshape(context, shape=(-4, -1, h, 0, 0)), axes=(0, 2, 1, 3)),
                            shape=(0, 0, -3))                                               # (N, T, a)
        probs = F.mean(F.reshape(probs, shape=(-4, -1, h, 0, 0)), axis=1)                   # (N, T, L)
        return self.out_proj(context), probs


def create_attention(attention_type: str, query_size: int, source_size: int, num_positions: int,
                     num_hidden: int, embed_size: int = 0, use_prev_word: bool = False, scale_dot: bool = False,
                     heads: int = 1, coverage_type: str = COVERAGE_COUNT, coverage_num_hidden: int = 1,
                     layer_normalization: bool = False, prefix: str = "att_") -> Attention:
    """The attention of ``attention_type`` (``--rnn-attention-type``; ``coverage_type``:
    ``--rnn-attention-coverage-type``) with the options that type uses (the others are ignored): the one place
    where type names are read."""
    sizes = (query_size, source_size, num_positions, num_hidden)
    if attention_type == MLP:
        return MlpAttention(*sizes, embed_size, use_prev_word, layer_normalization, prefix)
    if attention_type == COVERAGE and coverage_type == COVERAGE_COUNT:
        return MlpCovAttention(*sizes, embed_size, use_prev_word, layer_normalization, 1, prefix)
    if attention_type == COVERAGE and coverage_type == COVERAGE_GRU:
        return GRUCovAttention(*sizes, embed_size, use_prev_word, layer_normalization, coverage_num_hidden,
                               prefix=prefix)
    if attention_type == COVERAGE:
        return ActivationCovAttention(*sizes, embed_size, use_prev_word, layer_normalization, coverage_num_hidden,
                                      activation=coverage_type, prefix=prefix)
    others: Dict[str, Callable[[], Attention]] = {
        "dot": lambda: DotAttention(*sizes, scale_dot=scale_dot, prefix=prefix),
        "bilinear": lambda: BilinearAttention(*sizes, prefix=prefix),
        "mhdot": lambda: MultiHeadDotAttention(*sizes, heads=heads, prefix=prefix),
        "location": lambda: LocationAttention(*sizes, prefix=prefix),
        "fixed": lambda: FixedAttention(*sizes, prefix=prefix),
    }
    if attention_type not in others:
        raise ValueError("unknown attention type %r" % attention_type)
    return others[attention_type]()
