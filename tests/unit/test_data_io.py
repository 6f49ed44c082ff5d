import collections

import dataclasses

import numpy as np
import pytest

from captioning import constants as C
from captioning import data_io as D
from captioning import utils
from captioning import vocab as V


class FakeStore:
    """Feature i is filled with the value i (stand-in for features.FeatureStore)."""
    feature_shape = (2, 1, 1)

    def __init__(self, n):
        self.n = n
        self.calls = 0

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        self.calls += 1
        return np.asarray(indices, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 1, 1), np.float32)


def write_data(tmp_path, captions, names=None):
    names = names or ["f%d.npy" % i for i in range(len(captions))]
    (tmp_path / "list").write_text("\n".join(names) + "\n")
    (tmp_path / "caps").write_text("\n".join(captions) + "\n")
    return str(tmp_path / "list"), str(tmp_path / "caps")


CAPTIONS = ["w%d " % (i % 3) * (1 + i % 9) for i in range(40)]


def make_iter(tmp_path, captions=CAPTIONS, **cfg):
    lst, caps = write_data(tmp_path, captions)
    vocab = V.build_vocab(captions)
    data = D.load_parallel(lst, caps, vocab, cfg.pop("max_seq_len", 20))
    config = D.DataConfig(max_seq_len=20, **cfg)
    store = FakeStore(len(captions))
    return D.BatchIterator(data, store, [n - 1 for n in data.line_numbers], config), data, vocab


def test_read_errors_name_files_and_lines(tmp_path):
    lst, caps = write_data(tmp_path, ["a b", "c"], names=["x.npy", "y.npy"])
    (tmp_path / "caps").write_text("a b\n")
    with pytest.raises(utils.CaptioningError, match=r"list has 2 lines but .*caps has 1"):
        D.read_parallel(lst, caps)
    (tmp_path / "caps").write_text("a b\n  \n")
    with pytest.raises(utils.CaptioningError, match=r"caps, line 2: empty caption"):
        D.read_parallel(lst, caps)


def test_overlong_dropped_and_counted(tmp_path, caplog):
    lst, caps = write_data(tmp_path, ["a b c d", "a", "a b"])
    vocab = V.build_vocab(["a b c d"])
    data = D.load_parallel(lst, caps, vocab, max_seq_len=3)
    assert data.line_numbers.tolist() == [2, 3]
    assert "dropped 1 of 3" in caplog.text
    with pytest.raises(utils.CaptioningError, match="all 3 captions are longer than --max-seq-len 1"):
        D.load_parallel(lst, caps, vocab, max_seq_len=1)


def test_loaded_data_is_flat_arrays_and_round_trips(tmp_path, caplog):
    captions = ["a  b c", "x " * 9, "b", "d\u00e9j\u00e0 vu a", "c a b a", "a"]
    names = ["i0.npy", "i1.npy", "i2.npy", " i0.npy", "i3.npy", "i2.npy"]
    lst, caps = write_data(tmp_path, captions, names=names)
    vocab = V.build_vocab(["a b c"])
    data = D.load_parallel(lst, caps, vocab, max_seq_len=6)     # line 2 (9 tokens) is dropped
    assert "dropped 1 of 6" in caplog.text
    assert len(data) == 5 and data.tokens.dtype == np.int32 and data.tokens.ndim == 1
    assert data.offsets.dtype == np.int64 and data.offsets.tolist() == [0, 3, 4, 7, 11, 12]
    assert data.line_numbers.dtype == np.int64 and data.line_numbers.tolist() == [1, 3, 4, 5, 6]
    assert data.image_ids.dtype == np.int64 and data.image_ids.tolist() == [0, 1, 0, 2, 1]
    assert data.images == ["i0.npy", "i2.npy", "i3.npy"] and isinstance(data.joined_texts, bytes)
    assert not any(isinstance(getattr(data, f.name), list) and len(getattr(data, f.name)) == len(data)
                   for f in dataclasses.fields(data))    # nothing held per caption but the flat arrays
    kept = [captions[n - 1] for n in data.line_numbers]
    expected = [np.array(V.tokens_to_ids(c.split(), vocab), np.int32) for c in kept]
    for i, ids in enumerate(expected):
        np.testing.assert_array_equal(data.caption(i), ids)
        assert data.caption(i).base is not None      # a view into ``tokens``, not a copy
        assert data.name(i) == names[data.line_numbers[i] - 1].strip()
    np.testing.assert_array_equal(data.caption(len(data) - 1), expected[-1])
    assert data.lengths.tolist() == [3, 1, 3, 4, 1] and D.longest_caption(data) == 4
    assert data.texts == [" ".join(c.split()) for c in kept]
    assert data.names == [n.strip() for n in names if n != "i1.npy"]
    assert D.image_ids(data.names)[0].tolist() == data.image_ids.tolist()
    assert D.references_by_image(data) == [["a b c", "d\u00e9j\u00e0 vu a"], ["b", "a"], ["c a b a"]]
    # several references: items one file after the other, images numbered over all of them
    (tmp_path / "caps2").write_text("z\n" + "y " * 7 + "\nb b\nc\nq q q\nr\n")
    both = D.load_parallel_references(lst, [caps, str(tmp_path / "caps2")], vocab, 6)
    second = D.load_parallel(lst, str(tmp_path / "caps2"), vocab, 6)
    assert len(both) == 10 and both.tokens.dtype == np.int32 and both.offsets[-1] == len(both.tokens)
    assert both.line_numbers.tolist() == [1, 3, 4, 5, 6, 1, 3, 4, 5, 6]
    assert both.texts == data.texts + ["z", "b b", "c", "q q q", "r"]
    assert both.images == ["i0.npy", "i2.npy", "i3.npy"] and both.names == data.names + second.names
    assert both.image_ids.tolist() == D.image_ids(both.names)[0].tolist()
    for i in range(10):
        np.testing.assert_array_equal(both.caption(i), data.caption(i) if i < 5 else second.caption(i - 5))
    assert D.references_by_image(both) == [["a b c", "d\u00e9j\u00e0 vu a", "z", "c"], ["b", "a", "b b", "r"],
                                           ["c a b a", "q q q"]]
    # images first seen in a later part get the next ids
    other = D.ParallelData.concatenate([second, data])
    assert other.images == ["i0.npy", "i2.npy", "i3.npy"] and other.names == second.names + data.names
    (tmp_path / "l3").write_text("new.npy\ni2.npy\n")
    (tmp_path / "c3").write_text("a\nb\n")
    three = D.ParallelData.concatenate([data, D.load_parallel(str(tmp_path / "l3"), str(tmp_path / "c3"), vocab, 6)])
    assert three.images == ["i0.npy", "i2.npy", "i3.npy", "new.npy"] and three.image_ids.tolist()[-2:] == [3, 1]


def test_buckets():
    assert D.define_buckets(12, 5) == [5, 10, 12]
    assert D.define_buckets(10, 5) == [5, 10]
    got = D.assign_buckets([1, 5, 6, 12], [5, 10, 12])
    assert {k: list(v) for k, v in got.items()} == {5: [0, 1], 10: [2], 12: [3]}


def test_make_batch_layout():
    b = D.make_batch(np.zeros((2, 1, 1, 1)), [np.array([7, 8]), np.array([9])], 4, [0, 1])
    np.testing.assert_array_equal(b.target_input, [[C.BOS_ID, 7, 8, 0], [C.BOS_ID, 9, 0, 0]])
    np.testing.assert_array_equal(b.labels, [[7, 8, C.EOS_ID, 0], [9, C.EOS_ID, 0, 0]])
    assert b.num_valid_tokens == 5


def test_epoch_covers_every_item_with_fill_up(tmp_path):
    it, data, _ = make_iter(tmp_path, batch_size=4, bucket_width=3)
    seen = collections.Counter()
    for _ in range(it.batches_per_epoch):
        batch, end = it.next_batch()
        assert batch.features.shape[0] == 4           # filled up to the batch size
        lengths = (batch.labels != 0).sum(1)
        T = batch.labels.shape[1]
        assert lengths.max() <= T and lengths.min() > T - 3   # all from the same bucket of width 3
        # features belong to the captions of the batch
        np.testing.assert_array_equal(batch.features[:, 0, 0, 0], batch.indices)
        seen.update(batch.indices.tolist())
    assert end and it.epoch == 1
    assert set(seen) == set(range(40))
    assert sum(seen.values()) - 40 < 4 * len(it.buckets)     # only fill-up repeats


def test_word_batches(tmp_path):
    it, _, _ = make_iter(tmp_path, batch_size=20, batch_type="word", bucket_width=5, batch_multiple_of=2)
    for _ in range(it.batches_per_epoch):
        batch, _ = it.next_batch()
        T = batch.labels.shape[1]
        assert batch.features.shape[0] == max(2, (20 // T) // 2 * 2)


def test_no_bucketing_uses_one_bucket(tmp_path):
    it, data, _ = make_iter(tmp_path, batch_size=8, bucketing=False)
    assert list(it.buckets) == [D.longest_caption(data) + 1]


def test_state_restores_the_same_batches(tmp_path):
    it, data, _ = make_iter(tmp_path, batch_size=3, bucket_width=4, seed=5)
    for _ in range(it.batches_per_epoch + 2):
        it.next_batch()
    state = it.state_dict()
    expected = [it.next_batch()[0].indices.tolist() for _ in range(30)]
    it2, _, _ = make_iter(tmp_path, batch_size=3, bucket_width=4, seed=5)
    it2.load_state_dict(state)
    got = [it2.next_batch()[0].indices.tolist() for _ in range(30)]
    assert got == expected
    # another seed shuffles differently
    it3, _, _ = make_iter(tmp_path, batch_size=3, bucket_width=4, seed=6)
    it1, _, _ = make_iter(tmp_path, batch_size=3, bucket_width=4, seed=5)
    assert [it3.next_batch()[0].indices.tolist() for _ in range(5)] != \
        [it1.next_batch()[0].indices.tolist() for _ in range(5)]


def test_validation_pass_in_order_without_fill_up(tmp_path):
    lst, caps = write_data(tmp_path, CAPTIONS)
    data = D.load_parallel(lst, caps, V.build_vocab(CAPTIONS), 20)
    it = D.BatchIterator(data, FakeStore(40), list(range(40)), D.DataConfig(batch_size=6, max_seq_len=20),
                         shuffle=False)
    for _ in range(2):
        indices = [i for b in it for i in b.indices.tolist()]
        assert sorted(indices) == list(range(40))


def test_shard_plan_equal_counts():
    plan = [(5, [i]) for i in range(7)]
    shards = [D.shard_plan(plan, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert set(b[1][0] for s in shards for b in s) == set(range(7))
    assert sorted(b[1][0] for s in shards for b in s) == [0, 0, 1, 1, 2, 3, 4, 5, 6]


def test_prefetch_errors_reach_the_caller(tmp_path):
    it, _, _ = make_iter(tmp_path, batch_size=4)

    def broken(indices):
        raise utils.CaptioningError("list, line 3: feature file x.npy has shape (1,) but (2, 1, 1) expected")
    it.next_batch()
    it.store.get_batch = broken
    it._prefetched = None
    with pytest.raises(utils.CaptioningError, match="line 3"):
        it.next_batch()


def test_create_data_iters_with_real_features_repeated_images_and_several_references(tmp_path):
    for i in range(3):
        np.save(tmp_path / ("f%d.npy" % i), np.full((2, 1, 1), i, np.float32))
    lst, caps = write_data(tmp_path, ["a", "b", "c", "d"], names=["f0.npy", "f1.npy", "f2.npy", "f1.npy"])
    (tmp_path / "vlist").write_text("f2.npy\nf0.npy\n")
    (tmp_path / "vcaps1").write_text("a b\nb\n")
    (tmp_path / "vcaps2").write_text("c\nd a\n")
    vocab = V.build_vocab(["a b c d"])
    for mode in C.FEATURE_STORES:
        files = D.DataFiles(source_root=str(tmp_path), source=lst, target=caps,
                            validation_source=str(tmp_path / "vlist"),
                            validation_targets=[str(tmp_path / "vcaps1"), str(tmp_path / "vcaps2")], store_mode=mode)
        data = D.create_data_iters(files, vocab, D.DataConfig(batch_size=8, max_seq_len=5, bucket_width=5))
        assert data.feature_shape == (2, 1, 1)
        assert data.train_iter.image_ids.tolist() == [0, 1, 2, 1]
        index = data.train_iter.feature_index
        np.testing.assert_array_equal(data.train_iter.store.get_batch([index[3], index[2]])[:, 0, 0, 0], [1, 2])
        # every (image, reference) pair of the validation data is an item
        assert data.val_data.texts == ["a b", "b", "c", "d a"] and data.val_data.names == ["f2.npy", "f0.npy"] * 2
        assert data.val_data.images == ["f2.npy", "f0.npy"] and data.val_data.image_ids.tolist() == [0, 1, 0, 1]
        assert data.val_iter.image_ids.tolist() == [0, 1, 0, 1]
        assert D.references_by_image(data.val_data) == [["a b", "c"], ["b", "d a"]]
        (batch,) = list(data.val_iter)
        assert sorted(batch.features[:, 0, 0, 0].tolist()) == [0, 0, 2, 2]
    (tmp_path / "list").write_text("f0.npy\nf1.npy\nmissing.npy\nf1.npy\n")
    with pytest.raises(utils.CaptioningError, match="line 3"):
        D.create_data_iters(dataclasses.replace(files, store_mode="lazy"), vocab,
                            D.DataConfig(batch_size=8, max_seq_len=5, bucket_width=5))


def test_nan_features_are_an_error_naming_the_line_and_file(tmp_path):
    np.save(tmp_path / "f0.npy", np.zeros((2, 1, 1), np.float32))
    np.save(tmp_path / "f1.npy", np.array([np.nan, 0], np.float32).reshape(2, 1, 1))
    lst, caps = write_data(tmp_path, ["a", "b"], names=["f0.npy", "f1.npy"])
    files = D.DataFiles(source_root=str(tmp_path), source=lst, target=caps, validation_source=lst,
                        validation_targets=[caps])
    data = D.create_data_iters(files, V.build_vocab(["a b"]), D.DataConfig(batch_size=8, max_seq_len=5))
    with pytest.raises(utils.CaptioningError, match=r"list, line 2: feature file .*f1.npy holds NaN or infinite"):
        data.train_iter.next_batch()
