"""CLI: extract CNN features of a list of images into a feature folder.

    python -m captioning.extract_features --image-root IMGS --input train.images --output-root FEATS \\
        --output train.features --image-encoder-model-path MODELS/resnet-152 --image-encoder-layer stage4_unit3_conv3

Writes one float32 ``.npy`` per distinct image (``a/b.jpg`` -> ``a_b.jpg.npy``), the sidecar
(``image_feature_sizes.json`` + Sockeye's ``.pkl``), a copy of the CNN checkpoint under ``FEATS/cnn/`` and, once every
feature exists, the feature list ``--output`` (one name per input line). Re-running skips complete feature files;
``--shard K/N`` splits the work between processes or machines that share ``--output-root``. ``--augment flip|ten-crop``
also extracts other views of every image (``a_b.jpg.top-left-flip.npy``) with one feature list per view
(``OUTPUT.top-left-flip``), for training on augmented features.
"""
import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Dict, Iterator, List, NamedTuple, Optional, Sequence, TextIO, Tuple

import numpy as np

from . import arguments, constants as C, features, image_io, log, utils
from .cnn import (CNNConfig, FeatureExtractor, create_feature_extractor, is_onnx, iterate_image_batches,  # no MXNet
                  params_file, strip_output_suffix, symbol_file)
from .config import Config

if TYPE_CHECKING:  # pragma: no cover - MXNet is imported when a run starts
    import mxnet as mx

logger = logging.getLogger(__name__)

CNN_COPY_DIRNAME = "cnn"


@dataclasses.dataclass
class ExtractionConfig(Config):
    """Everything one extraction run needs (the CLI's options, as data)."""
    image_root: str
    input: str                          # image list, one path per line relative to image_root
    output_root: str
    output: str                         # feature list to write
    cnn: CNNConfig
    batch_size: int = 64
    overwrite: bool = False
    mmap_store: bool = False
    mmap_dtype: str = "float32"
    shard: Optional[Tuple[int, int]] = None     # (K, N), K 1-based
    merge_shards: bool = False
    skip_bad_images: bool = False
    allow_absolute_paths: bool = False
    num_workers: Optional[int] = None
    augment: str = "none"               # views of each image (image_io.AUGMENTATIONS); "none": the centre square
    copy_cnn: bool = True
    progress: bool = True


@dataclasses.dataclass
class ExtractionResult:
    """What a run did: feature names per input line (of the centre view; ``view_names``: of every view, the centre
    first), how many files it computed / kept, whether the lists exist."""
    names: List[str]
    features_shape: Tuple[int, int, int]
    computed: int
    skipped: int
    list_written: bool
    seconds: float
    view_names: Dict[str, List[str]] = dataclasses.field(default_factory=dict)


def copy_cnn(cnn: CNNConfig, output_root: str) -> CNNConfig:
    """Copy (or hard-link) the CNN checkpoint (or ONNX file) into ``output_root/cnn/`` so the feature folder is
    self-contained; the returned config's ``model_path`` is relative to ``output_root`` (`features.read_feature_sizes`
    resolves it against the folder, so it works from any working directory)."""
    target_dir = os.path.join(output_root, CNN_COPY_DIRNAME)
    prefix_name = os.path.basename(cnn.model_path)
    relative_prefix = os.path.join(CNN_COPY_DIRNAME, prefix_name)
    if not os.path.isdir(target_dir):
        # a new cnn/ is filled under a temporary name and renamed: it never exists without all its files
        tmp_dir = tempfile.mkdtemp(prefix="." + CNN_COPY_DIRNAME + ".", suffix=".tmp", dir=output_root)
        try:
            os.chmod(tmp_dir, 0o777 & ~utils.current_umask())   # as os.makedirs would make it, not mkdtemp's 0700
            _copy_cnn_files(cnn, os.path.join(tmp_dir, prefix_name))
            os.rename(tmp_dir, target_dir)
        except BaseException as e:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            if isinstance(e, utils.CaptioningError):   # name the folder the user will look for
                raise utils.CaptioningError(str(e).replace(tmp_dir, target_dir)) from None
            raise
    else:
        _copy_cnn_files(cnn, os.path.join(output_root, relative_prefix))
    return cnn.copy(model_path=relative_prefix)


def _copy_cnn_files(cnn: CNNConfig, target_prefix: str) -> None:
    """Hard-link (or copy) the CNN's files to ``target_prefix``; each file is complete or absent."""
    files = [(cnn.model_path, target_prefix)] if is_onnx(cnn.model_path) else \
        [(symbol_file(cnn.model_path), symbol_file(target_prefix)),
         (params_file(cnn.model_path, cnn.epoch), params_file(target_prefix, cnn.epoch))]
    for source, target in files:
        if os.path.exists(target) and os.path.samefile(source, target):
            continue
        if os.path.exists(target) and os.path.getsize(target) == os.path.getsize(source) and \
                _same_bytes(source, target):
            continue
        with utils.atomic_path(target) as tmp:
            try:
                os.remove(tmp)
                os.link(source, tmp)
            except OSError:
                try:
                    shutil.copyfile(source, tmp)
                except OSError as e:   # the copy's error names the source; it is the target that cannot be written
                    raise utils.write_error(target, e) from None


def _same_bytes(a: str, b: str, block: int = 1 << 20) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(block), fb.read(block)
            if x != y:
                return False
            if not x:
                return True


def _read_image_list(config: ExtractionConfig) -> Tuple[List[str], List[str]]:
    """(relative paths, resolved paths) of the input lines; errors name the list file and line."""
    lines = utils.read_lines(config.input)
    relative, resolved = [], []
    for i, line in enumerate(lines):
        where = utils.location(config.input, i + 1)
        path = line.strip()
        resolved.append(image_io.resolve_path(config.image_root, path, config.allow_absolute_paths, where))
        relative.append(path)
    return relative, resolved


def _check_name_collisions(relative: Sequence[str], names: Sequence[str], input_path: str) -> None:
    """Sockeye's naming maps ``a/b.jpg`` and ``a_b.jpg`` to one file ``a_b.jpg.npy``: two different images must
    never share a feature file (the same path on several lines is fine)."""
    first: dict = {}
    for i, (path, name) in enumerate(zip(relative, names)):
        j = first.setdefault(name, i)
        utils.check_condition(relative[j] == path,
                              "%s: image %r and %s: image %r would share the feature file %s (the feature name "
                              "replaces '/' by '_'); rename one of the images"
                              % (utils.location(input_path, j + 1), relative[j], utils.location(input_path, i + 1),
                                 path, name))


def _check_writable(config: ExtractionConfig) -> None:
    """Every output can be written, checked before any feature is computed: the output root (created here) and the
    list files (a probe file is written and removed: permission bits alone miss read-only mounts and root)."""
    for view in image_io.AUGMENTATIONS[config.augment]:
        path = view_list_path(config.output, view)
        utils.check_condition(not os.path.isdir(path), "%s: is a folder; --output needs a file name" % path)
    utils.check_output_folder(config.output_root, "--output-root")
    for view in image_io.AUGMENTATIONS[config.augment]:
        utils.check_output_file(view_list_path(config.output, view), "--output")


def _feature_name(relative: str) -> str:
    # absolute paths (--allow-absolute-paths) and "../" would give names with leading "_" or ".._": keep them, but
    # strip the leading separator so the name stays a plain file name
    return features.feature_file_name(relative.lstrip("/"))


def view_feature_name(name: str, view: str) -> str:
    """The feature file of ``view`` of the image whose centre-view file is ``name``: ``a_b.jpg.npy`` ->
    ``a_b.jpg.top-left-flip.npy`` (the centre view keeps ``name``)."""
    if view == image_io.CENTRE:
        return name
    return name[:-len(C.FEATURE_SUFFIX)] + "." + view + C.FEATURE_SUFFIX


def view_list_path(output: str, view: str) -> str:
    """The feature list of ``view``: ``--output`` itself for the centre view, ``OUTPUT.VIEW`` for the others."""
    return output if view == image_io.CENTRE else output + "." + view


def _check_view_collisions(names: Sequence[str], views: Sequence[str], input_path: str) -> None:
    """A view's feature file must not be another image's (``x.jpg`` flipped and an image named ``x.jpg.centre-flip``
    would share ``x.jpg.centre-flip.npy``)."""
    centre = {name: i for i, name in enumerate(names)}
    for view in views[1:]:
        for i, name in enumerate(names):
            other = centre.get(view_feature_name(name, view))
            if other is not None:
                raise utils.CaptioningError("%s: the %s view's feature file %s is that of the image on %s; rename "
                                            "that image (or extract without --augment)"
                                            % (utils.location(input_path, i + 1), view, view_feature_name(name, view),
                                               utils.location(input_path, other + 1)))


def _lines_to_compute(config: ExtractionConfig, names: Sequence[str], shape: features.Shape
                      ) -> Tuple[List[int], int]:
    """(the lines of this shard whose feature file must be computed, how many are complete and kept): each distinct
    feature file once (its first line); --skip-bad-images placeholders are always recomputed."""
    k, n = config.shard or (1, 1)
    todo: List[int] = []
    seen = set()
    skipped = 0
    for i in range(k - 1, len(names), n):
        if names[i] in seen:
            continue
        seen.add(names[i])
        target = os.path.join(config.output_root, names[i])
        if not config.overwrite and features.is_complete_feature(target, shape) and \
                not features.is_placeholder(target):
            skipped += 1
            continue
        todo.append(i)
    return todo, skipped


def extract(config: ExtractionConfig, ctx: Optional["mx.Context"] = None) -> ExtractionResult:
    """Run one extraction (or one shard of it, or the merge of shards). The Python API of the CLI."""
    created = utils.missing_folders(config.output_root)
    try:
        return _extract(config, ctx)
    except BaseException:
        utils.remove_empty_folders(created)   # a refused run leaves no folder it made (complete files stay)
        raise


class _Plan(NamedTuple):
    """What one run covers: the input lines and every (view, line) item to extract; item j is line j % len(names)
    of the input, in view ``item_views[j]``."""
    resolved: List[str]                 # the input lines' image paths, resolved against --image-root
    names: List[str]                    # the centre view's feature file of each line
    views: List[str]
    view_names: Dict[str, List[str]]    # the feature files of each view, per line
    items: List[str]                    # the feature file of each item
    item_views: List[str]               # the view of each item


def _extract(config: ExtractionConfig, ctx: Optional["mx.Context"] = None) -> ExtractionResult:
    import mxnet as mx
    start = time.time()
    _check_paths(config)
    plan = _plan(config)
    if config.merge_shards:
        return _merge_shards(config, plan, start)
    _check_same_cnn(config)
    _warn_if_not_native_size(config.cnn)
    extractor = create_feature_extractor(config.cnn, ctx or mx.cpu(), config.batch_size)
    shape = extractor.output_shape
    _write_sidecar(config, shape)
    todo, skipped = _lines_to_compute(config, plan.items, shape)
    _log_start(config, plan, shape, len(todo), skipped)
    if todo:
        with _output_errors(config.output_root):
            features.remove_mmap_store(config.output_root)
            _run(config, extractor, [plan.resolved[i % len(plan.names)] for i in todo], [plan.items[i] for i in todo],
                 [_item_location(config.input, i, len(plan.names), plan.item_views[i]) for i in todo],
                 None if len(plan.views) == 1 else [plan.item_views[i] for i in todo])
    list_written = _finish_if_complete(config, plan, shape)
    del extractor
    gc.collect()   # Gluon blocks hold reference cycles: free the CNN's buffers now, not at some later collection
    seconds = time.time() - start
    logger.info("Done: %d computed, %d kept, %.1f s (%.1f images/s)", len(todo), skipped, seconds,
                len(todo) / max(seconds, 1e-9))
    return ExtractionResult(plan.names, shape, len(todo), skipped, list_written, seconds, plan.view_names)


def _check_paths(config: ExtractionConfig) -> None:
    """The folders and files the options name, and --augment, before anything is read or written."""
    utils.check_condition(not os.path.exists(config.output_root) or os.path.isdir(config.output_root),
                          "%s: --output-root exists and is not a folder; give a folder path" % config.output_root)
    utils.check_condition(os.path.isdir(config.image_root), "%s: --image-root folder not found" % config.image_root)
    output_folder = os.path.dirname(os.path.abspath(config.output))
    # the list may live inside --output-root, which this run creates
    utils.check_condition(os.path.isdir(output_folder) or output_folder == os.path.abspath(config.output_root),
                          "%s: the folder of --output does not exist" % config.output)
    utils.check_condition(config.augment in image_io.AUGMENTATIONS, "--augment must be one of %s, got %r"
                          % (", ".join(image_io.AUGMENTATIONS), config.augment))
    for view in image_io.AUGMENTATIONS[config.augment]:
        utils.check_not_an_input(view_list_path(config.output, view), "--output", [("--input", config.input)])


def _plan(config: ExtractionConfig) -> _Plan:
    """Read the image list, check its feature names (collisions, writable outputs) and list every item."""
    relative, resolved = _read_image_list(config)
    names = [_feature_name(r) for r in relative]
    _check_name_collisions(relative, names, config.input)
    views = list(image_io.AUGMENTATIONS[config.augment])
    _check_view_collisions(names, views, config.input)
    _check_writable(config)
    if not names:
        logger.warning("%s: the image list is empty: nothing to extract; writing an empty feature list %s",
                       config.input, config.output)
    view_names = {view: [view_feature_name(name, view) for name in names] for view in views}
    items = [name for view in views for name in view_names[view]]
    item_views = [view for view in views for _ in names]
    return _Plan(resolved, names, views, view_names, items, item_views)


def _merge_shards(config: ExtractionConfig, plan: _Plan, start: float) -> ExtractionResult:
    """--merge-shards: every feature file exists (made by the shards' runs): write the lists."""
    sizes = features.read_feature_sizes(config.output_root)
    shape = sizes.features_shape
    _check_all_present(config, plan.items, len(plan.names), shape)
    with _output_errors(config.output):
        _finish(config, plan.view_names)
    return ExtractionResult(plan.names, shape, 0, 0, True, time.time() - start, plan.view_names)


def _write_sidecar(config: ExtractionConfig, shape: Tuple[int, int, int]) -> None:
    """The feature folder's record of the CNN (a copy of it under cnn/, unless not asked) and the feature shape."""
    with _output_errors(config.output_root):
        cnn_record = copy_cnn(config.cnn, config.output_root) if config.copy_cnn else \
            config.cnn.copy(model_path=os.path.abspath(config.cnn.model_path))
        cnn_record = cnn_record.copy(layer=strip_output_suffix(config.cnn.layer))
        features.write_feature_sizes(config.output_root, features.FeatureSizes(
            image_shape=config.cnn.image_size, features_shape=shape, cnn=cnn_record.to_dict()))


def _log_start(config: ExtractionConfig, plan: _Plan, shape: Tuple[int, ...], todo: int, skipped: int) -> None:
    if skipped:
        logger.info("%d feature file(s) already complete: kept (use --overwrite to recompute)", skipped)
    k, n = config.shard or (1, 1)
    logger.info("Extracting %d feature file(s) of %s%s with %s at layer %s (%s -> %s)%s", todo, config.input,
                "" if config.shard is None else " (shard %d/%d)" % (k, n), config.cnn.model_path, config.cnn.layer,
                "x".join(map(str, config.cnn.image_size)), "x".join(map(str, shape)),
                "" if len(plan.views) == 1 else ", %d views per image (%s)" % (len(plan.views), ", ".join(plan.views)))


def _finish_if_complete(config: ExtractionConfig, plan: _Plan, shape: Tuple[int, int, int]) -> bool:
    """Write the feature lists once every item's file exists (the last shard to finish does); whether it did."""
    missing = _missing(config, plan.items, shape)
    if not missing:
        with _output_errors(config.output):
            _finish(config, plan.view_names)
        return True
    k, n = config.shard or (1, 1)
    logger.info("Shard %d/%d done; %d line(s) of %s still lack features (other shards): the feature list %s is "
                "written when the last shard finishes, or with --merge-shards", k, n, len(missing), config.input,
                config.output)
    return False


def _item_location(input_path: str, item: int, num_lines: int, view: str) -> str:
    """Where item ``item`` (line ``item % num_lines`` of the input, in ``view``) comes from, for messages."""
    where = utils.location(input_path, item % num_lines + 1)
    return where if view == image_io.CENTRE else "%s (%s view)" % (where, view)


def _check_same_cnn(config: ExtractionConfig) -> None:
    """Feature files of another CNN, layer or input size must not be mixed into one folder (a re-run would keep
    them): refuse unless --overwrite (which recomputes every file of the list)."""
    path = os.path.join(config.output_root, C.IMAGE_FEATURE_SIZES_JSON)
    if config.overwrite or not os.path.exists(path):
        return
    try:
        old = utils.read_json(path, "the feature sizes").get("cnn") or {}
    except (utils.CaptioningError, AttributeError):
        return
    new = {"model": os.path.basename(config.cnn.model_path), "layer": strip_output_suffix(config.cnn.layer),
           "epoch": config.cnn.epoch, "image_size": list(config.cnn.image_size)}
    before = {"model": os.path.basename(str(old.get("model_path", new["model"]))),
              "layer": strip_output_suffix(str(old.get("layer", new["layer"]))),
              "epoch": old.get("epoch", new["epoch"]), "image_size": list(old.get("image_size", new["image_size"]))}
    changed = [key for key in new if new[key] != before[key]]
    utils.check_condition(not changed, "%s: the features in this folder were made with %s; this run uses %s. Use "
                                       "another --output-root, or --overwrite to recompute them all"
                          % (path, ", ".join("%s %s" % (k, before[k]) for k in changed),
                             ", ".join("%s %s" % (k, new[k]) for k in changed)))


def _warn_if_not_native_size(cnn_config: CNNConfig) -> None:
    """An encoder imported by import_cnn records its native input size: say so when another one is asked for (it
    runs, but e.g. EfficientNet-Lite2 at 224 gives 7x7 instead of its 9x9 grid and is less accurate)."""
    from .cnn import read_encoder_sidecar
    native = (read_encoder_sidecar(cnn_config.model_path) or {}).get("native_size")
    if isinstance(native, list) and list(native) != list(cnn_config.image_size):
        logger.warning("%s was made for input %s; --source-image-size is %s (pass --source-image-size %s unless "
                       "you mean it)", cnn_config.model_path, "x".join(map(str, native)),
                       "x".join(map(str, cnn_config.image_size)), " ".join(map(str, native)))


def _run(config: ExtractionConfig, extractor: FeatureExtractor, paths: Sequence[str], names: Sequence[str],
         where: Sequence[str], views: Optional[Sequence[str]] = None) -> None:
    """Decode (worker processes; ``views``: the view of each image, default the centre square) -> CNN (this thread)
    -> write .npy files (one writer thread, so the CNN does not wait for the disk)."""
    from concurrent.futures import ThreadPoolExecutor
    from tqdm import tqdm
    image_size = (config.cnn.image_size[1], config.cnn.image_size[2])

    def write(batch_names: List[str], feats: "np.ndarray", bad: List[bool]) -> None:
        for name, feature, is_bad in zip(batch_names, feats, bad):
            path = os.path.join(config.output_root, name)
            if is_bad:     # marked first: a run stopped between the two writes still recomputes it
                features.mark_placeholder(path)
            features.save_feature(path, feature)
            if not is_bad:
                features.clear_placeholder(path)

    with tqdm(total=len(paths), unit="img", desc="extract", disable=not config.progress, leave=False,
              mininterval=1.0) as progress, ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for batch in iterate_image_batches(paths, image_size, config.batch_size, config.num_workers,
                                           config.skip_bad_images, where, views=views):
            feats = extractor.extract(batch.images)
            for k, is_bad in enumerate(batch.bad):
                if is_bad:
                    feats[k] = 0.0
            finite = np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
            if not finite.all():
                k = int(np.argmin(finite))
                raise utils.CaptioningError("%s: the CNN gives NaN or infinite features for this image; check the "
                                            "encoder (%s) and its input size" % (where[batch.indices[k]],
                                                                                 config.cnn.model_path))
            if pending is not None:
                pending.result()            # at most one batch being written; re-raises a write error
            pending = writer.submit(write, [names[i] for i in batch.indices], feats, batch.bad)
            progress.update(len(batch.indices))
        if pending is not None:
            pending.result()


@contextlib.contextmanager
def _output_errors(path: str) -> Iterator[None]:
    """OS errors while writing outputs (disk full, read-only) as one-line errors naming the file; what was being
    written is removed by `utils.atomic_path`, complete feature files stay for a re-run."""
    try:
        yield
    except OSError as e:   # what utils.atomic_path has not named already: making folders, removing stale files
        raise utils.write_error(e.filename if isinstance(e.filename, str) else path, e) from None


def _missing(config: ExtractionConfig, items: Sequence[str], shape: features.Shape) -> List[int]:
    """The items whose feature file is missing or incomplete."""
    return [i for i, name in enumerate(items)
            if not features.is_complete_feature(os.path.join(config.output_root, name), shape)]


def _check_all_present(config: ExtractionConfig, items: Sequence[str], num_lines: int,
                       shape: Tuple[int, int, int]) -> None:
    missing = _missing(config, items, shape)
    if missing:
        first = missing[0]
        raise utils.CaptioningError("%s: feature file %s is missing or incomplete (%d line(s) in all); run the "
                                    "remaining shards first" % (utils.location(config.input, first % num_lines + 1),
                                                                os.path.join(config.output_root, items[first]),
                                                                len({i % num_lines for i in missing})))


def _finish(config: ExtractionConfig, view_names: Dict[str, List[str]]) -> None:
    """Write the feature list of each view and, if asked, the mmap store."""
    for view, names in view_names.items():
        path = view_list_path(config.output, view)
        features.write_feature_list(path, names)
        logger.info("Wrote the feature list %s (%d lines%s)", path, len(names),
                    "" if view == image_io.CENTRE else ", %s view" % view)
    every = [name for names in view_names.values() for name in names]
    if config.mmap_store and every:
        features.build_mmap_store(config.output_root, config.mmap_dtype, extra_names=every, list_path=config.output)


def config_from_args(args: argparse.Namespace) -> ExtractionConfig:
    """Map the CLI options onto an `ExtractionConfig`."""
    channels, height, width = args.source_image_size
    utils.check_condition(channels == 3, "--source-image-size: the CNN input must have 3 (RGB) channels, got %d"
                          % channels)
    utils.check_condition(height > 0 and width > 0, "--source-image-size: height and width must be positive")
    layer = args.image_encoder_layer
    utils.check_condition(bool(layer), "--image-encoder-layer: give the layer whose output is the feature map")
    cnn = CNNConfig(model_path=args.image_encoder_model_path, layer=strip_output_suffix(layer),
                    epoch=args.image_encoder_model_epoch, image_size=(channels, height, width))
    quiet = args.quiet or args.loglevel in ("WARNING", "ERROR")
    return ExtractionConfig(image_root=args.image_root, input=args.input, output_root=args.output_root,
                            output=args.output, cnn=cnn, batch_size=args.batch_size, overwrite=args.overwrite,
                            mmap_store=args.mmap_store, mmap_dtype=args.mmap_dtype,
                            shard=tuple(args.shard) if args.shard else None, merge_shards=args.merge_shards,
                            skip_bad_images=args.skip_bad_images, allow_absolute_paths=args.allow_absolute_paths,
                            num_workers=args.num_workers, augment=args.augment, progress=not quiet)


def export_fine_tuned_cnn(model_folder: str, prefix: str, checkpoint: Optional[int] = None,
                          cnn_path: Optional[str] = None) -> str:
    """Write the whole CNN with a model's fine-tuned layers as an MXNet checkpoint ``PREFIX-symbol.json`` +
    ``PREFIX-0000.params`` (the CNN of the model's config, or ``cnn_path``; the model's ``params.best`` or
    ``checkpoint``). Existing files are never replaced; nothing is left behind on failure. Returns the prefix."""
    from . import finetune
    from . import model as model_module
    from .cnn import load_checkpoint, save_checkpoint
    config = model_module.load_model_config(model_folder)
    utils.check_condition(config.fine_tune is not None, "%s: the model has no fine-tuned CNN layers (it was trained "
                                                        "without --image-encoder-fine-tune-from)" % model_folder)
    assert config.fine_tune is not None
    cnn = config.fine_tune.cnn
    from .cnn import params_file, symbol_file
    for existing in (symbol_file(prefix), params_file(prefix, 0)):
        utils.check_condition(not os.path.lexists(existing), "%s: exists; the export writes new files only (choose "
                                                            "another prefix)" % existing)
    utils.check_output_folder(os.path.dirname(os.path.abspath(prefix)), "--export-fine-tuned-cnn")
    symbol, arg_params, aux_params = load_checkpoint(cnn_path or cnn.model_path, cnn.epoch)
    path = model_module.params_path(model_folder, checkpoint)
    trained = {name[len(finetune.BLOCK_NAME) + 1:]: value for name, value in model_module.load_parameter_arrays(path).items()
               if name.startswith(finetune.BLOCK_NAME + ".")}
    import mxnet as mx
    for name, value in trained.items():
        target = arg_params if name in arg_params else aux_params
        utils.check_condition(name in target and tuple(target[name].shape) == value.shape,
                              "%s: %r does not fit the CNN %s" % (path, name, cnn_path or cnn.model_path))
        target[name] = mx.nd.array(value, dtype=value.dtype)
    try:
        save_checkpoint(prefix, symbol, arg_params, aux_params)
    except BaseException:
        for written in (symbol_file(prefix), params_file(prefix, 0)):   # neither existed before
            with contextlib.suppress(OSError):
                os.remove(written)
        raise
    logger.info("Wrote the CNN with the fine-tuned layers of %s (%d arrays) to %s-symbol.json / -0000.params",
                path, len(trained), prefix)
    return prefix


def build_parser(list_layers: bool = False) -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.extract_features",
                                            description="Extract CNN features of images into a feature folder.")
    arguments.add_extract_features_args(parser, ExtractionConfig, io_required=not list_layers)
    return parser


def print_layers(model_path: str, epoch: int, image_size: Sequence[int], out: TextIO) -> None:
    """One line per internal output of the encoder: its name (what --image-encoder-layer takes), its shape at
    ``image_size``, and '*' with the recommendation of ``import_cnn``'s sidecar for the layers it recommends."""
    from . import cnn
    layers = cnn.list_layers(model_path, epoch, image_size)
    sidecar = cnn.read_encoder_sidecar(model_path) or {}
    recommended = [entry.get("name") for entry in sidecar.get("recommended_layers", []) if isinstance(entry, dict)]
    width = max((len(name) for name, _ in layers), default=0)
    for name, shape in layers:
        mark = "  * recommended" if name in recommended else ""
        out.write("%s  %s%s\n" % (name.ljust(width), "x".join(map(str, shape)) or "scalar", mark))


def _main(argv: Optional[Sequence[str]] = None) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--list-layers", action="store_true")
    pre.add_argument("--export-fine-tuned-cnn", nargs=2)
    known = pre.parse_known_args(argv)[0]
    list_layers = known.list_layers
    args = build_parser(list_layers or known.export_fine_tuned_cnn is not None).parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    if args.export_fine_tuned_cnn is not None:
        model_folder, prefix = args.export_fine_tuned_cnn
        export_fine_tuned_cnn(model_folder, prefix, cnn_path=args.image_encoder_model_path)
        return
    if list_layers:
        import sys
        utils.check_condition(args.image_encoder_model_path is not None,
                              "--list-layers: give --image-encoder-model-path (a checkpoint prefix or an ONNX file)")
        print_layers(args.image_encoder_model_path, args.image_encoder_model_epoch, args.source_image_size,
                     sys.stdout)
        return
    config = config_from_args(args)
    ctx = utils.get_context(args.use_cpu, [args.device_id])[0]
    extract(config, ctx)


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
