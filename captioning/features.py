"""Feature folders: one float32 ``.npy`` per image ``(C, H, W)``, a list file naming them (one per line), and the
sidecar that records their shapes and the CNN that made them. `FeatureStore`s read batches of features for training
and captioning: ``lazy`` (a file per item per batch), ``memory`` (every distinct file loaded once) and ``mmap`` (one
memory-mapped ``(N, C, H, W)`` array beside the features, built once)."""
import dataclasses
import io
import json
import logging
import os
import pickle
import tokenize
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import constants as C
from . import image_io, utils

logger = logging.getLogger(__name__)

MMAP_STORE_NAME = "features.mmap.npy"
MMAP_INDEX_NAME = "features.mmap.json"
MMAP_DTYPES = ("float32", "float16")
PLACEHOLDER_SUFFIX = ".placeholder"     # beside a --skip-bad-images all-zero feature: recomputed on a re-run

Shape = Tuple[int, int, int]
Indices = Union[Sequence[int], np.ndarray]     # rows of a feature list: a sequence or an integer array


def as_shape(values: Iterable[int]) -> Shape:
    """``values`` (three ints, checked by the caller) as a (C, H, W) `Shape`."""
    return cast(Shape, tuple(values))


def feature_file_name(image_path: str) -> str:
    """The feature file of an image path (Sockeye's naming): ``"a/b.jpg" -> "a_b.jpg.npy"``."""
    return image_path.replace("/", "_").replace(os.sep, "_") + C.FEATURE_SUFFIX


# ---------------------------------------------------------------------------------------------------------------
# sidecar: image_feature_sizes.json (+ the legacy image_feature_sizes.pkl)
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FeatureSizes:
    """What the sidecar records: the CNN input shape, the feature shape and (ours only) the CNN config dict."""
    image_shape: Tuple[int, int, int]
    features_shape: Tuple[int, int, int]
    cnn: Optional[Dict[str, Any]] = None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, numbers and strings only: every global lookup (classes, functions) is refused,
    so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError("refused to load %s.%s (only plain dicts, tuples, ints and strings are allowed)"
                                     % (module, name))


def safe_unpickle(data: bytes) -> Any:
    """`pickle.loads` restricted to builtin containers and scalars."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _as_shape(value: Any, path: str, key: str) -> Tuple[int, ...]:
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                  for v in value)
    utils.check_condition(ok, "%s: %r must be a list of positive integers, got %r" % (path, key, value))
    return tuple(value)


def write_feature_sizes(root: str, sizes: FeatureSizes) -> None:
    """Write ``image_feature_sizes.json`` and the legacy ``image_feature_sizes.pkl`` (Sockeye 1.x reads it)."""
    values: Dict[str, Any] = {"image_shape": list(sizes.image_shape), "features_shape": list(sizes.features_shape)}
    if sizes.cnn is not None:
        values["cnn"] = sizes.cnn
    utils.atomic_write_text(os.path.join(root, C.IMAGE_FEATURE_SIZES_JSON), json.dumps(values, indent=2) + "\n")
    legacy = {"image_shape": tuple(sizes.image_shape), "features_shape": tuple(sizes.features_shape)}
    with utils.atomic_open(os.path.join(root, C.IMAGE_FEATURE_SIZES_PKL), "wb") as f:
        pickle.dump(legacy, f, protocol=2)


def read_feature_sizes(root: str) -> FeatureSizes:
    """The sidecar of a feature folder: our JSON, else Sockeye's pickle (read with a restricted unpickler)."""
    json_path = os.path.join(root, C.IMAGE_FEATURE_SIZES_JSON)
    pkl_path = os.path.join(root, C.IMAGE_FEATURE_SIZES_PKL)
    if os.path.exists(json_path):
        values = utils.read_json(json_path, "the feature sizes; re-run extract_features")
        path = json_path
    elif os.path.exists(pkl_path):
        try:
            with open(pkl_path, "rb") as f:
                values = safe_unpickle(f.read())
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise utils.CaptioningError("%s: cannot read the legacy feature sizes (%s); re-run extract_features"
                                        % (pkl_path, e)) from None
        path = pkl_path
    else:
        raise utils.CaptioningError("%s: no %s (or %s) in the feature folder; is this the --output-root of "
                                    "extract_features?" % (root, C.IMAGE_FEATURE_SIZES_JSON,
                                                           C.IMAGE_FEATURE_SIZES_PKL))
    utils.check_condition(isinstance(values, dict) and "features_shape" in values,
                          "%s: expected a mapping with 'image_shape' and 'features_shape'" % path)
    features_shape = _as_shape(values["features_shape"], path, "features_shape")
    utils.check_condition(len(features_shape) == 3, "%s: features_shape %s is not (C, H, W)"
                          % (path, features_shape))
    image_shape = _as_shape(values.get("image_shape", C.DEFAULT_SOURCE_IMAGE_SIZE), path, "image_shape")
    cnn = values.get("cnn")
    utils.check_condition(cnn is None or isinstance(cnn, dict), "%s: 'cnn' must be a mapping" % path)
    if cnn is not None and isinstance(cnn.get("model_path"), str) and not os.path.isabs(cnn["model_path"]):
        # recorded relative to the feature folder (its cnn/ copy): absolute here, so that the path works from any
        # working directory (and the model config that training copies it into does too)
        cnn = dict(cnn, model_path=os.path.abspath(os.path.join(root, cnn["model_path"])))
    return FeatureSizes(image_shape=as_shape(image_shape), features_shape=as_shape(features_shape), cnn=cnn)


# ---------------------------------------------------------------------------------------------------------------
# single feature files
# ---------------------------------------------------------------------------------------------------------------

def save_feature(path: str, feature: np.ndarray) -> None:
    """Write one feature as float32 ``.npy``, atomically (a temporary file renamed at the end): an interruption or a
    crash never leaves a partial file. No fsync per file (it costs more than the write): after a power failure a file may be
    short, which `is_complete_feature` detects, so a re-run recomputes it. An OS error (disk full, read-only) is a
    `CaptioningError` naming ``path`` (`utils.atomic_path`)."""
    with utils.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(feature, dtype=np.float32), allow_pickle=False)


def placeholder_marker(path: str) -> str:
    return path + PLACEHOLDER_SUFFIX


def mark_placeholder(path: str) -> None:
    """Record that the feature at ``path`` is an all-zero stand-in for an unreadable image (``--skip-bad-images``),
    so that a re-run computes it again once the image is fixed."""
    utils.atomic_write_text(placeholder_marker(path),
                            "all-zero feature of an unreadable image; extract_features recomputes it on a re-run\n")


def clear_placeholder(path: str) -> None:
    try:
        os.remove(placeholder_marker(path))
    except FileNotFoundError:
        pass


def is_placeholder(path: str) -> bool:
    return os.path.exists(placeholder_marker(path))


# what numpy raises on a damaged .npy (its header is parsed as a Python literal: tokenizer and syntax errors too)
NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, TypeError, KeyError, MemoryError, tokenize.TokenError)


def read_npy_header(path: str) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """(shape, dtype, expected file size) of a ``.npy`` file, reading only its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    return shape, dtype, offset + int(np.prod(shape)) * dtype.itemsize


def is_complete_feature(path: str, expected_shape: Shape) -> bool:
    """True when ``path`` is a whole float32 feature file of ``expected_shape`` (header and size check only)."""
    try:
        shape, dtype, size = read_npy_header(path)
        return tuple(shape) == tuple(expected_shape) and dtype == np.float32 and os.path.getsize(path) == size
    except NPY_ERRORS:
        return False


def load_feature(path: str, expected_shape: Optional[Shape], where: str) -> np.ndarray:
    """One feature file as float32 ``(C, H, W)``; `CaptioningError` naming ``where`` (the list file and line) and
    the file when it is missing, corrupt or of another shape."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise utils.CaptioningError("%s: feature file %s not found; run extract_features for this list (or check "
                                    "the feature root)" % (where, path)) from None
    except NPY_ERRORS as e:
        raise utils.CaptioningError("%s: feature file %s is corrupt (%s); delete it and re-run extract_features"
                                    % (where, path, e)) from None
    utils.check_condition(array.ndim == 3, "%s: feature file %s has shape %s, expected (C, H, W)%s"
                          % (where, path, array.shape, "" if expected_shape is None else " = %s" % (expected_shape,)))
    utils.check_condition(expected_shape is None or tuple(array.shape) == tuple(expected_shape),
                          "%s: feature file %s has shape %s, expected %s like the other features (re-extract it "
                          "with the same CNN and layer)" % (where, path, array.shape, expected_shape))
    _check_finite(array, where, path)
    return array.astype(np.float32, copy=False)


def _check_finite(array: np.ndarray, where: str, path: str) -> None:
    utils.check_condition(bool(np.isfinite(array).all()), "%s: feature file %s holds NaN or infinite values; delete "
                                                          "it and re-run extract_features" % (where, path))


def read_feature_list(path: str) -> List[str]:
    """Feature file names of a list file (one per line); an empty line is an error naming it."""
    names = utils.read_lines(path)
    for i, name in enumerate(names):
        utils.check_condition(name.strip() != "", "%s: empty line; every line names a feature file"
                              % utils.location(path, i + 1))
    return [n.strip() for n in names]


def write_feature_list(path: str, names: Sequence[str]) -> None:
    utils.atomic_write_text(path, "".join(name + "\n" for name in names))


# ---------------------------------------------------------------------------------------------------------------
# feature stores
# ---------------------------------------------------------------------------------------------------------------

class FeatureStore:
    """Features of the items of a list: ``len(store)`` items, ``get_batch(indices) -> (B, C, H, W)`` float32.

    The list's names are held once per distinct file (``distinct``, first-seen order) with ``rows[i]``, the
    distinct file of line i + 1 (a list names an image on as many lines as it has captions)."""

    def __init__(self, root: str, names: Sequence[str], list_path: Optional[str] = None) -> None:
        self.root = root
        self.list_path = list_path or "<feature list>"
        self.row_of_name: Dict[str, int] = {}
        self.rows = np.fromiter((self.row_of_name.setdefault(n, len(self.row_of_name)) for n in names),
                                dtype=np.int64, count=len(names))
        self.distinct: List[str] = list(self.row_of_name)
        self.feature_shape: Shape = _feature_shape(root, self.distinct, self.list_path)

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, index: int) -> str:
        """The feature file of item ``index`` (line ``index + 1``)."""
        return self.distinct[self.rows[index]]

    def first_lines(self) -> np.ndarray:
        """The 0-based first line of each distinct file."""
        return np.unique(self.rows, return_index=True)[1]

    def where(self, index: int) -> str:
        return utils.location(self.list_path, index + 1)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def get_batch(self, indices: Indices) -> np.ndarray:
        raise NotImplementedError

    def _check_files_exist(self) -> None:
        for name, line in zip(self.distinct, self.first_lines()):
            if not os.path.isfile(self.path(name)):
                raise utils.CaptioningError("%s: feature file %s not found; run extract_features for this list (or "
                                            "check the feature root)" % (self.where(line), self.path(name)))


def _feature_shape(root: str, names: Sequence[str], list_path: str) -> Shape:
    """From the sidecar, else from the first feature file."""
    if any(os.path.exists(os.path.join(root, n)) for n in (C.IMAGE_FEATURE_SIZES_JSON, C.IMAGE_FEATURE_SIZES_PKL)):
        return as_shape(read_feature_sizes(root).features_shape)
    utils.check_condition(len(names) > 0, "%s: no sidecar (%s) and no features to take the shape from"
                          % (root, C.IMAGE_FEATURE_SIZES_JSON))
    return as_shape(load_feature(os.path.join(root, names[0]), None, utils.location(list_path, 1)).shape)


class LazyFeatureStore(FeatureStore):
    """Reads the files of each batch when asked (the OS page cache does the caching)."""

    def __init__(self, root: str, names: Sequence[str], list_path: Optional[str] = None) -> None:
        super().__init__(root, names, list_path)
        self._check_files_exist()

    def get_batch(self, indices: Indices) -> np.ndarray:
        out = np.empty((len(indices),) + self.feature_shape, dtype=np.float32)
        for k, index in enumerate(indices):
            out[k] = load_feature(self.path(self.name(index)), self.feature_shape, self.where(index))
        return out


class MemoryFeatureStore(FeatureStore):
    """Loads every distinct file once into one ``(D, C, H, W)`` array; duplicate lines share a row."""

    def __init__(self, root: str, names: Sequence[str], list_path: Optional[str] = None) -> None:
        super().__init__(root, names, list_path)
        self._check_files_exist()
        self.array = np.empty((len(self.distinct),) + self.feature_shape, dtype=np.float32)
        for row, (name, line) in enumerate(zip(self.distinct, self.first_lines())):
            self.array[row] = load_feature(self.path(name), self.feature_shape, self.where(line))
        logger.info("Loaded %d distinct features (%d lines) into memory: %.1f MB", len(self.distinct),
                    len(self), self.array.nbytes / 1e6)

    def get_batch(self, indices: Indices) -> np.ndarray:
        return self.array[self.rows[np.asarray(indices, dtype=np.int64)]]


class MmapFeatureStore(FeatureStore):
    """One memory-mapped ``(N, C, H, W)`` array (``features.mmap.npy``, float32 or float16) with an index
    (``features.mmap.json``: name -> row) beside the features; built once if missing or lacking a name."""

    def __init__(self, root: str, names: Sequence[str], list_path: Optional[str] = None,
                 dtype: Optional[str] = None) -> None:
        super().__init__(root, names, list_path)
        index = read_mmap_index(root)
        if index is None or any(name not in index["rows"] for name in self.distinct) or \
                (dtype is not None and index["dtype"] != dtype) or \
                tuple(index["shape"][1:]) != tuple(self.feature_shape):
            self._check_files_exist()
            build_mmap_store(root, dtype or (index["dtype"] if index else "float32"), extra_names=self.distinct,
                             list_path=self.list_path)
            index = read_mmap_index(root)
            assert index is not None
        self.array = np.load(os.path.join(root, MMAP_STORE_NAME), mmap_mode="r")
        self.store_rows = np.array([index["rows"][n] for n in self.distinct], dtype=np.int64)[self.rows]

    def get_batch(self, indices: Indices) -> np.ndarray:
        rows = self.store_rows[np.asarray(indices, dtype=np.int64)]
        batch = np.asarray(self.array[rows], dtype=np.float32)
        finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)
        if not finite.all():   # float16 overflow, or a store edited by hand
            k = int(np.argmin(finite))
            _check_finite(batch[k], self.where(indices[k]), "%s (row %d of %s)"
                          % (self.path(self.name(indices[k])), rows[k], os.path.join(self.root, MMAP_STORE_NAME)))
        return batch


def read_mmap_index(root: str) -> Optional[Dict[str, Any]]:
    """The mmap store's index, or None when there is no (usable) store."""
    index_path = os.path.join(root, MMAP_INDEX_NAME)
    if not (os.path.isfile(index_path) and os.path.isfile(os.path.join(root, MMAP_STORE_NAME))):
        return None
    try:
        index = utils.read_json(index_path, "the mmap store's index")
        index["rows"] = {name: row for row, name in enumerate(index["names"])}
        return index
    except (utils.CaptioningError, KeyError, TypeError):
        return None


def remove_mmap_store(root: str) -> None:
    """Drop a (now stale) mmap store; called by writers of feature files."""
    for name in (MMAP_INDEX_NAME, MMAP_STORE_NAME):
        try:
            os.remove(os.path.join(root, name))
        except FileNotFoundError:
            pass


def feature_files_in(root: str) -> List[str]:
    """Feature file names in a folder (sorted), the mmap store excluded."""
    return sorted(name for name in os.listdir(root) if name.endswith(C.FEATURE_SUFFIX) and name != MMAP_STORE_NAME)


def build_mmap_store(root: str, dtype: str = "float32", extra_names: Sequence[str] = (),
                     list_path: Optional[str] = None) -> int:
    """Write ``features.mmap.npy`` (every feature file of the folder, sorted by name) and its index, atomically.
    Returns the number of rows. A folder that is not writable is a clear error."""
    utils.check_condition(dtype in MMAP_DTYPES, "mmap store dtype must be one of %s, got %r" % (MMAP_DTYPES, dtype))
    utils.check_condition(os.access(root, os.W_OK),
                          "%s: cannot build the memory-mapped feature store (%s): the folder is not writable; run "
                          "extract_features --mmap-store where it is, or use --feature-store memory or lazy"
                          % (root, MMAP_STORE_NAME))
    names = sorted(set(feature_files_in(root)) | set(extra_names))
    shape: Tuple[int, ...]
    if os.path.exists(os.path.join(root, C.IMAGE_FEATURE_SIZES_JSON)) or \
            os.path.exists(os.path.join(root, C.IMAGE_FEATURE_SIZES_PKL)):
        shape = read_feature_sizes(root).features_shape
    else:
        shape = load_feature(os.path.join(root, names[0]), None, os.path.join(root, names[0])).shape
    store_path = os.path.join(root, MMAP_STORE_NAME)
    logger.info("Building the memory-mapped feature store %s (%d features, %s)", store_path, len(names), dtype)
    with utils.atomic_path(store_path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(len(names),) + tuple(shape))
        for row, name in enumerate(names):
            array[row] = load_feature(os.path.join(root, name), as_shape(shape),
                                      "%s (building %s)" % (list_path or root, MMAP_STORE_NAME))
        array.flush()
        del array
    index = {"names": names, "dtype": dtype, "shape": [len(names)] + list(shape)}
    utils.atomic_write_text(os.path.join(root, MMAP_INDEX_NAME), json.dumps(index) + "\n")
    return len(names)


def check_names_inside(root: str, names: Sequence[str], list_path: Optional[str] = None,
                       allow_absolute: bool = False) -> None:
    """Every feature name stays inside ``root``: no absolute path, no ``..`` out of it, no symbolic link pointing
    out of it (resolved with realpath), unless ``allow_absolute``. Errors name the list file and line."""
    if allow_absolute:
        return
    seen = set()
    for i, name in enumerate(names):
        if name not in seen:
            seen.add(name)
            image_io.check_inside_root(root, name, False, utils.location(list_path or "<feature list>", i + 1),
                                       "feature file")


def open_feature_store(root: str, names: Sequence[str], mode: str = C.FEATURE_STORE_LAZY,
                       list_path: Optional[str] = None, mmap_dtype: Optional[str] = None,
                       allow_absolute: bool = False) -> FeatureStore:
    """A `FeatureStore` over the feature files ``names`` (relative to ``root``; the lines of ``list_path``). Names
    that escape ``root`` (absolute, ``..``, symbolic links out of it) are refused unless ``allow_absolute``."""
    utils.check_condition(os.path.isdir(root), "%s: feature folder not found (--source-root)" % root)
    check_names_inside(root, names, list_path, allow_absolute)
    if mode == C.FEATURE_STORE_LAZY:
        return LazyFeatureStore(root, names, list_path)
    if mode == C.FEATURE_STORE_MEMORY:
        return MemoryFeatureStore(root, names, list_path)
    if mode == C.FEATURE_STORE_MMAP:
        return MmapFeatureStore(root, names, list_path, mmap_dtype)
    raise ValueError("unknown feature store mode %r (one of %s)" % (mode, C.FEATURE_STORES))
