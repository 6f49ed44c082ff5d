"""CIDEr-D (Vedantam et al. 2015) as the COCO caption server computes it (``pycocoevalcap``'s ``Cider``), vectorised.

For every n = 1..4, a caption is a vector of tf-idf weights over its n-grams: ``tf * (log(N) - log(max(1, df)))``,
with ``df`` the number of images whose references contain the n-gram and ``N`` the number of images of the reference
corpus. A candidate's score against one reference, per n, is the clipped cosine ``sum_g min(c_g, r_g) * r_g /
(|c| |r|)`` times the length penalty ``exp(-(l_c - l_r)^2 / (2 sigma^2))`` (sigma 6). The per-n scores are averaged
over n, averaged over the image's references, and multiplied by 10. Two details follow the reference code exactly:
a caption's "length" is its number of bigrams (``max(words - 1, 0)``), and a candidate n-gram that no reference of the
corpus has gets the idf ``log(N)``.

`CiderD` computes the document frequencies once from a reference corpus (one list of references per image) and keeps
each image's reference n-gram counts in flat arrays, so scoring many candidates (say K samples of each image of a
training batch, against their images' references: self-critical rewards) is one vectorised pass: the per-candidate
Python work is only counting the candidate's own n-grams. Tokens are compared as given: pass captions already
tokenised and lower-cased (strings are split on whitespace); any hashable tokens work (e.g. word ids), as long as
candidates and references use the same ones.
"""
from collections import Counter
from itertools import chain
from typing import Dict, Hashable, List, Sequence, Tuple, Union

import numpy as np

Tokens = Sequence[Hashable]
Caption = Union[str, Tokens]

MAX_N = 4
SIGMA = 6.0


def _tokens(caption: Caption) -> Tuple[Hashable, ...]:
    return tuple(caption.split()) if isinstance(caption, str) else tuple(caption)


def ngram_counts(tokens: Tuple[Hashable, ...], n: int = MAX_N) -> Counter:
    """Counts of every 1..n-gram of ``tokens`` (n-grams as tuples)."""
    return Counter(chain.from_iterable(zip(*[tokens[i:] for i in range(k)]) for k in range(1, n + 1)))


class CiderD:
    """CIDEr-D against a fixed reference corpus: ``references[i]`` is the list of reference captions of image i.

    The document frequencies (and ``log N``) come from this corpus; `score` rates candidates against the references
    of the images they belong to. ``CiderD(refs).corpus_score(hypotheses)`` is ``pycocoevalcap``'s ``Cider`` on the
    same data (one hypothesis per image)."""

    def __init__(self, references: Sequence[Sequence[Caption]], n: int = MAX_N, sigma: float = SIGMA) -> None:
        assert references, "CIDEr-D needs at least one image with references"
        assert all(len(refs) > 0 for refs in references), "every image needs at least one reference"
        self.n = n
        self.sigma = sigma
        self.num_images = len(references)
        self.ref_len = float(np.log(float(self.num_images)))
        self.max_refs = max(len(refs) for refs in references)
        self.num_refs = np.asarray([len(refs) for refs in references], dtype=np.float64)
        # images with the same references (e.g. one entry per sample of an image) are counted once
        distinct: Dict[Tuple[Tuple[Hashable, ...], ...], int] = {}
        image_refs = np.asarray([distinct.setdefault(tuple(_tokens(r) for r in refs), len(distinct))
                                 for refs in references], dtype=np.int64)
        # n-gram ids; per distinct reference list: its entries (reference, n-gram id, count) and its n-gram set
        self._ids: Dict[Tuple[Hashable, ...], int] = {}
        orders: List[int] = []
        entries, grams_of = [], []
        for refs in distinct:
            ref_index, gram_index, counts = [], [], []
            for j, ref in enumerate(refs):
                for gram, count in ngram_counts(ref, n).items():
                    gid = self._ids.get(gram)
                    if gid is None:
                        gid = self._ids[gram] = len(orders)
                        orders.append(len(gram) - 1)
                    ref_index.append(j)
                    gram_index.append(gid)
                    counts.append(count)
            entries.append((np.asarray(ref_index, dtype=np.int64), np.asarray(gram_index, dtype=np.int64),
                            np.asarray(counts, dtype=np.float64)))
            grams_of.append(np.unique(entries[-1][1]))
        self._num_grams = max(len(orders), 1)
        self._order = np.asarray(orders, dtype=np.int64)                       # n - 1 per n-gram id
        # document frequency: the number of images whose references have the n-gram
        multiplicity = np.bincount(image_refs, minlength=len(distinct)).astype(np.float64)
        df = np.bincount(np.concatenate(grams_of), minlength=len(orders),
                         weights=np.repeat(multiplicity, [len(g) for g in grams_of]))
        self._idf = self.ref_len - np.log(np.maximum(1.0, df))                  # per n-gram id
        # each image's references: one row per (image, n-gram) with the n-gram's count in each reference
        sizes = np.asarray([len(entries[d][0]) for d in image_refs], dtype=np.int64)
        image_np = np.repeat(np.arange(self.num_images), sizes)
        ref_np = np.concatenate([entries[d][0] for d in image_refs])
        gram_np = np.concatenate([entries[d][1] for d in image_refs])
        count_np = np.concatenate([entries[d][2] for d in image_refs])
        self._keys, row = np.unique(image_np * self._num_grams + gram_np, return_inverse=True)
        self._ref_tf = np.zeros((len(self._keys), self.max_refs), dtype=np.float64)
        self._ref_tf[row, ref_np] = count_np
        slot = image_np * self.max_refs + ref_np                       # (image, reference)
        order = self._order[gram_np]
        size = self.num_images * self.max_refs
        self._ref_norm = np.sqrt(np.bincount(slot * n + order, weights=(count_np * self._idf[gram_np]) ** 2,
                                             minlength=size * n)).reshape(self.num_images, self.max_refs, n)
        self._ref_length = np.bincount(slot, weights=count_np * (order == 1),
                                       minlength=size).reshape(self.num_images, self.max_refs)
        self._ref_valid = np.arange(self.max_refs)[None, :] < self.num_refs[:, None]

    def score(self, candidates: Sequence[Caption], images: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its image (``images[c]``, an index into the
        corpus); float64 array of ``len(candidates)`` (COCO's scale: x10, not x100)."""
        num = len(candidates)
        if num == 0:
            return np.zeros(0, dtype=np.float64)
        images_np = np.asarray(images, dtype=np.int64)
        assert images_np.shape == (num,), "one image index per candidate"
        n = self.n
        # the candidates' n-grams, flattened: (candidate, n-gram id or -1, order, count)
        cand_idx: List[int] = []
        gram_ids: List[int] = []
        orders: List[int] = []
        counts: List[int] = []
        length = np.zeros(num, dtype=np.float64)
        ids = self._ids
        for c, caption in enumerate(candidates):
            tokens = _tokens(caption)
            grams = ngram_counts(tokens, n)
            cand_idx.extend([c] * len(grams))
            gram_ids.extend([ids.get(g, -1) for g in grams])
            orders.extend(map(len, grams))
            counts.extend(grams.values())
            length[c] = max(len(tokens) - 1, 0) if n > 1 else 0   # the reference code's "length": bigrams
        cand = np.asarray(cand_idx, dtype=np.int64)
        gid = np.asarray(gram_ids, dtype=np.int64)
        order = np.asarray(orders, dtype=np.int64) - 1
        tf = np.asarray(counts, dtype=np.float64)
        known = gid >= 0
        idf = np.where(known, self._idf[np.maximum(gid, 0)] if len(self._idf) else 0.0, self.ref_len)
        weight = tf * idf                                                      # the candidate's vector entries
        cand_norm = np.sqrt(np.bincount(cand * n + order, weights=weight ** 2, minlength=num * n)).reshape(num, n)
        # match the candidate's n-grams with its image's reference rows
        numerator: np.ndarray = np.zeros((num, n, self.max_refs), dtype=np.float64)
        if known.any() and len(self._keys):
            keys = images_np[cand[known]] * self._num_grams + gid[known]
            pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            found = self._keys[pos] == keys
            if found.any():
                m_cand = cand[known][found]
                m_order = order[known][found]
                m_weight = weight[known][found][:, None]                              # (E, 1)
                m_ref = self._ref_tf[pos[found]] * idf[known][found][:, None]          # (E, R)
                contrib = np.minimum(m_weight, m_ref) * m_ref                           # clipping (CIDEr-D)
                index = ((m_cand * n + m_order)[:, None] * self.max_refs + np.arange(self.max_refs)[None, :])
                numerator = np.bincount(index.ravel(), weights=contrib.ravel(),
                                        minlength=num * n * self.max_refs).reshape(num, n, self.max_refs)
        ref_norm = self._ref_norm[images_np].transpose(0, 2, 1)                        # (num, n, R)
        denominator = cand_norm[:, :, None] * ref_norm
        cosine = np.where(denominator != 0, numerator / np.where(denominator != 0, denominator, 1.0), numerator)
        delta = length[:, None] - self._ref_length[images_np]                          # (num, R)
        penalty = np.exp(-(delta ** 2) / (2 * self.sigma ** 2))
        per_ref = cosine.mean(axis=1) * penalty * self._ref_valid[images_np]           # (num, R)
        return per_ref.sum(axis=1) / self.num_refs[images_np] * 10.0

    def corpus_score(self, hypotheses: Sequence[Caption]) -> Tuple[float, np.ndarray]:
        """(mean, per-image scores) of one hypothesis per image of the corpus, as pycocoevalcap's
        ``Cider().compute_score``."""
        assert len(hypotheses) == self.num_images, "one hypothesis per image of the reference corpus"
        scores = self.score(hypotheses, np.arange(self.num_images))
        return float(scores.mean()), scores


def corpus_cider(hypotheses: Sequence[Caption], references: Sequence[Sequence[Caption]]) -> float:
    """CIDEr-D (COCO scale) of ``hypotheses[i]`` against ``references[i]``, document frequencies from these
    references."""
    return CiderD(references).corpus_score(hypotheses)[0]
