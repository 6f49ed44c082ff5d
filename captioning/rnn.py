"""One recurrent layer (LSTM or GRU, optionally layer-normalised) usable step by step and, where possible, over a
whole sequence with MXNet's fused RNN kernel (the same weights either way).

Weights follow MXNet's fused RNN layout, so both paths agree: ``i2h_weight (G*H, in)``, ``h2h_weight (G*H, H)``,
``i2h_bias``, ``h2h_bias``; LSTM gates ``i, f, g, o`` (G=4), GRU gates ``r, z, n`` (G=3) with
``n = tanh(W_n x + b_n + r * (U_n h + c_n))`` and ``h' = (1 - z) * n + z * h``. The ``-ln`` cells layer-normalise
the input and recurrent pre-activations (and the LSTM cell state) as in Ba et al. (2016); they always run step by
step.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import layers

GATES = {"lstm": 4, "gru": 3}


class LayerState(NamedTuple):
    """The state of one recurrent layer: ``h (N, H)``, and for an LSTM the cell ``c (N, H)`` (None for a GRU)."""
    h: Any
    c: Any = None

    def arrays(self) -> List:
        """The state as the arrays it holds: ``[h, c]`` (LSTM) or ``[h]`` (GRU)."""
        return [self.h] if self.c is None else [self.h, self.c]


@mx.init.register
class StackedOrthogonal(mx.init.Initializer):
    """Orthogonal initialisation of each gate's ``(H, H)`` block of a stacked ``(G*H, H)`` recurrent matrix."""

    def __init__(self, num_gates: int = 4, scale: float = 1.0) -> None:
        super().__init__(num_gates=num_gates, scale=scale)
        self.num_gates = num_gates
        self.scale = scale

    def _init_weight(self, name, arr):  # noqa: D401 - MXNet's hook
        rows, cols = arr.shape
        block = rows // self.num_gates
        blocks = []
        for _ in range(self.num_gates):
            q, _ = np.linalg.qr(np.random.normal(0.0, 1.0, (max(block, cols), min(block, cols))))
            blocks.append(q if block >= cols else q.T)
        arr[:] = np.concatenate(blocks, axis=0)[:rows, :cols] * self.scale


def h2h_initializer(kind: str, num_gates: int) -> Optional[mx.init.Initializer]:
    """``--rnn-h2h-init``: orthogonal (the whole stacked matrix), orthogonal_stacked (per gate), default (None:
    the model's weight initialiser)."""
    if kind == "orthogonal":
        return mx.init.Orthogonal()
    if kind == "orthogonal_stacked":
        return StackedOrthogonal(num_gates)
    return None


class RecurrentLayer(gluon.HybridBlock):
    """One recurrent layer of ``num_hidden`` units over inputs of ``input_size``: the weights, the input projection,
    the fused-kernel path and the step around the cell, which `LSTMLayer` and `GRULayer` define
    (`create_recurrent_layer` picks one from ``--rnn-cell-type``). ``mode`` is the fused kernel's name of the
    cell."""
    mode = ""
    num_gates = 0
    num_states = 0

    def __init__(self, input_size: int, num_hidden: int, layer_norm: bool = False, forget_bias: float = 0.0,
                 h2h_init: str = "orthogonal", prefix: str = "rnn_") -> None:
        super().__init__(prefix=prefix)
        self.layer_norm = layer_norm
        self.input_size = input_size
        self.num_hidden = num_hidden
        gh = self.num_gates * num_hidden
        with self.name_scope():
            self.i2h_weight = self.params.get("i2h_weight", shape=(gh, input_size))
            self.h2h_weight = self.params.get("h2h_weight", shape=(gh, num_hidden),
                                              init=h2h_initializer(h2h_init, self.num_gates))
            self.i2h_bias = self.params.get("i2h_bias", shape=(gh,), init=self._bias_init(forget_bias))
            self.h2h_bias = self.params.get("h2h_bias", shape=(gh,), init="zeros")
            if layer_norm:
                self.norm_i2h = gluon.nn.LayerNorm(in_channels=gh, prefix="ln_i2h_")
                self.norm_h2h = gluon.nn.LayerNorm(in_channels=gh, prefix="ln_h2h_")

    def _bias_init(self, forget_bias: float) -> Any:
        return "zeros"

    @property
    def can_fuse(self) -> bool:
        """Whether whole sequences can run through the fused kernel."""
        return not self.layer_norm

    @property
    def can_fuse_feed(self) -> bool:
        """Whether ``step`` can multiply a fed part of the input together with the recurrent state (`feed_weight`):
        an LSTM without layer normalisation (a GRU's reset gate acts on the recurrent part alone)."""
        return False

    def project_inputs(self, F, x, begin: int = 0, end: Optional[int] = None, bias: bool = True):
        """The input part of the gates, ``x (..., end-begin) @ i2h_weight[:, begin:end].T (+ i2h_bias)``: lets
        the decoder project the embeddings of all steps at once and only the fed-back part step by step."""
        w = layers.param_value(F, self.i2h_weight, x)
        end = self.input_size if end is None else end
        if begin != 0 or end != self.input_size:
            w = F.slice_axis(w, axis=1, begin=begin, end=end)
        b = layers.param_value(F, self.i2h_bias, x) if bias else None
        return layers.dense(F, x, w, b, self.num_gates * self.num_hidden)

    def feed_weight(self, F, like, begin: int):
        """``[i2h_weight[:, begin:], h2h_weight]``: lets ``step`` multiply the fed-back part of the input and the
        recurrent state in one matrix product (compute it once per graph, not per step)."""
        w = F.slice_axis(layers.param_value(F, self.i2h_weight, like), axis=1, begin=begin, end=None)
        return F.concat(w, layers.param_value(F, self.h2h_weight, like), dim=1)

    def step(self, F, i2h, state: LayerState, recurrent_mask=None, feed=None, feed_weight=None
             ) -> Tuple[Any, LayerState]:
        """One step from the projected inputs ``i2h (N, G*H)`` (``project_inputs``): -> (h, new state). With
        ``feed`` (the input columns from ``begin`` on) and ``feed_weight`` (`feed_weight`), the fed part and the
        recurrent part share one matrix product (``can_fuse_feed`` only)."""
        h = state.h
        h_in = h * recurrent_mask if recurrent_mask is not None else h
        h2h_bias = layers.param_value(F, self.h2h_bias, h)
        if feed is not None:
            assert self.can_fuse_feed
            h2h = layers.dense(F, F.concat(feed, h_in, dim=1), feed_weight, h2h_bias,
                               self.num_gates * self.num_hidden)
        else:
            h2h = layers.dense(F, h_in, layers.param_value(F, self.h2h_weight, h), h2h_bias,
                               self.num_gates * self.num_hidden)
        if self.layer_norm:
            i2h = self.norm_i2h(i2h)
            h2h = self.norm_h2h(h2h)
        return self.cell(F, i2h, h2h, state)

    def cell(self, F, i2h, h2h, state: LayerState) -> Tuple[Any, LayerState]:
        """The cell's update from the input and recurrent parts of the gates: -> (h, new state)."""
        raise NotImplementedError

    def _fused_states(self, F, state: LayerState) -> Dict[str, Any]:
        """The fused kernel's state arguments beyond the hidden state."""
        return {}

    def sequence(self, F, x, state: LayerState, seq_len: int, recurrent_mask=None):
        """Outputs ``(N, T, H)`` for inputs ``(N, T, in)`` from ``state`` (teacher forcing). Uses the fused
        kernel unless the cell is layer-normalised or a recurrent dropout mask is given."""
        if self.can_fuse and recurrent_mask is None:
            params = F.concat(F.reshape(layers.param_value(F, self.i2h_weight, x), shape=(-1,)),
                              F.reshape(layers.param_value(F, self.h2h_weight, x), shape=(-1,)),
                              layers.param_value(F, self.i2h_bias, x),
                              layers.param_value(F, self.h2h_bias, x), dim=0)
            out = F.RNN(F.transpose(x, axes=(1, 0, 2)), params, F.expand_dims(state.h, axis=0),
                        state_size=self.num_hidden, num_layers=1, mode=self.mode, **self._fused_states(F, state))
            return F.transpose(out, axes=(1, 0, 2))
        projected = layers.split_steps(F, self.project_inputs(F, x), seq_len)
        outputs = []
        for i2h in projected:
            h, state = self.step(F, i2h, state, recurrent_mask)
            outputs.append(h)
        return F.stack(*outputs, axis=1)


class LSTMLayer(RecurrentLayer):
    """LSTM: gates ``i, f, g, o``; state ``(h, c)``; with layer normalisation the cell state is normalised too."""
    mode = "lstm"
    num_gates = GATES["lstm"]
    num_states = 2

    def __init__(self, input_size: int, num_hidden: int, layer_norm: bool = False, forget_bias: float = 0.0,
                 h2h_init: str = "orthogonal", prefix: str = "rnn_") -> None:
        super().__init__(input_size, num_hidden, layer_norm, forget_bias, h2h_init, prefix)
        if layer_norm:
            with self.name_scope():
                self.norm_c = gluon.nn.LayerNorm(in_channels=num_hidden, prefix="ln_c_")

    def _bias_init(self, forget_bias: float) -> Any:
        return mx.init.LSTMBias(forget_bias)

    @property
    def can_fuse_feed(self) -> bool:
        return not self.layer_norm

    def cell(self, F, i2h, h2h, state: LayerState) -> Tuple[Any, LayerState]:
        i, f, g, o = F.split(i2h + h2h, num_outputs=self.num_gates, axis=1)
        c = layers.sigmoid(F, f) * state.c + layers.sigmoid(F, i) * layers.tanh(F, g)
        c_out = self.norm_c(c) if self.layer_norm else c
        h = layers.sigmoid(F, o) * layers.tanh(F, c_out)
        return h, LayerState(h, c)

    def _fused_states(self, F, state: LayerState) -> Dict[str, Any]:
        return {"state_cell": F.expand_dims(state.c, axis=0)}


class GRULayer(RecurrentLayer):
    """GRU: gates ``r, z, n`` with ``n = tanh(W_n x + b_n + r * (U_n h + c_n))``, ``h' = (1 - z) * n + z * h``;
    state ``h``."""
    mode = "gru"
    num_gates = GATES["gru"]
    num_states = 1

    def cell(self, F, i2h, h2h, state: LayerState) -> Tuple[Any, LayerState]:
        x_r, x_z, x_n = F.split(i2h, num_outputs=self.num_gates, axis=1)
        h_r, h_z, h_n = F.split(h2h, num_outputs=self.num_gates, axis=1)
        r = layers.sigmoid(F, x_r + h_r)
        z = layers.sigmoid(F, x_z + h_z)
        n = layers.tanh(F, x_n + r * h_n)
        h = (1.0 - z) * n + z * state.h
        return h, LayerState(h)


LAYER_NORM_SUFFIX = "-ln"


def create_recurrent_layer(cell_type: str, input_size: int, num_hidden: int, forget_bias: float = 0.0,
                           h2h_init: str = "orthogonal", prefix: str = "rnn_") -> RecurrentLayer:
    """The layer of ``cell_type`` (``--rnn-cell-type``: lstm, lstm-ln, gru, gru-ln): the one place that reads the
    cell type names."""
    layer_norm = cell_type.endswith(LAYER_NORM_SUFFIX)
    cells = {LSTMLayer.mode: LSTMLayer, GRULayer.mode: GRULayer}
    base = cell_type[:-len(LAYER_NORM_SUFFIX)] if layer_norm else cell_type
    if base not in cells:
        raise ValueError("unknown RNN cell type %r" % cell_type)
    return cells[base](input_size, num_hidden, layer_norm, forget_bias, h2h_init, prefix)
