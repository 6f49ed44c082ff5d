"""Distributed training end to end: ``captioning.launch -n 2 -s 1 -- captioning.train --kvstore dist_sync`` on the
synthetic set gives one model folder (rank 0 writes it) whose validation perplexity is that of one process with the
same global batch and number of updates, within 5%."""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
UPDATES = 24
GLOBAL_BATCH = 16


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_args(data, output: Path, batch_size: int, kvstore: str) -> List[str]:
    return ["-m", "captioning.train",
            "--source-root", data.feature_root, "--source", data.train_features, "--target", data.train_captions,
            "--validation-source-root", data.feature_root, "--validation-source", data.val_features,
            "--validation-target", data.val_captions, "--output", str(output),
            "--batch-size", str(batch_size), "--max-updates", str(UPDATES), "--checkpoint-interval",
            str(UPDATES // 2), "--rnn-num-hidden", "16", "--num-embed", "16", "--image-encoder-num-hidden", "16",
            "--initial-learning-rate", "0.003", "--decode-and-evaluate", "0", "--seed", "5", "--use-cpu",
            "--kvstore", kvstore]


def _metrics(folder: Path) -> List[Dict[str, float]]:
    rows = []
    for line in (folder / "metrics").read_text().splitlines():
        fields = line.split("\t")
        rows.append({k: float(v) for k, v in (f.split("=", 1) for f in fields[1:])})
        rows[-1]["checkpoint"] = int(fields[0])
    return rows


@pytest.mark.slow
def test_two_workers_match_one_process(synthetic_features, tmp_path):
    data = synthetic_features
    single = tmp_path / "single"
    result = subprocess.run([sys.executable] + _train_args(data, single, GLOBAL_BATCH, "device"), cwd=tmp_path,
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "captioning.launch", "-n", "2", "-s", "1", "--launcher", "local", "--",
               sys.executable] + _train_args(data, dist, GLOBAL_BATCH // 2, "dist_sync")
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # both workers ran as a two-worker job, and both finished
    assert re.search(r"^\[worker 0\] ", result.stderr, re.M) and re.search(r"^\[worker 1\] ", result.stderr, re.M)
    assert "all 2 workers finished" in result.stderr
    assert len(set(re.findall(r"worker ([01]) of 2", result.stderr))) == 2, result.stderr[-3000:]

    # one model folder, written once (rank 0): one metrics line per checkpoint, the usual files
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["dist", "single"]
    rows = _metrics(dist)
    assert [r["checkpoint"] for r in rows] == [1, 2], (dist / "metrics").read_text()
    for name in ("config", "args.yaml", "vocab.trg.0.json", "params.best", "params.00001", "params.00002"):
        assert (dist / name).exists(), name
    assert not [p.name for p in dist.iterdir() if p.name.endswith(".tmp")]

    # the same global batch and number of updates learn the same: validation perplexity within 5%
    single_ppl = _metrics(single)[-1]["perplexity-val"]
    dist_ppl = rows[-1]["perplexity-val"]
    assert rows[0]["perplexity-val"] > dist_ppl   # it learned
    assert abs(dist_ppl - single_ppl) / single_ppl < 0.05, (single_ppl, dist_ppl)
