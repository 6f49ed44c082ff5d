"""Training data: parallel feature list + captions, bucketed by caption length, batched, shuffled, resumable.

A caption of n tokens becomes ``target_input = <s> w1 .. wn`` and ``labels = w1 .. wn </s>`` (n+1 positions),
padded with ``<pad>`` to its bucket's length T. Captions needing more than ``max_seq_len`` positions are dropped
(and counted in the log). Buckets are multiples of ``bucket_width`` up to ``max_seq_len``
(or one bucket of the longest caption with ``--no-bucketing``).

Each epoch the iterator draws a *batch plan* with its own random generator: the items of every bucket are
shuffled and cut into batches, the last batch of a bucket is filled up with random repeats of that bucket's items
(``--fill-up replicate``), and the batches are shuffled. The plan, the position in it, the epoch and the generator's
state are the iterator's state (`state_dict`), saved at checkpoints so a resumed run sees the same batches.
Features of the next batch are read in a background thread while the model trains on the current one.
"""
import logging
import os
import queue
import threading
from array import array
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import constants as C
from . import features, utils
from .config import Config
from .vocab import Vocab, tokens_to_ids

logger = logging.getLogger(__name__)


@dataclass
class DataConfig(Config):
    batch_size: int = 64
    batch_type: str = C.BATCH_TYPE_SENTENCE     # sentence: captions per batch; word: target tokens per batch
    bucket_width: int = 10
    bucketing: bool = True
    max_seq_len: int = 99                       # target positions, counting </s>
    fill_up: str = "replicate"
    seed: int = C.DEFAULT_SEED
    batch_multiple_of: int = 1                  # word batches are rounded down to a multiple of this (devices)


class Batch(NamedTuple):
    """One training/validation batch (numpy)."""
    features: np.ndarray        # (B, C, H, W) float32
    target_input: np.ndarray    # (B, T) float32 token ids, <s> first
    labels: np.ndarray          # (B, T) float32 token ids, </s> last
    indices: np.ndarray         # (B,) item (line) indices: which list/caption lines this batch holds

    @property
    def num_valid_tokens(self) -> int:
        return int((self.labels != C.PAD_ID).sum())


@dataclass(frozen=True, eq=False)
class ParallelData:
    """The kept items (feature file, caption) of a feature list and its caption file(s), held in flat arrays, not
    one Python object per caption: item i's caption is ``tokens[offsets[i]:offsets[i + 1]]`` (`caption`), its
    feature file ``images[image_ids[i]]`` (`name`) and ``line_numbers[i]`` its 1-based line (over-long captions
    dropped)."""
    tokens: np.ndarray          # (total tokens,) int32: the token ids of every item, without <s>/</s>, end to end
    offsets: np.ndarray         # (n + 1,) int64: where each item's caption starts in ``tokens`` (and where it ends)
    line_numbers: np.ndarray    # (n,) int64
    images: List[str]           # the distinct feature names, in order of first appearance
    image_ids: np.ndarray       # (n,) int64: item -> index into ``images`` (what `image_ids` computes)
    joined_texts: bytes         # the captions as written (tokens joined by single spaces), one per line, UTF-8
                                # (a token holds no whitespace, so no newline: line i is item i's text, `texts`)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def caption(self, i: int) -> np.ndarray:
        """The token ids of item i (a view)."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """(n,) int64: tokens of each item's caption."""
        return np.diff(self.offsets)

    def name(self, i: int) -> str:
        """The feature file name of item i."""
        return self.images[self.image_ids[i]]

    @property
    def names(self) -> List[str]:
        """The feature file name of every item (a list built on each call)."""
        return [self.images[k] for k in self.image_ids.tolist()]

    @property
    def texts(self) -> List[str]:
        """The caption text of every item (references for decoding; a list built on each call)."""
        return self.joined_texts.decode("utf-8").split("\n") if len(self) else []

    @staticmethod
    def concatenate(parts: Sequence["ParallelData"]) -> "ParallelData":
        """The items of ``parts`` one after the other (images renumbered in order of first appearance)."""
        if not parts:
            raise ValueError("ParallelData.concatenate needs at least one part")
        renumber, images = image_ids([name for p in parts for name in p.images])
        first_image = np.cumsum([0] + [len(p.images) for p in parts])
        starts = np.cumsum([0] + [len(p.tokens) for p in parts])
        offsets = [np.zeros(1, np.int64)] + [p.offsets[1:] + start for p, start in zip(parts, starts)]
        return ParallelData(tokens=np.concatenate([p.tokens for p in parts]).astype(np.int32, copy=False),
                            offsets=np.concatenate(offsets).astype(np.int64, copy=False),
                            line_numbers=np.concatenate([p.line_numbers for p in parts]).astype(np.int64, copy=False),
                            images=images,
                            image_ids=np.concatenate([renumber[f:][p.image_ids] for f, p in zip(first_image, parts)]),
                            joined_texts=b"\n".join(p.joined_texts for p in parts))


# ---------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------

def read_parallel(list_path: str, caption_path: str) -> Tuple[List[str], List[str]]:
    """The feature list and the caption lines, checked: same number of lines, no empty caption, no empty name."""
    names = utils.read_lines(list_path)
    captions = utils.read_lines(caption_path)
    utils.check_condition(len(names) == len(captions),
                          "%s has %d lines but %s has %d: the feature list and the captions must be aligned line "
                          "by line" % (list_path, len(names), caption_path, len(captions)))
    utils.check_condition(len(names) > 0, "%s: empty file; give at least one feature and caption" % list_path)
    for i, (name, caption) in enumerate(zip(names, captions), 1):
        if not name.strip():     # (messages formatted only for a bad line: this runs once per caption)
            raise utils.CaptioningError("%s: empty feature name; every line must name a feature file"
                                        % utils.location(list_path, i))
        if not caption.strip():
            raise utils.CaptioningError("%s: empty caption; every line needs at least one word"
                                        % utils.location(caption_path, i))
    return [n.strip() for n in names], captions


def load_parallel(list_path: str, caption_path: str, vocab: Vocab, max_seq_len: int,
                  what: str = "training") -> ParallelData:
    """Read, check and convert to ids; drop captions longer than ``max_seq_len - 1`` tokens (logged with a count).
    Raises `CaptioningError` if nothing is left."""
    names, texts = read_parallel(list_path, caption_path)
    tokens, offsets, line_numbers = array("i"), array("q", [0]), array("q")
    kept_texts: List[str] = []
    dropped = 0
    for i, text in enumerate(texts, 1):
        words = text.split()
        if len(words) + 1 > max_seq_len:
            dropped += 1
            continue
        tokens.extend(tokens_to_ids(words, vocab))
        offsets.append(len(tokens))
        line_numbers.append(i)
        joined = " ".join(words)
        kept_texts.append(text if joined == text else joined)     # (no second copy of a caption already so)
    if dropped:
        logger.warning("%s: dropped %d of %d %s captions longer than --max-seq-len %d (%d tokens + </s>)",
                       caption_path, dropped, len(texts), what, max_seq_len, max_seq_len - 1)
    utils.check_condition(len(line_numbers) > 0,
                          "%s: all %d captions are longer than --max-seq-len %d allows (%d tokens + </s>); raise "
                          "--max-seq-len" % (caption_path, len(texts), max_seq_len, max_seq_len - 1))
    ids = np.array(tokens, dtype=np.int32)
    del tokens
    per_item, images = image_ids([names[i - 1] for i in line_numbers])
    total, unk = len(ids), int(np.count_nonzero(ids == C.UNK_ID))
    logger.info("%s data: %d captions (%d tokens, %.2f%% <unk>) from %s and %s", what.capitalize(),
                len(line_numbers), total, 100.0 * unk / max(total, 1), list_path, caption_path)
    return ParallelData(tokens=ids, offsets=np.array(offsets, dtype=np.int64),
                        line_numbers=np.array(line_numbers, dtype=np.int64), images=images, image_ids=per_item,
                        joined_texts="\n".join(kept_texts).encode("utf-8"))


def image_ids(names: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """The image id of every item (distinct feature names numbered in order of first appearance: a list that
    repeats an image on several lines, one per caption, gives those lines one id) and the distinct names."""
    ids: Dict[str, int] = {}
    per_item = np.array([ids.setdefault(name, len(ids)) for name in names], dtype=np.int64)
    return per_item, list(ids)


def references_by_image(data: ParallelData) -> List[List[str]]:
    """``result[i]``: every caption (tokens joined by single spaces) of image ``i`` (the ids of `image_ids`)."""
    references: List[List[str]] = [[] for _ in data.images]
    for image, text in zip(data.image_ids.tolist(), data.texts):
        references[image].append(text)
    return references


def longest_caption(data: ParallelData) -> int:
    """Tokens of the longest caption (without </s>)."""
    return int(data.lengths.max())


# ---------------------------------------------------------------------------------------------------------------
# buckets and batch plans
# ---------------------------------------------------------------------------------------------------------------

def define_buckets(max_seq_len: int, bucket_width: int) -> List[int]:
    """Bucket lengths ``w, 2w, ..., max_seq_len`` (the last one may be shorter than w wide)."""
    buckets = list(range(bucket_width, max_seq_len, bucket_width))
    buckets.append(max_seq_len)
    return sorted(set(buckets))


def assign_buckets(lengths: features.Indices, buckets: Sequence[int]) -> Dict[int, np.ndarray]:
    """``{bucket length T: item indices}`` with each item (needing ``length`` positions) in the smallest bucket
    that holds it; empty buckets left out."""
    lengths_arr = np.asarray(lengths)
    which = np.searchsorted(np.asarray(buckets), lengths_arr, side="left")
    result = {}
    for b, bucket in enumerate(buckets):
        members = np.nonzero(which == b)[0]
        if len(members):
            result[int(bucket)] = members
    return result


def bucket_batch_size(config: DataConfig, bucket: int) -> int:
    """Captions per batch in a bucket: ``batch_size`` (sentence), or ``batch_size // T`` rounded down to a
    multiple of ``batch_multiple_of`` (word; at least that multiple)."""
    if config.batch_type == C.BATCH_TYPE_SENTENCE:
        return config.batch_size
    size = config.batch_size // bucket
    size -= size % config.batch_multiple_of
    return max(size, config.batch_multiple_of)


Plan = List[Tuple[int, List[int]]]   # [(bucket length, item indices), ...]


def make_plan(buckets: Dict[int, np.ndarray], config: DataConfig, rng: Optional[np.random.Generator],
              fill_up: bool = True) -> Plan:
    """The batches of one pass: shuffled within and across buckets when ``rng`` is given (training), in order
    otherwise (validation). The last batch of a bucket is filled up with random repeats of that bucket's items
    when ``fill_up`` (only with an ``rng``)."""
    plan: Plan = []
    for bucket in sorted(buckets):
        items = buckets[bucket]
        if rng is not None:
            items = rng.permutation(items)
        size = bucket_batch_size(config, bucket)
        for start in range(0, len(items), size):
            batch = [int(i) for i in items[start:start + size]]
            if fill_up and rng is not None and len(batch) < size:
                batch += [int(i) for i in rng.choice(buckets[bucket], size - len(batch), replace=True)]
            plan.append((bucket, batch))
    if rng is not None:
        order = rng.permutation(len(plan))
        plan = [plan[i] for i in order]
    return plan


def shard_plan(plan: Plan, rank: int, num_workers: int) -> Plan:
    """Worker ``rank``'s batches of a plan: every ``num_workers``-th, the plan padded by repeating its first
    batches so that every worker gets the same number (distributed training needs equal update counts)."""
    if num_workers <= 1:
        return plan
    pad = (-len(plan)) % num_workers
    padded = plan + plan[:pad] if pad <= len(plan) else plan + [plan[i % len(plan)] for i in range(pad)]
    return padded[rank::num_workers]


def batch_part(batch: Batch, part: int, parts: int) -> Batch:
    """Part ``part`` of ``parts`` of a batch's rows (contiguous, sizes differing by at most one; `np.array_split`).
    The whole batch when ``parts`` is 1."""
    if parts == 1:
        return batch
    return Batch(*(np.array_split(array, parts)[part] for array in batch))


def make_batch(features: np.ndarray, captions: Sequence[np.ndarray], bucket: int, indices: Sequence[int]) -> Batch:
    """Pad a batch's captions to the bucket length: ``<s> w.. <pad>..`` and ``w.. </s> <pad>..``."""
    batch_size = len(captions)
    target_input = np.zeros((batch_size, bucket), dtype=np.float32)
    labels = np.zeros((batch_size, bucket), dtype=np.float32)
    for row, ids in enumerate(captions):
        n = len(ids)
        target_input[row, 0] = C.BOS_ID
        target_input[row, 1:n + 1] = ids
        labels[row, :n] = ids
        labels[row, n] = C.EOS_ID
    return Batch(features, target_input, labels, np.asarray(indices, dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------------
# iterators
# ---------------------------------------------------------------------------------------------------------------

class BatchIterator:
    """Batches of ``data`` with features from ``store`` (indexed by the item's position in ``data``... see
    ``feature_index``). ``shuffle=True``: training (per-epoch plans, fill-up, resumable state, endless epochs
    through `next_batch`); ``shuffle=False``: one ordered pass per `__iter__` (validation).

    ``feature_index[i]`` is the store row of item i (the store is opened on the whole list; dropped lines are
    skipped through this index)."""

    def __init__(self, data: ParallelData, store: features.FeatureStore, feature_index: features.Indices,
                 config: DataConfig, shuffle: bool = True, rank: int = 0, num_workers: int = 1,
                 prefetch: bool = True) -> None:
        self.data = data
        self.store = store
        self.feature_index = np.asarray(feature_index, dtype=np.int64)
        self.image_ids = data.image_ids               # item -> image (see `references_by_image`)
        self.config = config
        self.shuffle = shuffle
        self.rank = rank
        self.num_workers = num_workers
        self.prefetch = prefetch
        if config.bucketing:
            buckets = define_buckets(config.max_seq_len, config.bucket_width)
        else:
            buckets = [longest_caption(data) + 1]
        self.buckets = assign_buckets(data.lengths + 1, buckets)
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0
        self.position = 0
        self.full_plan: Plan = []     # the epoch's plan before sharding (the same on every worker)
        self.plan: Plan = []          # this worker's batches
        self._prefetched: Optional[Tuple[int, int, "queue.Queue"]] = None
        if shuffle:
            self._new_epoch(first=True)
        logger.info("%s: %d captions in %d buckets %s", "Training batches" if shuffle else "Validation batches",
                    len(data), len(self.buckets),
                    ", ".join("%d:%d" % (b, len(m)) for b, m in sorted(self.buckets.items())))

    # -- training ------------------------------------------------------------------------------------------------
    def _new_epoch(self, first: bool = False) -> None:
        self.full_plan = make_plan(self.buckets, self.config, self.rng, fill_up=self.config.fill_up == "replicate")
        self.plan = shard_plan(self.full_plan, self.rank, self.num_workers)
        self.position = 0
        if not first:
            self.epoch += 1

    @property
    def batches_per_epoch(self) -> int:
        return len(self.plan)

    def next_batch(self) -> Tuple[Batch, bool]:
        """The next training batch and whether it is the last of its epoch (the iterator then moves on to the
        next epoch's plan)."""
        batch = self._take(self.position)
        self.position += 1
        end_of_epoch = self.position >= len(self.plan)
        if end_of_epoch:
            self._new_epoch()
        if self.prefetch:
            self._start_prefetch(self.position)
        return batch, end_of_epoch

    def _load(self, entry: Tuple[int, List[int]]) -> Batch:
        """The batch of a plan entry (the feature store refuses NaN or infinite features, naming the file)."""
        bucket, items = entry
        features = self.store.get_batch(self.feature_index[items])
        return make_batch(features, [self.data.caption(i) for i in items], bucket, items)

    def _take(self, position: int) -> Batch:
        if self._prefetched is not None:
            epoch, pos, box = self._prefetched
            self._prefetched = None
            if (epoch, pos) == (self.epoch, position):
                return _result(box)
        return self._load(self.plan[position])

    def _start_prefetch(self, position: int) -> None:
        if position < len(self.plan):
            self._prefetched = (self.epoch, position, self._load_async(self.plan[position]))

    def state_dict(self) -> Dict[str, Any]:
        """Epoch, position, the (unsharded) plan and the generator state: enough to continue with the same
        batches, on every worker of a distributed run."""
        return {"epoch": self.epoch, "position": self.position,
                "plan": [[b, list(items)] for b, items in self.full_plan], "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.full_plan = [(int(b), [int(i) for i in items]) for b, items in state["plan"]]
        self.plan = shard_plan(self.full_plan, self.rank, self.num_workers)
        self.rng.bit_generator.state = state["rng"]
        self._prefetched = None

    # -- validation ----------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """One ordered pass over every item (no fill-up, no shuffling), features read one batch ahead."""
        plan = make_plan(self.buckets, self.config, None, fill_up=False)
        if not plan:
            return
        pending = self._load_async(plan[0])
        for k in range(len(plan)):
            batch = _result(pending)
            if k + 1 < len(plan):
                pending = self._load_async(plan[k + 1])
            yield batch

    def _load_async(self, entry: Tuple[int, List[int]]) -> "queue.Queue":
        """The one prefetch helper: the batch of ``entry`` read in a background thread (or now, without
        prefetching) into a queue; `_result` takes it out."""
        box: "queue.Queue" = queue.Queue(maxsize=1)

        def work() -> None:
            try:
                box.put(self._load(entry))
            except BaseException as e:  # noqa: BLE001 - re-raised by _result in the training thread
                box.put(e)

        if self.prefetch:
            threading.Thread(target=work, name="prefetch", daemon=True).start()
        else:
            work()
        return box

    @property
    def num_items(self) -> int:
        return len(self.data)


def _result(box: "queue.Queue") -> Batch:
    result = box.get()
    if isinstance(result, BaseException):
        raise result
    return result


def open_store(root: str, list_path: str, data: ParallelData, mode: str,
               allow_absolute: bool = False) -> Tuple[features.FeatureStore, np.ndarray]:
    """A feature store over every line of ``list_path`` (via `features.open_feature_store`, so its errors name the
    right line) and the store row of each kept item of ``data``. Stores load a file listed on several lines (one
    image with several captions) once."""
    names = [n.strip() for n in utils.read_lines(list_path)]
    store = features.open_feature_store(root, names, mode=mode, list_path=list_path, allow_absolute=allow_absolute)
    if mode == C.FEATURE_STORE_LAZY:
        check_feature_files(store, root, list_path)
    return store, data.line_numbers - 1


def load_parallel_references(list_path: str, caption_paths: Sequence[str], vocab: Vocab, max_seq_len: int,
                             what: str = "validation") -> ParallelData:
    """`load_parallel` of one feature list with several caption files, each line-aligned with it (one reference
    per file): every (image, caption) pair becomes an item."""
    parts = [load_parallel(list_path, path, vocab, max_seq_len, what) for path in caption_paths]
    data = ParallelData.concatenate(parts)
    if len(parts) > 1:
        logger.info("%s data: %d (image, caption) pairs from %d reference files", what.capitalize(),
                    len(data), len(parts))
    return data


def check_feature_files(store: features.FeatureStore, root: str, list_path: str) -> None:
    """Every distinct feature file of a lazily read list has the store's shape (read from the .npy headers, so
    a bad file is reported before training, not in the middle)."""
    expected = tuple(store.feature_shape)
    for name, first in zip(store.distinct, store.first_lines().tolist()):
        line = first + 1
        path = os.path.join(root, name)
        try:
            shape, _, _ = features.read_npy_header(path)
        except (OSError, ValueError) as e:
            raise utils.CaptioningError("%s: feature file %s cannot be read (%s); re-run extract_features"
                                        % (utils.location(list_path, line), path, e)) from None
        utils.check_condition(tuple(shape) == expected,
                              "%s: feature file %s has shape %s but %s was expected (from the feature folder's "
                              "sidecar/first file); re-extract it" % (utils.location(list_path, line), path,
                                                                       tuple(shape), expected))


@dataclass
class DataFiles:
    """Where the training and validation data are: feature folders, feature lists and captions. A list may name
    an image on several lines (one per caption); ``validation_targets`` may be several files, one reference per
    file, each line-aligned with ``validation_source``."""
    source_root: str
    source: str
    target: str
    validation_source: str
    validation_targets: List[str]
    validation_source_root: Optional[str] = None   # default: source_root
    store_mode: str = C.FEATURE_STORE_LAZY
    allow_absolute_paths: bool = False              # feature names may leave their root (absolute, .., links)


@dataclass
class TrainingData:
    """What `create_data_iters` builds."""
    train_data: ParallelData
    val_data: ParallelData
    train_iter: BatchIterator
    val_iter: BatchIterator
    feature_shape: Tuple[int, int, int]


def create_data_iters(files: DataFiles, vocab: Vocab, config: DataConfig, rank: int = 0,
                      num_workers: int = 1) -> TrainingData:
    """Read and check the data (one-line errors naming file and line), open the feature stores and build the
    training iterator (shuffled, this worker's shard) and the validation iterator."""
    train_data = load_parallel(files.source, files.target, vocab, config.max_seq_len, "training")
    val_data = load_parallel_references(files.validation_source, files.validation_targets, vocab,
                                        config.max_seq_len, "validation")
    val_root = files.validation_source_root or files.source_root
    train_store, train_index = open_store(files.source_root, files.source, train_data, files.store_mode,
                                          files.allow_absolute_paths)
    val_store, val_index = open_store(val_root, files.validation_source, val_data, files.store_mode,
                                      files.allow_absolute_paths)
    utils.check_condition(tuple(val_store.feature_shape) == tuple(train_store.feature_shape),
                          "%s: validation features have shape %s but the training features %s; extract both with "
                          "the same CNN layer and image size" % (files.validation_source,
                                                                 tuple(val_store.feature_shape),
                                                                 tuple(train_store.feature_shape)))
    train_iter = BatchIterator(train_data, train_store, train_index, config, shuffle=True, rank=rank,
                               num_workers=num_workers)
    val_iter = BatchIterator(val_data, val_store, val_index, config, shuffle=False)
    return TrainingData(train_data, val_data, train_iter, val_iter,
                        features.as_shape(int(d) for d in train_store.feature_shape))

