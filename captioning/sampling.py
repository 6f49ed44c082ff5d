"""Batched sampling of captions (Sockeye 1.x's ``--sample``): B inputs x N samples advance together.

Each step runs every model's ``decode_step`` on the rows of the inputs still sampling, turns the logits into
log-probabilities (ensembles: averaged probabilities or log-probabilities, as in `beam_search`), divides them by the
temperature, keeps the K most likely words when ``top_k`` is set, and draws each row's next word from the resulting
softmax with MXNet's multinomial sampler (so `mx.random.seed` makes the samples reproducible; for exported models
numpy's, seeded by ``np.random.seed``). ``<pad>`` and ``<s>`` are never drawn; a row that has drawn ``</s>``
continues with ``<pad>``, and an input whose N samples have all ended leaves the computation (its rows are dropped
from the states, as beam search drops stopped inputs). The step is one computation (a hybridized block with MXNet,
see `array_backend`) and the only device-to-host copy per step is that of the drawn words (B x N values). A
model's static states stay at one row per input (they are shared by the input's N rows inside its step graph, as in
beam search).

A sample's score is its cost under the model (the negative log-probability of its words and ``</s>``, without
temperature or top-k) divided by the length penalty (as beam search scores hypotheses), so scores of samples and of
beam search read alike. `Sampler.search` returns, per input, the N samples in the order drawn (`SearchResult.nbest`),
the first also as the result itself.
"""
import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from . import constants as C
from .array_backend import ArrayBackend, backend_for
from .beam_search import (ENSEMBLE_LINEAR, ENSEMBLE_LOG_LINEAR, Hypothesis, LengthPenalty, SearchResult,
                          StepModel)

logger = logging.getLogger(__name__)

INF = float("inf")


@dataclass
class Samples:
    """Sampled captions of B inputs x N samples, row ``b * N + i`` = sample i of input b (all on the host).

    ``tokens (B*N, T)``: the drawn words, ``</s>`` included, ``<pad>`` (0) after it; ``lengths``: words drawn up to
    and including ``</s>`` (a row cut at the maximum length has no ``</s>``); ``finished``: whether it drew ``</s>``;
    ``costs``: negative log-probability under the model; ``attention``: ``(T, B*N, L)`` when collected."""
    tokens: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray
    costs: np.ndarray
    attention: Optional[np.ndarray] = None

    def captions(self, with_end: bool = False) -> List[List[int]]:
        """Each row's words without padding, and without ``</s>`` unless ``with_end``."""
        cut = 0 if with_end else 1
        return [[int(w) for w in row[:n - cut * int(f)]] for row, n, f in zip(self.tokens, self.lengths,
                                                                               self.finished)]


class _SampleStep:
    """(N, V) logits of each model -> the drawn word of each row, the updated costs and finished flags
    (``compute(F, ...)``, written against MXNet's operator namespace: `array_backend`)."""

    def __init__(self, num_models: int, ensemble_mode: str, top_k: int, temperature: float) -> None:
        self.num_models = num_models
        self.ensemble_mode = ensemble_mode
        self.top_k = top_k
        self.temperature = temperature

    def compute(self, F, finished, costs, forbidden, *logits):
        if self.num_models == 1:
            log_probs = F.log_softmax(logits[0], axis=-1)
        elif self.ensemble_mode == ENSEMBLE_LOG_LINEAR:
            log_probs = F.add_n(*[F.log_softmax(x, axis=-1) for x in logits]) / self.num_models
        else:
            log_probs = F.log(F.add_n(*[F.softmax(x, axis=-1) for x in logits]) / self.num_models)
        # forbidden (1, V): -inf for <pad> and <s>, 0 elsewhere
        scores = F.broadcast_add(log_probs / self.temperature if self.temperature != 1.0 else log_probs, forbidden)
        if self.top_k > 0:
            kth = F.slice_axis(F.topk(scores, axis=-1, k=self.top_k, ret_typ="value"), axis=-1,
                               begin=self.top_k - 1, end=self.top_k)
            scores = F.where(F.broadcast_lesser(scores, kth), F.ones_like(scores) * -INF, scores)
        drawn = F.cast(F.sample_multinomial(F.softmax(scores, axis=-1)), dtype="float32")
        words = F.where(finished, F.zeros_like(drawn), drawn)
        step_costs = F.where(finished, F.zeros_like(costs), -F.pick(log_probs, words, axis=-1))
        finished = F.maximum(finished, words == C.EOS_ID)
        return words, costs + step_costs, finished


class Sampler:
    """Draws ``num_samples`` captions per input from one model or an ensemble (same vocabulary and feature shape).

    ``top_k`` 0 samples from the whole softmax, K > 0 from its K most likely words; ``temperature`` divides the
    log-probabilities before sampling. ``models`` are `beam_search.StepModel`s, as for `BeamSearch`."""

    def __init__(self, models: Sequence[StepModel], num_samples: int, max_output_length: int, top_k: int = 0,
                 temperature: float = 1.0, ctx: Any = None,
                 ensemble_mode: str = ENSEMBLE_LINEAR, length_penalty: Optional[LengthPenalty] = None,
                 backend: Optional[ArrayBackend] = None) -> None:
        assert models, "at least one model"
        assert num_samples >= 1 and max_output_length >= 1 and top_k >= 0 and temperature > 0
        assert ensemble_mode in (ENSEMBLE_LINEAR, ENSEMBLE_LOG_LINEAR), ensemble_mode
        self.models = list(models)
        self.num_samples = num_samples
        self.max_output_length = max_output_length
        self.top_k = top_k
        self.temperature = temperature
        self.backend = backend_for(backend, ctx)
        self.ctx = self.backend.ctx
        self.nd = self.backend.ops
        self.length_penalty = length_penalty if length_penalty is not None else LengthPenalty(1.0, 0.0)
        self._step = self.backend.compile(_SampleStep(len(self.models), ensemble_mode, top_k, temperature).compute)
        self._forbidden: Optional[Any] = None

    def _forbidden_words(self, vocab_size: int) -> Any:
        if self._forbidden is None or self._forbidden.shape[1] != vocab_size:
            row = np.zeros((1, vocab_size), dtype=np.float32)
            row[0, [C.PAD_ID, C.BOS_ID]] = -INF
            self._forbidden = self.backend.from_host(row)
        return self._forbidden

    def _encode(self, features: Any) -> List[List[Any]]:
        """Each model's initial states, the non-static ones repeated for an input's samples (the static ones stay
        at one row per input, repeated inside the step)."""
        n = self.num_samples
        states = []
        for model in self.models:
            model_states = list(model.encode(features))
            if n > 1:
                s = model.num_static_states
                model_states = model_states[:s] + [self.nd.repeat(x, repeats=n, axis=0) for x in model_states[s:]]
            states.append(model_states)
        return states

    def sample(self, features: Any, with_attention: bool = False) -> Samples:
        """Draw ``num_samples`` captions for each of a batch of features ``(B, C, H, W)``. An input whose N samples
        have all ended leaves the computation (its rows are dropped from every state, as in `BeamSearch.search`):
        a batch costs about the sum of its samples' lengths, not its rows times the longest sample (a few samples
        run on to the length limit)."""
        n = self.num_samples
        states = self._encode(features)
        constants = [model.step_constants(self.ctx) for model in self.models]
        rows = features.shape[0] * n
        prev_words = self.nd.full((rows,), C.BOS_ID, ctx=self.ctx)
        finished = self.nd.zeros((rows,), ctx=self.ctx)
        costs = self.nd.zeros((rows,), ctx=self.ctx)
        tokens = np.zeros((rows, self.max_output_length), dtype=np.int64)
        all_costs = np.zeros(rows)
        attention: List[np.ndarray] = []
        live = np.arange(rows)                 # the batch rows still in the computation, input by input
        done = np.zeros(rows, dtype=bool)      # rows that have drawn </s>
        steps = 0
        for t in range(self.max_output_length):
            logits, attentions = [], []
            for i, model in enumerate(self.models):
                step_logits, step_attention, states[i] = model.decode_step(prev_words, states[i], n, constants[i])
                logits.append(step_logits)
                attentions.append(step_attention)
            forbidden = self._forbidden_words(logits[0].shape[1])
            prev_words, costs, finished = self._step(finished, costs, forbidden, *logits)
            words = self.backend.to_host(prev_words).astype(np.int64)          # the one host copy per step
            tokens[live, t] = words
            steps = t + 1
            if with_attention:
                step_attention = attentions[0] if len(attentions) == 1 or len({a.shape for a in attentions}) > 1 \
                    else self.nd.add_n(*attentions) / len(attentions)
                full = np.zeros((rows, step_attention.shape[1]), dtype=np.float32)
                full[live] = self.backend.to_host(step_attention)
                attention.append(full)
            done[live] |= words == C.EOS_ID
            ended = done[live].reshape(-1, n).all(axis=1)           # per live input: all its samples ended
            if ended.all() or steps == self.max_output_length:
                all_costs[live] = self.backend.to_host(costs)
                break
            if ended.any():
                gone = np.repeat(ended, n)
                all_costs[live[gone]] = self.backend.to_host(costs)[gone]
                keep_inputs = self.nd.array(np.flatnonzero(~ended), ctx=self.ctx)
                keep_rows = self.nd.array(np.flatnonzero(~gone), ctx=self.ctx)
                for i, model in enumerate(self.models):
                    s = model.num_static_states if n > 1 else 0
                    states[i] = [self.nd.take(x, keep_inputs) for x in states[i][:s]] + \
                                [self.nd.take(x, keep_rows) for x in states[i][s:]]
                prev_words, costs, finished = (self.nd.take(x, keep_rows) for x in (prev_words, costs, finished))
                live = live[~gone]
        tokens = tokens[:, :steps]
        lengths = (tokens != C.PAD_ID).sum(axis=1)
        return Samples(tokens, lengths, done, all_costs, np.stack(attention) if with_attention else None)

    def search(self, features: Any) -> List[SearchResult]:
        """Per input, its ``num_samples`` samples as the n-best list (in the order drawn), the first as the result;
        the same type as `BeamSearch.search`."""
        samples = self.sample(features, with_attention=True)
        assert samples.attention is not None
        n = self.num_samples
        scores = samples.costs / self.length_penalty(np.maximum(samples.lengths, 1).astype(np.float64))
        captions = samples.captions()
        results = []
        for b in range(features.shape[0]):
            nbest = []
            for r in range(b * n, (b + 1) * n):
                length = len(captions[r])
                nbest.append(Hypothesis(captions[r], float(scores[r]), samples.attention[:length, r].copy(),
                                        bool(samples.finished[r])))
            best = nbest[0]
            results.append(SearchResult(best.tokens, best.score, best.attention, nbest))
        return results
