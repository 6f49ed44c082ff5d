"""Attention of the RNN decoder over the encoded image positions (Sockeye's attention types).

``Attention`` scores the ``L`` positions of ``encoded (N, L, d)`` against a query (the RNN output) and returns the
context (the probability-weighted sum of the values) and the probabilities. Anything that depends only on the image
(projected keys, values) is computed once per image by ``precompute`` and carried in the decoder states, not
recomputed at each step. Types:

- ``mlp``: ``v^T tanh(W_k k + W_q q [+ W_w prev_word] [+ W_c coverage])`` (Bahdanau et al. 2015), computed as
  ``(2v)^T sigmoid(2 (W_k k + ...))``: ``tanh(h) = 2 sigmoid(2h) - 1``, and the constant ``-sum(v)`` of a row
  cancels in the softmax over positions, so the probabilities are the same (to float rounding: 2e-7 on the
  squashed values). oneDNN's sigmoid is cheaper than its tanh on CPU, forward and backward, and that layer is the
  largest piece of a decoder step; the factor 2 is folded into the precomputed keys and the
  small per-step terms. With ``layer_normalization`` (not scale-free) the tanh stays.
- ``coverage``: ``mlp`` plus a coverage vector per position (Tu et al. 2016): ``count`` adds up the attention
  probabilities; ``tanh|sigmoid|relu|softrelu`` are ``act(W_c c + W_s k + W_q q + W_p p)``; ``gru`` a GRU update.
- ``dot``: ``k . q`` (keys and query projected to the attention size where their sizes differ; optionally scaled
  by ``1/sqrt(size)``); ``bilinear``: ``(W k) . q``; ``mhdot``: multi-head scaled dot product with projected keys,
  values and query, heads concatenated and projected; ``location``: scores from the query alone (``W q``, one per
  position, Luong et al. 2015); ``fixed``: uniform weights (the context is the mean).
"""
import math
from typing import List, Tuple

from mxnet import gluon

from . import layers


class Attention(gluon.HybridBlock):
    """One attention type. ``query_size``: the RNN output size; ``source_size``: d; ``num_positions``: L;
    ``embed_size``: the previous word's embedding (``use_prev_word``)."""

    def __init__(self, attention_type: str, query_size: int, source_size: int, num_positions: int,
                 num_hidden: int, embed_size: int = 0, use_prev_word: bool = False, scale_dot: bool = False,
                 heads: int = 1, coverage_type: str = "count", coverage_num_hidden: int = 1,
                 layer_normalization: bool = False, prefix: str = "att_") -> None:
        super().__init__(prefix=prefix)
        self.type = attention_type
        self.query_size = query_size
        self.source_size = source_size
        self.num_positions = num_positions
        self.num_hidden = num_hidden
        self.use_prev_word = use_prev_word and attention_type in ("mlp", "coverage")
        self.scale_dot = scale_dot
        self.heads = heads
        self.coverage_type = coverage_type
        self.coverage_num_hidden = 1 if coverage_type == "count" else coverage_num_hidden
        self.layer_normalization = layer_normalization
        if attention_type == "mhdot" and num_hidden % heads:
            raise ValueError("mhdot attention: attention size %d is not divisible by %d heads" % (num_hidden, heads))
        dense = gluon.nn.Dense
        with self.name_scope():
            if attention_type in ("mlp", "coverage"):
                self.key_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=source_size, prefix="k_")
                self.query_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=query_size, prefix="q_")
                self.score = dense(1, flatten=False, use_bias=False, in_units=num_hidden, prefix="v_")
                if self.use_prev_word:
                    self.word_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=embed_size,
                                           prefix="w_")
                if layer_normalization:
                    self.norm = gluon.nn.LayerNorm(in_channels=num_hidden, prefix="ln_")
                if attention_type == "coverage":
                    self.cov_proj = dense(num_hidden, flatten=False, use_bias=False,
                                          in_units=self.coverage_num_hidden, prefix="c_")
                    if coverage_type != "count":
                        gates = 3 if coverage_type == "gru" else 1
                        c = self.coverage_num_hidden * gates
                        self.cov_source = dense(c, flatten=False, in_units=source_size, prefix="cov_s_")
                        self.cov_query = dense(c, flatten=False, use_bias=False, in_units=query_size,
                                               prefix="cov_q_")
                        self.cov_prob = dense(c, flatten=False, use_bias=False, in_units=1, prefix="cov_p_")
                        self.cov_prev = dense(c, flatten=False, use_bias=False, in_units=self.coverage_num_hidden,
                                              prefix="cov_c_")
            elif attention_type == "bilinear":
                self.key_proj = dense(query_size, flatten=False, use_bias=False, in_units=source_size, prefix="k_")
            elif attention_type == "dot":
                if source_size != num_hidden:
                    self.key_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=source_size,
                                          prefix="k_")
                if query_size != num_hidden:
                    self.query_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=query_size,
                                            prefix="q_")
            elif attention_type == "mhdot":
                self.kv_proj = dense(2 * num_hidden, flatten=False, use_bias=False, in_units=source_size,
                                     prefix="kv_")
                self.query_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=query_size, prefix="q_")
                self.out_proj = dense(num_hidden, flatten=False, use_bias=False, in_units=num_hidden, prefix="o_")
            elif attention_type == "location":
                self.location = dense(num_positions, flatten=False, in_units=query_size, prefix="loc_")
            elif attention_type != "fixed":
                raise ValueError("unknown attention type %r" % attention_type)

    # ----------------------------------------------------------------------------------------------------------
    @property
    def context_size(self) -> int:
        return self.num_hidden if self.type == "mhdot" else self.source_size

    @property
    def stepwise(self) -> bool:
        """Whether teacher forcing computes this attention one step at a time: coverage (each step depends on the
        previous one) and mlp (its (N, L, a) hidden layer is cheapest per step)."""
        return self.type in ("mlp", "coverage")

    @property
    def num_precomputed(self) -> int:
        """How many arrays `precompute` returns (the decoder's static states)."""
        if self.type in ("mlp", "coverage"):
            return 3 if self.type == "coverage" and self.coverage_type != "count" else 2
        if self.type in ("bilinear", "mhdot"):
            return 2
        if self.type == "dot":
            return 2 if self.source_size != self.num_hidden else 1
        return 1

    @property
    def _doubled(self) -> bool:
        """Whether mlp scores are computed as ``(2v)^T sigmoid(2h)`` (the keys precomputed times 2)."""
        return self.type in ("mlp", "coverage") and not self.layer_normalization

    def precompute(self, F, encoded) -> List:
        """What depends only on the image, computed once: ``[values, keys...]`` (batch on axis 0), as many as
        ``num_precomputed``."""
        if self.type in ("mlp", "coverage"):
            keys = self.key_proj(encoded)
            pre = [encoded, keys * 2.0 if self._doubled else keys]
            if self.type == "coverage" and self.coverage_type != "count":
                pre.append(self.cov_source(encoded))
            return pre
        if self.type == "bilinear":
            return [encoded, self.key_proj(encoded)]
        if self.type == "dot":
            return [encoded, self.key_proj(encoded)] if self.source_size != self.num_hidden else [encoded]
        if self.type == "mhdot":
            kv = self.kv_proj(encoded)
            keys = F.slice_axis(kv, axis=2, begin=0, end=self.num_hidden)
            values = F.slice_axis(kv, axis=2, begin=self.num_hidden, end=2 * self.num_hidden)
            return [values, keys]
        return [encoded]

    def initial_state(self, F, encoded) -> List:
        """Coverage ``(N, L, c)`` zeros for ``coverage``, else nothing."""
        if self.type != "coverage":
            return []
        column = F.slice_axis(encoded, axis=2, begin=0, end=1) * 0.0            # (N, L, 1)
        return [F.broadcast_axis(column, axis=2, size=self.coverage_num_hidden)
                if self.coverage_num_hidden > 1 else column]

    # ----------------------------------------------------------------------------------------------------------
    def _mlp_scores(self, F, pre: List, query, prev_word, coverage, beam_size: int = 1):
        """MLP scores ``(N, L)`` for one query ``(N, q)``, up to a constant per row (see the module's note: the
        keys in ``pre`` are doubled, and so is everything added to them here). The query's projection is spread
        over the L positions with a ``(N, L, 1) x (N, 1, a)`` batched matrix product instead of a broadcast add,
        whose backward pass (a reduction) is many times slower in MXNet on CPU. With ``beam_size`` K > 1
        (inference, mlp) the keys have one row per input."""
        hidden = F.expand_dims(self.query_proj(query), axis=1)                    # (N, 1, a)
        if self.use_prev_word:
            hidden = hidden + F.expand_dims(self.word_proj(prev_word), axis=1)
        if self._doubled:
            hidden = hidden * 2.0
        if beam_size > 1:
            # keys shared by an input's K rows: (B, 1, L, a) + (B, K, 1, a) in one broadcast, the same sums as below
            hidden = F.broadcast_add(F.expand_dims(pre[1], axis=1),
                                     F.reshape(hidden, shape=(-4, -1, beam_size, -2)))
            return self._squash(F, F.reshape(hidden, shape=(-3, -2)))            # (N, L, a)
        keys = pre[1]                                                             # (N, L, a)
        if coverage is not None:
            keys = keys + self.cov_proj(coverage * 2.0 if self._doubled else coverage)   # linear, no bias
        ones = F.ones_like(F.slice_axis(pre[1], axis=2, begin=0, end=1))          # (N, L, 1)
        return self._squash(F, keys + F.batch_dot(ones, hidden))                  # (N, L, a)

    def _squash(self, F, hidden):
        """Scores ``(N, L)`` of the hidden layer ``(N, L, a)``: ``v^T tanh(LN(h))`` with layer normalisation, else
        ``(2v)^T sigmoid(h)`` of the doubled ``h``."""
        if not self._doubled:
            return F.reshape(self.score(layers.tanh(F, self.norm(hidden))), shape=(0, -1))
        return F.reshape(self.score(layers.sigmoid(F, hidden)), shape=(0, -1)) * 2.0

    def _scores(self, F, pre: List, query):
        """Scores ``(N, T, L)`` for queries ``(N, T, q)`` of bilinear, dot and location attention."""
        if self.type == "bilinear":
            return F.batch_dot(query, pre[1], transpose_b=True)
        if self.type == "dot":
            q = self.query_proj(query) if self.query_size != self.num_hidden else query
            scores = F.batch_dot(q, pre[-1], transpose_b=True)
            return scores / math.sqrt(self.num_hidden) if self.scale_dot else scores
        if self.type == "location":
            return self.location(query)
        raise AssertionError(self.type)

    def _multi_head(self, F, pre: List, query):
        """mhdot: context ``(N, T, a)`` and head-averaged probabilities ``(N, T, L)``."""
        h, dh = self.heads, self.num_hidden // self.heads
        q = self.query_proj(query) * (1.0 / math.sqrt(dh))                       # (N, T, a)
        # (N, T, a) -> (N, h, T, dh) -> (N*h, T, dh)
        q = F.reshape(F.transpose(F.reshape(q, shape=(0, 0, h, dh)), axes=(0, 2, 1, 3)), shape=(-3, 0, 0))
        k = F.reshape(F.transpose(F.reshape(pre[1], shape=(0, 0, h, dh)), axes=(0, 2, 1, 3)), shape=(-3, 0, 0))
        v = F.reshape(F.transpose(F.reshape(pre[0], shape=(0, 0, h, dh)), axes=(0, 2, 1, 3)), shape=(-3, 0, 0))
        probs = F.softmax(F.batch_dot(q, k, transpose_b=True), axis=-1)           # (N*h, T, L)
        context = F.batch_dot(probs, v)                                           # (N*h, T, dh)
        context = F.reshape(F.transpose(F.reshape(context, shape=(-4, -1, h, 0, 0)), axes=(0, 2, 1, 3)),
                            shape=(0, 0, -3))                                     # (N, T, a)
        probs = F.mean(F.reshape(probs, shape=(-4, -1, h, 0, 0)), axis=1)         # (N, T, L)
        return self.out_proj(context), probs

    def sequence(self, F, pre: List, queries) -> Tuple:
        """Attention for T queries at once (types that are not ``stepwise``): contexts ``(N, T, c)``, probs
        ``(N, T, L)``."""
        if self.type == "mhdot":
            return self._multi_head(F, pre, queries)
        if self.type == "fixed":
            probs = F.ones_like(F.slice_axis(queries, axis=2, begin=0, end=1))     # (N, T, 1)
            probs = F.broadcast_axis(probs, axis=2, size=self.num_positions) / self.num_positions
            return F.batch_dot(probs, pre[0]), probs
        assert not self.stepwise, "mlp/coverage attention runs one step at a time (step)"
        probs = F.softmax(self._scores(F, pre, queries), axis=-1)
        return F.batch_dot(probs, pre[0]), probs

    def step(self, F, pre: List, query, prev_word, state: List, beam_size: int = 1) -> Tuple:
        """One step: ``query (N, q)``, ``prev_word (N, E)`` -> context ``(N, c)``, probs ``(N, L)``, new state.
        With ``beam_size`` K > 1, ``pre`` has one row per input (B = N / K, an input's K rows consecutive): mlp
        attention uses it as it is (no (N, L, a) copy of the keys and values), the other types repeat it."""
        if beam_size > 1 and self.type == "mlp":
            probs = F.softmax(self._mlp_scores(F, pre, query, prev_word, None, beam_size), axis=-1)   # (N, L)
            context = F.batch_dot(F.reshape(probs, shape=(-4, -1, beam_size, -2)), pre[0])           # (B, K, c)
            return F.reshape(context, shape=(-3, -2)), probs, []
        if beam_size > 1:
            pre = [layers.repeat_rows(F, p, beam_size) for p in pre]
        if self.type in ("mlp", "coverage"):
            coverage = state[0] if self.type == "coverage" else None
            probs = F.softmax(self._mlp_scores(F, pre, query, prev_word, coverage), axis=-1)   # (N, L)
            context = F.squeeze(F.batch_dot(F.expand_dims(probs, axis=1), pre[0]), axis=1)
            if coverage is None:
                return context, probs, []
            return context, probs, [self._update_coverage(F, pre, query, probs, coverage)]
        q = F.expand_dims(query, axis=1)
        context, probs = self.sequence(F, pre, q)
        return F.squeeze(context, axis=1), F.squeeze(probs, axis=1), []

    def _update_coverage(self, F, pre: List, query, probs, coverage):
        p = F.expand_dims(probs, axis=2)                                          # (N, L, 1)
        if self.coverage_type == "count":
            return coverage + p
        ones = F.ones_like(p)
        pre_act = pre[2] + self.cov_prob(p) + F.batch_dot(ones, F.expand_dims(self.cov_query(query), axis=1))
        if self.coverage_type != "gru":
            return F.Activation(pre_act + self.cov_prev(coverage), act_type=self.coverage_type)
        x_r, x_z, x_n = F.split(pre_act, num_outputs=3, axis=2)
        h_r, h_z, h_n = F.split(self.cov_prev(coverage), num_outputs=3, axis=2)
        r = layers.sigmoid(F, x_r + h_r)
        z = layers.sigmoid(F, x_z + h_z)
        n = layers.tanh(F, x_n + r * h_n)
        return (1.0 - z) * n + z * coverage
