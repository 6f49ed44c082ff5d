"""CLI: caption feature files (or images, with ``--extract-image-features``) with one model or an ensemble.

    python -m captioning.captioner --models models/ --input validation_set.features --source-root FEATS \\
        --max-output-length 60 --batch-size 1024 --chunk-size 2048 --beam-size 3 > validation_set.predictions

Captions go to standard output (or ``--output``), one line per input line in input order; logs go to standard error.
A bad input line gives an empty output line and an error naming it; the exit status is then 1.
"""
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, Optional, Sequence

from . import arguments, log, utils
from . import constants as C

logger = logging.getLogger(__name__)


def _cnn_config(args: Any, model_config: Any, model_folder: str) -> Any:
    """The CNN for ``--extract-image-features``: what the training features were made with (recorded in the
    model's config), each flag given overriding it."""
    from .cnn import CNNConfig
    recorded: Dict[str, Any] = dict(getattr(model_config, "cnn_config", None) or {})
    model_path = args.image_encoder_model_path or recorded.get("model_path")
    utils.check_condition(model_path is not None,
                          "--extract-image-features: the model folder %s does not record the CNN its features came "
                          "from; give --image-encoder-model-path (and --image-encoder-layer)" % model_folder)
    if args.image_encoder_model_path is None and not os.path.isabs(model_path) \
            and not os.path.exists(model_path + "-symbol.json"):
        beside = os.path.join(model_folder, model_path)
        if os.path.exists(beside + "-symbol.json"):
            model_path = beside
    layer = args.image_encoder_layer or recorded.get("layer")
    utils.check_condition(layer is not None, "--extract-image-features: give --image-encoder-layer (the model "
                                             "folder %s does not record it)" % model_folder)
    image_size = list(args.source_image_size)
    if image_size == list(C.DEFAULT_SOURCE_IMAGE_SIZE) and recorded.get("image_size"):
        image_size = list(recorded["image_size"])
    epoch = args.image_encoder_model_epoch
    if epoch is None:
        epoch = recorded.get("epoch", 0)
    return CNNConfig(model_path=model_path, epoch=int(epoch), layer=layer, image_size=tuple(image_size))


def _main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.captioner",
                                            description="Caption images (features or image files) with trained "
                                                        "models.")
    arguments.add_captioner_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    # Gluon warns about parameters of the model's other graphs (training, encoding) in each one it runs
    warnings.filterwarnings("ignore", message="Parameter .* is not used by any computation")

    from . import inference
    from .output_handler import OutputHandler

    utils.check_condition(args.nbest_size <= args.beam_size, "--nbest-size %d is larger than --beam-size %d"
                          % (args.nbest_size, args.beam_size))
    if args.softmax_temperature is not None:
        utils.check_condition(args.softmax_temperature > 0, "--softmax-temperature must be > 0")
    ctx = utils.get_context(args.use_cpu, args.device_ids)[0]
    models, vocab = inference.load_models(args.models, args.checkpoints, ctx)
    feature_shape = tuple(models[0].config.encoder.feature_shape)
    root = args.source_root if args.source_root is not None else "."
    if args.extract_image_features:
        from .cnn import FeatureExtractor
        cnn_config = _cnn_config(args, models[0].config, args.models[0])
        extractor = FeatureExtractor(cnn_config, ctx, args.batch_size)
        utils.check_condition(tuple(extractor.output_shape) == feature_shape,
                              "--extract-image-features: the CNN layer %r gives features %s but the model was "
                              "trained on %s; use the CNN, layer and --source-image-size of the training features"
                              % (cnn_config.layer, tuple(extractor.output_shape), feature_shape))
        source: Any = inference.ImageSource(root, extractor, args.allow_absolute_paths, args.num_workers)
    else:
        source = inference.FeatureFileSource(root, feature_shape, args.allow_absolute_paths)
    config = inference.CaptionerConfig(
        beam_size=args.beam_size, batch_size=args.batch_size, chunk_size=args.chunk_size,
        max_output_length=args.max_output_length, ensemble_mode=args.ensemble_mode,
        length_penalty_alpha=args.length_penalty_alpha, length_penalty_beta=args.length_penalty_beta,
        beam_prune=args.beam_prune, beam_search_stop=args.beam_search_stop, nbest_size=args.nbest_size,
        softmax_temperature=args.softmax_temperature, strip_unknown_words=args.strip_unknown_words)
    captioner = inference.Captioner(models, vocab, config, source, ctx)

    if args.input is not None:
        utils.check_condition(os.path.isfile(args.input), "%s: no such input file (--input)" % args.input)
        input_file = open(args.input, encoding="utf-8", errors="replace")
        where = args.input
    else:
        input_file = sys.stdin
        where = "<stdin>"
    grid = (int(feature_shape[1]), int(feature_shape[2]))
    start = time.time()
    try:
        lines = (line.rstrip("\r\n") for line in input_file)
        outputs = captioner.caption_lines(lines, where, args.json_input)
        if args.output is not None:
            with utils.atomic_open(args.output, "w") as out:
                handler = OutputHandler(out, args.output_type, grid)
                for output in outputs:
                    handler.handle(output)
        else:
            handler = OutputHandler(sys.stdout, args.output_type, grid)
            for output in outputs:
                handler.handle(output)
                if args.batch_size == 1:  # interactive use: each caption as soon as it is made
                    sys.stdout.flush()
    finally:
        if input_file is not sys.stdin:
            input_file.close()
    total = captioner.num_captioned + captioner.num_failed
    elapsed = time.time() - start
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
