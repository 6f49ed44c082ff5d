"""`CheckpointDecoder`: at each training checkpoint, caption a fixed sample of validation images and score them.

Validation data may repeat an image on several lines (one line per caption, the tutorial's format) and/or come with
several target files (one per reference, each line-aligned with the list): `CheckpointDecoder.from_files` groups
every caption of an image into its references, so each image is captioned once and scored against all of them. The
sample (of images) is drawn once (seeded), so the figures of successive checkpoints are comparable. Scores (0-100):
sacrebleu's corpus BLEU-4 and chrF with all references of each image, and CIDEr-D (`cider.CiderD`, x100 as usually
reported; document frequencies from the sample's references, as the COCO evaluation computes them). It uses the
captioner's `BeamSearch`, so training and captioning share one search.
"""
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from . import constants as C
from . import utils
from .beam_search import BeamSearch, LengthPenalty
from .cider import CiderD

if TYPE_CHECKING:  # pragma: no cover
    from .features import FeatureStore

logger = logging.getLogger(__name__)

# defaults for direct use (training passes its own --seed and length bound): a fixed sample of images, and a length
# bound well above the captions of the usual data sets
DEFAULT_SAMPLE_SEED = 13
DEFAULT_MAX_OUTPUT_LENGTH = 60


class CheckpointDecoder:
    """Captions ``sample_size`` images (-1 or more than there are: all) and scores them against their references.

    ``references[i]`` is the reference caption (a string) or the list of reference captions of image i, whose
    features are row ``rows[i]`` of the store ``features`` (default: row i; the store then has one row per image)."""

    def __init__(self, features: Any, references: Sequence[Union[str, Sequence[str]]], sample_size: int,
                 seed: int = DEFAULT_SAMPLE_SEED, beam_size: int = 3, batch_size: int = 16,
                 max_output_length: int = DEFAULT_MAX_OUTPUT_LENGTH,
                 ctx: Optional[mx.Context] = None, length_penalty: Optional[LengthPenalty] = None,
                 rows: Optional[Sequence[int]] = None) -> None:
        if rows is None:
            utils.check_condition(len(features) == len(references),
                                  "checkpoint decoder: %d validation features but %d references"
                                  % (len(features), len(references)))
            rows = range(len(references))
        assert len(rows) == len(references), "one store row per image"
        self.features = features
        self.references: List[List[str]] = [[r] if isinstance(r, str) else list(r) for r in references]
        self.rows = [int(r) for r in rows]
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
        logger.info("Checkpoint decoder: %d of %d validation images (%d references), beam %d, max length %d",
                    len(self.indices), total, sum(len(self.references[i]) for i in self.indices), beam_size,
                    max_output_length)

    @classmethod
    def from_files(cls, root: str, source_list: str, target_files: Union[str, Sequence[str]], mode: str,
                   sample_size: int, seed: int, beam_size: int, batch_size: int, max_output_length: int,
                   ctx: Optional[mx.Context] = None, allow_absolute: bool = False,
                   store: Optional["FeatureStore"] = None) -> "CheckpointDecoder":
        """Over the validation feature list ``source_list`` (names under ``root``; feature store ``mode``) and its
        caption files ``target_files`` (each line-aligned with the list). Lines naming the same feature file are one
        image; its references are the captions of all its lines in all files (empty captions are left out).
        ``store``: an open store over every line of ``source_list`` (training's validation store: the validation
        features are then held once), else one is opened."""
        from . import features
        files = [target_files] if isinstance(target_files, str) else list(target_files)
        utils.check_condition(len(files) > 0, "checkpoint decoder: no validation target file")
        names = [n.strip() for n in utils.read_lines(source_list)]
        columns = []
        for path in files:
            captions = utils.read_lines(path)
            utils.check_condition(len(captions) == len(names),
                                  "%s: %d lines, but the validation list %s has %d; each target file needs one "
                                  "caption per line of the list" % (path, len(captions), source_list, len(names)))
            columns.append(captions)
        groups: "OrderedDict[str, List[int]]" = OrderedDict()
        for line, name in enumerate(names):
            groups.setdefault(name, []).append(line)
        references, rows = [], []
        for lines in groups.values():
            refs = [" ".join(column[line].split()) for line in lines for column in columns]
            refs = [r for r in refs if r]
            if refs:
                references.append(refs)
                rows.append(lines[0])
        utils.check_condition(len(references) > 0, "%s: no validation image has a non-empty caption in %s"
                              % (source_list, ", ".join(files)))
        if store is None:
            store = features.open_feature_store(root, names, mode=mode, list_path=source_list,
                                                allow_absolute=allow_absolute)
        utils.check_condition(len(store) == len(names), "%s: the feature store has %d rows for %d lines"
                              % (source_list, len(store), len(names)))
        return cls(store, references, sample_size=sample_size, seed=seed, beam_size=beam_size,
                   batch_size=batch_size, max_output_length=max_output_length, ctx=ctx, rows=rows)

    def decode(self, model: Any, vocab: Dict[str, int]) -> List[str]:
        """Captions of the sample with the model's current parameters, in sample order."""
        rvocab = {i: w for w, i in vocab.items()}
        search = BeamSearch([model], beam_size=self.beam_size, max_output_length=self.max_output_length,
                            length_penalty=self.length_penalty, ctx=self.ctx)
        hypotheses = []
        for start in range(0, len(self.indices), self.batch_size):
            batch = [self.rows[i] for i in self.indices[start:start + self.batch_size]]
            array = mx.nd.array(self.features.get_batch(batch), ctx=self.ctx, dtype=np.float32)
            for result in search.search(array):
                hypotheses.append(" ".join(rvocab.get(t, C.UNK_SYMBOL) for t in result.tokens))
        return hypotheses

    def decode_and_evaluate(self, model: Any, vocab: Dict[str, int]) -> Dict[str, float]:
        """``{"bleu-val", "chrf-val", "cider-val"}`` (0-100) of the sample, each image against all its
        references."""
        if not self.indices:
            return {"bleu-val": 0.0, "chrf-val": 0.0, "cider-val": 0.0}
        start = time.time()
        hypotheses = self.decode(model, vocab)
        scores = self.evaluate(hypotheses)
        logger.info("Checkpoint decoder: %d captions in %.1fs, BLEU %.2f, chrF %.2f, CIDEr-D %.2f", len(hypotheses),
                    time.time() - start, scores["bleu-val"], scores["chrf-val"], scores["cider-val"])
        return scores

    def evaluate(self, hypotheses: Sequence[str]) -> Dict[str, float]:
        """The scores of captions of the sample (in sample order)."""
        import sacrebleu
        references = [self.references[i] for i in self.indices]
        depth = max(len(r) for r in references)
        # sacrebleu takes one stream per reference position; None where an image has fewer references
        streams: List[List[Any]] = [[refs[k] if k < len(refs) else None for refs in references]
                                    for k in range(depth)]
        bleu = sacrebleu.corpus_bleu(list(hypotheses), streams, tokenize="none").score
        chrf = sacrebleu.corpus_chrf(list(hypotheses), streams).score
        cider = CiderD(references).corpus_score(hypotheses)[0] * 100.0
        return {"bleu-val": float(bleu), "chrf-val": float(chrf), "cider-val": float(cider)}
