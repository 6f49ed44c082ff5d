"""Caption metrics: sacrebleu's BLEU and chrF, and the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D)
through ``pycocoevalcap``.

Python API::

    scores = evaluate(hypotheses, references, metrics=("bleu", "chrf", "coco"))

``references[i]`` is the list of reference captions of ``hypotheses[i]`` (any number, at least one). Every score is
on a 0-100 scale: sacrebleu's natively, the COCO metrics multiplied by 100 as papers report them.

Tokenisation: pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP in Java. We tokenise in Python instead
(`coco_tokenize`: lowercase, punctuation split off and dropped, as the PTB tokenizer's output is used by COCO), so
only METEOR needs ``java``. On the lowercase, whitespace-tokenised captions this toolkit reads and writes, both give
the same tokens. CLI::

    python -m captioning.evaluate --hypotheses dev.predictions --references dev.captions.0 dev.captions.1 ...
"""
import json
import logging
import re
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import arguments, log, utils
from .utils import CaptioningError, check_condition

logger = logging.getLogger(__name__)

# metric names accepted by `evaluate` / --metrics
METRIC_BLEU = "bleu"              # sacrebleu BLEU (13a tokenisation), key "BLEU"
METRIC_CHRF = "chrf"              # sacrebleu chrF, key "chrF"
METRIC_COCO = "coco"              # all of the COCO metrics below
METRIC_COCO_BLEU = "coco-bleu"    # keys "BLEU-1" .. "BLEU-4"
METRIC_METEOR = "meteor"          # key "METEOR" (needs java)
METRIC_ROUGE = "rouge"            # key "ROUGE-L"
METRIC_CIDER = "cider"            # key "CIDEr-D" (what COCO and papers call CIDEr)
METRICS = [METRIC_BLEU, METRIC_CHRF, METRIC_COCO, METRIC_COCO_BLEU, METRIC_METEOR, METRIC_ROUGE, METRIC_CIDER]
DEFAULT_METRICS = (METRIC_BLEU, METRIC_CHRF, METRIC_COCO)
COCO_PARTS = (METRIC_COCO_BLEU, METRIC_METEOR, METRIC_ROUGE, METRIC_CIDER)

KEY_BLEU = "BLEU"
KEY_CHRF = "chrF"
KEY_COCO_BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
KEY_METEOR = "METEOR"
KEY_ROUGE = "ROUGE-L"
KEY_CIDER = "CIDEr-D"

# the punctuation tokens COCO's PTB tokenisation removes
_PUNCTUATION = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";", "(", ")", "[", "]", "{", "}", '"'}
_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|'s|\.\.\.|--|[^\sa-z0-9]")


def coco_tokenize(caption: str) -> str:
    """COCO-style tokens, space-joined: lowercase, punctuation split off and removed (``"A dog, running."`` ->
    ``"a dog running"``). Inner hyphens and apostrophes (``tri-colored``, ``man's``) stay in the word."""
    tokens = _TOKEN.findall(caption.lower())
    return " ".join(t for t in tokens if t not in _PUNCTUATION)


def expand_metrics(metrics: Sequence[str]) -> List[str]:
    """The metric names with ``coco`` replaced by its parts, without duplicates, in a fixed order."""
    unknown = [m for m in metrics if m not in METRICS]
    check_condition(not unknown, "unknown metric(s) %s; choose from %s" % (", ".join(unknown), ", ".join(METRICS)))
    wanted = set(metrics)
    if METRIC_COCO in wanted:
        wanted.update(COCO_PARTS)
    return [m for m in (METRIC_BLEU, METRIC_CHRF) + COCO_PARTS if m in wanted]


def java_available() -> bool:
    """Whether a ``java`` executable is on the PATH (METEOR runs in Java)."""
    return shutil.which("java") is not None


def sacrebleu_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                     metrics: Sequence[str] = (METRIC_BLEU, METRIC_CHRF)) -> Dict[str, float]:
    """sacrebleu's corpus BLEU and/or chrF (0-100). Images with fewer references than others are padded with
    ``None``, which sacrebleu skips."""
    import sacrebleu
    num_refs = max(len(r) for r in references)
    # sacrebleu skips a None reference (images with fewer references than others); its annotation omits None
    streams: Any = [[refs[k] if k < len(refs) else None for refs in references] for k in range(num_refs)]
    scores: Dict[str, float] = {}
    if METRIC_BLEU in metrics:
        scores[KEY_BLEU] = float(sacrebleu.metrics.BLEU().corpus_score(list(hypotheses), streams).score)
    if METRIC_CHRF in metrics:
        scores[KEY_CHRF] = float(sacrebleu.metrics.CHRF().corpus_score(list(hypotheses), streams).score)
    return scores


def coco_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                metrics: Sequence[str] = COCO_PARTS) -> Tuple[Dict[str, float], Dict[str, List[float]]]:
    """COCO caption metrics through pycocoevalcap, x100: (corpus scores, per-image scores). ``metrics`` are among
    ``coco-bleu``, ``meteor``, ``rouge``, ``cider``. METEOR is skipped with a warning where ``java`` is missing or
    fails. SPICE is never run (it downloads Stanford models)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise CaptioningError("the COCO metrics need pycocoevalcap: pip install 'captioning[eval]' "
                              "(or choose --metrics bleu chrf)") from None
    res = {i: [coco_tokenize(h)] for i, h in enumerate(hypotheses)}
    gts = {i: [coco_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    corpus: Dict[str, float] = {}
    per_image: Dict[str, List[float]] = {}
    if METRIC_COCO_BLEU in metrics:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for key, value, values in zip(KEY_COCO_BLEU, score, scores):
            corpus[key] = 100.0 * float(value)
            per_image[key] = [100.0 * float(v) for v in values]
    if METRIC_METEOR in metrics:
        meteor = _meteor(gts, res)
        if meteor is not None:
            corpus[KEY_METEOR] = meteor[0]
            per_image[KEY_METEOR] = meteor[1]
    if METRIC_ROUGE in metrics:
        score, scores = Rouge().compute_score(gts, res)
        corpus[KEY_ROUGE] = 100.0 * float(score)
        per_image[KEY_ROUGE] = [100.0 * float(v) for v in scores]
    if METRIC_CIDER in metrics:
        score, scores = Cider().compute_score(gts, res)
        corpus[KEY_CIDER] = 100.0 * float(score)
        per_image[KEY_CIDER] = [100.0 * float(v) for v in scores]
    return corpus, per_image


def _meteor(gts: Dict[int, List[str]], res: Dict[int, List[str]]) -> Optional[Tuple[float, List[float]]]:
    """METEOR 1.5 via pycocoevalcap's Java wrapper, or None (with a warning) where Java is missing or fails."""
    if not java_available():
        logger.warning("METEOR skipped: it needs 'java' on the PATH (install a Java runtime, e.g. "
                       "apt-get install default-jre-headless)")
        return None
    from pycocoevalcap.meteor.meteor import Meteor
    # METEOR's line protocol uses '|||' as a separator
    clean_gts = {i: [r.replace("|||", " ") for r in refs] for i, refs in gts.items()}
    clean_res = {i: [h.replace("|||", " ") for h in hyp] for i, hyp in res.items()}
    meteor = None
    try:
        meteor = Meteor()
        score, scores = meteor.compute_score(clean_gts, clean_res)
        return 100.0 * float(score), [100.0 * float(s) for s in scores]
    except (OSError, ValueError) as e:
        logger.warning("METEOR skipped: the Java scorer failed (%s)", e)
        return None
    finally:
        if meteor is not None:
            _close_meteor(meteor)


def _close_meteor(meteor: "object") -> None:
    """Stop the METEOR Java process now (pycocoevalcap otherwise waits for garbage collection)."""
    process = getattr(meteor, "meteor_p", None)
    if process is None:
        return
    try:
        process.stdin.close()
    except OSError:
        pass
    process.kill()
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    # pycocoevalcap's Meteor sets meteor_p in __init__; its stubless class gives mypy no attributes to check
    meteor.meteor_p = None  # type: ignore[attr-defined]
    meteor.__class__ = _ClosedMeteor


class _ClosedMeteor:
    """What a Meteor scorer becomes once its process is stopped (its ``__del__`` would touch the dead process)."""


def evaluate(hypotheses: List[str], references: List[List[str]],
             metrics: Sequence[str] = DEFAULT_METRICS) -> Dict[str, float]:
    """Corpus scores (0-100) of ``hypotheses[i]`` against ``references[i]`` (a list of one or more captions).
    ``metrics``: ``bleu``, ``chrf`` (sacrebleu), ``coco`` (= ``coco-bleu``, ``meteor``, ``rouge``, ``cider``).
    Keys: ``BLEU``, ``chrF``, ``BLEU-1``..``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr-D``. METEOR is left out
    (with a warning) where Java is missing."""
    return evaluate_detailed(hypotheses, references, metrics)[0]


def evaluate_detailed(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                      metrics: Sequence[str] = DEFAULT_METRICS) -> Tuple[Dict[str, float], Dict[str, List[float]]]:
    """Like `evaluate`, plus the per-image scores of the COCO metrics (for reports: ``per_image["CIDEr-D"][i]``)."""
    check_condition(len(hypotheses) == len(references),
                    "%d hypotheses but %d reference lists" % (len(hypotheses), len(references)))
    check_condition(len(hypotheses) > 0, "nothing to evaluate: no hypotheses")
    check_condition(all(len(r) > 0 for r in references), "every hypothesis needs at least one reference")
    wanted = expand_metrics(metrics)
    scores: Dict[str, float] = {}
    per_image: Dict[str, List[float]] = {}
    sacre = [m for m in wanted if m in (METRIC_BLEU, METRIC_CHRF)]
    if sacre:
        scores.update(sacrebleu_scores(hypotheses, references, sacre))
    coco = [m for m in wanted if m in COCO_PARTS]
    if coco:
        corpus, per_image = coco_scores(hypotheses, references, coco)
        scores.update(corpus)
    return scores, per_image


# ---------------------------------------------------------------------------------------------------------------
# reading the files of the CLI
# ---------------------------------------------------------------------------------------------------------------

def group_references(source_path: str, references_path: str, sources: Optional[List[str]] = None
                     ) -> Tuple[List[str], List[List[str]]]:
    """One references file with one line per (image, caption), line-aligned with the image list ``source_path``
    (whose lines may be given as ``sources``, read already): (distinct images in order of first appearance, the
    references of each)."""
    sources = utils.read_lines(source_path) if sources is None else sources
    captions = utils.read_lines(references_path)
    check_condition(len(sources) == len(captions),
                    "%s has %d lines but %s has %d: the image list and the references must be line-aligned"
                    % (source_path, len(sources), references_path, len(captions)))
    grouped: Dict[str, List[str]] = {}
    for number, (image, caption) in enumerate(zip(sources, captions), 1):
        check_condition(image.strip() != "", "%s: empty image path; remove the line (and line %d of %s)"
                        % (utils.location(source_path, number), number, references_path))
        check_condition(caption.strip() != "", "%s: empty reference caption; remove the line (and line %d of %s)"
                        % (utils.location(references_path, number), number, source_path))
        grouped.setdefault(image.strip(), []).append(caption.strip())
    return list(grouped), list(grouped.values())


def read_aligned_references(paths: Sequence[str], num_lines: int, hypotheses_path: str) -> List[List[str]]:
    """Several reference files, each line-aligned with the hypotheses: line i of every file is a reference of
    hypothesis i. Empty lines are skipped (an image may have fewer references), but every line needs one."""
    files = [utils.read_lines(p) for p in paths]
    for path, lines in zip(paths, files):
        check_condition(len(lines) == num_lines,
                        "%s has %d lines but %s has %d: references must be line-aligned with the hypotheses "
                        "(or give one references file with --source)" % (path, len(lines), hypotheses_path,
                                                                          num_lines))
    references = []
    for i in range(num_lines):
        refs = [lines[i].strip() for lines in files if lines[i].strip()]
        check_condition(bool(refs), "%s: no reference caption for this line in any references file"
                        % utils.location(paths[0], i + 1))
        references.append(refs)
    return references


def read_evaluation_inputs(hypotheses_path: str, references_paths: Sequence[str], source_path: Optional[str] = None,
                           hypotheses_source_path: Optional[str] = None,
                           hypotheses: Optional[List[str]] = None) -> Tuple[List[str], List[List[str]]]:
    """The CLI's inputs as (hypotheses, references per hypothesis).

    - several (or one) references files without ``--source``: each line-aligned with the hypotheses;
    - one references file with ``--source`` (image list aligned with it): references grouped by image; the
      hypotheses are then aligned with ``--hypotheses-source`` if given (matched by image path), else with the
      distinct images in order, or with the lines of ``--source`` (one hypothesis per line, the first of each
      image is used).
    Each file is read once (so that any may be a pipe); ``hypotheses`` are the lines of ``hypotheses_path`` when
    read already."""
    hypotheses = [h.strip() for h in (utils.read_lines(hypotheses_path) if hypotheses is None else hypotheses)]
    if source_path is None:
        check_condition(hypotheses_source_path is None, "--hypotheses-source needs --source (the image list of "
                                                        "the references)")
        return hypotheses, read_aligned_references(references_paths, len(hypotheses), hypotheses_path)
    check_condition(len(references_paths) == 1,
                    "--source groups one references file by image; got %d files (%s): give one, or drop --source "
                    "to use line-aligned files" % (len(references_paths), " ".join(references_paths)))
    sources = [s.strip() for s in utils.read_lines(source_path)]
    images, grouped = group_references(source_path, references_paths[0], sources)
    by_image = dict(zip(images, grouped))
    if hypotheses_source_path is not None:
        hyp_images = [s.strip() for s in utils.read_lines(hypotheses_source_path)]
        check_condition(len(hyp_images) == len(hypotheses),
                        "%s has %d lines but %s has %d: --hypotheses-source must be line-aligned with --hypotheses"
                        % (hypotheses_source_path, len(hyp_images), hypotheses_path, len(hypotheses)))
        references = []
        for number, image in enumerate(hyp_images, 1):
            check_condition(image in by_image, "%s: image %s has no references in %s (via %s)"
                            % (utils.location(hypotheses_source_path, number), image, references_paths[0],
                               source_path))
            references.append(by_image[image])
        return hypotheses, references
    if len(hypotheses) == len(images):
        return hypotheses, grouped
    check_condition(len(hypotheses) == len(sources),
                    "%s has %d lines but %s lists %d distinct images in %d lines: give one hypothesis per distinct "
                    "image or per line, or use --hypotheses-source" % (hypotheses_path, len(hypotheses), source_path,
                                                                       len(images), len(sources)))
    first: Dict[str, str] = {}
    for image, hypothesis in zip(sources, hypotheses):
        first.setdefault(image, hypothesis)
    return [first[image] for image in images], grouped


def format_table(scores: Dict[str, float]) -> str:
    """Scores as a two-column text table."""
    width = max([len("metric")] + [len(k) for k in scores])
    lines = ["%-*s  %s" % (width, "metric", "score")]
    lines += ["%-*s  %6.2f" % (width, key, value) for key, value in scores.items()]
    return "\n".join(lines)


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = arguments.ConfigArgumentParser(
        prog="python -m captioning.evaluate",
        description="Score predicted captions against references: sacrebleu BLEU and chrF, and the COCO caption "
                    "metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D; x100).")
    arguments.add_evaluate_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    utils.check_stream_open(sys.stdout)
    lines = utils.read_lines(args.hypotheses)
    if not lines:  # an empty input file gives no output and exit status 0 (if there is nothing to score)
        for path in args.references:
            count = len(utils.read_lines(path))
            utils.check_condition(count == 0, "%s: no hypotheses, but the references %s have %d line(s); a "
                                              "captioning run that failed?" % (args.hypotheses, path, count))
        logger.warning("%s: no hypotheses, nothing to evaluate", args.hypotheses)
        return
    hypotheses, references = read_evaluation_inputs(args.hypotheses, args.references, args.source,
                                                     args.hypotheses_source, lines)
    scores = evaluate(hypotheses, references, args.metrics)
    logger.info("%d hypotheses, %d references", len(hypotheses), sum(len(r) for r in references))
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in scores.items()}))
    else:
        print(format_table(scores))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point."""
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
