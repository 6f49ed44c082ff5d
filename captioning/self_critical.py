"""Self-critical sequence training (Rennie et al. 2017): optimise CIDEr-D directly, after cross-entropy training.

For every distinct image of a batch share, `SelfCriticalObjective` draws K captions from the model (`sampling.Sampler`,
no gradient, one hybridized step for all the share's images x K rows), rewards each with its CIDEr-D against all
training references of its image (`cider.CiderD`; document frequencies from all training references, computed once;
``</s>`` counts as a word, see `SelfCriticalObjective`), and subtracts a baseline: the mean reward of the image's
other K - 1 samples (``mean``, the "new self-critical" variant of Luo 2020) or the reward of the image's greedy
caption (``greedy``, the original). The sampled captions are then scored with the model's teacher-forced training
forward (the same graphs cross-entropy training uses, under ``autograd.record``; in groups of similar length,
`length_groups`) in the mode the samples were drawn in: without dropout, unless ``sample_dropout`` draws them with it,
so that ``log p`` is that of the policy that drew them (the policy gradient's). The loss of a sample is
``-(reward - baseline) * log p(sample)``, ``log p`` summed over its words and ``</s>`` (nothing after ``</s>``). A share's loss is the mean over its samples.
This works for every decoder type through the model's one interface (``encode``/``decode_step`` for sampling,
``forward`` for scoring). Randomness comes only from ``mx.random`` (the sampler), which the Trainer re-seeds at every
checkpoint, so a resumed run draws the same samples.
"""
import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import constants as C
from . import utils
from .beam_search import BeamSearch
from .cider import CiderD
from .sampling import Sampler

logger = logging.getLogger(__name__)

BASELINE_MEAN = "mean"
BASELINE_GREEDY = "greedy"
BASELINES = (BASELINE_MEAN, BASELINE_GREEDY)
LENGTH_STEP = 5   # sampled captions are padded to a multiple of this: fewer teacher-forcing graphs to build
MIN_GROUP_ROWS = 16   # rows of a length group of the teacher-forced pass (`length_groups`)


class PolicyGradientLoss(gluon.HybridBlock):
    """``(logits (N, T, V), labels (N, T), advantage (N,))`` -> the mean over rows of ``-advantage * log p(row)``,
    with ``log p(row)`` the sum of the labels' log-probabilities (``<pad>`` = 0 excluded)."""

    def hybrid_forward(self, F, logits, labels, advantage):
        log_probs = F.pick(F.log_softmax(logits, axis=-1), labels, axis=-1)          # (N, T)
        sequence = F.sum(log_probs * (labels != C.PAD_ID), axis=1)                   # (N,)
        return F.mean(-F.BlockGrad(advantage) * sequence)


def teacher_forcing_arrays(tokens: np.ndarray, step: int = LENGTH_STEP) -> Tuple[np.ndarray, np.ndarray]:
    """Sampled rows ``(N, T)`` (words, ``</s>``, then ``<pad>``) -> ``(target_input, labels)`` of ``T`` rounded up to a
    multiple of ``step``: labels are the rows, target_input ``<s>`` followed by the rows shifted right (``<pad>``
    after ``</s>``)."""
    n, t = tokens.shape
    length = max(step, -(-t // step) * step)
    labels = np.zeros((n, length), dtype=np.float32)
    labels[:, :t] = tokens
    target_input = np.zeros_like(labels)
    target_input[:, 0] = C.BOS_ID
    target_input[:, 1:] = labels[:, :-1]
    target_input[target_input == C.EOS_ID] = C.PAD_ID
    return target_input, labels


def length_groups(lengths: np.ndarray, step: int = LENGTH_STEP, min_rows: int = MIN_GROUP_ROWS) -> List[np.ndarray]:
    """Indices of ``lengths`` in groups of similar length, each to be padded to its own longest (a multiple of
    ``step``), instead of padding every row to the longest of all: sampled captions have a long tail (a few
    samples run on to the length limit), and a padded step costs as much as a real one. Rows are sorted by
    length; a group closes at a length boundary once it holds ``min_rows`` rows (fewer, larger calls: each call
    of the network has a fixed cost), the last takes what is left."""
    order = np.argsort(lengths, kind="stable")
    padded = np.maximum(step, -(-lengths[order] // step) * step)
    groups, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or (end - start >= min_rows and padded[end] != padded[end - 1]):
            groups.append(order[start:end])
            start = end
    return groups


def distinct_rows(tokens: np.ndarray, advantages: np.ndarray, num_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """The rows worth a teacher-forced pass: identical samples of an image (K consecutive rows) are one row with the
    sum of their advantages, and rows whose (summed) advantage is 0 add nothing to the gradient (e.g. K identical
    samples under the mean baseline) and are left out (one is kept if nothing else is left). Returns the kept rows
    and their advantages scaled so that the mean over the kept rows is the sum over all samples / their number:
    the same loss and gradient as every sample on its own row."""
    groups: Dict[Tuple[int, bytes], int] = {}
    rows: List[int] = []
    sums: List[float] = []
    for r in range(len(tokens)):
        key = (r // num_samples, tokens[r].tobytes())
        slot = groups.get(key)
        if slot is None:
            groups[key] = len(rows)
            rows.append(r)
            sums.append(float(advantages[r]))
        else:
            sums[slot] += float(advantages[r])
    rows_np, sums_np = np.asarray(rows, dtype=np.int64), np.asarray(sums, dtype=np.float64)
    keep = sums_np != 0.0
    if not keep.any():
        keep[0] = True
    rows_np, sums_np = rows_np[keep], sums_np[keep]
    return rows_np, (sums_np * len(rows_np) / len(tokens)).astype(np.float32)


def references_as_ids(references: Sequence[Sequence[str]], vocab: Dict[str, int],
                      end: bool = False) -> List[List[List[int]]]:
    """Training references as word ids, so that sampled ids are scored without turning them into words. A word the
    vocabulary lacks gets an id of its own (negative, never sampled); ``<unk>`` in a sample thus matches nothing, as
    the string ``<unk>`` would. With ``end`` each reference ends with ``</s>``."""
    unknown: Dict[str, int] = {}

    def word_id(word: str) -> int:
        found = vocab.get(word)
        if found is not None and found >= len(C.VOCAB_SYMBOLS):
            return found
        return unknown.setdefault(word, -1 - len(unknown))

    tail = [C.EOS_ID] if end else []
    return [[[word_id(w) for w in ref.split()] + tail for ref in refs] or [tail] for refs in references]


class SelfCriticalObjective:
    """The self-critical objective (`objective.Objective`): ``references[i]`` are all training captions of training
    image i (`objective.BatchShare.image_ids`), ``num_samples`` K samples per image, ``baseline`` mean | greedy.

    With ``reward_end`` (the default, as self-critical.pytorch does) ``</s>`` counts as the last word of every
    reference and of every sample that ended, so a caption cut short ("a man in a red shirt is standing in front of
    a") misses the reference n-grams that end a caption, and a sample cut at the maximum length misses them too."""
    name = C.LOSS_SELF_CRITICAL

    def __init__(self, references: Sequence[Sequence[str]], vocab: Dict[str, int], num_samples: int = 5,
                 baseline: str = BASELINE_MEAN, max_output_length: int = C.FALLBACK_MAX_OUTPUT_LENGTH, top_k: int = 0,
                 temperature: float = 1.0, reward_end: bool = True, sample_dropout: bool = False) -> None:
        assert baseline in BASELINES, baseline
        utils.check_condition(num_samples >= (2 if baseline == BASELINE_MEAN else 1),
                              "--self-critical-baseline mean compares each sample with the image's other samples: "
                              "it needs --self-critical-samples 2 or more (or use --self-critical-baseline greedy)")
        self.num_samples = num_samples
        self.baseline = baseline
        self.max_output_length = max_output_length
        self.top_k = top_k
        self.temperature = temperature
        start = time.time()
        self.reward_end = reward_end
        self.sample_dropout = sample_dropout
        self.cider = CiderD(references_as_ids(references, vocab, end=reward_end))
        logger.info("Self-critical training: %d samples per image, %s baseline; CIDEr-D document frequencies of %d "
                    "training images in %.1fs", num_samples, baseline, len(references), time.time() - start)
        self.loss = PolicyGradientLoss()
        self.loss.hybridize()
        self._search: Dict[Tuple[int, mx.Context], Tuple[Sampler, BeamSearch]] = {}
        self._sums = np.zeros(4)              # reward, baseline, sample length, number of samples
        self.seconds = {"sample": 0.0, "reward": 0.0, "forward_backward": 0.0}

    def _searches(self, model, ctx: mx.Context) -> Tuple[Sampler, BeamSearch]:
        key = (id(model), ctx)
        if key not in self._search:
            self._search[key] = (Sampler([model], self.num_samples, self.max_output_length, top_k=self.top_k,
                                         temperature=self.temperature, ctx=ctx),
                                 BeamSearch([model], beam_size=1, max_output_length=self.max_output_length, ctx=ctx))
        return self._search[key]

    def rewards(self, captions: Sequence[Sequence[int]], images: np.ndarray,
                greedy: Optional[Sequence[Sequence[int]]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(rewards, baselines) of ``captions`` (K consecutive samples per image of ``images``, distinct image ids),
        with the ``greedy`` captions of the images for the greedy baseline."""
        k = self.num_samples
        rewards = self.cider.score(captions, np.repeat(images, k))
        if self.baseline == BASELINE_MEAN:
            by_image = rewards.reshape(-1, k)
            baselines = ((by_image.sum(axis=1, keepdims=True) - by_image) / (k - 1)).reshape(-1)
        else:
            assert greedy is not None
            baselines = np.repeat(self.cider.score(greedy, images), k)
        return rewards, baselines

    def forward_backward(self, model, shares: Sequence) -> None:
        k = self.num_samples
        prepared = []
        for share in shares:
            start = time.time()
            images, first = np.unique(np.asarray(share.image_ids, dtype=np.int64), return_index=True)
            features = share.features
            if len(first) != features.shape[0] or not np.array_equal(first, np.arange(len(first))):
                features = mx.nd.take(features, mx.nd.array(first, ctx=share.ctx))
            sampler, greedy_search = self._searches(model, share.ctx)
            with autograd.train_mode() if self.sample_dropout else autograd.predict_mode():
                samples = sampler.sample(features)
            greedy = None
            if self.baseline == BASELINE_GREEDY:
                greedy = [r.tokens + ([C.EOS_ID] if self.reward_end and r.nbest[0].finished else [])
                          for r in greedy_search.search(features)]
            mid = time.time()
            captions = samples.captions(with_end=self.reward_end)
            rewards, baselines = self.rewards(captions, images, greedy)
            self.seconds["sample"] += mid - start
            self.seconds["reward"] += time.time() - mid
            rows, advantages = distinct_rows(samples.tokens, rewards - baselines, k)
            # the rows in groups of similar length; each group's mean loss weighted by its share of the rows, so
            # that the sum is the mean over all rows
            for group in length_groups(samples.lengths[rows], LENGTH_STEP, MIN_GROUP_ROWS):
                picked = rows[group]
                target_input, labels = teacher_forcing_arrays(samples.tokens[picked, :samples.lengths[picked].max()],
                                                              LENGTH_STEP)
                prepared.append((mx.nd.take(features, mx.nd.array(picked // k, ctx=share.ctx)),
                                 mx.nd.array(target_input, ctx=share.ctx), mx.nd.array(labels, ctx=share.ctx),
                                 mx.nd.array(advantages[group] * (len(group) / len(rows)), ctx=share.ctx)))
            self._sums += (rewards.sum(), baselines.sum(), samples.lengths.sum(), len(rewards))
        start = time.time()
        with autograd.record(train_mode=self.sample_dropout):
            losses = [self.loss(model(features, target_input), labels, advantage)
                      for features, target_input, labels, advantage in prepared]
        autograd.backward(losses)
        self.seconds["forward_backward"] += time.time() - start

    def metrics(self, reduce: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Dict[str, float]:
        """``reward-train`` (mean CIDEr-D of the samples, COCO scale), ``sample-length-train`` (words + ``</s>``),
        and with the greedy baseline ``baseline-train`` (the greedy captions' mean reward; the mean baseline's equals
        the reward by construction)."""
        sums, self._sums = self._sums, np.zeros(4)
        reward, baseline, length, count = reduce(sums) if reduce is not None else sums
        count = max(count, 1.0)
        metrics = {"reward-train": float(reward / count), "sample-length-train": float(length / count)}
        if self.baseline == BASELINE_GREEDY:
            metrics["baseline-train"] = float(baseline / count)
        return metrics
