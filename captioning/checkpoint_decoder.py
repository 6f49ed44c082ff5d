"""`CheckpointDecoder`: at each training checkpoint, caption a fixed sample of validation items and score it.

The sample is drawn once (seeded), so the figures of successive checkpoints are comparable. Scores are sacrebleu's
corpus BLEU and chrF (0-100) against the one reference per item. It uses the captioner's `BeamSearch`, so training
and captioning share one search.
"""
import logging
import time
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np

from . import constants as C
from . import utils
from .beam_search import BeamSearch, LengthPenalty

logger = logging.getLogger(__name__)


class CheckpointDecoder:
    """Captions ``sample_size`` items (-1 or more than there are: all) of ``features`` and scores them against
    ``references`` (one caption per item, aligned with the store)."""

    def __init__(self, features: Any, references: Sequence[str], sample_size: int, seed: int = 13,
                 beam_size: int = 3, batch_size: int = 16, max_output_length: int = 60,
                 ctx: Optional[mx.Context] = None, length_penalty: Optional[LengthPenalty] = None) -> None:
        utils.check_condition(len(features) == len(references),
                              "checkpoint decoder: %d validation features but %d references"
                              % (len(features), len(references)))
        self.features = features
        self.references = list(references)
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.max_output_length = max_output_length
        self.ctx = ctx if ctx is not None else mx.cpu()
        self.length_penalty = length_penalty if length_penalty is not None else LengthPenalty(1.0, 0.0)
        total = len(self.references)
        if sample_size < 0 or sample_size >= total:
            self.indices = list(range(total))
        else:
            rng = np.random.RandomState(seed)
            self.indices = sorted(int(i) for i in rng.choice(total, size=sample_size, replace=False))
        logger.info("Checkpoint decoder: %d of %d validation items, beam %d, max length %d",
                    len(self.indices), total, beam_size, max_output_length)

    def decode(self, model: Any, vocab: Dict[str, int]) -> List[str]:
        """Captions of the sample with the model's current parameters, in sample order."""
        rvocab = {i: w for w, i in vocab.items()}
        search = BeamSearch([model], beam_size=self.beam_size, max_output_length=self.max_output_length,
                            length_penalty=self.length_penalty, ctx=self.ctx)
        hypotheses = []
        for start in range(0, len(self.indices), self.batch_size):
            batch = self.indices[start:start + self.batch_size]
            array = mx.nd.array(self.features.get_batch(batch), ctx=self.ctx, dtype=np.float32)
            for result in search.search(array):
                hypotheses.append(" ".join(rvocab.get(t, C.UNK_SYMBOL) for t in result.tokens))
        return hypotheses

    def decode_and_evaluate(self, model: Any, vocab: Dict[str, int],
                            output_path: Optional[str] = None) -> Dict[str, float]:
        """``{"bleu-val": ..., "chrf-val": ...}`` (0-100) of the sample; with ``output_path`` the captions are also
        written there (one per line, atomically)."""
        import sacrebleu
        if not self.indices:
            return {"bleu-val": 0.0, "chrf-val": 0.0}
        start = time.time()
        hypotheses = self.decode(model, vocab)
        references = [self.references[i] for i in self.indices]
        bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score
        chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
        if output_path is not None:
            utils.atomic_write_text(output_path, "".join(h + "\n" for h in hypotheses))
        logger.info("Checkpoint decoder: %d captions in %.1fs, BLEU %.2f, chrF %.2f", len(hypotheses),
                    time.time() - start, bleu, chrf)
        return {"bleu-val": float(bleu), "chrf-val": float(chrf)}
