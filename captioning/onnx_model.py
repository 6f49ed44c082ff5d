"""Captioning from an exported folder (`export_onnx`): the model's encode and step graphs run by onnxruntime on numpy
arrays, behind the interface the searches use (`beam_search.StepModel`).

The folder holds ``manifest.json`` (format, shapes, the sha256 of every other file), ``encode.onnx`` (features ->
the decoder's initial states), ``step.onnx`` (previous words and states -> logits, attention, new states; the
constants of the fixed parameters folded in), the vocabulary, the model config and, when exported with a CNN,
``cnn.onnx`` (raw 0..255 RGB images -> the features the model was trained on). See ``docs/deploy.md``.

Nothing in this module's import chain imports MXNet: an export captions where MXNet cannot be installed.
"""
import dataclasses
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from . import constants as C
from . import utils
from .cnn import CNNConfig
from .vocab import Vocab
from .vocab import load_vocab as _load_vocab_file

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "captioning-onnx-export"
FORMAT_VERSION = 1
ENCODE_FILE = "encode.onnx"
STEP_FILE = "step.onnx"
CNN_FILE = "cnn.onnx"
CONFIG_FILE = "config.yaml"
REQUIRED_FILES = (ENCODE_FILE, STEP_FILE, C.VOCAB_TRG_NAME, CONFIG_FILE)
FEATURES_INPUT = "features"          # encode.onnx's input; also cnn.onnx's output
WORDS_INPUT = "prev_words"
LOGITS_OUTPUT = "logits"
ATTENTION_OUTPUT = "attention"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def state_names(num_states: int) -> List[str]:
    """``state_0`` .. ``state_{S-1}``: encode.onnx's outputs, step.onnx's inputs after the words."""
    return ["state_%d" % i for i in range(num_states)]


def step_input_names(num_states: int) -> List[str]:
    return [WORDS_INPUT] + state_names(num_states)


def step_output_names(num_static_states: int, num_states: int) -> List[str]:
    """``logits``, ``attention``, then ``new_state_{n}`` .. ``new_state_{S-1}`` (the states that change)."""
    return [LOGITS_OUTPUT, ATTENTION_OUTPUT] + ["new_state_%d" % i for i in range(num_static_states, num_states)]


sha256_file = utils.file_sha256


# ---------------------------------------------------------------------------------------------------------------
# the manifest
# ---------------------------------------------------------------------------------------------------------------

def is_export(folder: str) -> bool:
    """Whether ``folder`` holds an export (a ``manifest.json`` naming this format); reads only the manifest."""
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return False
    try:
        values = utils.read_json(path, "the export manifest")
    except utils.CaptioningError:
        return False
    return isinstance(values, dict) and values.get("format") == FORMAT_NAME


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(folder: str) -> Dict[str, Any]:
    """The checked manifest of an export folder; a one-line error naming the file for anything amiss."""
    path = os.path.join(folder, MANIFEST_NAME)
    utils.check_condition(os.path.isfile(path), "%s: missing; is %s a folder written by captioning.export_onnx?"
                          % (path, folder))
    values = utils.read_json(path, "the export manifest")
    check = utils.check_condition
    check(isinstance(values, dict) and values.get("format") == FORMAT_NAME,
          "%s: not a manifest of captioning.export_onnx (format %r expected)" % (path, FORMAT_NAME))
    version = values.get("format_version")
    check(_is_count(version) and 1 <= version <= FORMAT_VERSION,
          "%s: export format version %r is not one this captioning reads (%d); export the model again or upgrade"
          % (path, version, FORMAT_VERSION))
    files = values.get("files")
    check(isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()),
          "%s: 'files' must map file names to sha256 digests" % path)
    for name in files:
        check(name == os.path.basename(name) and name not in ("", ".", ".."),
              "%s: file name %r is not a plain name in the folder" % (path, name))
    missing = [name for name in REQUIRED_FILES if name not in files]
    check(not missing, "%s: the manifest lists no %s" % (path, ", ".join(missing)))
    for key in ("num_states", "num_static_states", "vocab_size", "max_output_length", "attention_positions"):
        check(_is_count(values.get(key)), "%s: %r must be a non-negative integer" % (path, key))
    check(values["num_static_states"] <= values["num_states"], "%s: more static states than states" % path)
    shape = values.get("feature_shape")
    check(isinstance(shape, list) and bool(shape) and all(_is_count(d) and d > 0 for d in shape),
          "%s: 'feature_shape' must be a list of positive integers" % path)
    encoder = values.get("image_encoder")
    check(encoder is None or (isinstance(encoder, dict) and encoder.get("file") in files
                              and isinstance(encoder.get("image_size"), list) and len(encoder["image_size"]) == 2),
          "%s: 'image_encoder' must be null or name a listed file and its image size [H, W]" % path)
    return values


def verify_files(folder: str, manifest: Dict[str, Any]) -> None:
    """Every file the manifest lists exists and has its recorded sha256."""
    for name, digest in sorted(manifest["files"].items()):
        path = os.path.join(folder, name)
        utils.check_condition(os.path.isfile(path), "%s: missing (listed in %s); export the model again"
                              % (path, MANIFEST_NAME))
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise utils.CaptioningError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
        utils.check_condition(actual == digest.lower(), "%s: its sha256 differs from the one in %s (the file was "
                                                        "altered or damaged); export the model again"
                              % (path, MANIFEST_NAME))


@dataclasses.dataclass
class ExportedModelConfig:
    """What a captioner needs of an exported model's config (``config.yaml``, read with ``yaml.safe_load``):
    the decoder type, the vocabulary size, the default length bound, the features' shape and the CNN recorded with
    the training features (if any); ``values`` is the whole mapping."""
    decoder: str
    vocab_size: int
    max_output_length: int
    feature_shape: Tuple[int, ...]
    image_cnn: Optional[CNNConfig]
    values: Dict[str, Any]


def read_config(folder: str, manifest: Dict[str, Any]) -> ExportedModelConfig:
    path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise utils.CaptioningError("%s: cannot read the model config (%s)" % (path, e)) from None
    utils.check_condition(isinstance(values, dict), "%s: not a model config (expected a YAML mapping)" % path)
    recorded = values.get("image_cnn", values.get("cnn_config"))
    try:
        image_cnn = CNNConfig.from_dict(recorded) if isinstance(recorded, dict) else None
    except (ValueError, TypeError):
        image_cnn = None
    return ExportedModelConfig(decoder=str(values.get("decoder", "")), vocab_size=manifest["vocab_size"],
                               max_output_length=manifest["max_output_length"],
                               feature_shape=tuple(manifest["feature_shape"]), image_cnn=image_cnn, values=values)


def load_vocab(folder: str) -> Vocab:
    """The export's target vocabulary (word -> id)."""
    return _load_vocab_file(os.path.join(folder, C.VOCAB_TRG_NAME))


# ---------------------------------------------------------------------------------------------------------------
# onnxruntime sessions
# ---------------------------------------------------------------------------------------------------------------

def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise utils.CaptioningError("captioning with an exported model needs onnxruntime: pip install onnxruntime "
                                    "(or onnxruntime-gpu)") from None
    return onnxruntime


def session_options(threads: int = 0) -> Any:
    """onnxruntime session options: ``threads`` intra-op threads (0: onnxruntime's default, one per core), one
    inter-op thread, no spin-waiting between operators (on a busy machine spinning threads take the CPU from the
    work)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: str, providers: Sequence[str], threads: int = 0) -> Any:
    """An ``InferenceSession`` of the graph in ``path``; onnxruntime's refusal becomes one line naming the file."""
    ort = _onnxruntime()
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    utils.check_condition(not unknown, "execution provider %s: not available in this onnxruntime (available: %s)"
                          % (", ".join(unknown), ", ".join(ort.get_available_providers())))
    try:
        return ort.InferenceSession(path, sess_options=session_options(threads), providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime's Fail / InvalidGraph / InvalidProtobuf / NotImplemented
        raise utils.CaptioningError("%s: onnxruntime cannot load this graph (%s)"
                                    % (path, utils.error_cause(e, 200))) from None


def check_names(session: Any, path: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """The session's input and output names are exactly ``inputs`` and ``outputs``, in that order."""
    got_inputs = [i.name for i in session.get_inputs()]
    got_outputs = [o.name for o in session.get_outputs()]
    utils.check_condition(got_inputs == list(inputs), "%s: the graph's inputs are (%s) but the export needs (%s); "
                                                      "export the model again"
                          % (path, ", ".join(got_inputs), ", ".join(inputs)))
    utils.check_condition(got_outputs == list(outputs), "%s: the graph's outputs are (%s) but the export needs "
                                                        "(%s); export the model again"
                          % (path, ", ".join(got_outputs), ", ".join(outputs)))


def run_step(session: Any, num_static_states: int, prev_words: np.ndarray, states: Sequence[np.ndarray],
             beam_size: int = 1, repeated: Optional[List[np.ndarray]] = None
             ) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    """One run of a step graph's ``session`` with the semantics of `model.CaptionModel.decode_step` (see
    `OnnxCaptionModel.decode_step`); ``repeated``: the static states already repeated for the beam rows."""
    static = list(states[:num_static_states])
    inputs = static if beam_size <= 1 else repeated or [np.repeat(s, beam_size, axis=0) for s in static]
    feed = {WORDS_INPUT: np.ascontiguousarray(prev_words, dtype=np.float32).reshape(-1)}
    for name, state in zip(state_names(len(states)), inputs + list(states[num_static_states:])):
        feed[name] = np.ascontiguousarray(state, dtype=np.float32)
    outputs = session.run(None, feed)
    return outputs[0], outputs[1], static + list(outputs[2:])


class OnnxCaptionModel:
    """An exported model (`export_onnx`) as a `beam_search.StepModel` on numpy arrays: ``encode``, ``step_constants``
    (None: the constants are folded into the step graph) and ``decode_step`` with the semantics of
    `model.CaptionModel.decode_step`. Every file is checked against the manifest's sha256 and each graph's inputs
    and outputs against the names the export writes. ``providers``: onnxruntime execution providers, in order of
    preference; ``threads``: intra-op threads per session (0: onnxruntime's default)."""

    def __init__(self, folder: str, providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int = 0) -> None:
        self.folder = folder
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
        self.manifest = manifest
        self.num_states: int = manifest["num_states"]
        self.num_static_states: int = manifest["num_static_states"]
        self.vocab_size: int = manifest["vocab_size"]
        self.max_output_length: int = manifest["max_output_length"]
        self.num_positions: int = manifest["attention_positions"]
        self.feature_shape: Tuple[int, ...] = tuple(int(d) for d in manifest["feature_shape"])
        self.quantize: Optional[str] = manifest.get("quantize")
        self.config = read_config(folder, manifest)
        self.encode_path = os.path.join(folder, ENCODE_FILE)
        self.step_path = os.path.join(folder, STEP_FILE)
        self.encode_session = open_session(self.encode_path, providers, threads)
        check_names(self.encode_session, self.encode_path, [FEATURES_INPUT], state_names(self.num_states))
        self.step_session = open_session(self.step_path, providers, threads)
        check_names(self.step_session, self.step_path, step_input_names(self.num_states),
                    step_output_names(self.num_static_states, self.num_states))
        self._repeat_cache: Tuple[List[np.ndarray], int, List[np.ndarray]] = ([], 0, [])

    def encode(self, features: np.ndarray) -> List[np.ndarray]:
        """The initial decoder states of features ``(B,) + feature_shape``, B rows each."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        utils.check_condition(tuple(features.shape[1:]) == self.feature_shape,
                              "%s: features of shape %s, the exported model takes %s"
                              % (self.encode_path, tuple(features.shape[1:]), self.feature_shape))
        return list(self.encode_session.run(None, {FEATURES_INPUT: features}))

    def step_constants(self, ctx: Any = None) -> Any:
        """None: the step constants of the fixed parameters are part of the step graph."""
        return None

    def decode_step(self, prev_words: np.ndarray, states: List[np.ndarray], beam_size: int = 1,
                    constants: Any = None) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        """One step: ``prev_words (N,)`` (word ids, any numeric type) and ``states`` -> (logits ``(N, V)``,
        attention ``(N, L)``, new states). With ``beam_size`` K > 1 the static states (the first
        ``num_static_states``) have one row per input and are repeated for its K consecutive rows here; they are
        returned as given."""
        repeated = None
        if beam_size > 1 and self.num_static_states:
            repeated = self._repeated_static(states[:self.num_static_states], beam_size)
        return run_step(self.step_session, self.num_static_states, prev_words, states, beam_size, repeated)

    def _repeated_static(self, static: Sequence[np.ndarray], beam_size: int) -> List[np.ndarray]:
        """The static states repeated for ``beam_size`` rows per input, kept while a search passes the same
        arrays step after step (it passes new ones when inputs leave the batch)."""
        sources, size, repeated = self._repeat_cache
        if size != beam_size or len(sources) != len(static) or any(a is not b for a, b in zip(sources, static)):
            repeated = [np.repeat(np.ascontiguousarray(s, dtype=np.float32), beam_size, axis=0) for s in static]
            self._repeat_cache = (list(static), beam_size, repeated)
        return repeated


def image_extractor(folder: str, batch_size: int, threads: int = 0,
                    providers: Sequence[str] = DEFAULT_PROVIDERS) -> Optional[Any]:
    """The export's CNN (``cnn.onnx``) as a `cnn.FeatureExtractor` (`onnx_encoder.OnnxFeatureExtractor`): raw
    0..255 RGB images ``(B, 3, H, W)`` -> the model's features; None when the folder was exported without one."""
    manifest = read_manifest(folder)
    encoder = manifest.get("image_encoder")
    if encoder is None:
        return None
    path = os.path.join(folder, encoder["file"])
    verify_files(folder, {"files": {encoder["file"]: manifest["files"][encoder["file"]]}})
    from .onnx_encoder import OnnxFeatureExtractor
    height, width = (int(v) for v in encoder["image_size"])
    config = CNNConfig(model_path=path, layer=FEATURES_INPUT, image_size=(3, height, width))
    return OnnxFeatureExtractor(config, None, batch_size, threads=threads, providers=providers)
