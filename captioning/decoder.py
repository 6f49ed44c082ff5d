"""Decoders behind one interface: `RecurrentDecoder`, `TransformerDecoder`, `ConvolutionalDecoder`.

Every decoder is a `gluon.HybridBlock` whose parts are called from two hybridized graphs that `model.CaptionModel`
builds:

- ``decode_sequence(F, encoded, embedded, seq_len) -> (hidden (B, T, out), attention (B, T, L))``: teacher forcing,
  the whole caption at once (``seq_len`` is the python int ``T``: one cached graph per caption length).
- ``init_states(F, encoded) -> List[states]`` and ``step(F, embedded (N, E), states) -> (hidden (N, out),
  attention (N, L), new states)``: inference, one word at a time. Every state has the batch on axis 0.
- ``step_constants(F, embedding_weight) -> List`` (``num_step_constants`` arrays computed from the parameters
  alone) and ``step(..., words=, constants=)``: once the parameters are fixed (inference), a step may take these
  instead of recomputing them; ``words (N,)`` are the ids behind ``embedded``. Valid in predict mode only.

``encoded`` is the image encoder's ``(B, L, d)``. The output layer (logits) is the model's, not the decoder's.
"""
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from mxnet import gluon

from . import constants as C
from . import layers
from .attention import create_attention
from .config import Config
from .convolution import ConvolutionalDecoderLayer
from .rnn import LayerState, create_recurrent_layer
from .transformer import NEG_INF, TransformerDecoderLayer, causal_bias


@dataclass
class RecurrentDecoderConfig(Config):
    """The RNN decoder (Sockeye's RecurrentDecoder with attention). Each field names its flag."""
    num_hidden: int = 1024                      # --rnn-num-hidden
    cell_type: str = "lstm"                     # --rnn-cell-type: lstm | lstm-ln | gru | gru-ln
    num_layers: int = 1                         # --num-layers (target part)
    residual_connections: bool = False          # --rnn-residual-connections
    first_residual_layer: int = 2               # --rnn-first-residual-layer (1-based)
    state_init: str = "last"                    # --rnn-decoder-state-init: zero | last | avg
    context_gating: bool = False                # --rnn-context-gating
    attention_type: str = "mlp"                 # --rnn-attention-type
    attention_num_hidden: Optional[int] = None  # --rnn-attention-num-hidden (None: num_hidden)
    attention_use_prev_word: bool = False       # --rnn-attention-use-prev-word
    scale_dot_attention: bool = False           # --rnn-scale-dot-attention
    attention_coverage_type: str = "count"      # --rnn-attention-coverage-type
    attention_coverage_max_fertility: int = 2   # --rnn-attention-coverage-max-fertility
    attention_coverage_num_hidden: int = 1      # --rnn-attention-coverage-num-hidden
    attention_in_upper_layers: bool = False     # --rnn-attention-in-upper-layers
    attention_mhdot_heads: Optional[int] = None  # --rnn-attention-mhdot-heads (None: 1)
    forget_bias: float = 0.0                    # --rnn-forget-bias
    h2h_init: str = "orthogonal"                # --rnn-h2h-init: orthogonal | orthogonal_stacked | default
    input_feeding: bool = True                  # --rnn-input-feeding / --no-rnn-input-feeding
    layer_normalization: bool = False           # --layer-normalization
    dropout_inputs: float = 0.0                 # --rnn-dropout-inputs (target part)
    dropout_states: float = 0.0                 # --rnn-dropout-states (target part)
    dropout_recurrent: float = 0.0              # --rnn-dropout-recurrent (target part)
    hidden_dropout: float = 0.2                 # --rnn-decoder-hidden-dropout

    @property
    def output_size(self) -> int:
        """Size of the decoder's output (the attentional hidden state) fed to the output layer."""
        return self.num_hidden


@dataclass
class TransformerDecoderConfig(Config):
    """The transformer decoder (Vaswani et al. 2017; Sockeye's TransformerDecoder). Each field names its flag."""
    model_size: int = 512                       # --transformer-model-size
    attention_heads: int = 8                    # --transformer-attention-heads
    feed_forward_num_hidden: int = 2048         # --transformer-feed-forward-num-hidden
    activation_type: str = "relu"               # --transformer-activation-type: relu | swish1 | gelu
    num_layers: int = 1                         # --num-layers (target part)
    positional_embedding: str = C.POSITIONAL_FIXED  # --transformer-positional-embedding-type
    preprocess: str = "n"                       # --transformer-preprocess
    postprocess: str = "dr"                     # --transformer-postprocess
    dropout_attention: float = 0.1              # --transformer-dropout-attention
    dropout_act: float = 0.1                    # --transformer-dropout-act
    dropout_prepost: float = 0.1                # --transformer-dropout-prepost
    max_seq_len: int = 99                       # --max-seq-len (target part): rows of learned positions

    @property
    def output_size(self) -> int:
        return self.model_size


@dataclass
class ConvolutionalDecoderConfig(Config):
    """The convolutional decoder (Gehring et al. 2017; Sockeye's ConvolutionalDecoder). Each field names its flag."""
    num_hidden: int = 512                       # --cnn-num-hidden
    kernel_width: int = 3                       # --cnn-kernel-width (target part)
    num_layers: int = 1                         # --num-layers (target part)
    activation_type: str = "glu"                # --cnn-activation-type: glu | relu | sigmoid | softrelu | tanh
    positional_embedding: str = C.POSITIONAL_LEARNED  # --cnn-positional-embedding-type
    project_qkv: bool = False                   # --cnn-project-qkv
    hidden_dropout: float = 0.2                 # --cnn-hidden-dropout
    max_seq_len: int = 99                       # --max-seq-len (target part): rows of learned positions

    @property
    def output_size(self) -> int:
        return self.num_hidden


# ---------------------------------------------------------------------------------------------------------------
# decoders
# ---------------------------------------------------------------------------------------------------------------



def _repeat_static(F, states: List, n: int, beam_size: int) -> List:
    """The first ``n`` states (one row per input) repeated for an input's ``beam_size`` rows."""
    if beam_size <= 1:
        return states
    return [layers.repeat_rows(F, s, beam_size) for s in states[:n]] + list(states[n:])


def _dropout(F, x, p: float):
    return F.Dropout(x, p=p) if p > 0.0 else x


class Decoder(gluon.HybridBlock):
    """The interface every decoder implements (see the module docstring). ``num_static_states``: how many of the
    leading states never change after ``init_states`` (``step`` returns only the others); ``num_step_constants``:
    how many arrays ``step_constants`` returns."""
    num_static_states: int = 0
    num_step_constants: int = 0
    output_size: int = 0

    def decode_sequence(self, F, encoded, embedded, seq_len: int) -> Tuple:
        raise NotImplementedError

    def init_states(self, F, encoded) -> List:
        raise NotImplementedError

    def step_constants(self, F, embedding_weight) -> List:
        """Arrays derived from the parameters (and the target embedding's ``(V, E)`` weight) that ``step`` can
        take as ``constants`` while the parameters do not change; none by default."""
        return []

    def step(self, F, embedded, states: List, beam_size: int = 1, words=None, constants=None) -> Tuple:
        """With ``beam_size`` K > 1 the static states have one row per input (B = N / K), the others N rows.
        With ``constants`` (``step_constants``, predict mode only) ``words`` are the ids behind ``embedded``."""
        raise NotImplementedError

    def hybrid_forward(self, F, *args, **kwargs):  # pragma: no cover - decoders are called through their methods
        raise NotImplementedError("decoders are used through decode_sequence / init_states / step")


class RecurrentState(NamedTuple):
    """The RNN decoder's state: the attention's ``precomputed`` arrays (static: they never change after
    ``init_states``), each layer's `rnn.LayerState`, the previous attentional hidden state (input feeding; None
    without) and the attention's own state (coverage; empty for other types).

    `to_list` and `from_list` convert to and from the flat list of arrays that the model's graphs and the searches
    move (and reorder by beam row): ``precomputed + [h, (c)] per layer + [previous hidden] + attention state``, the
    static arrays first. That is the only place where the layout is spelt out."""
    precomputed: List
    layers: List[LayerState]
    prev_hidden: Any
    attention: List

    def to_list(self) -> List:
        arrays = list(self.precomputed)
        for layer in self.layers:
            arrays.extend(layer.arrays())
        if self.prev_hidden is not None:
            arrays.append(self.prev_hidden)
        return arrays + list(self.attention)

    @classmethod
    def from_list(cls, arrays: Sequence, num_precomputed: int, num_layers: int, states_per_layer: int,
                  input_feeding: bool) -> "RecurrentState":
        items = iter(arrays)
        precomputed = [next(items) for _ in range(num_precomputed)]
        layer_states = [LayerState(*[next(items) for _ in range(states_per_layer)]) for _ in range(num_layers)]
        prev_hidden = next(items) if input_feeding else None
        return cls(precomputed, layer_states, prev_hidden, list(items))


class _StepRun(NamedTuple):
    """What stays the same for every step of one run of the RNN stack: the recurrent dropout masks (one per
    layer, or None), the first layer's fused feed weight (`RecurrentDecoder._feed_weight`, or None) and the beam
    size (`Decoder.step`)."""
    masks: List
    feed_weight: Any = None
    beam_size: int = 1


class RecurrentDecoder(Decoder):
    """Sockeye's RNN decoder with attention. At each step: the RNN stack reads the word embedding (and, with input
    feeding, the previous attentional hidden state); attention uses the first layer's output (with
    ``attention_in_upper_layers``, whose context then also feeds the upper layers) or the top layer's; the
    attentional hidden state is ``tanh(W [h; context])`` (or context gating), with dropout, and goes to the output
    layer. Without input feeding the whole caption runs through the fused RNN kernel and attention is computed for
    all steps at once.

    States: a `RecurrentState`, passed to and from the model as its flat list (`RecurrentState.to_list`); the
    attention's precomputed arrays come first and are the ``num_static_states``."""

    def __init__(self, config: RecurrentDecoderConfig, embed_size: int, source_size: int, num_positions: int,
                 prefix: str = "decoder_rnn_") -> None:
        super().__init__(prefix=prefix)
        if config.cell_type not in C.RNN_CELL_TYPES:
            raise ValueError("unknown RNN cell type %r" % config.cell_type)
        if config.state_init not in C.RNN_DECODER_STATE_INITS:
            raise ValueError("unknown RNN decoder state init %r" % config.state_init)
        self.config = config
        self.embed_size = embed_size
        self.num_positions = num_positions
        self.output_size = config.num_hidden
        with self.name_scope():
            self.attention = create_attention(
                config.attention_type, query_size=config.num_hidden, source_size=source_size,
                num_positions=num_positions, num_hidden=config.attention_num_hidden or config.num_hidden,
                embed_size=embed_size, use_prev_word=config.attention_use_prev_word,
                scale_dot=config.scale_dot_attention, heads=config.attention_mhdot_heads or 1,
                coverage_type=config.attention_coverage_type,
                coverage_num_hidden=config.attention_coverage_num_hidden,
                layer_normalization=config.layer_normalization, prefix="att_")
            self.rnn_layers = gluon.nn.HybridSequential(prefix="")
            with self.rnn_layers.name_scope():
                for index in range(config.num_layers):
                    self.rnn_layers.add(create_recurrent_layer(config.cell_type, self._layer_input_size(index),
                                                               config.num_hidden, config.forget_bias,
                                                               config.h2h_init, prefix="l%d_" % index))
            self.states_per_layer = self.rnn_layers[0].num_states
            self._add_output_layers(source_size)
        self.num_static_states = self.attention.num_precomputed
        self.num_step_constants = 2 if config.input_feeding else 1

    def _layer_input_size(self, index: int) -> int:
        config = self.config
        if index == 0:
            return self.embed_size + (config.num_hidden if config.input_feeding else 0)
        return config.num_hidden + (self.attention.context_size if config.attention_in_upper_layers else 0)

    def _add_output_layers(self, source_size: int) -> None:
        """The initial-state projection and the attentional hidden state's layers (in the name scope)."""
        config, hidden, context_size = self.config, self.config.num_hidden, self.attention.context_size
        if config.state_init != "zero":
            self.init_proj = gluon.nn.Dense(config.num_layers * self.states_per_layer * hidden, flatten=False,
                                            in_units=source_size, prefix="init_")
            if config.layer_normalization:
                self.init_norm = gluon.nn.LayerNorm(in_channels=hidden, prefix="init_norm_")
        if config.context_gating:
            self.gate = gluon.nn.Dense(hidden, flatten=False, in_units=self.embed_size + context_size + hidden,
                                       prefix="gate_")
            self.map_context = gluon.nn.Dense(hidden, flatten=False, in_units=context_size, use_bias=False,
                                              prefix="map_ctx_")
            self.map_rnn = gluon.nn.Dense(hidden, flatten=False, in_units=hidden, prefix="map_rnn_")
        else:
            self.hidden_proj = gluon.nn.Dense(hidden, flatten=False, in_units=hidden + context_size,
                                              prefix="hidden_")
            if config.layer_normalization:
                self.hidden_norm = gluon.nn.LayerNorm(in_channels=hidden, prefix="hidden_norm_")

    # ----------------------------------------------------------------------------------------------------------
    def _residual(self, index: int) -> bool:
        return (self.config.residual_connections and index >= 1
                and index + 1 >= self.config.first_residual_layer)

    def _attentional_hidden(self, F, rnn_output, context, embedded):
        """``tanh(W dropout([h; context]))`` (or context gating, its gate's input dropped out); works on ``(N, .)``
        and ``(N, T, .)``. As in Sockeye, ``hidden_dropout`` acts on the hidden layer's input, never on the hidden
        state itself, which the output layer and input feeding see whole in training as at inference."""
        p = self.config.hidden_dropout
        if self.config.context_gating:
            gate = layers.sigmoid(F, self.gate(_dropout(F, F.concat(embedded, context, rnn_output, dim=-1), p)))
            return layers.tanh(F, gate * self.map_context(context) + (1.0 - gate) * self.map_rnn(rnn_output))
        hidden = self.hidden_proj(_dropout(F, F.concat(rnn_output, context, dim=-1), p))
        if self.config.layer_normalization:
            hidden = self.hidden_norm(hidden)
        return layers.tanh(F, hidden)

    def _initial_layer_states(self, F, encoded) -> List[LayerState]:
        """Zeros, or ``tanh`` of a projection of the last or the mean position (``state_init``)."""
        config = self.config
        parts = config.num_layers * self.states_per_layer
        if config.state_init == "zero":
            arrays = [layers.zeros(F, encoded, config.num_hidden)] * parts
        else:
            if config.state_init == "last":
                source = F.squeeze(F.slice_axis(encoded, axis=1, begin=self.num_positions - 1, end=None), axis=1)
            else:
                source = F.squeeze(layers.mean_positions(F, encoded), axis=1)
            projected = self.init_proj(source)
            arrays = list(F.split(projected, num_outputs=parts, axis=1)) if parts > 1 else [projected]
            if config.layer_normalization:
                arrays = [self.init_norm(s) for s in arrays]
            arrays = [layers.tanh(F, s) for s in arrays]
        per = self.states_per_layer
        return [LayerState(*arrays[i * per:(i + 1) * per]) for i in range(config.num_layers)]

    def _initial_state(self, F, encoded) -> RecurrentState:
        precomputed = self.attention.precompute(F, encoded)
        layer_states = self._initial_layer_states(F, encoded)
        prev_hidden = layers.zeros(F, encoded, self.config.num_hidden) if self.config.input_feeding else None
        return RecurrentState(precomputed, layer_states, prev_hidden, self.attention.initial_state(F, encoded))

    def init_states(self, F, encoded) -> List:
        return self._initial_state(F, encoded).to_list()

    def _from_list(self, states: Sequence) -> RecurrentState:
        return RecurrentState.from_list(states, self.num_static_states, self.config.num_layers,
                                        self.states_per_layer, self.config.input_feeding)

    def _feed_weight(self, F, like):
        """The first layer's fused [fed-back hidden; recurrent] weight (input feeding, LSTM without layer norm;
        a GRU's reset gate acts on the recurrent part alone, so its inputs stay apart)."""
        first = self.rnn_layers[0]
        if self.config.input_feeding and first.can_fuse_feed:
            return first.feed_weight(F, like, begin=self.embed_size)
        return None

    def _feed_input(self, F, i2h, prev_hidden, feed_weight) -> Tuple:
        """The first layer's input projection ``i2h`` of the embedding completed with the fed-back hidden state:
        ``(i2h, feed)``, ``feed`` the part the first layer's step multiplies with ``feed_weight`` (None where the
        projection already holds it: a GRU or layer-normalised cell keeps input and recurrent parts apart)."""
        feed = _dropout(F, prev_hidden, self.config.dropout_inputs)
        if feed_weight is not None:
            return i2h, feed
        return i2h + self.rnn_layers[0].project_inputs(F, feed, begin=self.embed_size, bias=False), None

    def _step(self, F, i2h, feed, embedded, state: RecurrentState, run: _StepRun) -> Tuple:
        """One step of the stack from the first layer's input projection ``i2h`` (bias included) and ``feed`` (see
        `_feed_input`): -> (attentional hidden state, attention probabilities, new state)."""
        config = self.config
        output, first_state = self.rnn_layers[0].step(F, i2h, state.layers[0], run.masks[0], feed, run.feed_weight)
        new_layers = [first_state]
        output = _dropout(F, output, config.dropout_states)
        context = probs = None
        att_state = state.attention
        if config.attention_in_upper_layers:
            context, probs, att_state = self.attention.step(F, state.precomputed, output, embedded, att_state,
                                                            run.beam_size)
        for index in range(1, config.num_layers):
            layer = self.rnn_layers[index]
            inputs = F.concat(output, context, dim=1) if config.attention_in_upper_layers else output
            new_output, layer_state = layer.step(F, layer.project_inputs(F, _dropout(F, inputs, config.dropout_inputs)),
                                                 state.layers[index], run.masks[index])
            new_layers.append(layer_state)
            new_output = _dropout(F, new_output, config.dropout_states)
            output = new_output + output if self._residual(index) else new_output
        if not config.attention_in_upper_layers:
            context, probs, att_state = self.attention.step(F, state.precomputed, output, embedded, att_state,
                                                            run.beam_size)
        hidden = self._attentional_hidden(F, output, context, embedded)
        prev_hidden = hidden if config.input_feeding else None
        return hidden, probs, RecurrentState(state.precomputed, new_layers, prev_hidden, att_state)

    def step_constants(self, F, embedding_weight) -> List:
        """The first layer's input projection split once: a table of every word's projected embedding, bias
        included, ``(V, G*H)``, and (input feeding) the weight's columns for the fed-back hidden state. A step then
        reads its words' rows instead of streaming the embedding's part of the weight (fewer bytes for a small,
        memory-bound step)."""
        first = self.rnn_layers[0]
        weight = layers.param_value(F, first.i2h_weight, embedding_weight)
        table = first.project_inputs(F, embedding_weight, end=self.embed_size)
        if not self.config.input_feeding:
            return [table]
        return [table, F.slice_axis(weight, axis=1, begin=self.embed_size, end=None)]

    def _step_inputs(self, F, embedded, prev_hidden, words, constants):
        """The first layer's whole input projection for one inference step: from the step constants' table and
        fed-back weight, or in one product with the whole weight (slicing the weight, as teacher forcing does to
        share work between steps, would copy it at every step here)."""
        first = self.rnn_layers[0]
        if constants:
            projected = F.take(constants[0], words)
            if self.config.input_feeding:
                projected = projected + layers.dense(F, prev_hidden, constants[1], None,
                                                     first.num_gates * first.num_hidden)
            return projected
        inputs = _dropout(F, embedded, self.config.dropout_inputs)
        if self.config.input_feeding:
            inputs = F.concat(inputs, _dropout(F, prev_hidden, self.config.dropout_inputs), dim=1)
        return first.project_inputs(F, inputs)

    def step(self, F, embedded, states: List, beam_size: int = 1, words=None, constants=None) -> Tuple:
        state = self._from_list(states)
        projected = self._step_inputs(F, embedded, state.prev_hidden, words, constants)
        run = _StepRun([None] * self.config.num_layers, None, beam_size)
        hidden, probs, new_state = self._step(F, projected, None, embedded, state, run)
        return hidden, probs, new_state.to_list()[self.num_static_states:]

    def _recurrent_masks(self, F, encoded) -> List:
        """Variational dropout masks on the recurrent state, one per layer and sequence (training only)."""
        p = self.config.dropout_recurrent
        if p <= 0.0:
            return [None] * self.config.num_layers
        ones = layers.zeros(F, encoded, self.config.num_hidden) + 1.0
        return [F.Dropout(ones, p=p) for _ in range(self.config.num_layers)]

    def decode_sequence(self, F, encoded, embedded, seq_len: int) -> Tuple:
        state = self._initial_state(F, encoded)
        masks = self._recurrent_masks(F, encoded)
        if self.config.input_feeding:
            return self._decode_fed_sequence(F, embedded, seq_len, state, masks)
        return self._decode_whole_sequence(F, embedded, seq_len, state, masks)

    def _decode_fed_sequence(self, F, embedded, seq_len: int, state: RecurrentState, masks: List) -> Tuple:
        """Input feeding: step by step, with the embeddings' share of the first layer's gates for all steps in one
        matrix product."""
        first = self.rnn_layers[0]
        first_i2h = layers.split_steps(F, first.project_inputs(F, _dropout(F, embedded, self.config.dropout_inputs),
                                                               begin=0, end=self.embed_size), seq_len)
        words = layers.split_steps(F, embedded, seq_len)
        hiddens, all_probs = [], []
        run = _StepRun(masks, self._feed_weight(F, embedded))
        for t in range(seq_len):
            i2h, feed = self._feed_input(F, first_i2h[t], state.prev_hidden, run.feed_weight)
            hidden, probs, state = self._step(F, i2h, feed, words[t], state, run)
            hiddens.append(hidden)
            all_probs.append(probs)
        return F.stack(*hiddens, axis=1), F.stack(*all_probs, axis=1)

    def _decode_whole_sequence(self, F, embedded, seq_len: int, state: RecurrentState, masks: List) -> Tuple:
        """No input feeding: the RNN runs over the whole caption (fused kernel), attention for all steps at once."""
        config = self.config
        first = self.rnn_layers[0]
        output = first.sequence(F, _dropout(F, embedded, config.dropout_inputs), state.layers[0], seq_len, masks[0])
        output = _dropout(F, output, config.dropout_states)
        context = probs = None
        if config.attention_in_upper_layers:
            context, probs = self._attend_sequence(F, state, output, embedded, seq_len)
        for index in range(1, config.num_layers):
            layer = self.rnn_layers[index]
            inputs = F.concat(output, context, dim=2) if config.attention_in_upper_layers else output
            new_output = layer.sequence(F, _dropout(F, inputs, config.dropout_inputs), state.layers[index], seq_len,
                                        masks[index])
            new_output = _dropout(F, new_output, config.dropout_states)
            output = new_output + output if self._residual(index) else new_output
        if not config.attention_in_upper_layers:
            context, probs = self._attend_sequence(F, state, output, embedded, seq_len)
        return self._attentional_hidden(F, output, context, embedded), probs

    def _attend_sequence(self, F, state: RecurrentState, queries, embedded, seq_len: int) -> Tuple:
        if not self.attention.stepwise:
            return self.attention.sequence(F, state.precomputed, queries)
        contexts, all_probs = [], []
        att_state = state.attention
        for query, word in zip(layers.split_steps(F, queries, seq_len), layers.split_steps(F, embedded, seq_len)):
            context, probs, att_state = self.attention.step(F, state.precomputed, query, word, att_state)
            contexts.append(context)
            all_probs.append(probs)
        return F.stack(*contexts, axis=1), F.stack(*all_probs, axis=1)


class TransformerState(NamedTuple):
    """The transformer decoder's state: per layer the image's attention ``[keys, values]`` (static), the position
    ``(N,)``, per layer the self-attention cache ``[keys, values]`` of the earlier steps ``(N, 1 + t, d)``, and the
    cache's bias ``(N, 1 + t)``. `to_list` / `from_list`: the flat layout the model moves,
    ``source... + [position] + caches... + [bias]``."""
    source: List[List]
    position: Any
    caches: List[List]
    bias: Any

    def to_list(self) -> List:
        return ([a for pair in self.source for a in pair] + [self.position] + [a for pair in self.caches for a in pair]
                + [self.bias])

    @classmethod
    def from_list(cls, arrays: Sequence, num_layers: int) -> "TransformerState":
        items = iter(arrays)
        source = [[next(items), next(items)] for _ in range(num_layers)]
        position = next(items)
        caches = [[next(items), next(items)] for _ in range(num_layers)]
        return cls(source, position, caches, next(items))


class TransformerDecoder(Decoder):
    """Transformer decoder: embeddings (+ positions) -> layers of causal self-attention, attention to the image
    positions and feed-forward -> final layer norm (when the pre-process normalises).

    States: a `TransformerState`; the caches start with one hidden slot (masked by the bias) so that no state is
    ever empty."""

    def __init__(self, config: TransformerDecoderConfig, embed_size: int, source_size: int, num_positions: int,
                 prefix: str = "decoder_transformer_") -> None:
        super().__init__(prefix=prefix)
        self.config = config
        self.embed_size = embed_size
        self.output_size = config.model_size
        d = config.model_size
        with self.name_scope():
            if embed_size != d:
                self.embed_proj = gluon.nn.Dense(d, flatten=False, in_units=embed_size, prefix="embed_proj_")
            self.positions = layers.PositionalEmbedding(config.positional_embedding, d, config.max_seq_len,
                                                        scale_up_input=True, prefix="pos_")
            self.t_layers = gluon.nn.HybridSequential(prefix="")
            with self.t_layers.name_scope():
                for index in range(config.num_layers):
                    self.t_layers.add(TransformerDecoderLayer(
                        d, config.attention_heads, config.feed_forward_num_hidden, source_size,
                        config.activation_type, config.preprocess, config.postprocess, config.dropout_attention,
                        config.dropout_act, config.dropout_prepost, prefix="l%d_" % index))
            self.final_norm = gluon.nn.LayerNorm(in_channels=d, prefix="final_norm_") \
                if "n" in config.preprocess else None
        self.num_static_states = 2 * config.num_layers

    def _embed(self, F, embedded):
        x = self.embed_proj(embedded) if self.embed_size != self.config.model_size else embedded
        return x

    def _finish(self, F, x):
        return self.final_norm(x) if self.final_norm is not None else x

    def decode_sequence(self, F, encoded, embedded, seq_len: int) -> Tuple:
        x = self.positions.add_to_sequence(F, self._embed(F, embedded), seq_len)
        x = _dropout(F, x, self.config.dropout_prepost)
        bias = causal_bias(F, seq_len, embedded)
        probs = None
        for layer in self.t_layers:
            x, probs = layer.sequence(F, x, layer.source_keys_values(F, encoded), bias)
        return self._finish(F, x), probs

    def init_states(self, F, encoded) -> List:
        slot = F.expand_dims(layers.zeros(F, encoded, self.config.model_size), axis=1)     # (N, 1, d)
        position = F.sum(F.reshape(encoded, shape=(0, -1)), axis=1) * 0.0                   # (N,)
        state = TransformerState(source=[layer.source_keys_values(F, encoded) for layer in self.t_layers],
                                 position=position, caches=[[slot, slot] for _ in self.t_layers],
                                 bias=F.expand_dims(position, axis=1) + NEG_INF)            # (N, 1)
        return state.to_list()

    def step(self, F, embedded, states: List, beam_size: int = 1, words=None, constants=None) -> Tuple:
        state = TransformerState.from_list(_repeat_static(F, states, self.num_static_states, beam_size),
                                           self.config.num_layers)
        x = self.positions.add_at(F, self._embed(F, embedded), state.position)
        x = F.expand_dims(x, axis=1)                                                       # (N, 1, d)
        new_bias = F.concat(state.bias, F.expand_dims(state.position, axis=1) * 0.0, dim=1)  # (N, 1 + t + 1)
        # per head: (N*h, 1, Tk)
        head_bias = F.expand_dims(F.repeat(new_bias, repeats=self.config.attention_heads, axis=0), axis=1)
        new_caches = []
        probs = None
        for layer, source, (cache_k, cache_v) in zip(self.t_layers, state.source, state.caches):
            x, probs, k, v = layer.step(F, x, source, cache_k, cache_v, head_bias)
            new_caches.append([k, v])
        hidden = F.squeeze(self._finish(F, x), axis=1)
        new_state = TransformerState(state.source, state.position + 1.0, new_caches, new_bias)
        return hidden, F.squeeze(probs, axis=1), new_state.to_list()[self.num_static_states:]


class ConvolutionalState(NamedTuple):
    """The convolutional decoder's state: per layer the image's attention ``[keys, values]`` (static), the
    embedded target's position ``(N,)`` and per layer the last inputs ``(N, max(k-1, 1), H)``. `to_list` /
    `from_list`: the flat layout the model moves, ``source... + [position] + windows``."""
    source: List[List]
    position: Any
    windows: List

    def to_list(self) -> List:
        return [a for pair in self.source for a in pair] + [self.position] + list(self.windows)

    @classmethod
    def from_list(cls, arrays: Sequence, num_layers: int) -> "ConvolutionalState":
        items = iter(arrays)
        source = [[next(items), next(items)] for _ in range(num_layers)]
        position = next(items)
        return cls(source, position, [next(items) for _ in range(num_layers)])


class ConvolutionalDecoder(Decoder):
    """Convolutional decoder: embeddings (+ positions) projected to the hidden size, then layers of causal
    convolution (GLU) with attention to the image positions and residual connections.

    States: a `ConvolutionalState`."""

    def __init__(self, config: ConvolutionalDecoderConfig, embed_size: int, source_size: int, num_positions: int,
                 prefix: str = "decoder_cnn_") -> None:
        super().__init__(prefix=prefix)
        self.config = config
        self.output_size = config.num_hidden
        with self.name_scope():
            self.positions = layers.PositionalEmbedding(config.positional_embedding, embed_size, config.max_seq_len,
                                                        prefix="pos_")
            self.i2h = gluon.nn.Dense(config.num_hidden, flatten=False, in_units=embed_size, prefix="i2h_")
            self.c_layers = gluon.nn.HybridSequential(prefix="")
            with self.c_layers.name_scope():
                for index in range(config.num_layers):
                    self.c_layers.add(ConvolutionalDecoderLayer(
                        config.num_hidden, config.kernel_width, config.activation_type, source_size,
                        config.project_qkv, config.hidden_dropout, prefix="l%d_" % index))
        self.num_static_states = 2 * config.num_layers

    def decode_sequence(self, F, encoded, embedded, seq_len: int) -> Tuple:
        target = self.i2h(_dropout(F, self.positions.add_to_sequence(F, embedded, seq_len),
                                   self.config.hidden_dropout))
        x, probs = target, None
        for layer in self.c_layers:
            x, probs = layer.sequence(F, x, target, layer.source_keys_values(F, encoded))
        return x, probs

    def init_states(self, F, encoded) -> List:
        state = ConvolutionalState(source=[layer.source_keys_values(F, encoded) for layer in self.c_layers],
                                   position=F.sum(F.reshape(encoded, shape=(0, -1)), axis=1) * 0.0,
                                   windows=[layer.initial_window(F, encoded) for layer in self.c_layers])
        return state.to_list()

    def step(self, F, embedded, states: List, beam_size: int = 1, words=None, constants=None) -> Tuple:
        state = ConvolutionalState.from_list(_repeat_static(F, states, self.num_static_states, beam_size),
                                             self.config.num_layers)
        target = self.i2h(_dropout(F, self.positions.add_at(F, embedded, state.position),
                                   self.config.hidden_dropout))
        target = F.expand_dims(target, axis=1)
        x, probs, windows = target, None, []
        for layer, source, window in zip(self.c_layers, state.source, state.windows):
            x, probs, window = layer.step(F, x, target, source, window)
            windows.append(window)
        new_state = ConvolutionalState(state.source, state.position + 1.0, windows)
        return F.squeeze(x, axis=1), F.squeeze(probs, axis=1), new_state.to_list()[self.num_static_states:]


def create_decoder(decoder: str, config, embed_size: int, source_size: int, num_positions: int) -> Decoder:
    """The decoder named ``decoder`` (rnn | transformer | cnn) with its config."""
    if decoder == C.DECODER_RNN:
        return RecurrentDecoder(config, embed_size, source_size, num_positions)
    if decoder == C.DECODER_TRANSFORMER:
        return TransformerDecoder(config, embed_size, source_size, num_positions)
    if decoder == C.DECODER_CNN:
        return ConvolutionalDecoder(config, embed_size, source_size, num_positions)
    raise ValueError("unknown decoder %r" % decoder)
