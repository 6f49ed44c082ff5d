"""`Captioner`: load one model or an ensemble, read inputs in chunks, search in batches, give outputs in input order.

An input line names a feature file under the source root (or, with images, an image file), or is a JSON object
``{"text": PATH, "constraints": [...], "avoid": [...], ...}``. A line that cannot be captioned (empty, malformed
JSON, a missing or wrong-shaped feature file, an unreadable image) gives a failed output (an empty output line) and
an error in the log naming the line; the lines after it are still captioned. Lines with constraints are batched
apart from the others so that the fast unconstrained search serves every line it can; a caption never depends on
the batch or chunk size.
"""
import concurrent.futures
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from . import constants as C
from . import image_io, utils
from . import lexical_constraints as lc
from .beam_search import BeamSearch, LengthPenalty, SearchResult
from .config import Config

logger = logging.getLogger(__name__)

Shape = Tuple[int, int, int]


@dataclass
class CaptionerConfig(Config):
    """Search and batching options of the captioner (the flags of ``add_captioner_args``)."""
    beam_size: int = 5
    batch_size: int = 1
    chunk_size: Optional[int] = None            # inputs read at a time; default 500 x batch_size, as Sockeye
    max_output_length: Optional[int] = None     # default: the bound stored with the model(s)
    ensemble_mode: str = "linear"
    length_penalty_alpha: float = 1.0
    length_penalty_beta: float = 0.0
    beam_prune: float = 0.0
    beam_search_stop: str = "all"
    nbest_size: int = 1
    softmax_temperature: Optional[float] = None
    strip_unknown_words: bool = False

    def effective_chunk_size(self) -> int:
        return self.chunk_size if self.chunk_size else 500 * self.batch_size


@dataclass
class CaptionInput:
    """One input line: its 1-based number, the path, constraints, other JSON keys, and an error if unusable."""
    sentence_id: int
    text: str
    constraints: List[str] = field(default_factory=list)
    avoid: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


@dataclass
class CaptionOutput:
    """What the output handler writes for one input line."""
    sentence_id: int
    text: str
    caption: str = ""
    score: float = 0.0
    words: List[str] = field(default_factory=list)
    attention: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    nbest_captions: List[str] = field(default_factory=list)
    nbest_scores: List[float] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    failed: bool = False


def parse_input(line: str, sentence_id: int, json_input: bool, where: str) -> CaptionInput:
    """An input line as a `CaptionInput`; problems are recorded in ``error`` (naming ``where``), not raised."""
    text = line.strip()
    if not text:
        return CaptionInput(sentence_id, "", error="%s: empty line; expected a %s" % (
            where, "JSON object" if json_input else "feature or image path"))
    if not json_input:
        return CaptionInput(sentence_id, text)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return CaptionInput(sentence_id, "", error="%s: malformed JSON (%s); expected {\"text\": PATH, "
                                                   "\"constraints\": [...], \"avoid\": [...]}" % (where, e.msg))
    if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
        return CaptionInput(sentence_id, "", error="%s: a JSON input line needs a \"text\" string (the path)"
                                                   % where)
    lists = {}
    for key in ("constraints", "avoid"):
        value = record.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return CaptionInput(sentence_id, record["text"], error="%s: \"%s\" must be a list of phrases"
                                                                   % (where, key))
        lists[key] = value
    extra = {k: v for k, v in record.items() if k not in ("text", "constraints", "avoid")}
    return CaptionInput(sentence_id, record["text"].strip(), lists["constraints"], lists["avoid"], extra)


# ---------------------------------------------------------------------------------------------------------------
# where the features come from
# ---------------------------------------------------------------------------------------------------------------

class FeatureFileSource:
    """Features read from ``.npy`` files under ``root`` (the ``--source-root``)."""

    def __init__(self, root: str, feature_shape: Shape, allow_absolute: bool = False) -> None:
        self.root = root
        self.feature_shape = tuple(feature_shape)
        self.allow_absolute = allow_absolute

    def load(self, inputs: Sequence[CaptionInput], where: str) -> Dict[int, np.ndarray]:
        """Features of the inputs that can be read, by position in ``inputs``; the others get ``error`` set."""
        from . import features
        loaded = {}
        for k, item in enumerate(inputs):
            location = utils.location(where, item.sentence_id)
            try:
                path = image_io.resolve_path(self.root, item.text, self.allow_absolute, location)
                loaded[k] = features.load_feature(path, self.feature_shape, location)  # type: ignore[arg-type]
            except utils.CaptioningError as e:
                item.error = str(e)
        return loaded


class ImageSource:
    """Features computed from image files under ``root`` by the CNN the model was trained with; they stay in
    memory. Images are decoded in a thread pool while the CNN runs."""

    def __init__(self, root: str, extractor: Any, allow_absolute: bool = False,
                 num_workers: Optional[int] = None) -> None:
        self.root = root
        self.extractor = extractor
        self.allow_absolute = allow_absolute
        self.num_workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        self.feature_shape = tuple(extractor.output_shape)

    def _read(self, item: CaptionInput, where: str) -> Optional[np.ndarray]:
        location = utils.location(where, item.sentence_id)
        try:
            path = image_io.resolve_path(self.root, item.text, self.allow_absolute, location)
            size = tuple(self.extractor.config.image_size[1:])
            return image_io.load_image(path, size, location)  # type: ignore[arg-type]
        except utils.CaptioningError as e:
            item.error = str(e)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input line, not a crash
            item.error = "%s: cannot read image %s (%s)" % (location, item.text, e)
        return None

    def load(self, inputs: Sequence[CaptionInput], where: str) -> Dict[int, np.ndarray]:
        if self.num_workers > 0:
            with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
                images = list(pool.map(lambda item: self._read(item, where), inputs))
        else:
            images = [self._read(item, where) for item in inputs]
        positions = [k for k, image in enumerate(images) if image is not None]
        if not positions:
            return {}
        batch = np.stack([images[k] for k in positions]).astype(np.float32, copy=False)
        extracted = self.extractor.extract(batch)
        return {k: extracted[i] for i, k in enumerate(positions)}


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------

def load_models(folders: Sequence[str], checkpoints: Optional[Sequence[Optional[int]]], ctx: mx.Context
                ) -> Tuple[List[Any], Dict[str, int]]:
    """Load one model per folder (``checkpoints[i]`` or ``params.best``); an ensemble must share one vocabulary
    and one feature shape."""
    from . import model as model_module
    if checkpoints is None:
        checkpoints = [None] * len(folders)
    utils.check_condition(len(checkpoints) == len(folders),
                          "--checkpoints: give one checkpoint per model (%d models, %d checkpoints)"
                          % (len(folders), len(checkpoints)))
    models, vocab = [], None
    for folder, checkpoint in zip(folders, checkpoints):
        model, model_vocab = model_module.load_model(folder, checkpoint, ctx)
        if vocab is None:
            vocab = model_vocab
        else:
            utils.check_condition(model_vocab == vocab, "%s: its vocabulary differs from that of %s; an ensemble "
                                                        "needs models trained with the same vocabulary"
                                  % (os.path.join(folder, C.VOCAB_TRG_NAME), folders[0]))
            utils.check_condition(tuple(model.config.encoder.feature_shape) ==
                                  tuple(models[0].config.encoder.feature_shape),
                                  "%s: feature shape %s differs from %s of %s; an ensemble needs the same "
                                  "features" % (folder, tuple(model.config.encoder.feature_shape),
                                                tuple(models[0].config.encoder.feature_shape), folders[0]))
        models.append(model)
        logger.info("Loaded model %s (checkpoint %s)", folder, "best" if checkpoint is None else checkpoint)
    assert vocab is not None
    return models, vocab


class Captioner:
    """Captions inputs with a `BeamSearch` over ``models``; see the module docstring."""

    def __init__(self, models: Sequence[Any], vocab: Dict[str, int], config: CaptionerConfig, source: Any,
                 ctx: Optional[mx.Context] = None) -> None:
        self.models = list(models)
        self.vocab = vocab
        self.rvocab = {i: w for w, i in vocab.items()}
        self.config = config
        self.source = source
        self.ctx = ctx if ctx is not None else mx.cpu()
        max_length = config.max_output_length
        if max_length is None:
            bounds = [getattr(getattr(m, "config", None), "max_output_length", None) for m in self.models]
            bounds = [b for b in bounds if b]
            max_length = min(bounds) if bounds else 100
        self.max_output_length = int(max_length)
        utils.check_condition(config.nbest_size <= config.beam_size,
                              "--nbest-size %d is larger than --beam-size %d" % (config.nbest_size,
                                                                                 config.beam_size))
        self.search = BeamSearch(self.models, beam_size=config.beam_size, max_output_length=self.max_output_length,
                                 ensemble_mode=config.ensemble_mode,
                                 length_penalty=LengthPenalty(config.length_penalty_alpha,
                                                              config.length_penalty_beta),
                                 beam_prune=config.beam_prune, stop=config.beam_search_stop,
                                 nbest_size=config.nbest_size, ctx=self.ctx,
                                 softmax_temperature=config.softmax_temperature)
        self.num_failed = 0
        self.num_captioned = 0
        self.search_seconds = 0.0

    # --- the whole input --------------------------------------------------------------------------------------
    def caption_lines(self, lines: Iterable[str], where: str, json_input: bool = False
                      ) -> Iterator[CaptionOutput]:
        """Outputs for ``lines`` (an input file's lines, or stdin), one per line, in order."""
        chunk: List[CaptionInput] = []
        chunk_size = self.config.effective_chunk_size()
        for number, line in enumerate(lines, 1):
            chunk.append(parse_input(line, number, json_input, utils.location(where, number)))
            if len(chunk) == chunk_size:
                yield from self.caption_chunk(chunk, where)
                chunk = []
        if chunk:
            yield from self.caption_chunk(chunk, where)

    def caption_chunk(self, inputs: List[CaptionInput], where: str) -> List[CaptionOutput]:
        """Outputs for one chunk of parsed inputs, in the same order."""
        pending = [k for k, item in enumerate(inputs) if item.error is None]
        features = self.source.load([inputs[k] for k in pending], where) if pending else {}
        loaded = {pending[i]: f for i, f in features.items()}
        constraints: Dict[int, Optional[lc.Constraints]] = {}
        for k in loaded:
            item = inputs[k]
            if item.constraints or item.avoid:
                location = utils.location(where, item.sentence_id)
                constraints[k] = lc.Constraints(
                    lc.phrases_to_ids(item.constraints, self.vocab, location, "constraint"),
                    lc.phrases_to_ids(item.avoid, self.vocab, location, "avoid"))
            else:
                constraints[k] = None
        # constraint-free inputs and constrained ones are searched in separate batches
        plain = [k for k in sorted(loaded) if not constraints[k]]
        constrained = [k for k in sorted(loaded) if constraints[k]]
        results: Dict[int, SearchResult] = {}
        for group in (plain, constrained):
            for start in range(0, len(group), self.config.batch_size):
                batch = group[start:start + self.config.batch_size]
                array = np.stack([loaded[k] for k in batch])
                batch_constraints = [constraints[k] for k in batch] if group is constrained else None
                for k, result in zip(batch, self.caption_features(array, batch_constraints)):
                    results[k] = result
        outputs = []
        for k, item in enumerate(inputs):
            if k in results:
                outputs.append(self._output(item, results[k]))
                self.num_captioned += 1
            else:
                logger.error("%s", item.error or "%s: not captioned" % utils.location(where, item.sentence_id))
                outputs.append(CaptionOutput(item.sentence_id, item.text, extra=item.extra, failed=True))
                self.num_failed += 1
        return outputs

    # --- one batch ------------------------------------------------------------------------------------------------
    def caption_features(self, features: np.ndarray,
                         constraints: Optional[Sequence[Optional[lc.Constraints]]] = None) -> List[SearchResult]:
        """Search a batch of features ``(B, C, H, W)``."""
        start = time.time()
        results = self.search.search(mx.nd.array(features, ctx=self.ctx, dtype=np.float32), constraints)
        self.search_seconds += time.time() - start
        return results

    def words(self, tokens: Sequence[int]) -> List[str]:
        return [self.rvocab.get(t, C.UNK_SYMBOL) for t in tokens]

    def _output(self, item: CaptionInput, result: SearchResult) -> CaptionOutput:
        keep = [i for i, t in enumerate(result.tokens)
                if not (self.config.strip_unknown_words and t == C.UNK_ID)]
        words = self.words([result.tokens[i] for i in keep])
        attention = result.attention[keep] if len(keep) else result.attention[:0]
        nbest_captions = [" ".join(w for w in self.words(h.tokens)
                                   if not (self.config.strip_unknown_words and w == C.UNK_SYMBOL))
                          for h in result.nbest]
        return CaptionOutput(item.sentence_id, item.text, " ".join(words), result.score, words, attention,
                             nbest_captions, [h.score for h in result.nbest], item.extra)
