"""Parts of the convolutional decoder (ConvS2S, Gehring et al. 2017): a causal 1-D convolution with a gated linear
unit (or another activation) and dot-product attention to the image positions, as one layer that runs over a whole
caption or one step at a time (keeping its last ``kernel_width - 1`` inputs)."""
import math
from typing import List, Optional, Tuple

from mxnet import gluon

from . import layers


class ConvolutionalDecoderLayer(gluon.HybridBlock):
    """``x (N, T, H)`` -> ``x + conv(x) + attention(conv(x) + g)`` where ``g`` is the embedded target (the
    attention query of Gehring et al.) and ``conv`` only sees the current and the ``kernel_width - 1`` earlier
    steps."""

    def __init__(self, num_hidden: int, kernel_width: int, activation: str, source_size: int, project_qkv: bool,
                 dropout: float, prefix: Optional[str] = None) -> None:
        super().__init__(prefix=prefix)
        self.num_hidden = num_hidden
        self.kernel_width = kernel_width
        self.activation = activation
        self.dropout = dropout
        self.project_keys = project_qkv or source_size != num_hidden
        self.project_qkv = project_qkv
        channels = 2 * num_hidden if activation == "glu" else num_hidden
        with self.name_scope():
            self.conv = gluon.nn.Conv1D(channels, kernel_width, in_channels=num_hidden, prefix="conv_")
            if self.project_keys:
                self.kv_proj = gluon.nn.Dense(2 * num_hidden, flatten=False, in_units=source_size, use_bias=False,
                                              prefix="kv_")
            if project_qkv:
                self.q_proj = gluon.nn.Dense(num_hidden, flatten=False, in_units=num_hidden, use_bias=False,
                                             prefix="q_")
                self.out_proj = gluon.nn.Dense(num_hidden, flatten=False, in_units=num_hidden, use_bias=False,
                                               prefix="o_")

    @property
    def window(self) -> int:
        """Earlier inputs the step function keeps (at least one slot so that the state is never empty)."""
        return max(self.kernel_width - 1, 1)

    def source_keys_values(self, F, encoded) -> List:
        if not self.project_keys:
            return [encoded, encoded]
        kv = self.kv_proj(encoded)
        return [F.slice_axis(kv, axis=2, begin=0, end=self.num_hidden),
                F.slice_axis(kv, axis=2, begin=self.num_hidden, end=2 * self.num_hidden)]

    def _convolve(self, F, padded):
        """``padded (N, T + k - 1, H)`` -> activated ``(N, T, H)``."""
        y = F.transpose(self.conv(F.transpose(padded, axes=(0, 2, 1))), axes=(0, 2, 1))
        if self.activation == "glu":
            a, b = F.split(y, num_outputs=2, axis=2)
            return a * layers.sigmoid(F, b)
        return F.Activation(y, act_type=self.activation)

    def _attend(self, F, conv_out, target_embed, source_kv: List) -> Tuple:
        query = conv_out + target_embed
        if self.project_qkv:
            query = self.q_proj(query)
        scores = F.batch_dot(query, source_kv[0], transpose_b=True) * (1.0 / math.sqrt(self.num_hidden))
        probs = F.softmax(scores, axis=-1)                                        # (N, T, L)
        context = F.batch_dot(probs, source_kv[1])
        if self.project_qkv:
            context = self.out_proj(context)
        return context, probs

    def _inputs(self, F, x):
        return F.Dropout(x, p=self.dropout) if self.dropout > 0.0 else x

    def sequence(self, F, x, target_embed, source_kv: List) -> Tuple:
        inputs = self._inputs(F, x)
        if self.kernel_width > 1:
            pad = F.slice_axis(inputs, axis=1, begin=0, end=1) * 0.0
            pad = F.broadcast_axis(pad, axis=1, size=self.kernel_width - 1) if self.kernel_width > 2 else pad
            inputs = F.concat(pad, inputs, dim=1)
        conv_out = self._convolve(F, inputs)
        context, probs = self._attend(F, conv_out, target_embed, source_kv)
        return x + conv_out + context, probs

    def initial_window(self, F, encoded):
        """Zeros ``(N, window, H)``."""
        column = F.expand_dims(layers.zeros(F, encoded, self.num_hidden), axis=1)
        return F.broadcast_axis(column, axis=1, size=self.window) if self.window > 1 else column

    def step(self, F, x, target_embed, source_kv: List, window) -> Tuple:
        """``x (N, 1, H)`` and the earlier inputs ``window (N, w, H)`` -> (out, probs ``(N, 1, L)``, new window)."""
        inputs = self._inputs(F, x)
        if self.kernel_width > 1:
            full = F.concat(window, inputs, dim=1)                                # (N, k, H)
            new_window = F.slice_axis(full, axis=1, begin=1, end=None)
        else:
            full, new_window = inputs, F.identity(window)
        conv_out = self._convolve(F, full)
        context, probs = self._attend(F, conv_out, target_embed, source_kv)
        return x + conv_out + context, probs, new_window
