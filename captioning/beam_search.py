"""Batched beam search: B inputs x K beam rows advance together, one model step per time step.

The search keeps, per row, the accumulated cost (negative log-probability), whether the hypothesis has finished
(produced ``</s>``) and its length. Each step runs every model's ``decode_step`` on all (B x K) rows, turns the
logits into costs (ensembles: averaged probabilities or log-probabilities), lets finished rows continue only with
``<pad>`` at no cost, and picks each input's K best continuations with one top-k over (B, K x V). The state arrays
are then reordered with ``take`` along axis 0 (the model state contract), except a model's static states (attention
keys and values, the encoded image: the same for every row of an input), which stay at one row per input when its
``decode_step`` takes ``beam_size`` (`model.CaptionModel`): no ``repeat`` after encoding, no ``take`` per step.
As in Sockeye, a hypothesis' score is divided by the length penalty ``((beta + len) / (beta + 1)) ** alpha`` when
it finishes (len counts ``</s>``), and finished hypotheses compete for beam slots with those still growing. Search
stops for an input when all its rows have finished (``stop='all'``) or its best row has (``stop='first'``); an
input that has stopped no longer changes, so a caption never depends on which other inputs share its batch.

The scoring and the bookkeeping are two hybridized blocks; the only device-to-host copy per step is one scalar
(have all rows stopped?), so a search stops at the exact step (reading it one step late would hide the wait but
cost an extra step per batch: measured slower). Back-pointers, words and attention are kept on the device and
read once at the end.
"""
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import constants as C
from . import lexical_constraints as lc

logger = logging.getLogger(__name__)

INF = float("inf")
ENSEMBLE_LINEAR = "linear"
ENSEMBLE_LOG_LINEAR = "log_linear"
STOP_ALL = "all"
STOP_FIRST = "first"


class StepModel(Protocol):
    """What a search (beam search, sampling) needs of a model; `model.CaptionModel` implements it, and so do the
    tests' fake models.

    - ``encode(features (B, C, H, W)) -> states``: the initial states of a batch, every one batch-major (B rows).
    - ``num_static_states``: how many leading states are static: they depend only on the input (attention keys
      and values, the encoded image), never change, and ``decode_step`` returns them as given.
    - ``decode_step(prev_words (N,), states, beam_size=K) -> (logits (N, V), attention (N, L), new states)``:
      one step for N = B * K rows, the K rows of an input consecutive. The static states have one row per input
      (B rows; the step repeats them for its K rows), all other states N rows. With ``beam_size=1`` every state
      has one row per row. A search may select rows of any state with ``take`` on axis 0 (reorder beam rows,
      drop finished inputs), keeping the static states' rows in step with their inputs.
    """

    @property
    def num_static_states(self) -> int: ...

    def encode(self, features: mx.nd.NDArray) -> List[mx.nd.NDArray]: ...

    def decode_step(self, prev_words: mx.nd.NDArray, states: List[mx.nd.NDArray], beam_size: int = 1
                    ) -> Tuple[mx.nd.NDArray, mx.nd.NDArray, List[mx.nd.NDArray]]: ...


@dataclass
class LengthPenalty:
    """Sockeye's length penalty lp(len) = ((beta + len) / (beta + 1)) ** alpha; alpha 0 disables it."""
    alpha: float = 1.0
    beta: float = 0.0

    def __call__(self, lengths: np.ndarray) -> np.ndarray:
        if self.alpha == 0.0:
            return np.ones_like(lengths, dtype=np.float64)
        return ((self.beta + lengths) / (self.beta + 1.0)) ** self.alpha


@dataclass
class Hypothesis:
    """One caption: word ids (without ``</s>``), score (cost / length penalty: lower is better), attention
    ``(len(tokens), L)`` (the weights that produced each word), and whether it ended with ``</s>``."""
    tokens: List[int]
    score: float
    attention: np.ndarray
    finished: bool = True


@dataclass
class SearchResult:
    """The search's answer for one input: the best hypothesis, and the n best (the best first)."""
    tokens: List[int]
    score: float
    attention: np.ndarray
    nbest: List[Hypothesis] = field(default_factory=list)


class _Scorer(gluon.HybridBlock):
    """(B*K, V) logits of each model -> costs of every continuation of every row, as (B, K*V); with ``topk`` also
    the K best per input (values and flat indices, ascending)."""

    def __init__(self, beam_size: int, vocab_size: int, num_models: int, ensemble_mode: str,
                 temperature: Optional[float], with_mask: bool, topk: bool) -> None:
        super().__init__()
        self.beam_size = beam_size
        self.vocab_size = vocab_size
        self.num_models = num_models
        self.ensemble_mode = ensemble_mode
        self.temperature = temperature
        self.with_mask = with_mask
        self.topk = topk

    def hybrid_forward(self, F, scores, inactive, extra_costs, *inputs):  # type: ignore[override]
        mask = inputs[0] if self.with_mask else None
        logits = list(inputs[1:] if self.with_mask else inputs)
        if self.temperature is not None and self.temperature != 1.0:
            logits = [l / self.temperature for l in logits]
        # extra_costs (2, V): row 0 is added to a live row's costs (inf for <pad> and <s>, never words of a
        # caption); row 1 replaces a stopped row's, which continues only with <pad>, at no cost, so that its score
        # stays as it is
        extra = F.take(extra_costs, inactive)
        if self.num_models == 1 or self.ensemble_mode == ENSEMBLE_LOG_LINEAR:
            if self.num_models == 1:
                log_probs = F.log_softmax(logits[0], axis=-1)
            else:
                log_probs = F.add_n(*[F.log_softmax(l, axis=-1) for l in logits]) / self.num_models
            if mask is None:
                # log-probabilities are finite here: times -1 for a live row and -0 for a stopped one, whose costs
                # thus become exactly its row of extra costs (as fast as it gets: no broadcast_like / where)
                sign = F.reshape(inactive - 1.0, shape=(-1, 1))
                return self._select(F, F.broadcast_mul(log_probs, sign) + extra, scores)
            costs = -log_probs
        else:
            costs = -F.log(F.add_n(*[F.softmax(l, axis=-1) for l in logits]) / self.num_models)  # may be inf
        costs = F.broadcast_add(costs, F.slice_axis(extra_costs, axis=0, begin=0, end=1))
        if mask is not None:
            costs = costs + mask
        stopped = F.broadcast_like(F.reshape(inactive, shape=(-1, 1)), costs)
        return self._select(F, F.where(stopped, extra, costs), scores)

    def _select(self, F, costs, scores):
        candidates = F.reshape(F.broadcast_add(costs, scores), shape=(-1, self.beam_size * self.vocab_size))
        if not self.topk:
            return candidates
        values, indices = F.topk(candidates, axis=1, k=self.beam_size, ret_typ="both", is_ascend=True)
        return values, indices


class _Update(gluon.HybridBlock):
    """The bookkeeping after top-k: parent rows, words, scores (normalised when a hypothesis finishes), finished /
    inactive flags, lengths, and whether every row has stopped; beam pruning and the 'first' stopping rule."""

    def __init__(self, beam_size: int, vocab_size: int, length_penalty: LengthPenalty, beam_prune: float,
                 stop: str) -> None:
        super().__init__()
        self.beam_size = beam_size
        self.vocab_size = vocab_size
        self.alpha = length_penalty.alpha
        self.beta = length_penalty.beta
        self.beam_prune = beam_prune
        self.stop = stop

    def hybrid_forward(self, F, values, indices, offsets, finished, inactive, lengths):  # type: ignore[override]
        k = self.beam_size
        in_beam = F.floor(indices / self.vocab_size)
        words = F.reshape(indices - in_beam * self.vocab_size, shape=(-1,))
        rows = F.reshape(F.broadcast_add(in_beam, offsets), shape=(-1,))
        scores = F.reshape(values, shape=(-1,))
        was_inactive = F.take(inactive, rows)
        finished = F.take(finished, rows)
        lengths = F.take(lengths, rows) + (1 - was_inactive)
        newly_finished = (words == C.EOS_ID) * (1 - was_inactive)
        if self.alpha != 0.0:
            penalty = F.power((self.beta + lengths) / (self.beta + 1.0), self.alpha)
            scores = F.where(newly_finished, scores / penalty, scores)
        finished = F.maximum(finished, newly_finished)
        inactive = F.maximum(F.maximum(was_inactive, newly_finished), scores == INF)
        if self.beam_prune > 0.0 or self.stop == STOP_FIRST:
            by_input = F.reshape(scores, shape=(-1, k))
            fin = F.reshape(finished, shape=(-1, k))
            infs = F.ones_like(by_input) * INF
            best_finished = F.min(F.where(fin, by_input, infs), axis=1, keepdims=True)
            if self.beam_prune > 0.0:
                pruned = (1 - fin) * F.broadcast_greater(by_input, best_finished + self.beam_prune)
                by_input = F.where(pruned, infs, by_input)
                scores = F.reshape(by_input, shape=(-1,))
                inactive = F.maximum(inactive, F.reshape(pruned, shape=(-1,)))
            if self.stop == STOP_FIRST:
                best_open = F.min(F.where(fin, infs, by_input), axis=1, keepdims=True)
                done = F.broadcast_like(best_finished <= best_open, by_input)
                inactive = F.maximum(inactive, F.reshape(F.broadcast_mul(done, best_finished < INF), shape=(-1,)))
        return rows, words, F.reshape(scores, shape=(-1, 1)), finished, inactive, lengths, F.min(inactive)


class BeamSearch:
    """Beam search over one model or an ensemble of `StepModel` s (all with the same vocabulary and feature
    shape)."""

    def __init__(self, models: Sequence[StepModel], beam_size: int, max_output_length: int,
                 ensemble_mode: str = ENSEMBLE_LINEAR, length_penalty: Optional[LengthPenalty] = None,
                 beam_prune: float = 0.0, stop: str = STOP_ALL, nbest_size: int = 1,
                 ctx: Optional[mx.Context] = None, softmax_temperature: Optional[float] = None) -> None:
        assert models, "at least one model"
        assert beam_size >= 1 and max_output_length >= 1
        assert ensemble_mode in (ENSEMBLE_LINEAR, ENSEMBLE_LOG_LINEAR), ensemble_mode
        assert stop in (STOP_ALL, STOP_FIRST), stop
        assert 1 <= nbest_size <= beam_size, "nbest_size must be between 1 and beam_size"
        self.models = list(models)
        self.beam_size = beam_size
        self.max_output_length = max_output_length
        self.ensemble_mode = ensemble_mode
        self.length_penalty = length_penalty if length_penalty is not None else LengthPenalty(1.0, 0.0)
        self.beam_prune = beam_prune
        self.stop = stop
        self.nbest_size = nbest_size
        self.ctx = ctx if ctx is not None else mx.cpu()
        self.softmax_temperature = softmax_temperature
        self._blocks: dict = {}
        self._rows: Optional[mx.nd.NDArray] = None

    # --- the hybridized parts, made once per vocabulary size ---------------------------------------------------
    def _scorer(self, vocab_size: int, with_mask: bool, topk: bool) -> _Scorer:
        key = ("scorer", vocab_size, with_mask, topk)
        if key not in self._blocks:
            block = _Scorer(self.beam_size, vocab_size, len(self.models), self.ensemble_mode,
                            self.softmax_temperature, with_mask, topk)
            block.hybridize(static_alloc=True)
            self._blocks[key] = block
        return self._blocks[key]

    def _update(self, vocab_size: int) -> _Update:
        key = ("update", vocab_size)
        if key not in self._blocks:
            block = _Update(self.beam_size, vocab_size, self.length_penalty, self.beam_prune, self.stop)
            block.hybridize(static_alloc=True)
            self._blocks[key] = block
        return self._blocks[key]

    def _extra_costs(self, vocab_size: int) -> mx.nd.NDArray:
        """(2, V): the extra costs of a live row's words (inf for <pad> and <s>), and the costs of a stopped row's
        words (only <pad>, free)."""
        if self._rows is None or self._rows.shape[1] != vocab_size:
            rows = np.zeros((2, vocab_size), dtype=np.float32)
            rows[0, [C.PAD_ID, C.BOS_ID]] = INF
            rows[1, :] = INF
            rows[1, C.PAD_ID] = 0.0
            self._rows = mx.nd.array(rows, ctx=self.ctx)
        return self._rows

    # --- search -------------------------------------------------------------------------------------------------
    def _num_shared(self, model: StepModel) -> int:
        """How many leading states of ``model`` the search keeps at one row per input (never repeated nor
        reordered by beam): its declared static states (none to share in a greedy search)."""
        return model.num_static_states if self.beam_size > 1 else 0

    def search(self, features: mx.nd.NDArray,
               constraints: Optional[Sequence[Optional[lc.Constraints]]] = None) -> List[SearchResult]:
        """Caption a batch of features ``(B, C, H, W)``; ``constraints`` (one per input, or None) switches on the
        constrained search for the inputs that have some."""
        batch_size = features.shape[0]
        k = self.beam_size
        rows = batch_size * k
        constrained = constraints is not None and any(constraints)
        shared = [self._num_shared(model) for model in self.models]
        states = []
        for model, n in zip(self.models, shared):
            model_states = list(model.encode(features))
            if k > 1:
                model_states = model_states[:n] + [mx.nd.repeat(s, repeats=k, axis=0) for s in model_states[n:]]
            states.append(model_states)
        initial = np.zeros((batch_size, k), dtype=np.float32)
        initial[:, 1:] = INF  # only the first row of each input is live at the start
        scores = mx.nd.array(initial.reshape(-1, 1), ctx=self.ctx)
        finished = mx.nd.zeros((rows,), ctx=self.ctx)
        inactive = mx.nd.zeros((rows,), ctx=self.ctx)
        lengths = mx.nd.zeros((rows,), ctx=self.ctx)
        offsets = mx.nd.array((np.arange(batch_size) * k).reshape(-1, 1), ctx=self.ctx)
        prev_words = mx.nd.full((rows,), C.BOS_ID, ctx=self.ctx)
        tracker = _ConstraintTracker(constraints, k) if constrained else None

        history_rows, history_words, history_attention = [], [], []
        vocab_size = 0
        for t in range(self.max_output_length):
            logits, attentions = [], []
            for i, model in enumerate(self.models):
                step_logits, attention, states[i] = model.decode_step(prev_words, states[i], beam_size=k)
                logits.append(step_logits)
                attentions.append(attention)
            if t == 0:
                vocab_size = logits[0].shape[1]
            extra_costs = self._extra_costs(vocab_size)
            update = self._update(vocab_size)
            if tracker is None:
                values, indices = self._scorer(vocab_size, False, True)(scores, inactive, extra_costs, *logits)
            else:
                mask = mx.nd.array(tracker.mask(vocab_size), ctx=self.ctx)
                candidates = self._scorer(vocab_size, True, False)(scores, inactive, extra_costs, mask, *logits)
                values, indices = tracker.select(candidates.asnumpy().reshape(rows, vocab_size),
                                                 inactive.asnumpy(), vocab_size)
                values = mx.nd.array(values, ctx=self.ctx)
                indices = mx.nd.array(indices, ctx=self.ctx)
            parents, words, scores, finished, inactive, lengths, all_stopped = update(values, indices, offsets,
                                                                                      finished, inactive, lengths)
            if k > 1:
                states = [model_states[:n] + [mx.nd.take(s, parents) for s in model_states[n:]]
                          for model_states, n in zip(states, shared)]
            history_rows.append(parents)
            history_words.append(words)
            history_attention.append(attentions[0] if len(attentions) == 1 or
                                     len({a.shape for a in attentions}) > 1 else mx.nd.add_n(*attentions) /
                                     len(attentions))
            prev_words = words
            if tracker is not None:
                tracker.advance(parents.asnumpy().astype(np.int64), words.asnumpy().astype(np.int64))
            if all_stopped.asscalar() == 1:   # the one host copy per step
                break
        return self._collect(history_rows, history_words, history_attention, scores, finished, lengths,
                             tracker, batch_size)

    def _collect(self, history_rows: List[mx.nd.NDArray], history_words: List[mx.nd.NDArray],
                 history_attention: List[mx.nd.NDArray], scores: mx.nd.NDArray, finished: mx.nd.NDArray,
                 lengths: mx.nd.NDArray, tracker: Optional["_ConstraintTracker"], batch_size: int
                 ) -> List[SearchResult]:
        """Follow the back-pointers once, on the host, and rank each input's final rows."""
        k = self.beam_size
        # copied one by one and stacked on the host: MXNet's stack / concat of a few small arrays can take ~200 ms
        # with 2 OpenMP threads on a busy machine (measured), which made batch-1 captioning crawl
        parents = np.stack([a.asnumpy() for a in history_rows]).astype(np.int64)       # (T, N)
        words = np.stack([a.asnumpy() for a in history_words]).astype(np.int64)        # (T, N)
        attention = np.stack([a.asnumpy() for a in history_attention])                 # (T, N, L)
        scores_np = scores.asnumpy().reshape(-1).astype(np.float64)
        finished_np = finished.asnumpy().astype(bool)
        lengths_np = lengths.asnumpy().astype(np.int64)
        steps, num_rows = words.shape
        tokens = np.zeros((steps, num_rows), dtype=np.int64)
        weights = np.zeros((steps, num_rows, attention.shape[2]), dtype=np.float32)
        position = np.arange(num_rows)
        for t in reversed(range(steps)):
            tokens[t] = words[t, position]
            position = parents[t, position]
            weights[t] = attention[t, position]
        # a hypothesis cut at the maximum length is scored like a finished one of that length
        open_rows = ~finished_np & np.isfinite(scores_np)
        scores_np[open_rows] = scores_np[open_rows] / self.length_penalty(lengths_np[open_rows].astype(np.float64))
        met = tracker.num_met() if tracker is not None else np.zeros(num_rows, dtype=np.int64)
        results = []
        for b in range(batch_size):
            beam = range(b * k, (b + 1) * k)
            order = sorted(beam, key=lambda r: (not np.isfinite(scores_np[r]), not finished_np[r], -met[r],
                                                scores_np[r], r))
            live = [r for r in order if np.isfinite(scores_np[r])] or order[:1]
            nbest = []
            for r in live[:self.nbest_size]:
                n = int(lengths_np[r]) - (1 if finished_np[r] else 0)
                nbest.append(Hypothesis([int(w) for w in tokens[:n, r]], float(scores_np[r]),
                                        weights[:n, r].copy(), bool(finished_np[r])))
            best = nbest[0]
            results.append(SearchResult(best.tokens, best.score, best.attention, nbest))
        return results


class _ConstraintTracker:
    """Host-side state of a constrained batch: each row's `ConstrainedHypothesis` and avoid-trie state."""

    def __init__(self, constraints: Sequence[Optional[lc.Constraints]], beam_size: int) -> None:
        self.beam_size = beam_size
        self.constraints = [c if c else lc.Constraints() for c in constraints]
        self.tries = [lc.AvoidTrie(c.avoid) if c.avoid else None for c in self.constraints]
        self.hyps: List[lc.ConstrainedHypothesis] = []
        self.avoid_states: List[frozenset] = []
        for c in self.constraints:
            self.hyps.extend([lc.ConstrainedHypothesis.create(c.include)] * beam_size)
            self.avoid_states.extend([frozenset()] * beam_size)
        self.pending: Optional[List[lc.ConstrainedHypothesis]] = None

    def mask(self, vocab_size: int) -> np.ndarray:
        """(N, V) extra costs: inf for ``</s>`` before every constraint is met and for words that complete an
        avoided phrase."""
        mask = np.zeros((len(self.hyps), vocab_size), dtype=np.float32)
        for row, hyp in enumerate(self.hyps):
            if not hyp.all_met():
                mask[row, C.EOS_ID] = INF
            trie = self.tries[row // self.beam_size]
            if trie is not None:
                blocked = trie.blocked(self.avoid_states[row])
                if blocked:
                    mask[row, blocked] = INF
        return mask

    def select(self, candidates: np.ndarray, inactive: np.ndarray, vocab_size: int):
        """Each input's next beam: dynamic beam allocation for inputs with positive constraints, plain top-k for
        the others. Returns (values, flat indices) shaped (B, K) like the top-k of the plain search."""
        k = self.beam_size
        batch_size = len(self.constraints)
        values = np.zeros((batch_size, k), dtype=np.float32)
        indices = np.zeros((batch_size, k), dtype=np.float32)
        new_hyps: List[lc.ConstrainedHypothesis] = []
        for b, c in enumerate(self.constraints):
            block = candidates[b * k:(b + 1) * k]
            if c.include:
                sel = lc.constrained_topk(block, self.hyps[b * k:(b + 1) * k], inactive[b * k:(b + 1) * k], k)
                values[b] = sel.scores
                indices[b] = np.asarray(sel.rows) * vocab_size + np.asarray(sel.words)
                new_hyps.extend(sel.hyps)
            else:
                flat = block.reshape(-1)
                top = np.argsort(flat, kind="stable")[:k]
                values[b] = flat[top]
                indices[b] = top
                new_hyps.extend(self.hyps[b * k:(b + 1) * k])
        self.pending = new_hyps
        return values, indices

    def advance(self, parents: np.ndarray, words: np.ndarray) -> None:
        """Move the avoid states along with the chosen rows (constraint states were computed in `select`)."""
        assert self.pending is not None
        self.hyps = self.pending
        self.pending = None
        new_avoid = []
        for row, (parent, word) in enumerate(zip(parents, words)):
            trie = self.tries[row // self.beam_size]
            state = self.avoid_states[parent]
            new_avoid.append(trie.consume(state, int(word)) if trie is not None else state)
        self.avoid_states = new_avoid

    def num_met(self) -> np.ndarray:
        return np.array([h.num_met() for h in self.hyps], dtype=np.int64)
