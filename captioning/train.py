"""``python -m captioning.train``: train a captioning model on pre-extracted image features.

Parses and checks the options, builds the vocabulary, the data iterators, the model config and the training config,
and hands them to `training.Trainer`. The model folder (``--output``) receives ``args.yaml``, ``config``,
``version``, ``vocab.trg.0.json``, ``params.*``, ``metrics``, ``log`` and ``training_state/``. Running the same
command again on that folder resumes an interrupted run; a different command is refused (``--overwrite-output``
starts afresh).
"""
import argparse
import logging
import logging.handlers
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence

from . import arguments
from . import constants as C
from . import data_io
from . import log
from . import utils
from . import vocab as vocab_module

logger = logging.getLogger(__name__)

# options that do not change what training computes: they may differ when a run is resumed
HARMLESS_OPTIONS = {"quiet", "loglevel", "config", "overwrite_output", "dry_run", "decode_and_evaluate_use_cpu",
                    "decode_and_evaluate_device_id"}


def build_parser() -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.train",
                                            description="Train an image-captioning model on pre-extracted "
                                                        "image features.")
    arguments.add_train_cli_args(parser)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# configs from arguments
# ---------------------------------------------------------------------------------------------------------------

def default_max_output_length(longest_caption: int, max_seq_len: int) -> int:
    """Output length bound from the training captions: the longest caption + </s> + a 20% margin (at least 2),
    capped by --max-seq-len."""
    return min(max_seq_len, longest_caption + 1 + max(2, longest_caption // 5))


def create_model_config(args: argparse.Namespace, feature_shape: Sequence[int], vocab_size: int,
                        max_output_length: int, cnn_config: Optional[Dict[str, Any]] = None) -> Any:
    """The `model.ModelConfig` the flags describe."""
    from . import decoder, encoder, model
    tv = arguments.target_value
    num_layers = tv(args.num_layers)
    max_seq_len = tv(args.max_seq_len)
    encoder_config = encoder.ImageEncoderConfig(
        feature_shape=tuple(int(d) for d in feature_shape), num_hidden=args.image_encoder_num_hidden,
        positional_embedding=args.image_positional_embedding_type,
        global_descriptor=args.image_encoder_global_descriptor, dropout=args.image_encoder_dropout)
    rnn_config = transformer_config = cnn_decoder_config = None
    if args.decoder == C.DECODER_RNN:
        rnn_config = decoder.RecurrentDecoderConfig(
            num_hidden=args.rnn_num_hidden, cell_type=args.rnn_cell_type, num_layers=num_layers,
            residual_connections=args.rnn_residual_connections, first_residual_layer=args.rnn_first_residual_layer,
            state_init=args.rnn_decoder_state_init, context_gating=args.rnn_context_gating,
            attention_type=args.rnn_attention_type, attention_num_hidden=args.rnn_attention_num_hidden,
            attention_use_prev_word=args.rnn_attention_use_prev_word,
            scale_dot_attention=args.rnn_scale_dot_attention,
            attention_coverage_type=args.rnn_attention_coverage_type,
            attention_coverage_max_fertility=args.rnn_attention_coverage_max_fertility,
            attention_coverage_num_hidden=args.rnn_attention_coverage_num_hidden,
            attention_in_upper_layers=args.rnn_attention_in_upper_layers,
            attention_mhdot_heads=args.rnn_attention_mhdot_heads, forget_bias=args.rnn_forget_bias,
            h2h_init=args.rnn_h2h_init, input_feeding=args.rnn_input_feeding,
            layer_normalization=args.layer_normalization, dropout_inputs=tv(args.rnn_dropout_inputs),
            dropout_states=tv(args.rnn_dropout_states), dropout_recurrent=tv(args.rnn_dropout_recurrent),
            hidden_dropout=args.rnn_decoder_hidden_dropout)
    elif args.decoder == C.DECODER_TRANSFORMER:
        transformer_config = decoder.TransformerDecoderConfig(
            model_size=args.transformer_model_size, attention_heads=args.transformer_attention_heads,
            feed_forward_num_hidden=args.transformer_feed_forward_num_hidden,
            activation_type=args.transformer_activation_type, num_layers=num_layers,
            positional_embedding=args.transformer_positional_embedding_type,
            preprocess=args.transformer_preprocess, postprocess=args.transformer_postprocess,
            dropout_attention=args.transformer_dropout_attention, dropout_act=args.transformer_dropout_act,
            dropout_prepost=args.transformer_dropout_prepost, max_seq_len=max_seq_len)
    else:
        cnn_decoder_config = decoder.ConvolutionalDecoderConfig(
            num_hidden=args.cnn_num_hidden, kernel_width=tv(args.cnn_kernel_width), num_layers=num_layers,
            activation_type=args.cnn_activation_type, positional_embedding=args.cnn_positional_embedding_type,
            project_qkv=args.cnn_project_qkv, hidden_dropout=args.cnn_hidden_dropout, max_seq_len=max_seq_len)
    return model.ModelConfig(encoder=encoder_config, vocab_size=vocab_size, decoder=args.decoder, rnn=rnn_config,
                             transformer=transformer_config, cnn=cnn_decoder_config, num_embed=tv(args.num_embed),
                             embed_dropout=tv(args.embed_dropout), weight_tying=args.weight_tying,
                             weight_normalization=args.weight_normalization, max_output_length=max_output_length,
                             cnn_config=cnn_config)


def create_data_config(args: argparse.Namespace, num_devices: int) -> data_io.DataConfig:
    return data_io.DataConfig(batch_size=args.batch_size, batch_type=args.batch_type, bucket_width=args.bucket_width,
                              bucketing=not args.no_bucketing, max_seq_len=arguments.target_value(args.max_seq_len),
                              fill_up=args.fill_up, seed=args.seed, batch_multiple_of=num_devices)


def create_training_config(args: argparse.Namespace, vocab_size: int) -> Any:
    """The `training.TrainingConfig` the flags describe (``ValueError`` for inconsistent flags)."""
    from . import loss, lr_scheduler, optimizers, training
    clip_type = args.gradient_clipping_type if args.gradient_clipping_threshold > 0 else optimizers.CLIP_NONE
    return training.TrainingConfig(
        output_folder=args.output,
        cross_entropy=loss.LossConfig(vocab_size=vocab_size, label_smoothing=args.label_smoothing,
                                      normalization=args.loss_normalization_type),
        loss=args.loss, self_critical_samples=args.self_critical_samples,
        self_critical_baseline=args.self_critical_baseline,
        optimizer=optimizers.OptimizerConfig(name=args.optimizer, learning_rate=args.initial_learning_rate,
                                             weight_decay=args.weight_decay, momentum=args.momentum,
                                             clip_type=clip_type, clip_threshold=args.gradient_clipping_threshold,
                                             params=dict(args.optimizer_params or {})),
        scheduler=lr_scheduler.SchedulerConfig(
            type=args.learning_rate_scheduler_type, base_rate=args.initial_learning_rate,
            warmup=args.learning_rate_warmup, reduce_factor=args.learning_rate_reduce_factor,
            reduce_num_not_improved=args.learning_rate_reduce_num_not_improved,
            schedule=lr_scheduler.optional_schedule(args.learning_rate_schedule),
            half_life=args.learning_rate_half_life, checkpoint_interval=args.checkpoint_interval),
        checkpoint_interval=args.checkpoint_interval, update_interval=args.update_interval,
        max_updates=args.max_updates, max_samples=args.max_samples, max_num_epochs=args.max_num_epochs,
        max_seconds=args.max_seconds, min_updates=args.min_updates, min_samples=args.min_samples,
        min_num_epochs=args.min_num_epochs, max_num_checkpoint_not_improved=args.max_num_checkpoint_not_improved,
        optimized_metric=args.optimized_metric, metrics=list(args.metrics), keep_last_params=args.keep_last_params,
        keep_initializations=args.keep_initializations, lr_decay_param_reset=args.learning_rate_decay_param_reset,
        lr_decay_opt_states_reset=args.learning_rate_decay_optimizer_states_reset, seed=args.seed,
        kvstore=args.kvstore)


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------

def check_arguments(args: argparse.Namespace) -> None:
    """Inconsistent option combinations, as one-line errors."""
    if args.optimized_metric in (C.METRIC_BLEU, C.METRIC_CHRF):
        utils.check_condition(args.decode_and_evaluate != 0, "--optimized-metric %s needs --decode-and-evaluate N "
                                                             "(N > 0, or -1 for all)" % args.optimized_metric)
    utils.check_condition(args.loss != C.LOSS_SELF_CRITICAL or args.params is not None,
                          "--loss self-critical continues from a cross-entropy model: give its parameters with "
                          "--params XE_FOLDER/params.best")
    if args.learning_rate_scheduler_type == "fixed-step":
        utils.check_condition(bool(args.learning_rate_schedule), "--learning-rate-scheduler-type fixed-step needs "
                                                                 "--learning-rate-schedule RATE:UPDATES,...")
    if args.learning_rate_schedule:
        from . import lr_scheduler
        try:
            lr_scheduler.parse_schedule(args.learning_rate_schedule)
        except ValueError as e:
            raise utils.CaptioningError(str(e)) from None
    if args.weight_tying:
        size = {C.DECODER_RNN: args.rnn_num_hidden, C.DECODER_TRANSFORMER: args.transformer_model_size,
                C.DECODER_CNN: args.cnn_num_hidden}[args.decoder]
        utils.check_condition(arguments.target_value(args.num_embed) == size,
                              "--weight-tying needs --num-embed (%d) equal to the decoder's output size (%d)"
                              % (arguments.target_value(args.num_embed), size))
    utils.check_condition(args.update_interval >= 1, "--update-interval must be >= 1")
    for name in ("source", "target", "validation_source", "validation_target"):
        path = getattr(args, name)
        utils.check_condition(os.path.isfile(path), "--%s %s: no such file" % (name.replace("_", "-"), path))
    if args.target_vocab is not None:
        utils.check_condition(os.path.isfile(args.target_vocab), "--target-vocab %s: no such file"
                              % args.target_vocab)


def differing_options(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Options (as ``--flag``) whose values differ between two runs, harmless ones left out."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    names = sorted((set(old) | set(new)) - HARMLESS_OPTIONS)
    return ["--%s (%r -> %r)" % (n.replace("_", "-"), old.get(n), new.get(n)) for n in names
            if plain(old.get(n)) != plain(new.get(n))]


def prepare_output_folder(args: argparse.Namespace) -> None:
    """Create the model folder, empty it (``--overwrite-output``), or check that it holds a run of the same
    command (resume). Raises `CaptioningError` for a different command or an unusable folder."""
    folder = args.output
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise utils.CaptioningError("--output %s: exists and is not a folder; choose another --output" % folder)
    if os.path.isdir(folder) and os.listdir(folder):
        if args.overwrite_output:
            logger.info("--overwrite-output: removing the contents of %s", folder)
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        else:
            args_path = os.path.join(folder, C.ARGS_NAME)
            utils.check_condition(os.path.isfile(args_path),
                                  "--output %s: the folder exists and is not a model folder (no %s); choose another "
                                  "--output or pass --overwrite-output to empty it" % (folder, C.ARGS_NAME))
            old = vars(arguments.load_args(args_path))
            new = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
            diff = differing_options(old, new)
            utils.check_condition(not diff, "--output %s holds a run of a different command (%s); run the same "
                                            "command to resume it, or pass --overwrite-output to start afresh"
                                  % (folder, "; ".join(diff)))
    check_writable(folder)


def check_writable(folder: str) -> None:
    """The model folder, or the nearest existing folder above it, must be a writable folder."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    utils.check_condition(os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK),
                          "--output %s: cannot write the model folder (%s is not a writable folder); choose a "
                          "writable --output" % (folder, path))


def create_output_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise utils.CaptioningError("--output %s: cannot write the model folder (%s); choose a writable --output"
                                    % (folder, e.strerror or e)) from None


def check_feature_files(store: Any, root: str, list_path: str) -> None:
    """Every distinct feature file of a lazily read list has the store's shape (read from the .npy headers, so
    a bad file is reported before training, not in the middle)."""
    from . import features
    expected = tuple(store.feature_shape)
    seen = set()
    for line, name in enumerate(store.names, 1):
        if name in seen:
            continue
        seen.add(name)
        path = os.path.join(root, name)
        try:
            shape, dtype, _ = features.read_npy_header(path)
        except (OSError, ValueError) as e:
            raise utils.CaptioningError("%s: feature file %s cannot be read (%s); re-run extract_features"
                                        % (utils.location(list_path, line), path, e)) from None
        utils.check_condition(tuple(shape) == expected,
                              "%s: feature file %s has shape %s but %s was expected (from the feature folder's "
                              "sidecar/first file); re-extract it" % (utils.location(list_path, line), path,
                                                                       tuple(shape), expected))


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------

def _main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    check_arguments(args)

    import mxnet as mx

    kv = None
    rank, num_workers = 0, 1
    if args.kvstore.startswith("dist"):
        kv = mx.kv.create(args.kvstore)
        rank, num_workers = kv.rank, kv.num_workers
        log.setup_main_logger(console=not args.quiet, level=args.loglevel, prefix="[rank %d] " % rank)
        logger.info("Distributed training: worker %d of %d (%s)", rank, num_workers, args.kvstore)

    try:
        _train(args, kv, rank, num_workers)
    except BaseException:
        if kv is not None:
            # a worker failing alone must exit now (not wait for the others at MXNet's exit barrier), so that the
            # launcher sees the failure and stops the job
            from .launch import skip_exit_barrier
            skip_exit_barrier(kv)
        raise


def _train(args: argparse.Namespace, kv: Any, rank: int, num_workers: int) -> None:
    """Everything after the command line is parsed and the (distributed) kvstore exists."""
    from . import features, training

    folder = args.output
    state_file = os.path.join(folder, C.TRAINING_STATE_DIRNAME, training.STATE_FILE)
    # the log file is opened once the model folder exists (after the inputs are checked); until then log records
    # are kept in memory and written there first
    early_log = logging.handlers.MemoryHandler(capacity=100000, flushLevel=logging.CRITICAL + 1)
    early_log.setFormatter(logging.Formatter(log.FORMAT, log.DATE_FORMAT))
    logging.getLogger().addHandler(early_log)
    if not args.dry_run:
        if rank == 0:
            prepare_output_folder(args)
            if os.path.isdir(folder):
                training.recover_interrupted_state_swap(folder)
        if kv is not None:
            kv._barrier()
        resume = os.path.isfile(state_file)
        if kv is not None:
            kv._barrier()
        if resume:
            logger.info("%s holds an interrupted or finished run of this command: continuing it", folder)
    else:
        resume = False

    training.seed_everything(args.seed)
    contexts = utils.get_context(args.use_cpu, args.device_ids)
    logger.info("Devices: %s", ", ".join(str(c) for c in contexts))

    # vocabulary
    vocab_path = os.path.join(folder, C.VOCAB_TRG_NAME)
    if resume:
        vocab = vocab_module.load_vocab(vocab_path)
    elif args.target_vocab is not None:
        vocab = vocab_module.load_vocab(args.target_vocab)
        logger.info("Vocabulary of %d types from %s", len(vocab), args.target_vocab)
    else:
        data_io.read_parallel(args.source, args.target)   # errors about the files before anything else
        vocab = vocab_module.build_vocab(utils.read_lines(args.target),
                                         num_words=arguments.target_value(args.num_words),
                                         min_count=arguments.target_value(args.word_min_count),
                                         pad_to_multiple_of=args.pad_vocab_to_multiple_of)

    # data
    max_seq_len = arguments.target_value(args.max_seq_len)
    train_data = data_io.load_parallel(args.source, args.target, vocab, max_seq_len, "training")
    val_data = data_io.load_parallel(args.validation_source, args.validation_target, vocab, max_seq_len,
                                     "validation")
    mode = arguments.feature_store_mode(args)
    val_root = args.validation_source_root or args.source_root
    train_store, train_index = data_io.open_store(args.source_root, args.source, train_data, mode)
    val_store, val_index = data_io.open_store(val_root, args.validation_source, val_data, mode)
    if mode == C.FEATURE_STORE_LAZY:
        check_feature_files(train_store, args.source_root, args.source)
        check_feature_files(val_store, val_root, args.validation_source)
    utils.check_condition(tuple(val_store.feature_shape) == tuple(train_store.feature_shape),
                          "%s: validation features have shape %s but the training features %s; extract both with "
                          "the same CNN layer and image size" % (args.validation_source,
                                                                 tuple(val_store.feature_shape),
                                                                 tuple(train_store.feature_shape)))
    data_config = create_data_config(args, len(contexts))
    train_iter = data_io.BatchIterator(train_data, train_store, train_index, data_config, shuffle=True, rank=rank,
                                       num_workers=num_workers)
    val_iter = data_io.BatchIterator(val_data, val_store, val_index, data_config, shuffle=False)

    # model
    from . import model as model_module
    cnn_config = None
    try:
        cnn_config = features.read_feature_sizes(args.source_root).cnn
    except utils.CaptioningError:
        logger.info("%s has no feature sidecar: the model will not know the CNN of its features",
                    args.source_root)
    # the captioner's default bound, stored in the model config (--max-output-length is decoding's during training)
    max_output_length = default_max_output_length(data_io.longest_caption(train_data), max_seq_len)
    model_config = create_model_config(args, train_store.feature_shape, len(vocab), max_output_length, cnn_config)
    training_config = create_training_config(args, len(vocab))
    logger.info("Training %s decoder, %d layer(s); batches of %d %s; %d training batches per epoch%s",
                args.decoder, arguments.target_value(args.num_layers), args.batch_size,
                "captions" if args.batch_type == C.BATCH_TYPE_SENTENCE else "target words",
                train_iter.batches_per_epoch, " (this worker)" if num_workers > 1 else "")
    model = model_module.CaptionModel(model_config)
    # static_alloc keeps a separate set of buffers for every caption length (GBs with buckets) and was not faster
    model.hybridize(static_alloc=False)
    training.initialize_model(model, contexts, train_store.feature_shape, weight_init=args.weight_init,
                              scale=args.weight_init_scale, factor_type=args.weight_init_xavier_factor_type,
                              rand_type=args.weight_init_xavier_rand_type, embed_init=args.embed_weight_init,
                              num_embed=arguments.target_value(args.num_embed),
                              params_file=None if resume else args.params,
                              allow_missing=args.allow_missing_params, ignore_extra=args.ignore_extra_params)
    if args.dry_run:
        logger.info("--dry-run: data and model built; stopping before training")
        return

    logging.getLogger().removeHandler(early_log)
    if rank == 0:
        create_output_folder(folder)
        file_handler = logging.FileHandler(os.path.join(folder, C.LOG_NAME), encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(log.FORMAT, log.DATE_FORMAT))
        early_log.setTarget(file_handler)
        early_log.flush()
        logging.getLogger().addHandler(file_handler)
    early_log.close()
    if rank == 0 and not resume:
        arguments.save_args(args, os.path.join(folder, C.ARGS_NAME))
        model_module.save_model_config(model_config, folder)
        vocab_module.save_vocab(vocab, vocab_path)

    decoder = None
    if args.decode_and_evaluate != 0 and rank == 0:
        decoder = create_checkpoint_decoder(args, val_root, vocab, max_output_length, contexts[0])
    from . import objective
    train_objective = objective.create_objective(training_config, data_io.references_by_image(train_data), vocab,
                                                 max_output_length)
    trainer = training.Trainer(training_config, model, train_iter, val_iter, contexts, checkpoint_decoder=decoder,
                               vocab=vocab, kvstore=kv, objective=train_objective)
    trainer.fit(resume=resume)


def create_checkpoint_decoder(args: argparse.Namespace, val_root: str, vocab: Dict[str, int],
                              max_output_length: int, ctx: Any) -> Optional[Any]:
    """`checkpoint_decoder.CheckpointDecoder` over the validation list and its captions."""
    try:
        from . import checkpoint_decoder
    except ImportError as e:
        logger.warning("--decode-and-evaluate: checkpoint decoding is not available (%s); skipped", e)
        return None
    from . import features
    names = [n.strip() for n in utils.read_lines(args.validation_source)]
    references = [" ".join(line.split()) for line in utils.read_lines(args.validation_target)]
    store = features.open_feature_store(val_root, names, mode=arguments.feature_store_mode(args),
                                        list_path=args.validation_source)
    sample = len(names) if args.decode_and_evaluate < 0 else min(args.decode_and_evaluate, len(names))
    return checkpoint_decoder.CheckpointDecoder(store, references, sample_size=sample, seed=args.seed,
                                                beam_size=args.decode_and_evaluate_beam_size,
                                                batch_size=min(64, max(1, args.batch_size)),
                                                max_output_length=args.max_output_length or max_output_length,
                                                ctx=ctx)


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
