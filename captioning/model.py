"""`CaptionModel`: image encoder + target embedding + decoder + output layer; its config; initialise, save, load.

Model folder format versions: 1 recorded the features' CNN as an untyped ``cnn_config`` mapping; 2 (this version)
records it as the typed ``image_cnn`` (a `cnn.CNNConfig`). Version-1 folders still load (the key is mapped).
"""
import contextlib
import enum
import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import yaml
from mxnet import autograd, gluon

from . import __version__
from . import constants as C
from . import layers, utils
from .cnn import CNNConfig
from .config import Config
from .decoder import (ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig,  # noqa: F401
                      create_decoder)
from .encoder import ImageEncoder, ImageEncoderConfig
from .finetune import FineTuneConfig, create_layers, load_cnn_parameters
from .vocab import Vocab, load_vocab

logger = logging.getLogger(__name__)

BYTES_PER_PARAMETER = 4   # float32: the size of the parameters reported in the log


@dataclass
class ModelConfig(Config):
    """The whole network. Flags: ``--decoder`` (decoder), ``--num-embed`` target part (num_embed),
    ``--embed-dropout`` target part (embed_dropout), ``--weight-tying`` (weight_tying),
    ``--weight-normalization`` (weight_normalization). Exactly the config of ``decoder`` is set."""
    encoder: ImageEncoderConfig
    vocab_size: int
    decoder: str = C.DECODER_RNN                       # rnn | transformer | cnn
    rnn: Optional[RecurrentDecoderConfig] = None
    transformer: Optional[TransformerDecoderConfig] = None
    cnn: Optional[ConvolutionalDecoderConfig] = None
    num_embed: int = 512
    embed_dropout: float = 0.0
    weight_tying: bool = False
    weight_normalization: bool = False
    max_output_length: int = 100                       # default length bound of the captioner
    image_cnn: Optional[CNNConfig] = None              # the CNN that made the training features (if known)
    format_version: int = C.MODEL_FORMAT_VERSION
    fine_tune: Optional[FineTuneConfig] = None         # CNN layers trained with the model (their input: the features)

    def to_dict(self) -> Dict[str, Any]:
        """Without ``fine_tune`` when there is none: configs of models without fine-tuning stay as they were."""
        values = super().to_dict()
        if values.get("fine_tune") is None:
            values.pop("fine_tune", None)
        return values

    @property
    def input_feature_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of the features the model reads: the encoder's, or the fine-tuned CNN layers' input."""
        return self.fine_tune.input_shape if self.fine_tune is not None else self.encoder.feature_shape

    @property
    def cnn_config(self) -> Optional[Dict[str, Any]]:
        """Deprecated (format 1): ``image_cnn`` as a plain mapping."""
        return self.image_cnn.to_dict() if self.image_cnn is not None else None

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ModelConfig":
        """Also reads format 1 (``cnn_config`` mapping -> ``image_cnn``)."""
        values = dict(values)
        if "cnn_config" in values:
            old = values.pop("cnn_config")
            values.setdefault("image_cnn", old)
            values["format_version"] = C.MODEL_FORMAT_VERSION
        return super().from_dict(values)


_dataclass_init = ModelConfig.__init__


def _init_accepting_cnn_config(self: ModelConfig, *args: Any, cnn_config: Optional[Dict[str, Any]] = None,
                               **kwargs: Any) -> None:
    """Deprecated keyword of format 1: ``cnn_config=`` (a mapping) sets ``image_cnn``."""
    if cnn_config is not None:
        kwargs.setdefault("image_cnn", CNNConfig.from_dict(cnn_config))
    _dataclass_init(self, *args, **kwargs)


# mypy forbids assigning to a method; this wraps the dataclass initialiser once, at import, for the old keyword
ModelConfig.__init__ = _init_accepting_cnn_config  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------------------------

class _Graph(gluon.HybridBlock):
    """One hybridized computation over the model's parts (which it shares, parameters included); kept outside the
    model's children so that parameters are saved once. ``kind`` names its hybridize flags
    (`CaptionModel.hybridize`)."""
    kind = ""

    def __init__(self, model: "CaptionModel", seq_len: int = 0, fixed: bool = False) -> None:
        super().__init__(prefix=model.prefix + "%s%s%d_" % ("fixed_" if fixed else "", self.kind, seq_len))
        self.seq_len = seq_len
        self.embed_dropout = model.config.embed_dropout
        self.image_layers = model.image_layers
        self.encoder = model.encoder
        self.embedding = model.embedding
        self.decoder = model.decoder
        self.output_layer = model.output_layer

    def _encode(self, features):
        """Features -> the encoder's positions (through the fine-tuned CNN layers first, if any)."""
        return self.encoder(self.image_layers(features) if self.image_layers is not None else features)

    def _embed(self, F, words):
        embedded = self.embedding(words)
        return F.Dropout(embedded, p=self.embed_dropout) if self.embed_dropout > 0.0 else embedded


class _SequenceGraph(_Graph):
    """Teacher forcing for one caption length ``seq_len``: features, target input -> logits."""
    kind = "sequence"

    def hybrid_forward(self, F, features, target_input):
        hidden, _ = self.decoder.decode_sequence(F, self._encode(features), self._embed(F, target_input),
                                                 self.seq_len)
        return self.output_layer(hidden)


class _EncodeGraph(_Graph):
    """Features -> the decoder's initial states."""
    kind = "encode"

    def hybrid_forward(self, F, features):
        return self.decoder.init_states(F, self._encode(features))


class _StepGraph(_Graph):
    """One decoder step: the previous words, then the step's `StepConstants` arrays (the normalised output weight
    with weight normalisation; with ``fixed`` parameters also the decoder's step constants), then the states ->
    logits, attention, new states. ``seq_len`` is the beam size K when the static states are shared by K rows
    (0 otherwise)."""
    kind = "step"

    def __init__(self, model: "CaptionModel", seq_len: int = 0, fixed: bool = False) -> None:
        super().__init__(model, seq_len, fixed)
        self.weight_normalization = model.config.weight_normalization
        self.num_decoder_constants = model.decoder.num_step_constants if fixed else 0

    def hybrid_forward(self, F, prev_words, *inputs):
        states = list(inputs)
        weight = states.pop(0) if self.weight_normalization else None
        constants = [states.pop(0) for _ in range(self.num_decoder_constants)]
        # shared static states stay at one row per input: the decoder reads them as they are (MLP attention) or
        # repeats them for the K beam rows of each input
        hidden, attention, new_states = self.decoder.step(F, self._embed(F, prev_words), states,
                                                          beam_size=max(self.seq_len, 1), words=prev_words,
                                                          constants=constants)
        if weight is None:
            logits = self.output_layer(hidden)
        else:
            logits = layers.dense(F, hidden, weight, layers.param_value(F, self.output_layer.bias, hidden),
                                  self.output_layer.vocab_size)
        return [logits, attention] + list(new_states)


class _GraphCache:
    """The model's graphs by (kind, caption length); a plain object so that Gluon neither registers the graphs
    as children (their parameters are the model's own) nor warns about a container of blocks."""

    def __init__(self) -> None:
        self.graphs: Dict[Tuple[type, int, bool], _Graph] = {}

    def get(self, key: Tuple[type, int, bool]) -> Optional[_Graph]:
        return self.graphs.get(key)

    def __setitem__(self, key: Tuple[type, int, bool], graph: _Graph) -> None:
        self.graphs[key] = graph

    def values(self) -> List[_Graph]:
        return list(self.graphs.values())


class ParameterMode(enum.Enum):
    """Whether a model's parameters may still change: ``FREE`` (training: whatever a step needs from the
    parameters is derived for each search) or ``FIXED`` (inference, `CaptionModel.fix_parameters`: derived once
    per device and kept)."""
    FREE = "free"
    FIXED = "fixed"


@dataclass(frozen=True)
class StepConstants:
    """What every `CaptionModel.decode_step` of one search takes besides the previous words and the states: arrays
    derived from the parameters alone (`CaptionModel.step_constants`). ``fixed``: they are those of fixed
    parameters (the normalised output weight, with weight normalisation, then the decoder's own,
    `decoder.Decoder.step_constants`), and the step runs the graph that takes them; otherwise only the normalised
    output weight (weight normalisation) or nothing."""
    fixed: bool
    arrays: Tuple[mx.nd.NDArray, ...] = ()


class CaptionModel(gluon.HybridBlock):
    """Image encoder + target embedding + decoder + output layer (see ``docs/architecture.md``).

    - ``model(features (B, C, H, W), target_input (B, T)) -> logits (B, T, V)`` (teacher forcing; dropout only
      under ``autograd.record(train_mode=True)``). One hybridized graph per caption length ``T``.
    - ``encode(features) -> states``, ``step_constants(ctx) -> StepConstants`` and ``decode_step(prev_word (N,),
      states, beam_size, constants) -> (logits (N, V), attention (N, L), new states)``: inference, the
      `beam_search.StepModel` interface. The states have the batch on axis 0; the first ``num_static_states``
      (attention keys and values) never change, and with ``beam_size`` K > 1 they keep one row per input, shared
      by its K rows, while the others have one row per beam row (a search reorders those with ``take``).
    - ``parameter_mode``: `ParameterMode.FREE` until ``fix_parameters`` (or within ``fixed_parameters()``).
    """

    def __init__(self, config: ModelConfig, prefix: str = "caption_model_") -> None:
        super().__init__(prefix=prefix)
        _check_model_config(config)
        self.config = config
        decoder_config = getattr(config, config.decoder)
        with self.name_scope():
            # the fine-tuned CNN layers keep the CNN's parameter names (saved as image_layers.NAME)
            self.image_layers = create_layers(config.fine_tune) if config.fine_tune is not None else None
            self.encoder = ImageEncoder(config.encoder, prefix="encoder_")
            self.embedding = gluon.nn.Embedding(config.vocab_size, config.num_embed, prefix="target_embed_")
            self.decoder = create_decoder(config.decoder, decoder_config, config.num_embed,
                                          config.encoder.num_hidden, config.encoder.num_positions)
            self.output_layer = layers.OutputLayer(config.vocab_size, self.decoder.output_size,
                                                   config.weight_normalization,
                                                   self.embedding.weight if config.weight_tying else None,
                                                   prefix="output_")
        self._graphs = _GraphCache()
        self._hybrid_kwargs: Optional[Dict[str, Dict[str, Any]]] = None
        self.parameter_mode = ParameterMode.FREE
        # with fixed parameters: the step constants by device, derived on first use
        self._fixed_constants: Dict[mx.Context, StepConstants] = {}

    # ----------------------------------------------------------------------------------------------------------
    @property
    def num_positions(self) -> int:
        """L: the encoder positions attention is over (H*W, +1 with the global descriptor, last)."""
        return self.config.encoder.num_positions

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        """The shape of one input's features (with fine-tuned CNN layers: the features they take)."""
        return tuple(int(v) for v in self.config.input_feature_shape)

    @property
    def feature_grid(self) -> Tuple[int, int]:
        """(H, W) of the feature map: the first H*W attention positions in row-major order."""
        return int(self.config.encoder.feature_shape[1]), int(self.config.encoder.feature_shape[2])

    @property
    def num_static_states(self) -> int:
        """Leading states that ``decode_step`` passes through unchanged."""
        return self.decoder.num_static_states

    @property
    def max_output_length(self) -> int:
        """The captioner's default length bound, stored in the config by training."""
        return self.config.max_output_length

    def hybridize(self, active: bool = True, sequence_static_alloc: bool = False, **kwargs: Any) -> None:
        """Hybridize every graph (existing and future). ``kwargs`` (CachedOp flags; default ``static_alloc=True``)
        apply to the encode and step graphs. The teacher-forcing graphs, one per caption length, use static
        allocation only with ``sequence_static_alloc=True``: each would keep its own buffers for good, so memory
        would grow with the number of buckets."""
        kwargs.setdefault("static_alloc", True)
        sequence_kwargs = dict(kwargs)
        if not sequence_static_alloc:
            sequence_kwargs.update(static_alloc=False, static_shape=False)
        flags = {"encode": kwargs, "step": kwargs, "sequence": sequence_kwargs}
        self._hybrid_kwargs = flags if active else None
        super().hybridize(active, **kwargs)
        for graph in self._graphs.values():
            graph.hybridize(active, **flags[graph.kind])

    def _graph(self, graph_class: type, seq_len: int = 0, fixed: bool = False) -> _Graph:
        key = (graph_class, seq_len, fixed)
        graph = self._graphs.get(key)
        if graph is None:
            graph = graph_class(self, seq_len, fixed)
            if self._hybrid_kwargs is not None:
                graph.hybridize(True, **self._hybrid_kwargs[graph.kind])
            self._graphs[key] = graph
        return graph

    # ----------------------------------------------------------------------------------------------------------
    def forward(self, features, target_input):
        """Logits ``(B, T, V)`` for teacher-forced ``target_input (B, T)``."""
        return _call(self._graph(_SequenceGraph, int(target_input.shape[1])), features, target_input)

    def hybrid_forward(self, F, features, target_input):  # pragma: no cover
        raise NotImplementedError("CaptionModel dispatches in forward() to one graph per caption length")

    def fix_parameters(self) -> None:
        """Declare the parameters final (inference: the captioner loads a model and never updates it). From now
        on, steps in predict mode use the step constants of fixed parameters, derived once per device instead of
        for every search: the normalised output weight (weight normalisation) and the decoder's own
        (`decoder.Decoder.step_constants`). Parameters must not be updated afterwards (loading them with
        ``load_parameters`` derives the constants again); in training mode (dropout active) the model steps as
        with free parameters."""
        self.parameter_mode = ParameterMode.FIXED

    def load_parameters(self, *args: Any, **kwargs: Any) -> None:
        """Gluon's, and with fixed parameters the step constants are derived again from the loaded ones."""
        super().load_parameters(*args, **kwargs)
        self._fixed_constants.clear()

    @contextlib.contextmanager
    def fixed_parameters(self) -> Iterator[None]:
        """The parameters fixed for the block (`fix_parameters`): a checkpoint decode during training then steps as
        the captioner will with the saved parameters (the same constants, the same captions). A model fixed for
        good stays fixed after the block."""
        if self.parameters_fixed:
            yield
            return
        self.fix_parameters()
        try:
            yield
        finally:
            self.parameter_mode = ParameterMode.FREE
            self._fixed_constants.clear()

    @property
    def parameters_fixed(self) -> bool:
        """Whether the parameters are fixed (`fix_parameters`)."""
        return self.parameter_mode is ParameterMode.FIXED

    def _normalized_output_weight(self, ctx: mx.Context) -> List:
        """``[normalised output weight]`` with weight normalisation, else nothing."""
        if not self.config.weight_normalization:
            return []
        layer = self.output_layer
        return [layer.normalized_weight(mx.nd, layer.weight.data(ctx), layer.scale.data(ctx))]

    def step_constants(self, ctx: mx.Context) -> StepConstants:
        """The `StepConstants` for the steps of one search on ``ctx``. With fixed parameters in predict mode: the
        normalised output weight (weight normalisation) and the decoder's constants, derived on first use per
        device; otherwise the normalised output weight of the parameters as they are now (parameters are not
        updated within a search)."""
        if not self.parameters_fixed or autograd.is_training():
            return StepConstants(False, tuple(self._normalized_output_weight(ctx)))
        constants = self._fixed_constants.get(ctx)
        if constants is None:
            with autograd.predict_mode():
                arrays = self._normalized_output_weight(ctx)
                arrays += self.decoder.step_constants(mx.nd, self.embedding.weight.data(ctx))
            constants = self._fixed_constants[ctx] = StepConstants(True, tuple(arrays))
        return constants

    def encode(self, features) -> List:
        """The initial decoder states of a batch of features ``(B, C, H, W)``."""
        states = _call(self._graph(_EncodeGraph), features)
        return list(states) if isinstance(states, (list, tuple)) else [states]

    def decode_step(self, prev_word, states: List, beam_size: int = 1,
                    constants: Optional[StepConstants] = None) -> Tuple:
        """One step: ``prev_word (N,)`` (word ids as floats) and ``states`` -> (logits ``(N, V)``, attention
        ``(N, L)``, new states). With ``beam_size`` K > 1 the static states (the first ``num_static_states``) have
        one row per input, ``B = N / K``, shared by the input's K consecutive rows: beam search then neither
        repeats nor reorders them (they are repeated inside the step graph); they are returned as given.
        ``constants``: the search's `step_constants` (derived here when not given)."""
        if constants is None:
            constants = self.step_constants(prev_word.context)
        shared = beam_size > 1 and self.num_static_states > 0
        graph = self._graph(_StepGraph, beam_size if shared else 0, constants.fixed)
        outputs = _call(graph, prev_word, *constants.arrays, *states)
        static = list(states[:self.num_static_states])
        return outputs[0], outputs[1], static + list(outputs[2:])


def _call(graph: _Graph, *inputs: Any) -> Any:
    # each graph uses only some of the parameters its parts hold (the step graph no encoder, the encode graph no
    # output layer): Gluon's warning about that when it builds the graph is expected, not a defect
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not used by any computation.*")
        return graph(*inputs)


def _check_model_config(config: ModelConfig) -> None:
    check = utils.check_condition
    check(config.decoder in C.DECODERS, "unknown decoder %r (choose from %s)" % (config.decoder,
                                                                                ", ".join(C.DECODERS)))
    decoder_config = getattr(config, config.decoder)
    check(decoder_config is not None, "the model config has decoder %r but no %r section" % (config.decoder,
                                                                                          config.decoder))
    if config.weight_tying:
        check(config.num_embed == decoder_config.output_size,
              "--weight-tying needs --num-embed (%d) equal to the decoder's output size (%d): set --num-embed %d"
              % (config.num_embed, decoder_config.output_size, decoder_config.output_size))
    if config.decoder == C.DECODER_RNN and decoder_config.attention_type == "mhdot":
        heads = decoder_config.attention_mhdot_heads or 1
        size = decoder_config.attention_num_hidden or decoder_config.num_hidden
        check(size % heads == 0, "--rnn-attention-type mhdot: the attention size %d is not divisible by "
                                 "--rnn-attention-mhdot-heads %d" % (size, heads))
    if config.fine_tune is not None:
        check(tuple(config.fine_tune.output_shape) == tuple(config.encoder.feature_shape),
              "the fine-tuned CNN layers give %s but the encoder takes %s" % (tuple(config.fine_tune.output_shape),
                                                                             tuple(config.encoder.feature_shape)))
    if config.decoder == C.DECODER_TRANSFORMER:
        check(decoder_config.model_size % decoder_config.attention_heads == 0,
              "--transformer-model-size %d is not divisible by --transformer-attention-heads %d"
              % (decoder_config.model_size, decoder_config.attention_heads))
        for name, value in (("--transformer-preprocess", decoder_config.preprocess),
                            ("--transformer-postprocess", decoder_config.postprocess)):
            check(set(value) <= set("nrd"), "%s %r: use only the letters n, r, d" % (name, value))


# ---------------------------------------------------------------------------------------------------------------
# model folder
# ---------------------------------------------------------------------------------------------------------------

def save_model_config(config: ModelConfig, folder: str) -> None:
    """Write the folder's ``config`` (YAML) and ``version`` files."""
    config.save(os.path.join(folder, C.CONFIG_NAME))
    utils.atomic_write_text(os.path.join(folder, C.VERSION_NAME), "%s\n" % __version__)


def load_model_config(folder: str) -> ModelConfig:
    """Read a model folder's ``config``; clear errors for a missing or unreadable file or a newer format."""
    path = os.path.join(folder, C.CONFIG_NAME)
    utils.check_condition(os.path.isdir(folder), "%s: no such model folder" % folder)
    utils.check_condition(os.path.isfile(path), "%s: missing; is %s a model folder written by training?"
                          % (path, folder))
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise utils.CaptioningError("%s: cannot read the model config (%s)" % (path, reason)) from None
    utils.check_condition(isinstance(values, dict), "%s: not a model config (expected a YAML mapping)" % path)
    check_version_file(folder)
    version = values.get("format_version", C.MODEL_FORMAT_VERSION)
    utils.check_condition(isinstance(version, int) and version <= C.MODEL_FORMAT_VERSION,
                          "%s: model format version %s is newer than this captioning %s understands (%d); "
                          "upgrade captioning" % (path, version, __version__, C.MODEL_FORMAT_VERSION))
    try:
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as e:
        raise utils.CaptioningError("%s: not a valid model config (%s)" % (path, e)) from None


QUOTED_VERSION_CHARS = 60   # at most this much of a bad version file is quoted in the error
VERSION_PATTERN = re.compile(r"\d+(\.\d+)*([.+-]?[0-9A-Za-z.+-]*)?")


def check_version_file(folder: str) -> str:
    """The captioning version recorded in a model folder's ``version`` file (training writes it); a one-line error
    if it is missing or does not hold a version number."""
    path = os.path.join(folder, C.VERSION_NAME)
    utils.check_condition(os.path.isfile(path), "%s: missing; is %s a model folder written by training?"
                          % (path, folder))
    lines = [line.strip() for line in utils.read_lines(path) if line.strip()]
    utils.check_condition(len(lines) == 1 and VERSION_PATTERN.fullmatch(lines[0]) is not None,
                          "%s: expected the captioning version that wrote the folder (such as %s), found %r"
                          % (path, __version__, " ".join(lines)[:QUOTED_VERSION_CHARS]))
    return lines[0]


def params_path(folder: str, checkpoint: Optional[int] = None) -> str:
    """``params.best`` or ``params.NNNNN`` of a model folder."""
    name = C.PARAMS_BEST_NAME if checkpoint is None else C.PARAMS_NAME % checkpoint
    return os.path.join(folder, name)


def _load_vocab(folder: str) -> Vocab:
    path = os.path.join(folder, C.VOCAB_TRG_NAME)
    utils.check_condition(os.path.isfile(path), "%s: missing; the model folder needs its vocabulary" % path)
    return load_vocab(path)


@contextlib.contextmanager
def _reading_parameters(path: str, hint: str = "") -> Iterator[None]:
    """Around reading the parameter file ``path``: it must exist and not be empty, and what reading it raises
    becomes a one-line error naming ``path`` and the cause; ``hint`` is appended."""
    utils.check_condition(os.path.isfile(path), "%s: missing" % path)
    utils.check_condition(os.path.getsize(path) > 0, "%s: empty file, not parameters%s" % (path, hint))
    try:
        yield
    except (AssertionError, ValueError, mx.base.MXNetError, OSError) as e:
        raise utils.CaptioningError("%s: cannot load the parameters (%s)%s"
                                    % (path, utils.error_cause(e), hint)) from None


def load_parameters(model: gluon.Block, path: str, ctx: Sequence[mx.Context], allow_missing: bool = False,
                    ignore_extra: bool = False, hint: str = "") -> None:
    """``model.load_parameters`` (MXNet's NDArray format: no code runs) with a one-line error naming ``path`` and
    the cause (an empty or truncated file, a parameter missing or of another shape); ``hint`` is appended."""
    with _reading_parameters(path, hint):
        model.load_parameters(path, ctx=list(ctx), allow_missing=allow_missing, ignore_extra=ignore_extra)


def load_parameter_arrays(path: str) -> Dict[str, np.ndarray]:
    """The named arrays of a parameter file (MXNet's NDArray format: no code runs), with the errors of
    `load_parameters`."""
    with _reading_parameters(path):
        arrays = mx.nd.load(path)
    utils.check_condition(isinstance(arrays, dict) and bool(arrays), "%s: not a parameter file of named arrays"
                          % path)
    return {name: array.asnumpy() for name, array in arrays.items()}


def initialize_model(model: gluon.Block, contexts: Sequence[mx.Context], feature_shape: Sequence[int],
                     weight_init: str = "xavier", scale: float = 3.0, factor_type: str = "avg",
                     rand_type: str = "uniform", embed_init: str = "default", num_embed: int = 512,
                     params_file: Optional[str] = None, allow_missing: bool = False,
                     ignore_extra: bool = False) -> None:
    """Initialise every parameter (shapes resolved by one tiny forward pass), then optionally load
    ``params_file`` (``--params``) over them. ``embed_init="normal"``: the target embedding (only it) from
    N(0, 1/sqrt(num_embed))."""
    if weight_init == "xavier":
        init = mx.init.Xavier(rnd_type=rand_type, factor_type=factor_type, magnitude=scale)
    else:
        init = mx.init.Uniform(scale=scale)
    if embed_init == "normal":
        for p in model.collect_params(".*target_embed_weight$").values():
            p.initialize(mx.init.Normal(sigma=num_embed ** -0.5), ctx=list(contexts))
    fine_tune = model.config.fine_tune if isinstance(model, CaptionModel) else None
    if fine_tune is not None:   # zeros until the CNN's parameters are loaded (Xavier takes no vectors)
        model.image_layers.initialize(mx.init.Zero(), ctx=list(contexts))
    with warnings.catch_warnings():   # the embeddings and CNN layers initialised above
        warnings.filterwarnings("ignore", message=".*already initialized.*")
        model.initialize(init, ctx=list(contexts))
    dummy_features = mx.nd.zeros((1,) + tuple(int(d) for d in feature_shape), ctx=contexts[0])
    dummy_words = mx.nd.full((1, 1), C.BOS_ID, ctx=contexts[0])
    model(dummy_features, dummy_words)
    if fine_tune is not None:
        load_cnn_parameters(model.image_layers, fine_tune, contexts)
    if params_file is not None:
        try:
            load_parameters(model, params_file, contexts, allow_missing, ignore_extra)
        except utils.CaptioningError as e:
            raise utils.CaptioningError(str(e) + params_hint(str(e))) from None
        logger.info("Initialised the model from %s", params_file)
    num = count_parameters(model)
    logger.info("Model: %d parameters (%.1f MB)", num, num * BYTES_PER_PARAMETER / 2 ** 20)


def params_hint(message: str) -> str:
    """What to do about a ``--params`` file that does not fit the model: parameters of another shape (another
    vocabulary or architecture) cannot be fixed by a flag; missing or extra ones can."""
    if "shape" in message.lower():
        return ("; --params must come from a model of the same architecture and vocabulary (give its folder's %s "
                "as --target-vocab)" % C.VOCAB_TRG_NAME)
    return "; --allow-missing-params and --ignore-extra-params accept a partial match"


def load_model(folder: str, checkpoint: Optional[int] = None, ctx: Optional[mx.Context] = None,
               hybridize: bool = True) -> Tuple[CaptionModel, Vocab]:
    """Rebuild the model of a folder with the parameters of ``checkpoint`` (default ``params.best``)."""
    ctx = ctx if ctx is not None else mx.cpu()
    config = load_model_config(folder)
    vocab = _load_vocab(folder)
    utils.check_condition(len(vocab) == config.vocab_size,
                          "%s: the vocabulary has %d words but the model config says %d"
                          % (os.path.join(folder, C.VOCAB_TRG_NAME), len(vocab), config.vocab_size))
    path = params_path(folder, checkpoint)
    if not os.path.isfile(path):
        available = sorted(n for n in os.listdir(folder) if n.startswith(C.PARAMS_PREFIX))
        raise utils.CaptioningError("%s: missing (checkpoints in the folder: %s)"
                                    % (path, ", ".join(available) or "none"))
    model = CaptionModel(config)
    load_parameters(model, path, [ctx])
    if hybridize:
        model.hybridize()
    logger.info("Loaded model from %s (%s, %d parameters)", path, config.decoder, count_parameters(model))
    return model, vocab


def count_parameters(model: gluon.Block) -> int:
    """Number of distinct scalar parameters."""
    return int(sum(int(np.prod(p.shape)) for p in model.collect_params().values()))
