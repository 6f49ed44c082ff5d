"""``python -m captioning.train``: train a captioning model on pre-extracted image features.

Parses and checks the options, maps them onto the library's configs and builders (`vocab.build_vocab`,
`data_io.create_data_iters`, `model.CaptionModel` + `model.initialize_model`, `training.create_trainer`: the same
calls a Python user makes, see ``docs/architecture.md``) and runs `training.Trainer.fit`. Everything that can be
checked (data, model, optimizer) is checked before the model folder is created or changed. The model folder
(``--output``) receives ``args.yaml``, ``config``, ``version``, ``vocab.trg.0.json``, ``params.*``, ``metrics``,
``log``, ``training_state/`` and ``.lock`` (one training per folder). Running the same command again on that
folder resumes an interrupted run, or extends a finished one whose limits were raised (`ARGS_MAY_DIFFER`); a
different command is refused (``--overwrite-output`` starts afresh).
"""
import argparse
import logging
import logging.handlers
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover - type hints only; the modules are imported where they are used
    import mxnet as mx

    from .checkpoint_decoder import CheckpointDecoder
    from .cnn import CNNConfig
    from .features import FeatureStore
    from .finetune import FineTuneConfig
    from .model import ModelConfig
    from .process_group import ProcessGroup
    from .training import Trainer, TrainingConfig

from . import allocator, arguments
from . import constants as C
from . import data_io
from . import log
from . import lr_scheduler
from . import model_folder
from . import utils
from . import vocab as vocab_module

logger = logging.getLogger(__name__)

# options that do not change what training computes: they may differ when a run is resumed
HARMLESS_OPTIONS = {"quiet", "loglevel", "config", "overwrite_output", "dry_run", "decode_and_evaluate_use_cpu",
                    "decode_and_evaluate_device_id"}
# options that may change when a run is continued: raising a limit extends a finished run (Sockeye's ARGS_MAY_DIFFER)
ARGS_MAY_DIFFER = {"max_updates", "max_seconds", "max_num_epochs", "keep_last_params"}
# images captioned at a time by --decode-and-evaluate (the training batch size if smaller): each brings
# --decode-and-evaluate-beam-size rows, so this bounds the memory of the validation search beside the training
CHECKPOINT_DECODER_MAX_BATCH = 64


def build_parser() -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.train",
                                            description="Train an image-captioning model on pre-extracted "
                                                        "image features.")
    from .objective import SelfCriticalConfig
    from .training import TrainingConfig
    arguments.add_train_cli_args(parser, TrainingConfig, SelfCriticalConfig)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# configs from arguments
# ---------------------------------------------------------------------------------------------------------------

def max_output_length_from_captions(longest_caption: int, max_seq_len: int) -> int:
    """Output length bound from the training captions: the longest caption + </s> + a 20% margin (at least 2),
    capped by --max-seq-len."""
    return min(max_seq_len, longest_caption + 1 + max(2, longest_caption // 5))


def create_model_config(args: argparse.Namespace, feature_shape: Sequence[int], vocab_size: int,
                        max_output_length: int, image_cnn: Optional["CNNConfig"] = None,
                        fine_tune: Optional["FineTuneConfig"] = None) -> "ModelConfig":
    """The `model.ModelConfig` the flags describe (``image_cnn``: the features' `cnn.CNNConfig`, if known;
    ``feature_shape``: what the encoder reads, the output of the ``fine_tune`` layers when there are some)."""
    from . import decoder, encoder, features, model
    tv = arguments.target_value
    num_layers = tv(args.num_layers)
    max_seq_len = tv(args.max_seq_len)
    encoder_config = encoder.ImageEncoderConfig(
        feature_shape=features.as_shape(int(d) for d in feature_shape), num_hidden=args.image_encoder_num_hidden,
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
                             image_cnn=image_cnn, fine_tune=fine_tune)


def create_fine_tune_config(args: argparse.Namespace, feature_shape: Sequence[int],
                            image_cnn: Optional["CNNConfig"]) -> Optional["FineTuneConfig"]:
    """The `finetune.FineTuneConfig` of ``--image-encoder-fine-tune-from`` (None without it). The CNN must be
    the one the features came from at that layer, as their folder's sidecar records it."""
    from . import finetune
    from .cnn import CNNConfig, strip_output_suffix
    given = [flag for flag, value in (("--image-encoder-model-path", args.image_encoder_model_path),
                                      ("--image-encoder-layer", args.image_encoder_layer)) if value is not None]
    if args.image_encoder_fine_tune_from is None:
        utils.check_condition(not given, "%s: only used with --image-encoder-fine-tune-from" % " and ".join(given))
        return None
    utils.check_condition(args.image_encoder_layer is not None, "--image-encoder-fine-tune-from: give "
                                                                "--image-encoder-layer (the last CNN layer trained)")
    start = strip_output_suffix(args.image_encoder_fine_tune_from)
    sidecar = os.path.join(args.source_root, C.IMAGE_FEATURE_SIZES_JSON)
    if image_cnn is not None:
        utils.check_condition(strip_output_suffix(image_cnn.layer) == start,
                              "%s: the training features come from layer %r, not --image-encoder-fine-tune-from %r; "
                              "extract them at %r first" % (sidecar, image_cnn.layer, start, start))
    model_path = args.image_encoder_model_path
    if model_path is None:
        utils.check_condition(image_cnn is not None, "--image-encoder-fine-tune-from: give "
                                                     "--image-encoder-model-path (%s does not record the CNN)" % sidecar)
        assert image_cnn is not None
        model_path = image_cnn.model_path if os.path.isabs(image_cnn.model_path) else \
            os.path.join(args.source_root, image_cnn.model_path)
    epoch = args.image_encoder_model_epoch
    if epoch is None:
        epoch = image_cnn.epoch if image_cnn is not None else 0
    cnn = CNNConfig(model_path=os.path.abspath(model_path), layer=strip_output_suffix(args.image_encoder_layer),
                    epoch=epoch, image_size=image_cnn.image_size if image_cnn is not None
                    else C.DEFAULT_SOURCE_IMAGE_SIZE)
    if image_cnn is not None:
        finetune.check_same_cnn(cnn, image_cnn, args.source_root, sidecar)
    config = finetune.create_config(cnn, start, args.image_encoder_learning_rate_multiplier,
                                    args.image_encoder_fine_tune_after)
    utils.check_condition(tuple(config.input_shape) == tuple(int(d) for d in feature_shape),
                          "%s: the training features have shape %s but layer %r of %s gives %s"
                          % (args.source_root, tuple(feature_shape), start, cnn.model_path, config.input_shape))
    return config


def create_data_config(args: argparse.Namespace, num_devices: int) -> data_io.DataConfig:
    return data_io.DataConfig(batch_size=args.batch_size, batch_type=args.batch_type, bucket_width=args.bucket_width,
                              bucketing=not args.no_bucketing, max_seq_len=arguments.target_value(args.max_seq_len),
                              fill_up=args.fill_up, seed=args.seed, batch_multiple_of=num_devices)


def create_training_config(args: argparse.Namespace, vocab_size: int) -> "TrainingConfig":
    """The `training.TrainingConfig` the flags describe (``ValueError`` for inconsistent flags)."""
    from . import loss, objective, optimizers, training
    clip_type = args.gradient_clipping_type if args.gradient_clipping_threshold > 0 else optimizers.CLIP_NONE
    return training.TrainingConfig(
        output_folder=args.output,
        cross_entropy=loss.LossConfig(vocab_size=vocab_size, label_smoothing=args.label_smoothing,
                                      normalization=args.loss_normalization_type),
        loss=args.loss,
        self_critical=objective.SelfCriticalConfig(samples=args.self_critical_samples,
                                                   baseline=args.self_critical_baseline,
                                                   top_k=args.self_critical_top_k,
                                                   sample_dropout=args.self_critical_sample_dropout),
        optimizer=optimizers.OptimizerConfig(name=args.optimizer, learning_rate=args.initial_learning_rate,
                                             weight_decay=args.weight_decay, momentum=args.momentum,
                                             clip_type=clip_type, clip_threshold=args.gradient_clipping_threshold,
                                             params=dict(args.optimizer_params or {})),
        scheduler=create_scheduler_config(args),
        checkpoint_interval=args.checkpoint_interval, update_interval=args.update_interval,
        max_updates=args.max_updates, max_samples=args.max_samples, max_num_epochs=args.max_num_epochs,
        max_seconds=args.max_seconds, min_updates=args.min_updates, min_samples=args.min_samples,
        min_num_epochs=args.min_num_epochs, max_num_checkpoint_not_improved=args.max_num_checkpoint_not_improved,
        optimized_metric=args.optimized_metric, metrics=list(args.metrics), keep_last_params=args.keep_last_params,
        keep_initializations=args.keep_initializations, lr_decay_param_reset=args.learning_rate_decay_param_reset,
        lr_decay_opt_states_reset=args.learning_rate_decay_optimizer_states_reset, seed=args.seed,
        kvstore=args.kvstore)


def create_scheduler_config(args: argparse.Namespace) -> lr_scheduler.SchedulerConfig:
    """The `lr_scheduler.SchedulerConfig` the flags describe (``ValueError`` for a malformed schedule)."""
    return lr_scheduler.SchedulerConfig(
        type=args.learning_rate_scheduler_type, base_rate=args.initial_learning_rate,
        warmup=args.learning_rate_warmup, reduce_factor=args.learning_rate_reduce_factor,
        reduce_num_not_improved=args.learning_rate_reduce_num_not_improved,
        schedule=lr_scheduler.optional_schedule(args.learning_rate_schedule),
        half_life=args.learning_rate_half_life, checkpoint_interval=args.checkpoint_interval)


def create_data_files(args: argparse.Namespace) -> data_io.DataFiles:
    return data_io.DataFiles(source_root=args.source_root, source=args.source, target=args.target,
                             validation_source=args.validation_source,
                             validation_targets=validation_targets(args),
                             validation_source_root=args.validation_source_root,
                             store_mode=arguments.feature_store_mode(args),
                             allow_absolute_paths=args.allow_absolute_paths)


def validation_targets(args: argparse.Namespace) -> List[str]:
    """``--validation-target`` as a list (args.yaml of older runs holds one string)."""
    value = args.validation_target
    return [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------

def check_arguments(args: argparse.Namespace) -> None:
    """Inconsistent option combinations, as one-line errors."""
    if args.optimized_metric in (C.METRIC_BLEU, C.METRIC_CHRF, C.METRIC_CIDER):
        utils.check_condition(args.decode_and_evaluate != 0, "--optimized-metric %s needs --decode-and-evaluate N "
                                                             "(N > 0, or -1 for all)" % args.optimized_metric)
    from . import objective
    objective.check_start(args.loss, args.params)
    if args.learning_rate_scheduler_type == "fixed-step":
        utils.check_condition(bool(args.learning_rate_schedule), "--learning-rate-scheduler-type fixed-step needs "
                                                                 "--learning-rate-schedule RATE:UPDATES,...")
    try:
        scheduler = create_scheduler_config(args)
    except ValueError as e:
        raise utils.CaptioningError(str(e)) from None
    lr_scheduler.check_kvstore(scheduler, args.kvstore)
    if args.processes > 1:
        utils.check_condition(not args.kvstore.startswith("dist"), "--processes trains on this machine: it does not "
                                                                   "combine with --kvstore %s" % args.kvstore)
        utils.check_condition(args.batch_type == C.BATCH_TYPE_SENTENCE and args.batch_size >= args.processes,
                              "--processes %d splits every batch's captions between the processes: it needs "
                              "--batch-type sentence and --batch-size of at least %d"
                              % (args.processes, args.processes))
    paths = [("--source", args.source), ("--target", args.target), ("--validation-source", args.validation_source)]
    paths += [("--validation-target", path) for path in validation_targets(args)]
    for flag, path in paths:
        utils.check_condition(os.path.isfile(path), "%s %s: no such file" % (flag, path))
    if args.target_vocab is not None:
        utils.check_condition(os.path.isfile(args.target_vocab), "--target-vocab %s: no such file"
                              % args.target_vocab)


def differing_options(old: Dict[str, Any], new: Dict[str, Any], ignore: Sequence[str] = ()) -> List[str]:
    """Options (as ``--flag``) whose values differ between two runs, harmless ones and ``ignore`` left out."""
    def plain(name: str, value: Any) -> Any:
        if name == "validation_target" and isinstance(value, str):
            return [value]
        if isinstance(value, (tuple, list)):
            return [plain("", v) for v in value]
        if isinstance(value, dict):
            return {k: plain("", v) for k, v in value.items()}
        return value
    names = sorted((set(old) | set(new)) - HARMLESS_OPTIONS - set(ignore))
    return ["--%s (%r -> %r)" % (n.replace("_", "-"), old.get(n), new.get(n)) for n in names
            if plain(n, old.get(n)) != plain(n, new.get(n))]


def read_args(path: str) -> Dict[str, Any]:
    """A model folder's args.yaml as a dict (``safe_load``); a one-line error naming the file if it is damaged."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise utils.CaptioningError("%s: cannot read (%s); restore it, or pass --overwrite-output to start afresh"
                                    % (path, cause)) from None
    utils.check_condition(isinstance(values, dict) and all(isinstance(k, str) for k in values),
                          "%s: cannot read (not a mapping of option names to values); restore it, or pass "
                          "--overwrite-output to start afresh" % path)
    return values


def check_same_command(args: argparse.Namespace) -> Tuple[bool, List[str]]:
    """For an existing model folder: is there a run to continue (training_state/), and which continuable options
    (`ARGS_MAY_DIFFER`) changed. Raises `CaptioningError` for a folder that is no model folder or holds a run of
    a different command."""
    folder = model_folder.ModelFolder(args.output)
    args_path = os.path.join(args.output, C.ARGS_NAME)
    if not os.path.isfile(args_path):
        check_model_folder(folder)   # a folder of other files: kept, and --overwrite-output is not suggested
        raise utils.CaptioningError("--output %s: the folder holds the start of a model folder without its %s (a "
                                    "run that ended before it began); pass --overwrite-output to start afresh"
                                    % (folder.path, C.ARGS_NAME))
    old = read_args(args_path)
    new = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    parser = build_parser()     # an option newer than the folder's args.yaml counts as its default there
    old.update({k: parser.get_default(k) for k in new if k not in old})
    diff = differing_options(old, new, ignore=sorted(ARGS_MAY_DIFFER))
    utils.check_condition(not diff, "--output %s holds a run of a different command (%s); run the same command to "
                                    "resume it, or pass --overwrite-output to start afresh"
                          % (folder.path, "; ".join(diff)))
    from . import training_state
    store = training_state.TrainingStateStore(args.output)
    store.recover()
    return store.exists(), differing_options(old, new)


def check_model_folder(folder: model_folder.ModelFolder) -> None:
    """Only a model folder of this toolkit holding nothing else may be emptied (--overwrite-output) or started in:
    the files of any other folder are kept untouched."""
    foreign = folder.foreign()
    shown = ", ".join(foreign[:5]) + (" and %d more" % (len(foreign) - 5) if len(foreign) > 5 else "")
    what = "holds files training did not write (%s)" % shown if foreign else \
        "has no %s (a folder train did not make)" % C.ARGS_NAME
    utils.check_condition(folder.is_model_folder(),
                          "--output %s: the folder %s; nothing in it is removed or replaced: move those files "
                          "away or choose a new or empty --output" % (folder.path, what))


def input_paths(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """(flag, path) of every file and folder a training run reads."""
    paths: List[Tuple[str, Optional[str]]] = [
        ("--source-root", args.source_root), ("--source", args.source), ("--target", args.target),
        ("--validation-source-root", args.validation_source_root), ("--validation-source", args.validation_source),
        ("--params", args.params), ("--target-vocab", args.target_vocab), ("--config", args.config)]
    targets = args.validation_target if isinstance(args.validation_target, (list, tuple)) else \
        [args.validation_target]
    paths.extend(("--validation-target", path) for path in targets)
    return paths


def check_output_keeps_inputs(args: argparse.Namespace) -> None:
    """``--output`` is never an input, nor a folder holding one, when it is to be emptied or written."""
    for flag, path in input_paths(args):
        utils.check_condition(path is None or not utils.same_file(args.output, path),
                              "--output %s is the same as %s %s; it is kept: choose another --output"
                              % (args.output, flag, path))
    inside = utils.inputs_within(args.output, input_paths(args))
    utils.check_condition(not (inside and args.overwrite_output),
                          "--output %s holds inputs of this run (%s); --overwrite-output would delete them, so the "
                          "folder is kept: choose another --output"
                          % (args.output, ", ".join("%s %s" % pair for pair in inside)))


def plan_output_folder(args: argparse.Namespace) -> None:
    """Before anything is built: may ``--output`` be used? (Nothing is written but the recovery of an interrupted
    training_state swap.)"""
    folder = model_folder.ModelFolder(args.output)
    folder.check_writable()
    check_output_keeps_inputs(args)
    if folder.contents():
        if args.overwrite_output:
            check_model_folder(folder)
        else:   # resuming writes only training's files: a model folder may hold the user's files too
            check_same_command(args)


def take_output_folder(args: argparse.Namespace, resume: bool) -> model_folder.FolderLock:
    """Create (or empty, with ``--overwrite-output``) the model folder and lock it; re-check under the lock what
    `plan_output_folder` found. Returns the held lock."""
    folder = model_folder.ModelFolder(args.output)
    folder.create()
    lock = model_folder.FolderLock(args.output)
    lock.acquire()
    try:
        if args.overwrite_output and folder.contents():
            check_output_keeps_inputs(args)
            check_model_folder(folder)
            logger.info("--overwrite-output: removing the contents of %s", folder.path)
            folder.empty()
        elif folder.contents():
            now_resume, changed = check_same_command(args)
            utils.check_condition(now_resume == resume, "--output %s changed while this training started; run "
                                                        "the command again" % folder.path)
            if changed:
                logger.info("Continuing with changed limits: %s", "; ".join(changed))
                arguments.save_args(args, os.path.join(args.output, C.ARGS_NAME))
        folder.check_writable()
        utils.probe_folder(args.output, "--output %s" % args.output)
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------

def _main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    args = build_parser().parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    check_arguments(args)
    if args.processes > 1:
        from . import process_group
        from .search_processes import threads_per_process
        threads = threads_per_process(args.processes)
        logger.info("Training in %d processes of %d OpenMP thread(s) each", args.processes, threads)
        return process_group.run(_process_main, args, args.processes, threads)

    import mxnet as mx

    kv = None
    if args.kvstore.startswith("dist"):
        kv = mx.kv.create(args.kvstore)
        log.setup_main_logger(console=not args.quiet, level=args.loglevel, prefix="[rank %d] " % kv.rank)
        logger.info("Distributed training: worker %d of %d (%s)", kv.rank, kv.num_workers, args.kvstore)
    try:
        _train(args, kv)
    except BaseException:
        if kv is not None:
            # a worker failing alone must exit now (not wait for the others at MXNet's exit barrier), so that the
            # launcher sees the failure and stops the job
            from .launch import skip_exit_barrier
            skip_exit_barrier(kv)
        raise
    return None


def _process_main(args: argparse.Namespace, group: "ProcessGroup", rank: int) -> None:
    """Training process ``rank`` of ``--processes``: the same training as one process, on its part of every
    batch, through the processes' kvstore. Only process 0 logs below warnings on the console."""
    from . import process_group
    log.setup_main_logger(console=not args.quiet, level=args.loglevel if rank == 0 else "WARNING",
                          prefix="[process %d] " % rank)
    _train(args, process_group.create_kvstore(group, rank))


def _train(args: argparse.Namespace, kv: Optional["mx.kvstore.KVStoreBase"]) -> None:
    """Everything after the command line is parsed and the (distributed) kvstore exists: build and check
    everything, then take the model folder and train."""
    from . import training_state
    rank = kv.rank if kv is not None else 0
    resume = False
    if not args.dry_run:
        if rank == 0:
            plan_output_folder(args)
        if kv is not None:    # the other workers look at the folder once rank 0 has checked (and recovered) it
            kv._barrier()
        resume = training_state.TrainingStateStore(args.output).exists() and not args.overwrite_output
        if kv is not None:
            kv._barrier()
        if resume:
            logger.info("%s holds an interrupted or finished run of this command: continuing it", args.output)
    # the log file is opened once the model folder is ours; until then log records are kept in memory
    early_log = logging.handlers.MemoryHandler(capacity=100000, flushLevel=logging.CRITICAL + 1)
    early_log.setFormatter(logging.Formatter(log.FORMAT, log.DATE_FORMAT))
    logging.getLogger().addHandler(early_log)
    try:
        built = build_training(args, kv, resume)
    finally:
        logging.getLogger().removeHandler(early_log)
    if args.dry_run:
        early_log.close()
        logger.info("--dry-run: data and model built; stopping before training")
        return
    lock = take_output_folder(args, resume) if rank == 0 else None
    try:
        if rank == 0:
            _open_log_file(args.output, early_log)
            if not resume:
                save_setup(args, built)
        early_log.close()
        if kv is not None:
            kv._barrier()
        built.trainer.fit(resume=resume)
    finally:
        if lock is not None:
            lock.release()


def _open_log_file(folder: str, early_log: logging.handlers.MemoryHandler) -> None:
    file_handler = logging.FileHandler(os.path.join(folder, C.LOG_NAME), encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(log.FORMAT, log.DATE_FORMAT))
    early_log.setTarget(file_handler)
    early_log.flush()
    logging.getLogger().addHandler(file_handler)


class BuiltTraining:
    """What `build_training` made: the vocabulary, data, configs, model and trainer."""

    def __init__(self, **parts: Any) -> None:
        self.vocab: Dict[str, int] = parts["vocab"]
        self.data: data_io.TrainingData = parts["data"]
        self.model_config: "ModelConfig" = parts["model_config"]
        self.trainer: "Trainer" = parts["trainer"]
        self.contexts: List["mx.Context"] = parts["contexts"]
        self.max_output_length: int = parts["max_output_length"]


def build_training(args: argparse.Namespace, kv: Optional["mx.kvstore.KVStore"], resume: bool) -> BuiltTraining:
    """Vocabulary, data, model and trainer (optimizer included) from the flags; nothing is written."""
    from . import model as model_module
    from . import training
    rank, num_workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    # --processes: every process reads every batch and trains on its part of the rows; ps-lite workers: each
    # reads its own shard of the batches
    batch_part = (rank, num_workers) if args.processes > 1 else (0, 1)
    shard = (0, 1) if args.processes > 1 else (rank, num_workers)
    training.seed_everything(args.seed)
    contexts = utils.get_context(args.use_cpu, args.device_ids)
    logger.info("Devices: %s; memory allocator: %s", ", ".join(str(c) for c in contexts), allocator.in_use())
    utils.check_condition(args.processes == 1 or all(c.device_type == "cpu" for c in contexts),
                          "--processes is for training on CPUs; for several GPUs use --device-ids")
    vocab = create_vocab(args, resume)
    data = data_io.create_data_iters(create_data_files(args), vocab, create_data_config(args, len(contexts)),
                                     rank=shard[0], num_workers=shard[1])
    # the captioner's default bound, stored in the model config (--max-output-length is decoding's during training)
    max_output_length = max_output_length_from_captions(data_io.longest_caption(data.train_data),
                                                        arguments.target_value(args.max_seq_len))
    image_cnn = recorded_image_cnn(args.source_root)
    fine_tune = create_fine_tune_config(args, data.feature_shape, image_cnn)
    model_config = create_model_config(args, fine_tune.output_shape if fine_tune is not None else data.feature_shape,
                                       len(vocab), max_output_length, image_cnn, fine_tune)
    logger.info("Training %s decoder, %d layer(s); batches of %d %s; %d training batches per epoch%s",
                args.decoder, arguments.target_value(args.num_layers), args.batch_size,
                "captions" if args.batch_type == C.BATCH_TYPE_SENTENCE else "target words",
                data.train_iter.batches_per_epoch, " (this worker)" if shard[1] > 1 else "")
    model = model_module.CaptionModel(model_config)
    # static_alloc keeps a separate set of buffers for every caption length (GBs with buckets) and was not faster
    model.hybridize(static_alloc=False)
    model_module.initialize_model(model, contexts, data.feature_shape, weight_init=args.weight_init,
                                  scale=args.weight_init_scale, factor_type=args.weight_init_xavier_factor_type,
                                  rand_type=args.weight_init_xavier_rand_type, embed_init=args.embed_weight_init,
                                  num_embed=arguments.target_value(args.num_embed),
                                  params_file=None if resume else args.params,
                                  allow_missing=args.allow_missing_params, ignore_extra=args.ignore_extra_params)
    decoder = create_checkpoint_decoder(args, max_output_length, contexts[0], data.val_iter.store) if rank == 0 \
        else None
    trainer = training.create_trainer(create_training_config(args, len(vocab)), model, data, contexts, vocab,
                                      max_output_length, checkpoint_decoder=decoder, kvstore=kv,
                                      batch_part=batch_part, initial_params=args.params)
    return BuiltTraining(vocab=vocab, data=data, model_config=model_config, trainer=trainer, contexts=contexts,
                         max_output_length=max_output_length)


def create_vocab(args: argparse.Namespace, resume: bool) -> Dict[str, int]:
    """The run's vocabulary (resume), that of the ``--params`` model (its folder's vocabulary file; a
    --target-vocab must equal it), --target-vocab's, or one built from --target."""
    if resume:
        return vocab_module.load_vocab(os.path.join(args.output, C.VOCAB_TRG_NAME))
    params_vocab = vocab_module.vocab_beside(args.params) if args.params is not None else None
    if params_vocab is not None:
        vocab = vocab_module.load_vocab(params_vocab)
        if args.target_vocab is not None:
            utils.check_condition(vocab_module.load_vocab(args.target_vocab) == vocab,
                                  "--target-vocab %s differs from %s, the vocabulary of the --params model (its "
                                  "word ids would be scrambled); leave --target-vocab out to continue with the "
                                  "model's" % (args.target_vocab, params_vocab))
        logger.info("Vocabulary of %d types from %s (the --params model's)", len(vocab), params_vocab)
        _log_unknown_words(args.target, vocab)
        return vocab
    if args.target_vocab is not None:
        vocab = vocab_module.load_vocab(args.target_vocab)
        logger.info("Vocabulary of %d types from %s", len(vocab), args.target_vocab)
        _log_unknown_words(args.target, vocab)
        return vocab
    if args.params is not None:
        logger.warning("--params %s has no %s beside it: the vocabulary is built from --target, and the parameters' "
                       "word ids may not match it; give the model's vocabulary with --target-vocab", args.params,
                       C.VOCAB_TRG_NAME)
    data_io.read_parallel(args.source, args.target)   # errors about the files before anything else
    return vocab_module.build_vocab(utils.read_lines(args.target), num_words=arguments.target_value(args.num_words),
                                    min_count=arguments.target_value(args.word_min_count),
                                    pad_to_multiple_of=args.pad_vocab_to_multiple_of)


def _log_unknown_words(captions: str, vocab: Dict[str, int]) -> None:
    """Log how many words of the training captions a given vocabulary lacks (they become <unk>)."""
    tokens, types = vocab_module.count_unknown(utils.read_lines(captions), vocab)
    if tokens:
        logger.info("%s: %d words (%d distinct) are not in the vocabulary: they become %s", captions, tokens, types,
                    C.UNK_SYMBOL)


def recorded_image_cnn(source_root: str) -> Optional["CNNConfig"]:
    """The `cnn.CNNConfig` recorded in the training feature folder's sidecar, or None."""
    from . import features
    from .cnn import CNNConfig
    try:
        recorded = features.read_feature_sizes(source_root).cnn
        return CNNConfig.from_dict(recorded) if recorded else None
    except (utils.CaptioningError, ValueError, TypeError) as e:
        logger.info("%s: no usable feature sidecar (%s): the model will not know the CNN of its features",
                    source_root, e)
        return None


def save_setup(args: argparse.Namespace, built: BuiltTraining) -> None:
    """args.yaml, config, version and the vocabulary of a new run."""
    arguments.save_args(args, os.path.join(args.output, C.ARGS_NAME))
    model_folder.ModelFolder(args.output).write_setup(built.model_config, built.vocab)


def create_checkpoint_decoder(args: argparse.Namespace, max_output_length: int, ctx: "mx.Context",
                              store: Optional["FeatureStore"] = None) -> Optional["CheckpointDecoder"]:
    """`checkpoint_decoder.CheckpointDecoder` over the validation images and all their references (None with
    ``--decode-and-evaluate 0``); ``store``: the validation iterator's store over every line of
    ``--validation-source`` (so the features are held once), else the decoder opens its own."""
    if args.decode_and_evaluate == 0:
        return None
    from . import checkpoint_decoder
    names = utils.read_lines(args.validation_source)
    sample = len(names) if args.decode_and_evaluate < 0 else min(args.decode_and_evaluate, len(names))
    return checkpoint_decoder.CheckpointDecoder.from_files(
        args.validation_source_root or args.source_root, args.validation_source, validation_targets(args),
        arguments.feature_store_mode(args), sample_size=sample, seed=args.seed,
        beam_size=args.decode_and_evaluate_beam_size, batch_size=min(CHECKPOINT_DECODER_MAX_BATCH, max(1, args.batch_size)),
        max_output_length=args.max_output_length or max_output_length, ctx=ctx,
        allow_absolute=args.allow_absolute_paths, store=store)


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
