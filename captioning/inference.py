"""`Captioner`: load one model or an ensemble, read inputs in chunks, search in batches, give outputs in input order.

An input line names a feature file under the source root (or, with images, an image file), or is a JSON object
``{"text": PATH, "constraints": [...], "avoid": [...], ...}``. A line that cannot be captioned (empty, not UTF-8,
malformed or hostile JSON, a missing or wrong-shaped feature file, an unreadable image) gives a failed output (an
empty output line) and an error in the log naming the line; the lines after it are still captioned. Lines with
constraints are batched apart from the others so that the fast unconstrained search serves every line it can; a
caption never depends on the batch or chunk size.

Memory is bounded by the batch, not the input: a chunk holds parsed input lines only; features (or images) are
loaded one batch at a time, and each output is given as soon as every line before it is done.
"""
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from . import constants as C
from . import image_io, utils
from .cnn import FeatureExtractor
from . import lexical_constraints as lc
from .array_backend import ArrayBackend, backend_for
from .beam_search import DANGLING_WORDS, BeamSearch, LengthPenalty, SearchResult, StepModel
from .config import Config

if TYPE_CHECKING:
    import mxnet as mx

    from .model import CaptionModel
    from .onnx_model import OnnxCaptionModel

logger = logging.getLogger(__name__)

Shape = Tuple[int, int, int]

CHUNK_SIZE_NO_BATCHING = 1        # --chunk-size default at --batch-size 1 (Sockeye's): caption each line at once
CHUNK_SIZE_PER_BATCH = 500        # otherwise Sockeye's 500 batches per chunk ...
MAX_DEFAULT_CHUNK_SIZE = 5000     # ... but at most this many lines (and at least one batch)
MAX_JSON_LINE_CHARS = 1_000_000   # a longer JSON input line is refused before parsing


@dataclass
class CaptionerConfig(Config):
    """Search and batching options of the captioner (the flags of ``add_captioner_args``)."""
    beam_size: int = 5
    batch_size: int = 1
    chunk_size: Optional[int] = None            # inputs read at a time; default: see `effective_chunk_size`
    max_output_length: Optional[int] = None     # default: the bound stored with the model(s)
    ensemble_mode: str = "linear"
    length_penalty_alpha: float = 1.0
    length_penalty_beta: float = 0.0
    beam_prune: float = 0.0
    beam_search_stop: str = "all"
    nbest_size: int = 1
    softmax_temperature: Optional[float] = None  # logits / T before the softmax (search and sampling); None: 1
    strip_unknown_words: bool = False
    no_repeat_ngram_size: int = 0               # beam search: no n-gram of this size twice in a caption (0: off)
    no_dangling_words: bool = False             # beam search: no caption ends on `beam_search.DANGLING_WORDS`
    sample: Optional[int] = None                # sample instead of searching: 0 = whole softmax, K = its top K

    def __post_init__(self) -> None:
        if self.sample is None:
            check_nbest_size(self.nbest_size, self.beam_size)
        else:
            utils.check_condition(self.sample >= 0, "--sample K needs K >= 0 (0: the whole softmax)")
            utils.check_condition(not self.no_repeat_ngram_size and not self.no_dangling_words,
                                  "--no-repeat-ngram-size and --no-dangling-words control the beam search; they "
                                  "cannot be used with --sample")
        utils.check_condition(self.no_repeat_ngram_size >= 0, "--no-repeat-ngram-size must be >= 0")
        utils.check_condition(self.softmax_temperature is None or self.softmax_temperature > 0,
                              "--softmax-temperature (--temperature) must be > 0")

    def effective_chunk_size(self) -> int:
        """``chunk_size``, or by default 1 at batch size 1 (as Sockeye: each line is captioned as soon as it is
        read) and otherwise 500 batches, at most `MAX_DEFAULT_CHUNK_SIZE` lines but at least one batch."""
        if self.chunk_size:
            return self.chunk_size
        if self.batch_size == 1:
            return CHUNK_SIZE_NO_BATCHING
        return max(self.batch_size, min(CHUNK_SIZE_PER_BATCH * self.batch_size, MAX_DEFAULT_CHUNK_SIZE))


def check_nbest_size(nbest_size: int, beam_size: int) -> None:
    """The one check that an n-best list fits in the beam (captioner and checkpoint decoder alike)."""
    utils.check_condition(1 <= nbest_size <= beam_size, "--nbest-size %d is larger than --beam-size %d"
                          % (nbest_size, beam_size))


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


def _refuse_constant(value: str) -> float:
    raise ValueError("%s is not a JSON number" % value)


def _finite_float(value: str) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError("number %s is out of range" % (value if len(value) <= 20 else value[:20] + "..."))
    return number


def parse_input(line: str, sentence_id: int, json_input: bool, where: str) -> CaptionInput:
    """An input line as a `CaptionInput`; problems are recorded in ``error`` (naming ``where``), not raised: any
    single line, however hostile (deep nesting, huge numbers, wrong types), costs only itself."""
    text = line.strip()
    if not text:
        return CaptionInput(sentence_id, "", error="%s: empty line; expected a %s" % (
            where, "JSON object" if json_input else "feature or image path"))
    if not json_input:
        return CaptionInput(sentence_id, text)
    expected = "expected {\"text\": PATH, \"constraints\": [...], \"avoid\": [...]}"
    if len(text) > MAX_JSON_LINE_CHARS:
        return CaptionInput(sentence_id, "", error="%s: JSON line of %d characters is longer than %d; %s"
                                                   % (where, len(text), MAX_JSON_LINE_CHARS, expected))
    try:
        # NaN, Infinity and floats beyond float64 are refused; so are integers of more than 4,300 digits (Python)
        record = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        return CaptionInput(sentence_id, "", error="%s: malformed JSON (%s); %s" % (where, e.msg, expected))
    except RecursionError:
        return CaptionInput(sentence_id, "", error="%s: JSON nested too deeply; %s" % (where, expected))
    except ValueError as e:  # NaN, Infinity, an integer with too many digits (Python's int limit)
        return CaptionInput(sentence_id, "", error="%s: malformed JSON (%s); %s" % (where, e, expected))
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
    try:  # the json output type writes these keys back: refuse what cannot be written (e.g. huge integers)
        json.dumps(extra)
    except (ValueError, RecursionError) as e:
        return CaptionInput(sentence_id, record["text"], error="%s: cannot pass the other keys through (%s)"
                                                               % (where, e))
    return CaptionInput(sentence_id, record["text"].strip(), lists["constraints"], lists["avoid"], extra)


def read_input_lines(stream: "Iterable[bytes]", where: str) -> Iterator[Tuple[int, str, Optional[str]]]:
    """(line number, text, error) for each line of a binary stream, read one line at a time (so that a pipe is
    captioned interactively); a line that is not UTF-8 has an error naming it instead of text."""
    for number, raw in enumerate(stream, 1):
        try:
            yield number, utils.decode_line(raw, utils.location(where, number)), None
        except utils.CaptioningError as e:
            yield number, "", str(e)


# ---------------------------------------------------------------------------------------------------------------
# where the features come from
# ---------------------------------------------------------------------------------------------------------------

def parse_stream(stream: "Iterable[bytes]", where: str, json_input: bool = False) -> Iterator[CaptionInput]:
    """The parsed lines of a binary stream (an input file, or stdin), read one line at a time; a line that is not
    UTF-8 or not valid gives an input carrying its error."""
    for number, text, error in read_input_lines(stream, where):
        yield CaptionInput(number, "", error=error) if error is not None else \
            parse_input(text, number, json_input, utils.location(where, number))


class FeatureSource(Protocol):
    """Where a `Captioner` gets features: (C, H, W) arrays for parsed input lines, a batch at a time."""

    @property
    def feature_shape(self) -> Tuple[int, ...]:
        """(C, H, W) of one input's features."""

    def batches(self, inputs: Sequence[CaptionInput], batch_size: int, where: str
                ) -> Iterator[Tuple[List[int], np.ndarray]]:
        """(positions in ``inputs``, features (B, C, H, W)) in input order, at most ``batch_size`` at a time;
        an input that cannot be read gets its ``error`` set and is left out."""
        ...


class FeatureFileSource:
    """Features read from ``.npy`` files under ``root`` (the ``--source-root``), one batch at a time."""

    def __init__(self, root: str, feature_shape: Shape, allow_absolute: bool = False) -> None:
        self.root = root
        self.feature_shape: Shape = (int(feature_shape[0]), int(feature_shape[1]), int(feature_shape[2]))
        self.allow_absolute = allow_absolute

    def batches(self, inputs: Sequence[CaptionInput], batch_size: int, where: str
                ) -> Iterator[Tuple[List[int], np.ndarray]]:
        from . import features
        for start in range(0, len(inputs), batch_size):
            positions, arrays = [], []
            for k in range(start, min(start + batch_size, len(inputs))):
                item = inputs[k]
                location = utils.location(where, item.sentence_id)
                try:
                    path = image_io.resolve_path(self.root, item.text, self.allow_absolute, location)
                    arrays.append(features.load_feature(path, self.feature_shape, location))
                    positions.append(k)
                except utils.CaptioningError as e:
                    item.error = str(e)
            if positions:
                yield positions, np.stack(arrays)


class ImageSource:
    """Features computed from image files under ``root`` by the CNN the model was trained with; they stay in
    memory, a batch at a time. Images are decoded by ``cnn.iterate_image_batches`` in worker processes while the
    CNN runs on the batch before."""

    def __init__(self, root: str, extractor: FeatureExtractor, allow_absolute: bool = False,
                 num_workers: Optional[int] = None) -> None:
        self.root = root
        self.extractor = extractor
        self.allow_absolute = allow_absolute
        self.num_workers = num_workers if num_workers is not None else utils.num_cpus()
        self.feature_shape = tuple(extractor.output_shape)

    def batches(self, inputs: Sequence[CaptionInput], batch_size: int, where: str
                ) -> Iterator[Tuple[List[int], np.ndarray]]:
        from . import cnn
        positions, paths, labels = [], [], []
        for k, item in enumerate(inputs):
            location = utils.location(where, item.sentence_id)
            try:
                paths.append(image_io.resolve_path(self.root, item.text, self.allow_absolute, location))
                positions.append(k)
                labels.append(location)
            except utils.CaptioningError as e:
                item.error = str(e)
        size = (int(self.extractor.config.image_size[1]), int(self.extractor.config.image_size[2]))
        # one batch has nothing to overlap with: decode it here rather than start worker processes
        workers = self.num_workers if len(paths) > batch_size else 0
        for batch in cnn.iterate_image_batches(paths, size, batch_size, workers,
                                               skip_bad_images=True, where=labels):
            good = [i for i, bad in zip(batch.indices, batch.bad) if not bad]
            for i, bad in zip(batch.indices, batch.bad):
                if bad:
                    inputs[positions[i]].error = "%s: cannot read image %s" % (labels[i], paths[i])
            if good:
                keep = [j for j, bad in enumerate(batch.bad) if not bad]
                images = batch.images if len(keep) == len(batch.bad) else batch.images[keep]
                yield [positions[i] for i in good], self.extractor.extract(images)


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------

def load_models(folders: Sequence[str], checkpoints: Optional[Sequence[Optional[int]]], ctx: "mx.Context"
                ) -> Tuple[List["CaptionModel"], Dict[str, int]]:
    """Load one model per folder (``checkpoints[i]`` or ``params.best``) with its parameters fixed
    (`model.CaptionModel.fix_parameters`); an ensemble must share one vocabulary and one feature shape."""
    from . import model as model_module
    if checkpoints is None:
        checkpoints = [None] * len(folders)
    utils.check_condition(len(checkpoints) == len(folders),
                          "--checkpoints: give one checkpoint per model (%d models, %d checkpoints)"
                          % (len(folders), len(checkpoints)))
    models: List["CaptionModel"] = []
    vocabs = []
    for folder, checkpoint in zip(folders, checkpoints):
        model, model_vocab = model_module.load_model(folder, checkpoint, ctx)
        model.fix_parameters()
        models.append(model)
        vocabs.append(model_vocab)
        logger.info("Loaded model %s (checkpoint %s)", folder, "best" if checkpoint is None else checkpoint)
    return models, check_ensemble(folders, models, vocabs)


def load_exported_models(folders: Sequence[str], providers: Sequence[str], threads: int
                         ) -> Tuple[List["OnnxCaptionModel"], Dict[str, int]]:
    """One `onnx_model.OnnxCaptionModel` per exported folder (onnxruntime with ``providers``, ``threads`` intra-op
    threads; 0: onnxruntime's choice); the same ensemble checks as `load_models`. Imports no MXNet."""
    from . import onnx_model
    from . import vocab as vocab_module
    models = [onnx_model.OnnxCaptionModel(folder, providers, threads) for folder in folders]
    vocabs = [vocab_module.load_vocab(os.path.join(folder, C.VOCAB_TRG_NAME)) for folder in folders]
    for folder in folders:
        logger.info("Loaded exported model %s (onnxruntime: %s)", folder, ", ".join(providers))
    return models, check_ensemble(folders, models, vocabs)


def check_ensemble(folders: Sequence[str], models: Sequence["CaptionerModel"], vocabs: Sequence[Dict[str, int]]
                   ) -> Dict[str, int]:
    """The ensemble's one vocabulary; refused when the models' vocabularies or feature shapes differ."""
    for folder, model, model_vocab in zip(folders[1:], models[1:], vocabs[1:]):
        utils.check_condition(model_vocab == vocabs[0], "%s: its vocabulary differs from that of %s; an ensemble "
                                                        "needs models trained with the same vocabulary"
                              % (os.path.join(folder, C.VOCAB_TRG_NAME), folders[0]))
        utils.check_condition(tuple(model.feature_shape) == tuple(models[0].feature_shape),
                              "%s: feature shape %s differs from %s of %s; an ensemble needs the same features"
                              % (folder, tuple(model.feature_shape), tuple(models[0].feature_shape), folders[0]))
    return vocabs[0]


NOT_FINITE = ("%s: the model's scores for these features are not finite numbers (features far outside the "
              "range of the training features?); not captioned")


NOT_FINITE_FEATURES = "%s: the features hold NaN or infinite values; not captioned"


def finite_result(result: SearchResult) -> bool:
    """Whether every score of a search result is a finite number (NaN or infinity must never reach an output)."""
    return math.isfinite(result.score) and all(math.isfinite(h.score) for h in result.nbest)


class CaptionerModel(StepModel, Protocol):
    """What the captioner needs of a model: a `beam_search.StepModel` that also knows its default length bound
    (`model.CaptionModel.max_output_length`: the bound training stored with the model) and the shape of one
    input's features; `model.CaptionModel` and `onnx_model.OnnxCaptionModel` are two."""

    @property
    def max_output_length(self) -> int: ...

    @property
    def feature_shape(self) -> Tuple[int, ...]: ...


class Searcher(Protocol):
    """What captions a batch of features: `beam_search.BeamSearch`, or with ``--sample`` a `sampling.Sampler`."""

    def search(self, features: Any) -> List[SearchResult]:
        ...


class Captioner:
    """Captions inputs with a `BeamSearch` over ``models`` (or samples them, with ``config.sample``); see the
    module docstring. Lexical constraints always use the beam search. ``backend``: where the searches' arrays live
    (`array_backend`; default MXNet on ``ctx``, `array_backend.NUMPY` for exported models)."""

    def __init__(self, models: Sequence[CaptionerModel], vocab: Dict[str, int], config: CaptionerConfig,
                 source: FeatureSource, ctx: Any = None, backend: Optional[ArrayBackend] = None) -> None:
        self.models = list(models)
        self.vocab = vocab
        self.rvocab = {i: w for w, i in vocab.items()}
        self.config = config
        self.source = source
        self.backend = backend_for(backend, ctx)
        self.ctx = self.backend.ctx
        self.max_output_length = config.max_output_length or models_max_output_length(self.models)
        length_penalty = LengthPenalty(config.length_penalty_alpha, config.length_penalty_beta)
        banned = [vocab[w] for w in DANGLING_WORDS if w in vocab] if config.no_dangling_words else []
        self.search = BeamSearch(self.models, beam_size=config.beam_size, max_output_length=self.max_output_length,
                                 ensemble_mode=config.ensemble_mode, length_penalty=length_penalty,
                                 beam_prune=config.beam_prune, stop=config.beam_search_stop,
                                 nbest_size=config.nbest_size if config.sample is None else 1,
                                 backend=self.backend,
                                 softmax_temperature=config.softmax_temperature,
                                 no_repeat_ngram_size=config.no_repeat_ngram_size, banned_final_ids=banned)
        self.searcher: Searcher = self.search
        if config.sample is not None:
            from .sampling import Sampler
            self.searcher = Sampler(self.models, num_samples=config.nbest_size,
                                    max_output_length=self.max_output_length, top_k=config.sample,
                                    temperature=config.softmax_temperature or 1.0, backend=self.backend,
                                    ensemble_mode=config.ensemble_mode, length_penalty=length_penalty)
        self.num_failed = 0
        self.num_captioned = 0
        self.search_seconds = 0.0

    # --- the whole input --------------------------------------------------------------------------------------
    def caption_lines(self, lines: Iterable[str], where: str, json_input: bool = False
                      ) -> Iterator[CaptionOutput]:
        """Outputs for ``lines`` (text without line ends), one per line, in order."""
        return self.caption_inputs((parse_input(line, number, json_input, utils.location(where, number))
                                    for number, line in enumerate(lines, 1)), where)

    def caption_stream(self, stream: Iterable[bytes], where: str, json_input: bool = False
                       ) -> Iterator[CaptionOutput]:
        """Outputs for the lines of a binary stream (an input file, or stdin), read one line at a time; a line
        that is not UTF-8 fails alone."""
        return self.caption_inputs(parse_stream(stream, where, json_input), where)

    def caption_inputs(self, inputs: Iterable[CaptionInput], where: str) -> Iterator[CaptionOutput]:
        """Outputs for parsed inputs, in order, a chunk (`CaptionerConfig.effective_chunk_size`) at a time."""
        chunk: List[CaptionInput] = []
        chunk_size = self.config.effective_chunk_size()
        for item in inputs:
            chunk.append(item)
            if len(chunk) == chunk_size:
                yield from self.caption_chunk(chunk, where)
                chunk = []
        if chunk:
            yield from self.caption_chunk(chunk, where)

    def caption_chunk(self, inputs: List[CaptionInput], where: str) -> Iterator[CaptionOutput]:
        """Outputs for one chunk of parsed inputs, in the same order. Features are loaded a batch at a time, and
        each output is given as soon as the inputs before it are done."""
        constraints = {k: self._constraints(item, where) for k, item in enumerate(inputs) if item.error is None}
        usable = [k for k in sorted(constraints) if inputs[k].error is None]
        # constraint-free inputs and constrained ones are searched in separate batches
        plain = [k for k in usable if not constraints[k]]
        constrained = [k for k in usable if constraints[k]]
        results: Dict[int, SearchResult] = {}
        done = 0
        for group in (plain, constrained):
            for positions, features in self.source.batches([inputs[k] for k in group], self.config.batch_size,
                                                           where):
                batch = [group[i] for i in positions]
                results.update(self._search_batch(inputs, batch, features, constraints if group is constrained
                                                  else None, where))
                while done < len(inputs) and (done in results or inputs[done].error is not None):
                    yield self._finish(inputs[done], results.pop(done, None), where)
                    done += 1
        for k in range(done, len(inputs)):
            yield self._finish(inputs[k], results.pop(k, None), where)

    def _search_batch(self, inputs: List[CaptionInput], batch: List[int], features: np.ndarray,
                      constraints: Optional[Dict[int, Optional[lc.Constraints]]], where: str
                      ) -> Dict[int, SearchResult]:
        """Search the inputs ``batch`` (positions in ``inputs``) with their ``features``; an input whose features
        or scores are not finite gets an error instead of a result (NaN never reaches an output)."""
        finite = np.isfinite(features.reshape(len(features), -1)).all(axis=1)
        if not finite.all():   # NaN or infinite features (a damaged file, a CNN that overflowed)
            for k in (k for k, ok in zip(batch, finite) if not ok):
                inputs[k].error = NOT_FINITE_FEATURES % utils.location(where, inputs[k].sentence_id)
            batch = [k for k, ok in zip(batch, finite) if ok]
            features = features[finite]
        results = {}
        if batch:
            batch_constraints = [constraints[k] for k in batch] if constraints is not None else None
            for k, result in zip(batch, self.caption_features(features, batch_constraints)):
                if finite_result(result):
                    results[k] = result
                else:
                    inputs[k].error = NOT_FINITE % utils.location(where, inputs[k].sentence_id)
        return results

    def _finish(self, item: CaptionInput, result: Optional[SearchResult], where: str) -> CaptionOutput:
        if result is not None:
            self.num_captioned += 1
            return self._output(item, result)
        logger.error("%s", item.error or "%s: not captioned" % utils.location(where, item.sentence_id))
        self.num_failed += 1
        return CaptionOutput(item.sentence_id, item.text, extra=item.extra, failed=True)

    def _constraints(self, item: CaptionInput, where: str) -> Optional[lc.Constraints]:
        """The word-id constraints of an input (None without any); impossible ones are dropped with a warning."""
        if not (item.constraints or item.avoid):
            return None
        location = utils.location(where, item.sentence_id)
        if self.config.sample is not None:
            item.error = "%s: lexical constraints need the beam search; they cannot be used with --sample" % location
            return None
        avoid = lc.phrases_to_ids(item.avoid, self.vocab, location, "avoid")
        include = lc.possible_constraints(lc.phrases_to_ids(item.constraints, self.vocab, location, "constraint"),
                                          avoid, self.max_output_length, location, self.rvocab)
        constraints = lc.Constraints(include, avoid)
        return constraints if constraints else None

    # --- one batch ------------------------------------------------------------------------------------------------
    def caption_features(self, features: np.ndarray,
                         constraints: Optional[Sequence[Optional[lc.Constraints]]] = None) -> List[SearchResult]:
        """Search a batch of features ``(B, C, H, W)``."""
        start = time.time()
        array = self.backend.from_host(features)
        results = self.search.search(array, constraints) if constraints else self.searcher.search(array)
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


def models_max_output_length(models: Sequence[CaptionerModel]) -> int:
    """The captioner's default length bound: the smallest ``max_output_length`` the models store (training
    writes it from its longest caption)."""
    return min(int(m.max_output_length) for m in models)
