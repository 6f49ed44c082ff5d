"""Batched beam search: B inputs x K beam rows advance together, one model step per time step.

The search keeps, per row, the accumulated cost (negative log-probability), whether the hypothesis has finished
(produced ``</s>``) and its length. Each step runs every model's ``decode_step`` on all (B x K) rows, turns the
logits into costs (ensembles: averaged probabilities or log-probabilities), lets finished rows continue only with
``<pad>`` at no cost, and picks each input's K best continuations with one top-k over (B, K x V). The state arrays
are then reordered with ``take`` along axis 0 (the model state contract, `StepModel`), except a model's static states
(attention keys and values, the encoded image: the same for every row of an input), which stay at one row per
input, shared by its K rows (the model's ``decode_step`` repeats them where it needs to): no ``repeat`` after
encoding, no ``take`` per step.
As in Sockeye, a hypothesis' score is divided by the length penalty ``((beta + len) / (beta + 1)) ** alpha`` when
it finishes (len counts ``</s>``), and finished hypotheses compete for beam slots with those still growing. Search
stops for an input when all its rows have finished (``stop='all'``) or its best row has (``stop='first'``); the
input then leaves the batch: its rows are dropped from the step computation and from every state array (static
states included), so a batch costs about the sum of its captions' lengths, and a caption never depends on which
other inputs share its batch.

The search runs on the models' arrays (`array_backend`: MXNet NDArrays, or numpy arrays for exported models). The
scoring and the bookkeeping are two computations (hybridized blocks with MXNet); the only device-to-host copy per
step is one small array (which inputs have stopped?), so a search shrinks and stops at the exact step (reading it
one step late would hide the wait but cost an extra step per batch). Back-pointers, words and attention are kept on
the device and read once at the end. Repetition controls (off by default): ``no_repeat_ngram_size`` and
``banned_final_ids`` (see `BeamSearch`; `DANGLING_WORDS` for the captioner).
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from . import constants as C
from . import lexical_constraints as lc
from . import utils
from .array_backend import ArrayBackend, backend_for

logger = logging.getLogger(__name__)

INF = float("inf")
ENSEMBLE_LINEAR = "linear"
ENSEMBLE_LOG_LINEAR = "log_linear"
STOP_ALL = "all"
STOP_FIRST = "first"
# English function words a caption should not end on (the captioner's --no-dangling-words)
DANGLING_WORDS = ("a", "an", "the", "with", "of", "in", "on", "at", "and", "to", "for", "from", "by", "its", "his",
                  "her", "their", "while", "is", "are")


class StepModel(Protocol):
    """What a search (beam search, sampling) needs of a model; `model.CaptionModel` implements it, and so do the
    tests' fake models.

    - ``encode(features (B, C, H, W)) -> states``: the initial states of a batch, every one batch-major (B rows).
    - ``step_constants(ctx) -> constants``: what every step of one search takes besides the words and the states
      (derived from the parameters alone: `model.StepConstants`); a search asks once, after ``encode``, and
      passes the answer to each ``decode_step``.
    - ``num_static_states``: how many leading states are static: they depend only on the input (attention keys
      and values, the encoded image), never change, and ``decode_step`` returns them as given.
    - ``decode_step(prev_words (N,), states, beam_size=K, constants) -> (logits (N, V), attention (N, L), new
      states)``:
      one step for N = B * K rows, the K rows of an input consecutive. The static states have one row per input
      (B rows; the step repeats them for its K rows), all other states N rows. With ``beam_size=1`` every state
      has one row per row. A search may select rows of any state with ``take`` on axis 0 (reorder beam rows,
      drop finished inputs), keeping the static states' rows in step with their inputs.
    """

    @property
    def num_static_states(self) -> int: ...

    def encode(self, features: Any) -> List[Any]: ...

    def step_constants(self, ctx: Any) -> Any: ...

    def decode_step(self, prev_words: Any, states: List[Any], beam_size: int = 1,
                    constants: Any = None) -> Tuple[Any, Any, List[Any]]: ...


@dataclass
class LengthPenalty:
    """Sockeye's length penalty lp(len) = ((beta + len) / (beta + 1)) ** alpha; alpha 0 disables it."""
    alpha: float = 1.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        utils.check_condition(math.isfinite(self.alpha) and math.isfinite(self.beta) and self.beta > -1.0,
                              "--length-penalty-alpha %s / --length-penalty-beta %s: the length penalty needs "
                              "finite numbers and beta > -1" % (self.alpha, self.beta))

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


class _Scorer:
    """(B*K, V) logits of each model -> costs of every continuation of every row, as (B, K*V); with ``topk`` also
    the K best per input (values and flat indices, ascending). ``compute(F, ...)`` is written against MXNet's
    operator namespace (`array_backend`)."""

    def __init__(self, beam_size: int, vocab_size: int, num_models: int, ensemble_mode: str,
                 temperature: Optional[float], with_mask: bool, topk: bool) -> None:
        self.beam_size = beam_size
        self.vocab_size = vocab_size
        self.num_models = num_models
        self.ensemble_mode = ensemble_mode
        self.temperature = temperature
        self.with_mask = with_mask
        self.topk = topk

    def compute(self, F, scores, inactive, extra_costs, *inputs):
        mask = inputs[0] if self.with_mask else None
        logits = list(inputs[1:] if self.with_mask else inputs)
        if self.temperature is not None and self.temperature != 1.0:
            logits = [x / self.temperature for x in logits]
        # extra_costs (2, V): row 0 is added to a live row's costs (inf for <pad> and <s>, never words of a
        # caption); row 1 replaces a stopped row's, which continues only with <pad>, at no cost, so that its score
        # stays as it is
        extra = F.take(extra_costs, inactive)
        if self.num_models == 1 or self.ensemble_mode == ENSEMBLE_LOG_LINEAR:
            if self.num_models == 1:
                log_probs = F.log_softmax(logits[0], axis=-1)
            else:
                log_probs = F.add_n(*[F.log_softmax(x, axis=-1) for x in logits]) / self.num_models
            if mask is None:
                # log-probabilities are finite here: times -1 for a live row and -0 for a stopped one, whose costs
                # thus become exactly its row of extra costs (as fast as it gets: no broadcast_like / where)
                sign = F.reshape(inactive - 1.0, shape=(-1, 1))
                return self._select(F, F.broadcast_mul(log_probs, sign) + extra, scores)
            costs = -log_probs
        else:
            costs = -F.log(F.add_n(*[F.softmax(x, axis=-1) for x in logits]) / self.num_models)  # may be inf
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


class _Update:
    """The bookkeeping after top-k: parent rows, words, scores (normalised when a hypothesis finishes), finished /
    inactive flags, lengths, and which inputs have stopped (all their rows inactive); beam pruning and the 'first'
    stopping rule. ``compute(F, ...)`` as `_Scorer`'s."""

    def __init__(self, beam_size: int, vocab_size: int, length_penalty: LengthPenalty, beam_prune: float,
                 stop: str) -> None:
        self.beam_size = beam_size
        self.vocab_size = vocab_size
        self.alpha = length_penalty.alpha
        self.beta = length_penalty.beta
        self.beam_prune = beam_prune
        self.stop = stop

    def compute(self, F, values, indices, offsets, finished, inactive, lengths):
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
        stopped = F.min(F.reshape(inactive, shape=(-1, k)), axis=1)                        # (B,) per input
        return rows, words, F.reshape(scores, shape=(-1, 1)), finished, inactive, lengths, stopped


@dataclass
class _Active:
    """The inputs still searched and their rows' state, on the device (rows of an input consecutive).
    ``inputs``: their indices in the batch; ``states``: each model's (static states one row per input when
    shared); ``constants``: each model's step constants for this search; ``history``: each row's words so far
    ``(N, t)``, kept only for n-gram blocking."""
    inputs: np.ndarray
    states: List[List[Any]]
    constants: List[Any]
    scores: Any
    finished: Any
    inactive: Any
    lengths: Any
    prev_words: Any
    offsets: Any
    history: Optional[Any] = None

    def rows(self, beam_size: int) -> np.ndarray:
        """The batch rows (input * K + j) of the active rows."""
        return (self.inputs[:, None] * beam_size + np.arange(beam_size)[None, :]).reshape(-1)


@dataclass
class _StepRecord:
    """One step's choices, kept on the device until the end: ``rows`` the batch rows the step computed (None: all
    of them), per computed row its parent (an index into those rows), word and the attention that produced it."""
    rows: Optional[np.ndarray]
    parents: Any
    words: Any
    attention: Any


class BeamSearch:
    """Beam search over one model or an ensemble of `StepModel` s (all with the same vocabulary and feature
    shape)."""

    def __init__(self, models: Sequence[StepModel], beam_size: int, max_output_length: int,
                 ensemble_mode: str = ENSEMBLE_LINEAR, length_penalty: Optional[LengthPenalty] = None,
                 beam_prune: float = 0.0, stop: str = STOP_ALL, nbest_size: int = 1,
                 ctx: Any = None, softmax_temperature: Optional[float] = None,
                 no_repeat_ngram_size: int = 0, banned_final_ids: Sequence[int] = (),
                 backend: Optional[ArrayBackend] = None) -> None:
        assert models, "at least one model"
        assert no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0"
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
        self.backend = backend_for(backend, ctx)
        self.ctx = self.backend.ctx
        self.nd = self.backend.ops
        self._host = self.backend.to_host
        self.softmax_temperature = softmax_temperature
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.banned_final_ids = tuple(sorted(set(int(i) for i in banned_final_ids)))
        self._final_ban: Optional[Any] = None
        self._vocab_size = 0
        self._blocks: dict = {}
        self._rows: Optional[Any] = None

    # --- the per-step computations, compiled once per vocabulary size (MXNet: hybridized blocks) ---------------
    def _scorer(self, vocab_size: int, with_mask: bool, topk: bool) -> Callable[..., Any]:
        key = ("scorer", vocab_size, with_mask, topk)
        if key not in self._blocks:
            self._blocks[key] = self.backend.compile(_Scorer(self.beam_size, vocab_size, len(self.models),
                                                             self.ensemble_mode, self.softmax_temperature,
                                                             with_mask, topk).compute)
        return self._blocks[key]

    def _update(self, vocab_size: int) -> Callable[..., Any]:
        key = ("update", vocab_size)
        if key not in self._blocks:
            self._blocks[key] = self.backend.compile(_Update(self.beam_size, vocab_size, self.length_penalty,
                                                             self.beam_prune, self.stop).compute)
        return self._blocks[key]

    def _extra_costs(self, vocab_size: int) -> Any:
        """(2, V): the extra costs of a live row's words (inf for <pad> and <s>), and the costs of a stopped row's
        words (only <pad>, free)."""
        if self._rows is None or self._rows.shape[1] != vocab_size:
            rows = np.zeros((2, vocab_size), dtype=np.float32)
            rows[0, [C.PAD_ID, C.BOS_ID]] = INF
            rows[1, :] = INF
            rows[1, C.PAD_ID] = 0.0
            self._rows = self.backend.from_host(rows)
        return self._rows

    # --- search -------------------------------------------------------------------------------------------------
    def _num_shared(self, model: StepModel) -> int:
        """How many leading states of ``model`` the search keeps at one row per input (never repeated nor
        reordered by beam): its declared static states (none to share in a greedy search)."""
        return model.num_static_states if self.beam_size > 1 else 0

    def search(self, features: Any,
               constraints: Optional[Sequence[Optional[lc.Constraints]]] = None) -> List[SearchResult]:
        """Caption a batch of features ``(B, C, H, W)``; ``constraints`` (one per input, or None) switches on the
        constrained search for the inputs that have some.

        An input whose search has stopped leaves the computation at once (its rows are dropped from every state):
        a batch costs about the sum of its captions' lengths, not the batch size times the longest. (Each shrink
        changes the shapes of the cached graphs; MXNet re-plans them quickly, so waiting until more inputs have
        stopped gains nothing.) While a single input is left (a batch of
        one, or the tail of a batch), each next step is dispatched before the step's stop flag is read, so the
        device does not wait for Python between steps; the one step computed after the input stops is discarded."""
        batch_size = features.shape[0]
        k = self.beam_size
        active = self._start(features)
        tracker = _ConstraintTracker(constraints, k) if constraints is not None and any(constraints) else None
        records: List[_StepRecord] = []
        retired: List[Tuple[np.ndarray, Any, Any, Any]] = []
        all_rows = True
        ahead = None     # the step dispatched before the previous step's stop flag was read (one input left)
        for t in range(self.max_output_length):
            step = ahead if ahead is not None else self._step(active, tracker, t)
            ahead = None
            attention, (parents, words, scores, finished, inactive, lengths, stopped) = step
            records.append(_StepRecord(None if all_rows else active.rows(k), parents, words, attention))
            if tracker is not None:
                tracker.advance(self._host(parents).astype(np.int64), self._host(words).astype(np.int64))
            active.scores, active.finished, active.inactive, active.lengths = scores, finished, inactive, lengths
            if len(active.inputs) == 1 and tracker is None and t + 1 < self.max_output_length:
                # one input left: it either goes on or ends the search, so the next step can be dispatched before
                # its stop flag is read (the device computes while Python waits; discarded if it stopped)
                active = self._advance(active, parents, words, None, tracker)
                ahead = self._step(active, tracker, t + 1)
            stopped_np = self._host(stopped)   # the one host copy per step
            if stopped_np.all() or t + 1 == self.max_output_length:
                break
            if ahead is not None:
                continue
            keep = None
            if stopped_np.any():
                keep = np.flatnonzero(stopped_np == 0)
                retired.append(self._retire(active, np.flatnonzero(stopped_np)))
                all_rows = False
            active = self._advance(active, parents, words, keep, tracker)
        retired.append((active.rows(k), active.scores, active.finished, active.lengths))
        return self._collect(records, retired, tracker, batch_size)

    def _step(self, active: _Active, tracker: Optional["_ConstraintTracker"], t: int):
        """Dispatch step ``t`` on the active rows (no host copy): its attention and `_Update`'s outputs."""
        values, indices, attention = self._score(active, tracker, t)
        return attention, self._update(self._vocab_size)(values, indices, active.offsets, active.finished,
                                                         active.inactive, active.lengths)

    def _start(self, features: Any) -> _Active:
        """Encode the batch: the first row of each input live, the others at infinite cost."""
        batch_size = features.shape[0]
        k = self.beam_size
        rows = batch_size * k
        states = []
        for model in self.models:
            model_states = list(model.encode(features))
            if k > 1:
                n = self._num_shared(model)
                model_states = model_states[:n] + [self.nd.repeat(s, repeats=k, axis=0) for s in model_states[n:]]
            states.append(model_states)
        initial = np.zeros((batch_size, k), dtype=np.float32)
        initial[:, 1:] = INF
        constants = [model.step_constants(self.ctx) for model in self.models]
        return _Active(inputs=np.arange(batch_size), states=states, constants=constants,
                       scores=self.nd.array(initial.reshape(-1, 1), ctx=self.ctx),
                       finished=self.nd.zeros((rows,), ctx=self.ctx), inactive=self.nd.zeros((rows,), ctx=self.ctx),
                       lengths=self.nd.zeros((rows,), ctx=self.ctx),
                       prev_words=self.nd.full((rows,), C.BOS_ID, ctx=self.ctx),
                       offsets=self.nd.array((np.arange(batch_size) * k).reshape(-1, 1), ctx=self.ctx))

    def _score(self, active: _Active, tracker: Optional["_ConstraintTracker"], t: int):
        """Run every model one step on the active rows; each input's K best continuations (values, flat indices
        into (K, V), both (B, K)) and the attention to record."""
        logits, attentions = [], []
        for i, model in enumerate(self.models):
            step_logits, attention, active.states[i] = model.decode_step(active.prev_words, active.states[i],
                                                                         self.beam_size, active.constants[i])
            logits.append(step_logits)
            attentions.append(attention)
        if t == 0:
            self._vocab_size = int(logits[0].shape[1])
        vocab_size = self._vocab_size
        if len(attentions) == 1 or len({a.shape for a in attentions}) > 1:
            attention = attentions[0]
        else:
            attention = self.nd.add_n(*attentions) / len(attentions)
        extra_costs = self._extra_costs(vocab_size)
        mask = self._repetition_mask(active, t)
        if tracker is None:
            if mask is None:
                values, indices = self._scorer(vocab_size, False, True)(active.scores, active.inactive, extra_costs,
                                                                        *logits)
            else:
                values, indices = self._scorer(vocab_size, True, True)(active.scores, active.inactive, extra_costs,
                                                                       mask, *logits)
            return values, indices, attention
        host_mask = self.nd.array(tracker.mask(vocab_size), ctx=self.ctx)
        mask = host_mask if mask is None else mask + host_mask
        candidates = self._scorer(vocab_size, True, False)(active.scores, active.inactive, extra_costs, mask,
                                                           *logits)
        rows = candidates.shape[0] * self.beam_size
        values, indices = tracker.select(self._host(candidates).reshape(rows, vocab_size),
                                         self._host(active.inactive), vocab_size)
        return self.nd.array(values, ctx=self.ctx), self.nd.array(indices, ctx=self.ctx), attention

    def _advance(self, active: _Active, parents: Any, words: Any, keep: Optional[np.ndarray],
                 tracker: Optional["_ConstraintTracker"]) -> _Active:
        """The next step's rows: states reordered to the chosen parents and, with ``keep`` (the active inputs that
        stay), the stopped inputs' rows dropped, in one ``take`` per state."""
        k = self.beam_size
        if keep is None:
            if k > 1:
                active.states = [states[:n] + [self.nd.take(s, parents) for s in states[n:]]
                                 for states, n in zip(active.states, map(self._num_shared, self.models))]
            if active.history is not None:
                active.history = self._extend_history(self.nd.take(active.history, parents), words)
            elif self.no_repeat_ngram_size:
                active.history = words.reshape((-1, 1))
            active.prev_words = words
            return active
        keep_rows = (keep[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        keep_nd = self.nd.array(keep, ctx=self.ctx)
        rows_nd = self.nd.array(keep_rows, ctx=self.ctx)
        sources = self.nd.take(parents, rows_nd)          # each kept row's parent among the step's rows
        states = []
        for model_states, n in zip(active.states, map(self._num_shared, self.models)):
            states.append([self.nd.take(s, keep_nd) for s in model_states[:n]] +
                          [self.nd.take(s, sources) for s in model_states[n:]])
        history = None
        if active.history is not None:
            history = self._extend_history(self.nd.take(active.history, sources), self.nd.take(words, rows_nd))
        elif self.no_repeat_ngram_size:
            history = self.nd.take(words, rows_nd).reshape((-1, 1))
        if tracker is not None:
            tracker.keep(keep)
        return _Active(inputs=active.inputs[keep], states=states, constants=active.constants,
                       scores=self.nd.take(active.scores, rows_nd),
                       finished=self.nd.take(active.finished, rows_nd), inactive=self.nd.take(active.inactive, rows_nd),
                       lengths=self.nd.take(active.lengths, rows_nd), prev_words=self.nd.take(words, rows_nd),
                       offsets=self.nd.array((np.arange(len(keep)) * k).reshape(-1, 1), ctx=self.ctx),
                       history=history)

    def _extend_history(self, history: Any, words: Any) -> Any:
        return self.nd.concat(history, words.reshape((-1, 1)), dim=1)

    def _retire(self, active: _Active, stopped: np.ndarray
                ) -> Tuple[np.ndarray, Any, Any, Any]:
        """The final scores, finished flags and lengths of the stopped inputs' rows (``stopped``: indices into the
        active inputs), with their batch rows; they stay on the device until the end."""
        k = self.beam_size
        rows = (stopped[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        rows_nd = self.nd.array(rows, ctx=self.ctx)
        return (active.rows(k)[rows], self.nd.take(active.scores, rows_nd), self.nd.take(active.finished, rows_nd),
                self.nd.take(active.lengths, rows_nd))

    def _repetition_mask(self, active: _Active, t: int) -> Optional[Any]:
        """(N, V) extra costs of the repetition controls, or None when they are off: inf for a word that would
        repeat an n-gram of the row's hypothesis (``no_repeat_ngram_size``) and for ``</s>`` after one of
        ``banned_final_ids``. Built on the device (no host copy)."""
        n = self.no_repeat_ngram_size
        ngrams = n > 0 and active.history is not None and t >= n
        if not ngrams and not self.banned_final_ids:
            return None
        vocab_size = self._vocab_size
        num_rows = active.prev_words.shape[0]
        row_ids = self.nd.arange(0, num_rows, ctx=self.ctx)
        data, rows, words = [], [], []
        if self.banned_final_ids:
            if self._final_ban is None or self._final_ban.shape[0] != vocab_size:
                table = np.zeros(vocab_size, dtype=np.float32)
                table[[i for i in self.banned_final_ids if i < vocab_size]] = INF
                self._final_ban = self.nd.array(table, ctx=self.ctx)
            data.append(self.nd.take(self._final_ban, active.prev_words))
            rows.append(row_ids)
            words.append(self.nd.full((num_rows,), C.EOS_ID, ctx=self.ctx))
        if ngrams:
            # windows j = 0 .. t-n: the n-gram starting at j is repeated by word w if its first n-1 words equal the
            # hypothesis' last n-1: then w = its last word is banned (<pad>, already banned, where none matches)
            history = active.history
            count = t - n + 1
            match = None
            for i in range(n - 1):
                window = self.nd.slice_axis(history, axis=1, begin=i, end=i + count)
                tail = self.nd.slice_axis(history, axis=1, begin=t - n + 1 + i, end=t - n + 2 + i)
                equal = self.nd.broadcast_equal(window, tail)
                match = equal if match is None else match * equal
            banned = self.nd.slice_axis(history, axis=1, begin=n - 1, end=t)
            banned = banned * match if match is not None else banned
            data.append(self.nd.full((num_rows * count,), INF, ctx=self.ctx))
            rows.append(self.nd.repeat(row_ids, repeats=count))
            words.append(banned.reshape((-1,)))
        indices = self.nd.stack(self.nd.concat(*rows, dim=0), self.nd.concat(*words, dim=0))
        return self.nd.scatter_nd(self.nd.concat(*data, dim=0), indices, shape=(num_rows, vocab_size))

    def _collect(self, records: List[_StepRecord],
                 retired: List[Tuple[np.ndarray, Any, Any, Any]],
                 tracker: Optional["_ConstraintTracker"], batch_size: int) -> List[SearchResult]:
        """Follow the back-pointers once, on the host, and rank each input's final rows."""
        k = self.beam_size
        num_rows = batch_size * k
        steps = len(records)
        # copied one by one and filled in on the host: MXNet's stack / concat of a few small arrays can wait long
        # for its OpenMP threads on a busy machine, which made batch-1 captioning crawl
        parents = np.tile(np.arange(num_rows), (steps, 1))                             # (T, N): stopped rows stay
        words = np.zeros((steps, num_rows), dtype=np.int64)
        attention = None
        for t, record in enumerate(records):
            step_parents = self._host(record.parents).astype(np.int64)
            step_attention = self._host(record.attention)
            if attention is None:
                attention = np.zeros((steps, num_rows, step_attention.shape[1]), dtype=np.float32)
            if record.rows is None:
                parents[t] = step_parents
                words[t] = self._host(record.words)
                attention[t] = step_attention
            else:
                parents[t, record.rows] = record.rows[step_parents]
                words[t, record.rows] = self._host(record.words)
                attention[t, record.rows] = step_attention
        assert attention is not None
        scores_np = np.zeros(num_rows, dtype=np.float64)
        finished_np = np.zeros(num_rows, dtype=bool)
        lengths_np = np.zeros(num_rows, dtype=np.int64)
        for rows, scores, finished, lengths in retired:
            scores_np[rows] = self._host(scores).reshape(-1)
            finished_np[rows] = self._host(finished) > 0
            lengths_np[rows] = self._host(lengths)
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
        return [self._rank(b, tokens, weights, scores_np, finished_np, lengths_np, met) for b in range(batch_size)]

    def _rank(self, b: int, tokens: np.ndarray, weights: np.ndarray, scores: np.ndarray, finished: np.ndarray,
              lengths: np.ndarray, met: np.ndarray) -> SearchResult:
        """Input ``b``'s result: its rows ranked finished first, then by constraints met and score."""
        k = self.beam_size
        beam = range(b * k, (b + 1) * k)
        order = sorted(beam, key=lambda r: (not np.isfinite(scores[r]), not finished[r], -met[r], scores[r], r))
        live = [r for r in order if np.isfinite(scores[r])] or order[:1]
        nbest = []
        for r in live[:self.nbest_size]:
            n = int(lengths[r]) - (1 if finished[r] else 0)
            nbest.append(Hypothesis([int(w) for w in tokens[:n, r]], float(scores[r]), weights[:n, r].copy(),
                                    bool(finished[r])))
        best = nbest[0]
        return SearchResult(best.tokens, best.score, best.attention, nbest)


class _ConstraintTracker:
    """Host-side state of a constrained batch: each active row's `ConstrainedHypothesis` and avoid-trie state
    (inputs leave with `keep`, as in the search)."""

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
        self.rows = np.arange(len(self.hyps))           # the batch row of each active row
        self.met = np.zeros(len(self.hyps), dtype=np.int64)

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

    def keep(self, inputs: np.ndarray) -> None:
        """Only ``inputs`` (indices into the active inputs) stay; the others' constraint counts are final."""
        k = self.beam_size
        self.met[self.rows] = [h.num_met() for h in self.hyps]
        rows = (inputs[:, None] * k + np.arange(k)[None, :]).reshape(-1)
        self.constraints = [self.constraints[i] for i in inputs]
        self.tries = [self.tries[i] for i in inputs]
        self.hyps = [self.hyps[r] for r in rows]
        self.avoid_states = [self.avoid_states[r] for r in rows]
        self.rows = self.rows[rows]

    def num_met(self) -> np.ndarray:
        """Constraint tokens met, per batch row."""
        self.met[self.rows] = [h.num_met() for h in self.hyps]
        return self.met
