"""CLI: caption feature files (or images, with ``--extract-image-features``) with one model or an ensemble.

    python -m captioning.captioner --models models/ --input validation_set.features --source-root FEATS \\
        --max-output-length 60 --batch-size 1024 --chunk-size 2048 --beam-size 3 > validation_set.predictions

Captions go to standard output (or ``--output``), one line per input line in input order; logs go to standard error.
A bad input line gives an empty output line and an error naming it; the exit status is then 1. Input is read a line
at a time: at ``--batch-size 1`` each caption is written (and flushed) before the next line is read.
"""
import argparse
import logging
import os
import sys
import time
import warnings
from typing import IO, TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import arguments, features, log, utils
from . import constants as C

if TYPE_CHECKING:
    import mxnet as mx

    from .array_backend import ArrayBackend
    from .cnn import CNNConfig, FeatureExtractor
    from .inference import CaptionerModel, CaptionOutput, Captioner, CaptionerConfig
    from .model import ModelConfig
    from .search_processes import SearchPool

logger = logging.getLogger(__name__)


def _training_source_root(model_folder: str) -> Optional[str]:
    """``--source-root`` of the training run (from the model folder's ``args.yaml``), or None."""
    import yaml
    try:
        with open(os.path.join(model_folder, C.ARGS_NAME), encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return None
    root = values.get("source_root") if isinstance(values, dict) else None
    return root if isinstance(root, str) else None


def resolve_cnn_path(model_path: str, model_folder: str) -> str:
    """A recorded CNN prefix: extraction records the copy in the feature folder (``cnn/NAME``) relative to that
    folder, so a relative prefix is looked for from here, in the training's ``--source-root`` and in the model
    folder; the first that exists wins."""
    if os.path.isabs(model_path):
        return model_path
    from .cnn import is_onnx, symbol_file
    candidates = [model_path]
    root = _training_source_root(model_folder)
    if root is not None:
        candidates.append(os.path.join(root, model_path))
        if not os.path.isabs(root):  # relative to where training ran: the model folder's parent is a good guess
            candidates.append(os.path.join(os.path.dirname(os.path.abspath(model_folder)), root, model_path))
    candidates.append(os.path.join(model_folder, model_path))
    return next((c for c in candidates if os.path.exists(c if is_onnx(c) else symbol_file(c))), model_path)


def cnn_config_for(args: argparse.Namespace, model_config: "ModelConfig", model_folder: str) -> "CNNConfig":
    """The CNN for ``--extract-image-features``: what the training features were made with (``image_cnn`` of the
    model's config), each flag given overriding it."""
    from .cnn import CNNConfig, strip_output_suffix
    recorded: Optional[CNNConfig] = model_config.image_cnn
    model_path = args.image_encoder_model_path
    if model_path is None and recorded is not None:
        model_path = resolve_cnn_path(recorded.model_path, model_folder)
    utils.check_condition(model_path is not None,
                          "--extract-image-features: the model folder %s does not record the CNN its features came "
                          "from; give --image-encoder-model-path (and --image-encoder-layer)" % model_folder)
    layer = args.image_encoder_layer or (recorded.layer if recorded is not None else None)
    utils.check_condition(layer is not None, "--extract-image-features: give --image-encoder-layer (the model "
                                             "folder %s does not record it)" % model_folder)
    # an explicit --source-image-size wins, even when it equals the default
    image_size = args.source_image_size or (recorded.image_size if recorded is not None
                                            else C.DEFAULT_SOURCE_IMAGE_SIZE)
    epoch = args.image_encoder_model_epoch
    if epoch is None:
        epoch = recorded.epoch if recorded is not None else 0
    return CNNConfig(model_path=model_path, epoch=int(epoch), layer=strip_output_suffix(str(layer)),
                     image_size=features.as_shape(int(v) for v in image_size))


def captioner_config(args: argparse.Namespace) -> "CaptionerConfig":
    """The `inference.CaptionerConfig` of the flags (checked before any model is loaded)."""
    from .inference import CaptionerConfig
    return CaptionerConfig(
        beam_size=args.beam_size, batch_size=args.batch_size, chunk_size=args.chunk_size,
        max_output_length=args.max_output_length, ensemble_mode=args.ensemble_mode,
        length_penalty_alpha=args.length_penalty_alpha, length_penalty_beta=args.length_penalty_beta,
        beam_prune=args.beam_prune, beam_search_stop=args.beam_search_stop, nbest_size=args.nbest_size,
        softmax_temperature=args.softmax_temperature, strip_unknown_words=args.strip_unknown_words,
        no_repeat_ngram_size=args.no_repeat_ngram_size, no_dangling_words=args.no_dangling_words,
        sample=args.sample)


def _main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.captioner",
                                            description="Caption images (features or image files) with trained "
                                                        "models.")
    from .inference import CaptionerConfig
    arguments.add_captioner_args(parser, CaptionerConfig)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    # Gluon warns about parameters of the model's other graphs (training, encoding) in each one it runs
    warnings.filterwarnings("ignore", message="Parameter .* is not used by any computation")

    # everything that can be checked cheaply is checked before the models load
    captioner_config(args)
    if args.input is None:
        utils.check_stream_open(sys.stdin)
    if args.output is not None:
        utils.check_output_file(args.output, "--output")
        utils.check_not_an_input(args.output, "--output", input_files(args))
    else:
        utils.check_stream_open(sys.stdout)
    input_file: IO[bytes] = utils.open_input(args.input) if args.input is not None else sys.stdin.buffer
    try:
        return _caption(args, input_file)
    finally:
        if input_file is not sys.stdin.buffer:
            input_file.close()


def exported(folders: Sequence[str]) -> bool:
    """Whether ``--models`` are exported folders (`onnx_model.is_export`); decided before anything imports MXNet.
    Exported and MXNet models cannot form one ensemble."""
    from .onnx_model import is_export
    kinds = {is_export(folder) for folder in folders}
    utils.check_condition(len(kinds) == 1, "--models %s: an ensemble cannot mix exported (ONNX) folders with MXNet "
                                           "model folders; export all of them or none" % " ".join(folders))
    return kinds == {True}


def input_files(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """(flag, path) of every file the run reads: the input (or standard input) and the files it reads from each
    model folder (captions written into a model folder before may be written again)."""
    files: List[Tuple[str, Optional[str]]] = [("--input", args.input) if args.input is not None else
                                              ("standard input", "/dev/stdin")]
    checkpoints = args.checkpoints or [None] * len(args.models)
    for folder, checkpoint in zip(args.models, checkpoints):
        names = [C.CONFIG_NAME, C.VERSION_NAME, C.VOCAB_TRG_NAME, C.ARGS_NAME,
                 C.PARAMS_BEST_NAME if checkpoint is None else C.PARAMS_NAME % checkpoint]
        if os.path.isdir(folder):
            names.extend(name for name in os.listdir(folder) if name.endswith(".onnx") or name == "manifest.json")
        files.extend(("--models", os.path.join(folder, name)) for name in names)
    return files


def _threads() -> int:
    """The thread count of this process (OMP_NUM_THREADS, which `captioning` sets when the user did not)."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def _load_exported(args: argparse.Namespace
                   ) -> Tuple[List["CaptionerModel"], Dict[str, int], "ArrayBackend", Optional["FeatureExtractor"]]:
    """The exported models (onnxruntime, numpy arrays), their vocabulary, the numpy backend and, with
    ``--extract-image-features``, the export's own CNN."""
    from . import array_backend, inference, onnx_model
    utils.check_condition(args.checkpoints is None, "--checkpoints: an exported folder holds one set of parameters "
                                                    "(export the checkpoint you want with export_onnx --checkpoint)")
    models, vocab = inference.load_exported_models(args.models, args.onnx_providers, _threads())
    extractor = None
    if args.extract_image_features:
        utils.check_condition(args.image_encoder_model_path is None and args.image_encoder_layer is None,
                              "--extract-image-features with an exported folder runs the CNN exported with it; "
                              "--image-encoder-model-path and --image-encoder-layer do not apply")
        extractor = onnx_model.image_extractor(args.models[0], args.batch_size, _threads(), args.onnx_providers)
        utils.check_condition(extractor is not None, "--extract-image-features: %s holds no image encoder; export "
                                                     "with --image-encoder-model-path, or caption features"
                              % args.models[0])
    return list(models), vocab, array_backend.NUMPY, extractor


def _load_mxnet(args: argparse.Namespace, ctx: "mx.Context"
                ) -> Tuple[List["CaptionerModel"], Dict[str, int], Optional["FeatureExtractor"]]:
    """The MXNet models, their vocabulary and, with ``--extract-image-features``, the CNN of the flags or the one
    the training features came from."""
    from . import inference
    utils.check_condition(args.search_processes == 1 or ctx.device_type == "cpu",
                          "--search-processes %d: several search processes are for CPU captioning; on a GPU use "
                          "one (or pass --use-cpu)" % args.search_processes)
    models, vocab = inference.load_models(args.models, args.checkpoints, ctx)
    extractor = None
    if args.extract_image_features:
        from .cnn import create_feature_extractor
        cnn_config = cnn_config_for(args, models[0].config, args.models[0])
        extractor = create_feature_extractor(cnn_config, ctx, args.batch_size)
    return list(models), vocab, extractor


def build_captioner(args: argparse.Namespace) -> Tuple["Captioner", Tuple[int, int]]:
    """The captioner of the flags (models loaded, feature source ready) and the models' feature grid (h, w). Each
    `search_processes` process runs it too. Exported folders run on onnxruntime without MXNet."""
    from . import inference
    config = captioner_config(args)
    if exported(args.models):
        models, vocab, backend, extractor = _load_exported(args)
    else:
        from .array_backend import MXNetBackend
        ctx = utils.get_context(args.use_cpu, args.device_ids)[0]
        models, vocab, extractor = _load_mxnet(args, ctx)
        backend = MXNetBackend(ctx)
    feature_shape = features.as_shape(models[0].feature_shape)
    root = args.source_root if args.source_root is not None else "."
    source: inference.FeatureSource
    if extractor is not None:
        utils.check_condition(tuple(extractor.output_shape) == feature_shape,
                              "--extract-image-features: the CNN gives features %s but the model was trained on %s; "
                              "use the CNN, layer and --source-image-size of the training features"
                              % (tuple(extractor.output_shape), feature_shape))
        source = inference.ImageSource(root, extractor, args.allow_absolute_paths, args.num_workers)
    else:
        source = inference.FeatureFileSource(root, feature_shape, args.allow_absolute_paths)
    captioner = inference.Captioner(models, vocab, config, source, backend=backend)
    return captioner, (int(feature_shape[1]), int(feature_shape[2]))


def _caption(args: argparse.Namespace, input_file: IO[bytes]) -> int:
    where = args.input if args.input is not None else "<stdin>"
    if args.search_processes > 1:
        from . import search_processes
        with search_processes.SearchPool(args.search_processes, args, build_captioner, args.batch_size) as pool:
            from . import inference   # MXNet loads here while the processes load the models
            start = time.time()
            _write(args, pool.caption(inference.parse_stream(input_file, where, args.json_input), where), pool.grid)
            return _report(pool, time.time() - start)
    captioner, grid = build_captioner(args)
    if args.seed is not None:  # reproducible sampling
        captioner.backend.seed(args.seed)
    start = time.time()
    _write(args, captioner.caption_stream(input_file, where, args.json_input), grid)
    return _report(captioner, time.time() - start)


def _write(args: argparse.Namespace, outputs: Iterator["CaptionOutput"], grid: Tuple[int, int]) -> None:
    """Write the outputs to --output or standard output."""
    from .output_handler import OutputHandler
    if args.output is not None:
        with utils.open_output(args.output) as out:
            handler = OutputHandler(out, args.output_type, grid)
            for output in outputs:
                handler.handle(output)
    else:
        handler = OutputHandler(sys.stdout, args.output_type, grid)
        for output in outputs:
            handler.handle(output)
            sys.stdout.flush()  # each caption as soon as it is made (interactive use through pipes)


def _report(captioner: "Union[Captioner, SearchPool]", elapsed: float) -> int:
    """Log the totals; the exit status (1 when some line failed)."""
    total = captioner.num_captioned + captioner.num_failed
    if total:
        logger.info("Processed %d lines (%d failed) in %.2fs: %.1f captions/s (search alone %.1f captions/s)",
                    total, captioner.num_failed, elapsed, captioner.num_captioned / max(elapsed, 1e-9),
                    captioner.num_captioned / max(captioner.search_seconds, 1e-9))
    if captioner.num_failed:
        logger.error("%d of %d input lines could not be captioned (empty output lines); see the errors above",
                     captioner.num_failed, total)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
