"""captioning.evaluate: the metrics match sacrebleu's and pycocoevalcap's own numbers; the file readers' errors."""
import logging
from pathlib import Path

import pytest

from captioning import evaluate
from captioning.utils import CaptioningError

HYPOTHESES = ["a dog runs on the grass", "two men playing football", "a girl in a red dress"]
REFERENCES = [["a dog is running on the grass", "a brown dog runs through green grass"],
              ["two men play soccer in a field", "two men are playing football", "men playing a ball game"],
              ["a little girl wearing a red dress", "a girl in red stands on a sidewalk"]]
NO_METEOR = ["bleu", "chrf", "coco-bleu", "rouge", "cider"]


def _shared_dir() -> Path:
    return Path(__file__).resolve().parents[2] / ".." / "shared"


def _write(path: Path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_coco_tokenize_drops_punctuation_keeps_inner_hyphens():
    assert evaluate.coco_tokenize("A dog, running (fast)!") == "a dog running fast"
    assert evaluate.coco_tokenize("the man's tri-colored hat.") == "the man's tri-colored hat"
    assert evaluate.coco_tokenize("  two   spaces ") == "two spaces"
    assert evaluate.coco_tokenize("...") == ""


def test_expand_metrics_and_unknown_metric():
    assert evaluate.expand_metrics(["coco"]) == ["coco-bleu", "meteor", "rouge", "cider"]
    assert evaluate.expand_metrics(["cider", "bleu", "cider"]) == ["bleu", "cider"]
    with pytest.raises(CaptioningError, match="unknown metric.*spice"):
        evaluate.expand_metrics(["spice"])


def test_identical_hypotheses_score_100():
    refs = [[h] for h in HYPOTHESES]
    scores = evaluate.evaluate(HYPOTHESES, refs, NO_METEOR)
    assert scores["BLEU"] == pytest.approx(100.0)
    assert scores["chrF"] == pytest.approx(100.0)
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert scores[key] == pytest.approx(100.0, abs=1e-3), key
    # CIDEr-D of a perfect match is 10 x 100 when the idf is not degenerate (n-grams unique to one image)
    assert scores["CIDEr-D"] > 100.0


def test_disjoint_hypotheses_score_zero():
    scores = evaluate.evaluate(["xx yy zz"], [["a b c d"]], ["bleu", "coco-bleu", "rouge", "cider"])
    assert scores["BLEU"] == pytest.approx(0.0)
    assert scores["BLEU-1"] == pytest.approx(0.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(0.0)
    assert scores["CIDEr-D"] == pytest.approx(0.0)


def test_matches_sacrebleu_directly():
    import sacrebleu
    scores = evaluate.evaluate(HYPOTHESES, REFERENCES, ["bleu", "chrf"])
    # sacrebleu wants equal-length reference streams: pad the shorter lists with None (ignored)
    streams = [[refs[k] if k < len(refs) else None for refs in REFERENCES] for k in range(3)]
    assert scores["BLEU"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, streams).score)
    assert scores["chrF"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, streams).score)
    assert set(scores) == {"BLEU", "chrF"}
    assert 0 < scores["BLEU"] < 100


def test_matches_pycocoevalcap_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    gts = {i: refs for i, refs in enumerate(REFERENCES)}
    res = {i: [h] for i, h in enumerate(HYPOTHESES)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per_image = Cider().compute_score(gts, res)
    corpus, per_image = evaluate.coco_scores(HYPOTHESES, REFERENCES, ["coco-bleu", "rouge", "cider"])
    for k in range(4):
        assert corpus["BLEU-%d" % (k + 1)] == pytest.approx(100 * bleu[k])
    assert corpus["ROUGE-L"] == pytest.approx(100 * rouge)
    assert corpus["CIDEr-D"] == pytest.approx(100 * cider)
    assert per_image["CIDEr-D"] == pytest.approx([100 * v for v in cider_per_image])
    assert len(per_image["ROUGE-L"]) == len(HYPOTHESES)


def test_tokenisation_makes_punctuation_and_case_irrelevant():
    plain = evaluate.evaluate(HYPOTHESES, REFERENCES, ["coco-bleu", "cider"])
    noisy = evaluate.evaluate([h.capitalize() + "." for h in HYPOTHESES],
                              [[r.upper() + " !" for r in refs] for refs in REFERENCES], ["coco-bleu", "cider"])
    assert noisy == pytest.approx(plain)


def test_meteor_skipped_with_warning_without_java(monkeypatch, caplog):
    monkeypatch.setattr(evaluate.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="captioning.evaluate"):
        scores = evaluate.evaluate(HYPOTHESES, REFERENCES, ["meteor", "rouge"])
    assert "METEOR" not in scores and "ROUGE-L" in scores
    assert any("METEOR skipped" in r.getMessage() and "java" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_meteor_runs_when_java_exists():
    """One Java start-up (~7 s): a perfect hypothesis scores near 100, a disjoint one 0, a partial one between."""
    if not evaluate.java_available():
        pytest.skip("no java")
    hypotheses = ["a dog runs on the grass", "xx yy zz", HYPOTHESES[1]]
    references = [["a dog runs on the grass"], ["a cat sleeps"], REFERENCES[1]]
    scores, per_image = evaluate.evaluate_detailed(hypotheses, references, ["meteor"])
    assert list(scores) == ["METEOR"]
    perfect, disjoint, partial = per_image["METEOR"]
    assert perfect > 95 and disjoint == pytest.approx(0.0) and 10 < partial < 95
    assert min(per_image["METEOR"]) < scores["METEOR"] < max(per_image["METEOR"])


def test_evaluate_checks_its_inputs():
    with pytest.raises(CaptioningError, match="2 hypotheses but 1 reference"):
        evaluate.evaluate(["a", "b"], [["a"]], ["bleu"])
    with pytest.raises(CaptioningError, match="at least one reference"):
        evaluate.evaluate(["a"], [[]], ["bleu"])


def test_aligned_reference_files(tmp_path):
    hyp = _write(tmp_path / "hyp", HYPOTHESES)
    r1 = _write(tmp_path / "r1", [refs[0] for refs in REFERENCES])
    r2 = _write(tmp_path / "r2", [refs[1] for refs in REFERENCES[:2]] + [""])  # image 3 has one reference here
    hypotheses, references = evaluate.read_evaluation_inputs(hyp, [r1, r2])
    assert hypotheses == HYPOTHESES
    assert references == [REFERENCES[0][:2], REFERENCES[1][:2], REFERENCES[2][:1]]


def test_mismatched_line_counts_name_both_files(tmp_path):
    hyp = _write(tmp_path / "hyp", HYPOTHESES)
    short = _write(tmp_path / "short", ["a b"])
    with pytest.raises(CaptioningError) as e:
        evaluate.read_evaluation_inputs(hyp, [short])
    assert str(tmp_path / "short") in str(e.value) and str(tmp_path / "hyp") in str(e.value)
    assert "1 lines" in str(e.value) and "3" in str(e.value)


def test_line_without_any_reference_is_named(tmp_path):
    hyp = _write(tmp_path / "hyp", ["a", "b"])
    refs = _write(tmp_path / "refs", ["a", " "])
    with pytest.raises(CaptioningError, match=r"refs, line 2: no reference"):
        evaluate.read_evaluation_inputs(hyp, [refs])


def test_references_grouped_by_source(tmp_path):
    source = _write(tmp_path / "src", ["a.jpg", "a.jpg", "b.jpg", "a.jpg", "b.jpg"])
    refs = _write(tmp_path / "refs", ["a one", "a two", "b one", "a three", "b two"])
    # one hypothesis per distinct image
    hyp = _write(tmp_path / "hyp", ["hyp a", "hyp b"])
    hypotheses, references = evaluate.read_evaluation_inputs(hyp, [refs], source)
    assert hypotheses == ["hyp a", "hyp b"]
    assert references == [["a one", "a two", "a three"], ["b one", "b two"]]
    # one hypothesis per line of the source (the captioner run on the same list): the first of each image
    per_line = _write(tmp_path / "hyp2", ["hyp a", "hyp a", "hyp b", "hyp a", "hyp b"])
    hypotheses, references = evaluate.read_evaluation_inputs(per_line, [refs], source)
    assert hypotheses == ["hyp a", "hyp b"] and len(references) == 2
    # hypotheses with their own image list, in another order
    hyp_source = _write(tmp_path / "hsrc", ["b.jpg", "a.jpg"])
    hyp3 = _write(tmp_path / "hyp3", ["hyp b", "hyp a"])
    hypotheses, references = evaluate.read_evaluation_inputs(hyp3, [refs], source, hyp_source)
    assert hypotheses == ["hyp b", "hyp a"]
    assert references == [["b one", "b two"], ["a one", "a two", "a three"]]


def test_grouping_errors(tmp_path):
    source = _write(tmp_path / "src", ["a.jpg", "b.jpg"])
    refs = _write(tmp_path / "refs", ["a one", ""])
    hyp = _write(tmp_path / "hyp", ["x", "y"])
    with pytest.raises(CaptioningError, match=r"refs, line 2: empty reference caption"):
        evaluate.read_evaluation_inputs(hyp, [refs], source)
    refs3 = _write(tmp_path / "refs3", ["a", "b", "c"])
    with pytest.raises(CaptioningError, match=r"src has 2 lines but .*refs3 has 3"):
        evaluate.read_evaluation_inputs(hyp, [refs3], source)
    good = _write(tmp_path / "good", ["a one", "b one"])
    hyp_source = _write(tmp_path / "hsrc", ["a.jpg", "c.jpg"])
    with pytest.raises(CaptioningError, match=r"hsrc, line 2: image c.jpg has no references"):
        evaluate.read_evaluation_inputs(hyp, [good], source, hyp_source)
    hyp3 = _write(tmp_path / "hyp3", ["x", "y", "z"])
    with pytest.raises(CaptioningError, match=r"hyp3 has 3 lines but .*src lists 2 distinct images"):
        evaluate.read_evaluation_inputs(hyp3, [good], source)


def test_format_table():
    table = evaluate.format_table({"BLEU": 12.345, "CIDEr-D": 100.0})
    assert table.splitlines() == ["metric   score", "BLEU      12.35", "CIDEr-D  100.00"]


@pytest.mark.shared
def test_flickr_dev_references_match_pycocoevalcap():
    """Real captions: reference 0 of each dev image scored against references 1-4, as pycocoevalcap does it."""
    data = _shared_dir() / "data" / "flickr8k-sample"
    if not (data / "dev.captions.0").exists():
        pytest.skip("../shared/data/flickr8k-sample not available")
    from pycocoevalcap.cider.cider import Cider
    columns = [(data / ("dev.captions.%d" % k)).read_text(encoding="utf-8").splitlines() for k in range(5)]
    hypotheses = columns[0]
    references = [list(refs) for refs in zip(*columns[1:])]
    expected, _ = Cider().compute_score({i: r for i, r in enumerate(references)},
                                        {i: [h] for i, h in enumerate(hypotheses)})
    scores = evaluate.evaluate(hypotheses, references, ["bleu", "cider"])
    assert scores["CIDEr-D"] == pytest.approx(100 * expected)
    assert 10 < scores["BLEU"] < 60   # humans against humans: far from 0 and from 100
