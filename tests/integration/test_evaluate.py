"""python -m captioning.evaluate end to end: the table, --json, the reference layouts, the one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
FAST = ["--metrics", "bleu", "chrf", "coco-bleu", "rouge", "cider"]   # everything but METEOR's Java start-up


def run_cli(args: List[str]) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "captioning.evaluate"] + args, cwd=str(REPO), env=environment,
                          capture_output=True, text=True, timeout=120)


def _write(path: Path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {"hyp": _write(tmp_path / "hyp", ["a dog runs on the grass", "two men playing football"]),
            "r1": _write(tmp_path / "r1", ["a dog is running on the grass", "two men play soccer in a field"]),
            "r2": _write(tmp_path / "r2", ["a brown dog runs through green grass", "two men are playing football"]),
            "tmp": tmp_path}


def test_json_scores_match_the_python_api(files):
    from captioning import evaluate
    result = run_cli(["--hypotheses", files["hyp"], "--references", files["r1"], files["r2"], "--json"] + FAST)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    expected = evaluate.evaluate(["a dog runs on the grass", "two men playing football"],
                                 [["a dog is running on the grass", "a brown dog runs through green grass"],
                                  ["two men play soccer in a field", "two men are playing football"]],
                                 ["bleu", "chrf", "coco-bleu", "rouge", "cider"])
    assert list(scores) == ["BLEU", "chrF", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-4), key


def test_table_and_identical_hypotheses(files):
    result = run_cli(["--hypotheses", files["hyp"], "--references", files["hyp"]] + FAST)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["metric", "score"]
    table = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    assert table["BLEU"] == 100.0 and table["chrF"] == 100.0 and table["ROUGE-L"] == 100.0
    assert table["BLEU-4"] == pytest.approx(100.0, abs=0.01)


def test_one_references_file_grouped_by_source(files):
    tmp = files["tmp"]
    source = _write(tmp / "src", ["a.jpg", "b.jpg", "a.jpg", "b.jpg"])
    refs = _write(tmp / "refs", ["a dog is running on the grass", "two men play soccer in a field",
                                 "a brown dog runs through green grass", "two men are playing football"])
    grouped = run_cli(["--hypotheses", files["hyp"], "--references", refs, "--source", source, "--json"] + FAST)
    aligned = run_cli(["--hypotheses", files["hyp"], "--references", files["r1"], files["r2"], "--json"] + FAST)
    assert grouped.returncode == 0 and aligned.returncode == 0, grouped.stderr + aligned.stderr
    assert json.loads(grouped.stdout) == json.loads(aligned.stdout)


def test_mismatched_files_error_names_both(files):
    short = _write(files["tmp"] / "short", ["just one line"])
    result = run_cli(["--hypotheses", files["hyp"], "--references", files["r1"], short])
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "short has 1 lines but" in line and files["hyp"] in line
    missing = run_cli(["--hypotheses", str(files["tmp"] / "nope"), "--references", files["r1"]])
    assert missing.returncode == 1 and "nope: no such file" in missing.stderr


def test_default_metrics_without_java_skip_meteor_with_a_warning(files):
    """No java on the PATH: every default metric but METEOR, and a warning that says why."""
    environment_path = str(files["tmp"] / "empty-bin")
    os.makedirs(environment_path)
    result = subprocess.run([sys.executable, "-m", "captioning.evaluate", "--hypotheses", files["hyp"],
                             "--references", files["r1"], files["r2"], "--json"], cwd=str(REPO),
                            env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PATH=environment_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert set(scores) == {"BLEU", "chrF", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert "METEOR skipped" in result.stderr and "java" in result.stderr


def test_inputs_may_be_pipes(files, capsys):
    """--hypotheses <(...) and --input <(...): a /dev/fd/N pipe is accepted wherever an input file is."""
    from captioning import evaluate, lexical_constraints
    pipes = []

    def pipe(path: str) -> str:
        read, write = os.pipe()
        os.write(write, Path(path).read_bytes())
        os.close(write)
        pipes.append(read)
        return "/dev/fd/%d" % read
    try:
        with pytest.raises(SystemExit) as info:
            evaluate.main(["--hypotheses", pipe(files["hyp"]), "--references", pipe(files["r1"]), "--metrics",
                           "bleu", "--json", "--quiet"])
        assert info.value.code == 0
        piped = json.loads(capsys.readouterr().out)
        with pytest.raises(SystemExit):
            evaluate.main(["--hypotheses", files["hyp"], "--references", files["r1"], "--metrics", "bleu", "--json",
                           "--quiet"])
        assert json.loads(capsys.readouterr().out) == piped and piped["BLEU"] > 0
        with pytest.raises(SystemExit) as info:
            lexical_constraints.main(["--input", pipe(files["hyp"]), "--quiet"])
        assert info.value.code == 0
        assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == \
            ["a dog runs on the grass", "two men playing football"]
    finally:
        for fd in pipes:
            os.close(fd)
