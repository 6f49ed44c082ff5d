import json
import os
import pickle

import numpy as np
import pytest

from captioning import constants as C
from captioning import features, utils

SHAPE = (4, 3, 2)


def _folder(tmp_path, count=3, sidecar="json"):
    """A feature folder with ``count`` random features, its list (with a duplicate line) and a sidecar."""
    root = tmp_path / "feats"
    root.mkdir()
    rng = np.random.RandomState(0)
    names = []
    for i in range(count):
        name = features.feature_file_name("sub/img%d.jpg" % i)
        features.save_feature(str(root / name), rng.randn(*SHAPE).astype(np.float32))
        names.append(name)
    lines = names + [names[0]]
    list_path = tmp_path / "list.features"
    features.write_feature_list(str(list_path), lines)
    if sidecar == "json":
        features.write_feature_sizes(str(root), features.FeatureSizes((3, 32, 32), SHAPE, {"layer": "x"}))
    elif sidecar == "pkl":   # as Sockeye 1.18.115 wrote it: a plain pickle, no JSON
        with open(root / C.IMAGE_FEATURE_SIZES_PKL, "wb") as f:
            pickle.dump({"image_shape": (3, 32, 32), "features_shape": SHAPE}, f)
    return root, lines, list_path


def test_feature_file_name():
    assert features.feature_file_name("a/b.jpg") == "a_b.jpg.npy"
    assert features.feature_file_name("b.jpg") == "b.jpg.npy"


def test_save_feature_is_float32_npy_and_atomic(tmp_path):
    path = tmp_path / "x.npy"
    features.save_feature(str(path), np.arange(24, dtype=np.float64).reshape(SHAPE))
    loaded = np.load(path)
    assert loaded.dtype == np.float32 and loaded.shape == SHAPE and loaded[3, 2, 1] == 23
    assert os.listdir(tmp_path) == ["x.npy"]            # no temporary file left
    assert features.is_complete_feature(str(path), SHAPE)
    assert not features.is_complete_feature(str(path), (4, 3, 3))
    data = path.read_bytes()
    path.write_bytes(data[:-5])                          # truncated
    assert not features.is_complete_feature(str(path), SHAPE)


def test_sidecar_json_and_legacy_pickle(tmp_path):
    root, _, _ = _folder(tmp_path)
    sizes = features.read_feature_sizes(str(root))
    assert sizes.features_shape == SHAPE and sizes.image_shape == (3, 32, 32) and sizes.cnn == {"layer": "x"}
    on_disk = json.loads((root / C.IMAGE_FEATURE_SIZES_JSON).read_text())
    assert on_disk["features_shape"] == list(SHAPE)
    # the legacy pickle is a plain dict of tuples, readable by plain pickle (what Sockeye does)
    with open(root / C.IMAGE_FEATURE_SIZES_PKL, "rb") as f:
        assert pickle.load(f) == {"image_shape": (3, 32, 32), "features_shape": SHAPE}


def test_sockeye_made_folder_loads(tmp_path):
    root, lines, list_path = _folder(tmp_path, sidecar="pkl")
    assert not (root / C.IMAGE_FEATURE_SIZES_JSON).exists()
    sizes = features.read_feature_sizes(str(root))
    assert sizes.features_shape == SHAPE and sizes.cnn is None
    store = features.open_feature_store(str(root), lines, "lazy", str(list_path))
    assert store.feature_shape == SHAPE
    np.testing.assert_array_equal(store.get_batch([0]), np.load(root / lines[0])[None])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    root = tmp_path / "evil"
    root.mkdir()
    with open(root / C.IMAGE_FEATURE_SIZES_PKL, "wb") as f:
        pickle.dump({"image_shape": (3, 2, 2), "features_shape": _Evil()}, f)
    with pytest.raises(utils.CaptioningError, match=r"image_feature_sizes.pkl: cannot read the legacy feature "
                                                    r"sizes \(refused to load .*system"):
        features.read_feature_sizes(str(root))
    with pytest.raises(pickle.UnpicklingError):
        features.safe_unpickle(pickle.dumps(np.zeros(2)))
    assert features.safe_unpickle(pickle.dumps({"a": (1, 2), "b": [3, "x"]})) == {"a": (1, 2), "b": [3, "x"]}


def test_bad_sidecars(tmp_path):
    with pytest.raises(utils.CaptioningError, match="no image_feature_sizes.json"):
        features.read_feature_sizes(str(tmp_path))
    (tmp_path / C.IMAGE_FEATURE_SIZES_JSON).write_text('{"features_shape": [4, "x", 2]}')
    with pytest.raises(utils.CaptioningError, match="'features_shape' must be a list of positive integers"):
        features.read_feature_sizes(str(tmp_path))


@pytest.mark.parametrize("mode", C.FEATURE_STORES)
def test_stores_return_the_same_batches(tmp_path, mode):
    root, lines, list_path = _folder(tmp_path)
    store = features.open_feature_store(str(root), lines, mode, str(list_path))
    assert len(store) == 4 and store.feature_shape == SHAPE
    batch = store.get_batch([3, 1, 0])
    assert batch.dtype == np.float32 and batch.shape == (3,) + SHAPE
    for k, index in enumerate([3, 1, 0]):
        np.testing.assert_array_equal(batch[k], np.load(root / lines[index]))
    # the names once per distinct file, a line -> file array: no Python object per line
    assert store.distinct == lines[:3] and store.rows.dtype == np.int64 and store.rows.tolist() == [0, 1, 2, 0]
    assert [store.name(i) for i in range(4)] == lines and store.first_lines().tolist() == [0, 1, 2]
    assert not any(isinstance(v, list) and len(v) == len(store) for v in vars(store).values())


def test_memory_store_loads_each_distinct_file_once(tmp_path):
    root, lines, list_path = _folder(tmp_path)
    store = features.open_feature_store(str(root), lines, "memory", str(list_path))
    assert store.array.shape == (3,) + SHAPE                 # 4 lines, 3 distinct files
    (root / lines[0]).unlink()                                 # already in memory
    np.testing.assert_array_equal(store.get_batch([0]), store.get_batch([3]))


def test_mmap_store_built_once_float16_and_rebuilt_when_names_are_missing(tmp_path):
    root, lines, list_path = _folder(tmp_path)
    store = features.open_feature_store(str(root), lines, "mmap", str(list_path), mmap_dtype="float16")
    assert (root / features.MMAP_STORE_NAME).exists()
    np.testing.assert_allclose(store.get_batch([1])[0], np.load(root / lines[1]), rtol=1e-3, atol=1e-3)
    assert store.get_batch([1]).dtype == np.float32
    mtime = os.path.getmtime(root / features.MMAP_STORE_NAME)
    again = features.open_feature_store(str(root), lines, "mmap", str(list_path))   # reuses the float16 store
    assert os.path.getmtime(root / features.MMAP_STORE_NAME) == mtime
    assert np.load(root / features.MMAP_STORE_NAME, mmap_mode="r").dtype == np.float16
    del again, store
    # a new feature file not in the store: the store is rebuilt with it
    features.save_feature(str(root / "new.npy"), np.ones(SHAPE))
    store = features.open_feature_store(str(root), ["new.npy"], "mmap", str(list_path))
    np.testing.assert_array_equal(store.get_batch([0])[0], np.ones(SHAPE))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_mmap_store_in_read_only_folder_is_a_clear_error(tmp_path):
    root, lines, list_path = _folder(tmp_path)
    os.chmod(root, 0o555)
    try:
        with pytest.raises(utils.CaptioningError, match="folder is not writable"):
            features.open_feature_store(str(root), lines, "mmap", str(list_path))
    finally:
        os.chmod(root, 0o755)


def test_mmap_store_not_writable_error_message(tmp_path, monkeypatch):
    root, lines, list_path = _folder(tmp_path)
    monkeypatch.setattr(features.os, "access", lambda path, mode: False)
    with pytest.raises(utils.CaptioningError, match=r"feats: cannot build the memory-mapped feature store .*not "
                                                    r"writable.*--feature-store memory"):
        features.open_feature_store(str(root), lines, "mmap", str(list_path))


@pytest.mark.parametrize("mode", C.FEATURE_STORES)
def test_missing_feature_names_list_line(tmp_path, mode):
    root, lines, list_path = _folder(tmp_path)
    (root / lines[1]).unlink()
    with pytest.raises(utils.CaptioningError, match=r"list.features, line 2: feature file .*sub_img1.jpg.npy not "
                                                    r"found"):
        store = features.open_feature_store(str(root), lines, mode, str(list_path))
        store.get_batch([1])


@pytest.mark.parametrize("mode", ["lazy", "memory"])
def test_wrong_shape_and_corrupt_files_name_line_and_file(tmp_path, mode):
    root, lines, list_path = _folder(tmp_path)
    np.save(root / lines[2], np.zeros((4, 3, 3), dtype=np.float32))
    with pytest.raises(utils.CaptioningError, match=r"list.features, line 3: feature file .*sub_img2.jpg.npy has "
                                                    r"shape \(4, 3, 3\), expected \(4, 3, 2\)"):
        features.open_feature_store(str(root), lines, mode, str(list_path)).get_batch([2])
    (root / lines[2]).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(utils.CaptioningError, match=r"list.features, line 3: feature file .*sub_img2.jpg.npy is "
                                                    r"corrupt"):
        features.open_feature_store(str(root), lines, mode, str(list_path)).get_batch([2])


def test_read_feature_list_rejects_empty_lines(tmp_path):
    path = tmp_path / "l.features"
    path.write_text("a.npy\n\nb.npy\n")
    with pytest.raises(utils.CaptioningError, match="l.features, line 2: empty line"):
        features.read_feature_list(str(path))
    path.write_text("a.npy\nb.npy\n")
    assert features.read_feature_list(str(path)) == ["a.npy", "b.npy"]


def test_store_without_sidecar_takes_shape_from_first_file(tmp_path):
    root, lines, list_path = _folder(tmp_path, sidecar=None)
    assert features.open_feature_store(str(root), lines, "lazy", str(list_path)).feature_shape == SHAPE


@pytest.mark.parametrize("mode", ["lazy", "memory"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_features_are_refused_naming_the_file(tmp_path, mode, bad):
    root, lines, list_path = _folder(tmp_path)
    feature = np.load(root / lines[1])
    feature[1, 2, 0] = bad
    np.save(root / lines[1], feature)
    with pytest.raises(utils.CaptioningError, match=r"list.features, line 2: feature file .*%s holds NaN or "
                                                    r"infinite values" % lines[1]):
        features.open_feature_store(str(root), lines, mode, str(list_path)).get_batch([0, 1])


def test_float16_overflow_in_the_mmap_store_is_refused_naming_the_line(tmp_path):
    root, lines, list_path = _folder(tmp_path)
    feature = np.load(root / lines[2])
    feature[0, 0, 0] = 1e6                    # fine in float32, inf in float16
    np.save(root / lines[2], feature)
    store = features.open_feature_store(str(root), lines, "mmap", str(list_path), mmap_dtype="float16")
    assert store.get_batch([0, 1]).shape == (2,) + SHAPE
    with pytest.raises(utils.CaptioningError, match=r"list.features, line 3: .*%s.*holds NaN or infinite" % lines[2]):
        store.get_batch([0, 2])


def test_feature_names_escaping_the_root_are_refused_unless_allowed(tmp_path):
    root, lines, list_path = _folder(tmp_path)
    outside = tmp_path / "outside.npy"
    features.save_feature(str(outside), np.ones(SHAPE, np.float32))
    os.symlink(str(outside), str(root / "link.npy"))                 # a link inside the root, pointing out
    os.symlink(str(root / lines[0]), str(root / "inner_link.npy"))   # a link that stays inside
    for name, message in ((str(outside), "absolute path"), ("../outside.npy", "leaves the root folder"),
                          ("link.npy", "symbolic link .* points out of the root folder")):
        names = lines[:2] + [name]
        with pytest.raises(utils.CaptioningError, match=r"list.features, line 3: .*%s" % message):
            features.open_feature_store(str(root), names, "lazy", str(list_path))
        store = features.open_feature_store(str(root), names, "lazy", str(list_path), allow_absolute=True)
        np.testing.assert_array_equal(store.get_batch([2])[0], np.ones(SHAPE))
    store = features.open_feature_store(str(root), ["inner_link.npy"], "memory", str(list_path))
    np.testing.assert_array_equal(store.get_batch([0])[0], np.load(root / lines[0]))


def test_recorded_cnn_path_is_resolved_against_the_feature_folder(tmp_path, monkeypatch):
    root = tmp_path / "work" / "feats"
    (root / "cnn").mkdir(parents=True)
    (root / "cnn" / "net-symbol.json").write_text("{}")
    features.write_feature_sizes(str(root), features.FeatureSizes((3, 8, 8), SHAPE, {"model_path": "cnn/net",
                                                                                     "layer": "x"}))
    assert json.loads((root / C.IMAGE_FEATURE_SIZES_JSON).read_text())["cnn"]["model_path"] == "cnn/net"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recorded = features.read_feature_sizes(os.path.relpath(root)).cnn["model_path"]
    assert os.path.isabs(recorded) and os.path.exists(recorded + "-symbol.json")
    monkeypatch.chdir(root)                   # the same from inside the folder
    assert features.read_feature_sizes(".").cnn["model_path"] == recorded


def test_write_errors_name_the_feature_file(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "save", full)
    with pytest.raises(utils.CaptioningError, match=r"a\.npy: cannot write \(No space left"):
        features.save_feature(str(tmp_path / "a.npy"), np.zeros(SHAPE, np.float32))
    assert os.listdir(tmp_path) == []
