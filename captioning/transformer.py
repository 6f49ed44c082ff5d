"""Parts of the transformer decoder (Vaswani et al. 2017, as in Sockeye): multi-head attention, the feed-forward
block, pre/post-processing sequences, and one decoder layer usable over a whole caption or step by step."""
import math
from typing import List, Optional, Tuple

from mxnet import gluon

from . import layers

NEG_INF = -1e9


def multi_head_attend(F, queries, keys, values, heads: int, bias=None, dropout: float = 0.0):
    """Scaled dot-product attention over ``heads`` heads. ``queries (N, Tq, d)``, ``keys/values (N, Tk, d)``,
    ``bias`` broadcastable to ``(N*heads, Tq, Tk)`` (``-1e9`` hides a key). Returns the context ``(N, Tq, d)`` and
    the probabilities averaged over heads ``(N, Tq, Tk)``."""
    def split_heads(x):   # (N, T, d) -> (N*h, T, d/h)
        return F.reshape(F.transpose(F.reshape(x, shape=(0, 0, heads, -1)), axes=(0, 2, 1, 3)), shape=(-3, 0, 0))

    q, k, v = split_heads(queries), split_heads(keys), split_heads(values)
    scores = F.batch_dot(q, k, transpose_b=True)                                  # (N*h, Tq, Tk)
    if bias is not None:
        scores = F.broadcast_add(scores, bias)
    probs = F.softmax(scores, axis=-1)
    mean_probs = F.mean(F.reshape(probs, shape=(-4, -1, heads, 0, 0)), axis=1)    # (N, Tq, Tk)
    if dropout > 0.0:
        probs = F.Dropout(probs, p=dropout)
    context = F.batch_dot(probs, v)                                               # (N*h, Tq, d/h)
    context = F.reshape(F.transpose(F.reshape(context, shape=(-4, -1, heads, 0, 0)), axes=(0, 2, 1, 3)),
                        shape=(0, 0, -3))
    return context, mean_probs


def causal_bias(F, seq_len: int, like):
    """``(1, T, T)``: 0 where key j <= query i, -1e9 after it."""
    positions = layers.arange(F, seq_len, like)
    later = F.broadcast_greater(F.reshape(positions, shape=(1, -1)), F.reshape(positions, shape=(-1, 1)))
    return F.expand_dims(later * NEG_INF, axis=0)


class PrePostProcess(gluon.HybridBlock):
    """A sequence of 'n' (layer norm), 'r' (residual: add the sub-layer's input), 'd' (dropout)."""

    def __init__(self, sequence: str, num_hidden: int, dropout: float, prefix: Optional[str] = None) -> None:
        super().__init__(prefix=prefix)
        unknown = set(sequence) - set("nrd")
        if unknown:
            raise ValueError("pre/post-process sequence %r: unknown step(s) %s (use n, r, d)"
                             % (sequence, "".join(sorted(unknown))))
        self.sequence = sequence
        self.dropout = dropout
        with self.name_scope():
            if "n" in sequence:
                self.norm = gluon.nn.LayerNorm(in_channels=num_hidden, prefix="norm_")

    def apply(self, F, x, previous=None):
        for step in self.sequence:
            if step == "n":
                x = self.norm(x)
            elif step == "r" and previous is not None:
                x = x + previous
            elif step == "d" and self.dropout > 0.0:
                x = F.Dropout(x, p=self.dropout)
        return x


class TransformerDecoderLayer(gluon.HybridBlock):
    """Causal self-attention, attention to the image positions, feed-forward; each wrapped in pre/post-process."""

    def __init__(self, model_size: int, heads: int, ff_hidden: int, source_size: int, activation: str,
                 preprocess: str, postprocess: str, dropout_attention: float, dropout_act: float,
                 dropout_prepost: float, prefix: Optional[str] = None) -> None:
        super().__init__(prefix=prefix)
        if model_size % heads:
            raise ValueError("transformer model size %d is not divisible by %d attention heads" % (model_size, heads))
        self.model_size = model_size
        self.heads = heads
        self.activation = activation
        self.dropout_attention = dropout_attention
        self.dropout_act = dropout_act
        d = model_size

        def dense(units, in_units, name, bias=True):
            return gluon.nn.Dense(units, flatten=False, in_units=in_units, use_bias=bias, prefix=name)

        with self.name_scope():
            self.pre_self = PrePostProcess(preprocess, d, dropout_prepost, prefix="pre_self_")
            self.post_self = PrePostProcess(postprocess, d, dropout_prepost, prefix="post_self_")
            self.self_qkv = dense(3 * d, d, "self_qkv_", bias=False)
            self.self_out = dense(d, d, "self_out_", bias=False)
            self.pre_src = PrePostProcess(preprocess, d, dropout_prepost, prefix="pre_src_")
            self.post_src = PrePostProcess(postprocess, d, dropout_prepost, prefix="post_src_")
            self.src_q = dense(d, d, "src_q_", bias=False)
            self.src_kv = dense(2 * d, source_size, "src_kv_", bias=False)
            self.src_out = dense(d, d, "src_out_", bias=False)
            self.pre_ff = PrePostProcess(preprocess, d, dropout_prepost, prefix="pre_ff_")
            self.post_ff = PrePostProcess(postprocess, d, dropout_prepost, prefix="post_ff_")
            self.ff1 = dense(ff_hidden, d, "ff1_")
            self.ff2 = dense(d, ff_hidden, "ff2_")

    def source_keys_values(self, F, encoded) -> List:
        """The image's keys and values for this layer, ``[(N, L, d), (N, L, d)]``, computed once."""
        kv = self.src_kv(encoded)
        return [F.slice_axis(kv, axis=2, begin=0, end=self.model_size),
                F.slice_axis(kv, axis=2, begin=self.model_size, end=2 * self.model_size)]

    def _self_qkv(self, F, x):
        qkv = self.self_qkv(self.pre_self.apply(F, x))
        d = self.model_size
        q = F.slice_axis(qkv, axis=2, begin=0, end=d) * (1.0 / math.sqrt(d // self.heads))
        return q, F.slice_axis(qkv, axis=2, begin=d, end=2 * d), F.slice_axis(qkv, axis=2, begin=2 * d, end=3 * d)

    def _rest(self, F, x, self_context, source_kv) -> Tuple:
        x = self.post_self.apply(F, self.self_out(self_context), x)
        q = self.src_q(self.pre_src.apply(F, x)) * (1.0 / math.sqrt(self.model_size // self.heads))
        context, probs = multi_head_attend(F, q, source_kv[0], source_kv[1], self.heads, None,
                                           self.dropout_attention)
        x = self.post_src.apply(F, self.src_out(context), x)
        hidden = layers.activation(F, self.ff1(self.pre_ff.apply(F, x)), self.activation)
        if self.dropout_act > 0.0:
            hidden = F.Dropout(hidden, p=self.dropout_act)
        x = self.post_ff.apply(F, self.ff2(hidden), x)
        return x, probs

    def sequence(self, F, x, source_kv: List, bias) -> Tuple:
        """``x (N, T, d)`` -> (``(N, T, d)``, source attention ``(N, T, L)``) with the causal ``bias``."""
        q, k, v = self._self_qkv(F, x)
        context, _ = multi_head_attend(F, q, k, v, self.heads, bias, self.dropout_attention)
        return self._rest(F, x, context, source_kv)

    def step(self, F, x, source_kv: List, cache_k, cache_v, cache_bias) -> Tuple:
        """``x (N, 1, d)`` with the keys/values of the earlier steps ``(N, t, d)`` -> (out ``(N, 1, d)``, source
        attention ``(N, 1, L)``, new keys, new values)."""
        q, k, v = self._self_qkv(F, x)
        k = F.concat(cache_k, k, dim=1)
        v = F.concat(cache_v, v, dim=1)
        context, _ = multi_head_attend(F, q, k, v, self.heads, cache_bias, self.dropout_attention)
        out, probs = self._rest(F, x, context, source_kv)
        return out, probs, k, v
