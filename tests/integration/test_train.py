"""python -m captioning.train on the synthetic features: the model folder, resume after kill -9, refusal of a
different command, and each bad input as a one-line error."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY = ["--rnn-num-hidden", "16", "--num-embed", "16", "--image-encoder-num-hidden", "16", "--batch-size", "8",
        "--bucket-width", "10", "--decode-and-evaluate", "0", "--use-cpu", "--seed", "3",
        "--rnn-decoder-hidden-dropout", "0.3", "--embed-dropout", "0.1"]


def train_args(f, output, *extra):
    return ["--source-root", f.feature_root, "--source", f.train_features, "--target", f.train_captions,
            "--validation-source", f.val_features, "--validation-target", f.val_captions,
            "--output", str(output)] + TINY + list(extra)


def run_train(args, check=True, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    result = subprocess.run([sys.executable, "-m", "captioning.train"] + args, cwd=str(REPO), env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_metrics(folder, drop=("time-elapsed",)):
    rows = []
    for line in (Path(folder) / "metrics").read_text().splitlines():
        n, *pairs = line.split("\t")
        values = {k: float(v) for k, v in (p.split("=") for p in pairs) if k not in drop}
        rows.append((int(n), values))
    return rows


def assert_same_metrics(a, b):
    assert [n for n, _ in a] == [n for n, _ in b]
    for (_, va), (_, vb) in zip(a, b):
        assert set(va) == set(vb)
        for key in va:
            assert float("%.4g" % va[key]) == float("%.4g" % vb[key]), (key, va, vb)


def test_model_folder_complete_then_finished_run_exits_0(synthetic_features, tmp_path):
    out = tmp_path / "model"
    args = train_args(synthetic_features, out, "--checkpoint-interval", "5", "--max-updates", "10",
                      "--metrics", "perplexity", "accuracy", "--keep-last-params", "1",
                      "--decode-and-evaluate", "10", "--optimized-metric", "bleu")
    run_train(args)
    names = set(os.listdir(out))
    assert {"args.yaml", "config", "version", "vocab.trg.0.json", "params.best", "metrics", "log",
            "training_state"} <= names
    # keep-last-params 1: the last and the best survive (params.00000 is not kept without --keep-initializations)
    params = sorted(n for n in names if n.startswith("params.0"))
    assert "params.00002" in params and "params.00000" not in params
    assert os.path.realpath(out / "params.best") in {os.path.realpath(out / p) for p in params}
    rows = read_metrics(out, drop=())
    assert [n for n, _ in rows] == [1, 2]
    for _, values in rows:
        assert {"perplexity-train", "perplexity-val", "accuracy-train", "accuracy-val", "bleu-val", "chrf-val",
                "cider-val", "learning-rate", "time-elapsed"} == set(values)
        assert 1.0 < values["perplexity-val"] < 200 and 0.0 <= values["accuracy-val"] <= 1.0
        assert 0.0 <= values["bleu-val"] <= 100 and 0.0 < values["chrf-val"] <= 100
    assert rows[1][1]["perplexity-val"] < rows[0][1]["perplexity-val"]
    # --optimized-metric bleu picks params.best
    bleus = [v["bleu-val"] for _, v in rows]
    assert os.readlink(out / "params.best") == "params.%05d" % (bleus.index(max(bleus)) + 1)
    config = yaml.safe_load((out / "config").read_text())
    assert config["decoder"] == "rnn" and config["rnn"]["num_layers"] == 1
    longest = max(len(line.split()) for line in Path(synthetic_features.train_captions).read_text().splitlines())
    assert longest + 1 <= config["max_output_length"] <= 99
    assert config["image_cnn"] is not None and "cnn_config" not in config
    log = (out / "log").read_text()
    assert "Checkpoint decoder" in log and "tokens/s" not in log
    # started again: nothing to do, exit 0, the files untouched
    before = (out / "metrics").read_text()
    result = run_train(args)
    assert "already finished" in result.stderr
    assert (out / "metrics").read_text() == before


def test_resume_after_kill_matches_uninterrupted_run(synthetic_features, tmp_path):
    extra = ["--checkpoint-interval", "4", "--max-updates", "24", "--max-num-checkpoint-not-improved", "-1"]
    straight = tmp_path / "straight"
    run_train(train_args(synthetic_features, straight, *extra))
    expected = read_metrics(straight)
    assert len(expected) == 6

    killed = tmp_path / "killed"
    args = train_args(synthetic_features, killed, *extra)
    kill_after_two_checkpoints(args, killed, timeout=180)
    assert len(read_metrics(killed)) < 6
    run_train(args)
    assert_same_metrics(read_metrics(killed), expected)
    # the final params are the same too
    assert_same_params(straight / "params.00006", killed / "params.00006")


def kill_after_two_checkpoints(args, folder, timeout: float) -> int:
    """Start ``python -m captioning.train ARGS`` and SIGKILL it once ``folder/metrics`` holds two checkpoints;
    returns its process id."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, "-m", "captioning.train"] + args, cwd=str(REPO), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = folder / "metrics"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def assert_same_params(path_a, path_b) -> None:
    import mxnet as mx
    a = mx.nd.load(str(path_a))
    b = mx.nd.load(str(path_b))
    for key in a:
        np.testing.assert_allclose(a[key].asnumpy(), b[key].asnumpy(), rtol=1e-4, atol=1e-6)


def test_different_command_is_refused_unless_overwrite(synthetic_features, tmp_path):
    out = tmp_path / "model"
    run_train(train_args(synthetic_features, out, "--checkpoint-interval", "2", "--max-updates", "2"))
    result = run_train(train_args(synthetic_features, out, "--checkpoint-interval", "2", "--max-updates", "2",
                                  "--initial-learning-rate", "0.01"), check=False)
    assert result.returncode == 1
    assert "--initial-learning-rate (0.0002 -> 0.01)" in result.stderr
    assert "Traceback" not in result.stderr
    # harmless options may differ
    result = run_train(train_args(synthetic_features, out, "--checkpoint-interval", "2", "--max-updates", "2",
                                  "--loglevel", "WARNING"))
    run_train(train_args(synthetic_features, out, "--checkpoint-interval", "2", "--max-updates", "2",
                         "--initial-learning-rate", "0.01", "--overwrite-output"))
    assert yaml.safe_load((out / "args.yaml").read_text())["initial_learning_rate"] == 0.01
    assert len(read_metrics(out)) == 1


def _copy_data(f, tmp_path):
    """A writable copy of the lists and captions (the features stay where they are)."""
    d = tmp_path / "data"
    d.mkdir()
    paths = {}
    for name in ("train_features", "train_captions", "val_features", "val_captions"):
        paths[name] = d / name
        paths[name].write_text(Path(getattr(f, name)).read_text())
    return paths


def _bad_run(f, tmp_path, paths, *extra, root=None):
    args = ["--source-root", root or f.feature_root, "--source", str(paths["train_features"]),
            "--target", str(paths["train_captions"]), "--validation-source", str(paths["val_features"]),
            "--validation-target", str(paths["val_captions"]), "--output", str(tmp_path / "model")] + TINY + \
        ["--max-updates", "1", "--checkpoint-interval", "1"] + list(extra)
    result = run_train(args, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if "ERROR" in line or line.startswith("error")]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_bad_inputs_are_one_line_errors(synthetic_features, tmp_path):
    f = synthetic_features
    paths = _copy_data(f, tmp_path)
    captions = paths["train_captions"].read_text().splitlines()

    paths["train_captions"].write_text("\n".join(captions[:-1]) + "\n")
    msg = _bad_run(f, tmp_path, paths)
    assert "train_features has %d lines but" % len(captions) in msg and "train_captions has %d" % (len(captions) - 1) \
        in msg

    bad = list(captions)
    bad[6] = "   "
    paths["train_captions"].write_text("\n".join(bad) + "\n")
    msg = _bad_run(f, tmp_path, paths)
    assert "train_captions, line 7: empty caption" in msg

    paths["train_captions"].write_text("\n".join(captions) + "\n")
    msg = _bad_run(f, tmp_path, paths, "--max-seq-len", "3")
    assert "--max-seq-len 3" in msg and "train_captions" in msg

    names = paths["train_features"].read_text().splitlines()
    names[4] = "no_such_file.npy"
    paths["train_features"].write_text("\n".join(names) + "\n")
    msg = _bad_run(f, tmp_path, paths)
    assert "train_features, line 5" in msg and "no_such_file.npy" in msg

    # a wrong-shaped feature file (in a copy of the feature folder)
    root = tmp_path / "features"
    root.mkdir()
    for name in os.listdir(f.feature_root):
        if name.endswith(".npy") or name.startswith("image_feature_sizes"):
            shutil.copy(os.path.join(f.feature_root, name), root / name)
    names = Path(f.train_features).read_text().splitlines()
    os.remove(root / names[9])
    np.save(root / names[9], np.zeros((3, 2, 2), np.float32))
    paths["train_features"].write_text("\n".join(names) + "\n")
    line = names.index(names[9]) + 1
    msg = _bad_run(f, tmp_path, paths, root=str(root))
    assert "train_features, line %d" % line in msg and names[9] in msg and "(3, 2, 2)" in msg

    # unwritable output folder
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_train(train_args(f, blocker / "model"), check=False)
    assert result.returncode == 1 and "cannot write the model folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_over_long_captions_dropped_and_counted(synthetic_features, tmp_path):
    f = synthetic_features
    out = tmp_path / "model"
    lengths = [len(line.split()) for line in Path(f.train_captions).read_text().splitlines()]
    limit = sorted(lengths)[len(lengths) // 2]
    dropped = sum(1 for n in lengths if n + 1 > limit)
    result = run_train(train_args(f, out, "--max-seq-len", str(limit), "--max-updates", "1", "--dry-run"))
    assert "dropped %d of %d training captions" % (dropped, len(lengths)) in result.stderr
    assert not out.exists()      # --dry-run writes nothing


def test_tutorial_command_verbatim(synthetic_features, tmp_path):
    f = synthetic_features
    args = ("--source-root %s --source %s --target %s --validation-source-root %s --validation-source %s "
            "--validation-target %s --batch-size 64 --initial-learning-rate 0.0003 --gradient-clipping-threshold 1.0 "
            "--bucket-width 5 --max-seq-len 1:60 --fill-up replicate --output %s --encoder image-pretrain-cnn "
            "--rnn-num-hidden 512 --rnn-decoder-state-init zero --checkpoint-frequency 200 --weight-normalization "
            "--use-cpu --dry-run" % (f.feature_root, f.train_features, f.train_captions, f.feature_root,
                                     f.val_features, f.val_captions, tmp_path / "models")).split()
    result = run_train(args)
    assert "Training rnn decoder, 1 layer(s); batches of 64 captions" in result.stderr
    assert "--dry-run" in result.stderr and not (tmp_path / "models").exists()


def test_flags_map_onto_the_configs():
    from captioning import train
    base = "--source s --source-root r --target t --validation-source vs --validation-target vt --output o".split()
    args = train.build_parser().parse_args(base + "--rnn-num-hidden 512 --rnn-decoder-state-init zero "
                                                  "--weight-normalization --num-embed 1:64 --embed-dropout 0:0.2 "
                                                  "--rnn-attention-type bilinear --max-seq-len 1:60".split())
    from captioning.cnn import CNNConfig
    config = train.create_model_config(args, (1280, 7, 7), 100, 33, CNNConfig(model_path="cnn/x", layer="x"))
    assert config.decoder == "rnn" and config.rnn.num_layers == 1 and config.rnn.num_hidden == 512
    assert config.rnn.attention_type == "bilinear" and config.rnn.state_init == "zero"
    assert config.weight_normalization and config.num_embed == 64 and config.embed_dropout == 0.2
    assert config.encoder.feature_shape == (1280, 7, 7) and config.vocab_size == 100
    assert config.max_output_length == 33 and config.image_cnn.layer == "x" and config.format_version == 2
    transformer = train.create_model_config(train.build_parser().parse_args(
        base + "--decoder transformer --transformer-model-size 32 --max-seq-len 40".split()), (8, 2, 2), 10, 20)
    assert transformer.rnn is None and transformer.transformer.model_size == 32
    assert transformer.transformer.max_seq_len == 40
    tc = train.create_training_config(train.build_parser().parse_args(
        base + "--gradient-clipping-threshold 0 --optimizer-params beta1:0.8 --label-smoothing 0.2".split()), 100)
    assert tc.optimizer.clip_type == "none" and tc.optimizer.params == {"beta1": 0.8}
    assert tc.cross_entropy.label_smoothing == 0.2 and tc.cross_entropy.vocab_size == 100
    assert train.max_output_length_from_captions(20, 60) == 25 and train.max_output_length_from_captions(50, 40) == 40
    assert train.differing_options({"a": [1, 2], "quiet": True}, {"a": (1, 2), "quiet": False}) == []
    assert train.differing_options({"a": 1}, {"a": 2, "b": 3}) == ["--a (1 -> 2)", "--b (None -> 3)"]


def _one_error_line(result):
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if "ERROR" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_refused_before_the_model_folder_is_written(synthetic_features, tmp_path):
    """Bad --optimizer-params, self-critical without --params, a schedule with dist_async: one line, no folder."""
    out = tmp_path / "model"
    for extra, expected in ((["--optimizer-params", "beta1:x"], "--optimizer-params beta1:x: not accepted by the "
                                                                 "adam optimizer"),
                            (["--optimizer-params", "no_such_option:1"], "no_such_option"),
                            (["--loss", "self-critical"], "--loss self-critical continues from a cross-entropy "
                                                          "model"),
                            (["--kvstore", "dist_async"], "--kvstore dist_async applies only a constant learning "
                                                          "rate")):
        line = _one_error_line(run_train(train_args(synthetic_features, out, "--max-updates", "1", *extra),
                                         check=False))
        assert expected in line, line
        assert not out.exists(), extra
    # the corrected command then runs; here with two reference files per validation image (issue 10 item 3) and
    # params.best chosen by CIDEr-D
    refs = list(synthetic_features.val_references[:2])
    run_train(train_args(synthetic_features, out, "--max-updates", "1", "--checkpoint-interval", "1",
                         "--optimizer-params", "beta1:0.8", "--decode-and-evaluate", "4", "--optimized-metric",
                         "cider", "--load-all-features-to-memory") + ["--validation-target"] + refs)
    (_, values), = read_metrics(out)
    # the checkpoint decoder uses the validation store: features loaded once for training, once for validation
    assert (out / "log").read_text().count("into memory:") == 2
    assert {"perplexity-val", "bleu-val", "cider-val"} <= set(values)
    log = (out / "log").read_text()
    num_val = len(Path(synthetic_features.val_features).read_text().splitlines())
    assert "Validation data: %d (image, caption) pairs from 2 reference files" % (2 * num_val) in log
    assert "(%d references)" % (4 * 2) in log
    assert "best cider=" in log


@pytest.mark.slow
def test_output_folder_lock(synthetic_features, tmp_path):
    from captioning.model_folder import LOCK_NAME, FolderLock
    out = tmp_path / "model"
    args = train_args(synthetic_features, out, "--max-updates", "2", "--checkpoint-interval", "2")
    run_train(args)
    before = sorted(os.listdir(out))
    with FolderLock(str(out)):   # another training holds the folder
        for extra in ([], ["--overwrite-output"], ["--max-updates", "4"]):
            line = _one_error_line(run_train(args + extra, check=False))
            assert "is in use by another training (process %d)" % os.getpid() in line
        assert sorted(os.listdir(out)) == before and len(read_metrics(out)) == 1    # nothing emptied
    # a stale lock (its process is gone) is taken over, with a message
    (out / LOCK_NAME).write_text("999999999")
    result = run_train(args + ["--overwrite-output"])
    assert "recovered the stale lock of process 999999999" in result.stderr
    assert (out / LOCK_NAME).read_text() == ""       # released cleanly
    assert len(read_metrics(out)) == 1


@pytest.mark.slow
def test_a_finished_run_can_be_extended(synthetic_features, tmp_path):
    out = tmp_path / "model"
    base = train_args(synthetic_features, out, "--checkpoint-interval", "2", "--keep-last-params", "-1")
    run_train(base + ["--max-updates", "2"])
    assert [n for n, _ in read_metrics(out)] == [1]
    (out / "dev.hyp").write_text("captions the user wrote into the model folder\n")
    run_train(base + ["--max-updates", "4", "--keep-last-params", "1"])   # continuing keeps the user's file
    assert [n for n, _ in read_metrics(out)] == [1, 2]
    assert (out / "dev.hyp").read_text() == "captions the user wrote into the model folder\n"
    # --overwrite-output would delete it: refused, naming it
    line = _one_error_line(run_train(base + ["--max-updates", "4", "--overwrite-output"], check=False))
    assert "holds files training did not write (dev.hyp)" in line and (out / "dev.hyp").exists()
    assert [n for n, _ in read_metrics(out)] == [1, 2]
    assert yaml.safe_load((out / "args.yaml").read_text())["max_updates"] == 4
    state = json.loads((out / "training_state" / "state.json").read_text())["training"]
    assert state["updates"] == 4 and state["finished"] and state["stop_reason"] == "--max-updates 4 reached"
    # other differences are still refused
    line = _one_error_line(run_train(base + ["--max-updates", "6", "--initial-learning-rate", "0.5"], check=False))
    assert "holds a run of a different command (--initial-learning-rate" in line
    # a folder written by an older version (no --self-critical-samples in its args.yaml) continues at the default
    stored = yaml.safe_load((out / "args.yaml").read_text())
    del stored["self_critical_samples"]
    (out / "args.yaml").write_text(yaml.safe_dump(stored))
    run_train(base + ["--max-updates", "6"])
    assert [n for n, _ in read_metrics(out)] == [1, 2, 3]
    line = _one_error_line(run_train(base + ["--max-updates", "8", "--self-critical-samples", "3"], check=False))
    assert "(--self-critical-samples (5 -> 3))" in line


@pytest.mark.slow
def test_resume_refuses_pickled_optimizer_states_and_damaged_args(synthetic_features, tmp_path):
    """Issue 11 items 1 and 7 through the CLI: nothing is unpickled on resume (a planted pickle does not run);
    a damaged args.yaml is a one-line error. (Damaged state.json / .npz: tests/unit/test_training.py.)"""
    import pickle
    out = tmp_path / "model"
    args = train_args(synthetic_features, out, "--max-updates", "4", "--checkpoint-interval", "2")
    run_train(args + ["--max-updates", "2"])
    state_dir = out / "training_state"
    assert {"optimizer_states.npz", "optimizer_states.json"} <= set(os.listdir(state_dir))
    assert "optimizer_states" not in os.listdir(state_dir)
    with np.load(state_dir / "optimizer_states.npz", allow_pickle=False) as arrays:
        assert len(arrays.files) > 0

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch %s" % (tmp_path / "pwned"),))

    (state_dir / "optimizer_states").write_bytes(pickle.dumps(Payload()))   # the old (pickle) file name
    line = _one_error_line(run_train(args, check=False))
    assert "optimizer_states: optimizer states in MXNet's pickle format are not loaded" in line
    assert not (tmp_path / "pwned").exists()
    os.remove(state_dir / "optimizer_states")
    good_args = (out / "args.yaml").read_text()
    (out / "args.yaml").write_text("{unclosed: [")
    assert "args.yaml: cannot read" in _one_error_line(run_train(args, check=False))
    (out / "args.yaml").write_text(good_args)
    run_train(args)       # intact again: resumes to the end
    assert [n for n, _ in read_metrics(out)] == [1, 2]


@pytest.mark.slow
def test_feature_names_leaving_the_root_need_allow_absolute_paths(synthetic_features, tmp_path):
    """Issue 11 item 5: absolute, ../ and symlinked-out names are refused unless --allow-absolute-paths."""
    f = synthetic_features
    paths = _copy_data(f, tmp_path)
    names = paths["train_features"].read_text().splitlines()
    root = tmp_path / "root"
    root.mkdir()
    for name in sorted(set(names)):
        shutil.copy(os.path.join(f.feature_root, name), root / name)
    for name in ("image_feature_sizes.json",):
        if os.path.exists(os.path.join(f.feature_root, name)):
            shutil.copy(os.path.join(f.feature_root, name), root / name)
    outside = os.path.join(f.feature_root, names[2])
    cases = {"absolute": outside, "dotdot": os.path.relpath(outside, root)}
    os.symlink(outside, root / "link.npy")
    cases["symlink"] = "link.npy"
    for case, name in cases.items():
        changed = list(names)
        changed[2] = name
        paths["train_features"].write_text("\n".join(changed) + "\n")
        line = _bad_run(f, tmp_path, paths, "--dry-run", root=str(root))
        assert "train_features, line 3" in line and "--allow-absolute-paths" in line, (case, line)
        result = run_train(["--source-root", str(root), "--source", str(paths["train_features"]),
                            "--target", str(paths["train_captions"]), "--validation-source", f.val_features,
                            "--validation-source-root", f.feature_root, "--validation-target", f.val_captions,
                            "--output", str(tmp_path / "model"), "--dry-run", "--allow-absolute-paths"] + TINY)
        assert "--dry-run: data and model built" in result.stderr, case


def _captions(folder, f, tmp_path, name):
    """The captions of ``folder`` (its params.best) for the validation features (one length bound for all: a
    model's default comes from its training captions)."""
    out = tmp_path / name
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "captioning.captioner", "--models", str(folder), "--source-root",
                    f.feature_root, "--input", f.val_features, "--output", str(out), "--use-cpu", "--quiet",
                    "--beam-size", "2", "--batch-size", "16", "--max-output-length", "12"], cwd=str(REPO), env=env, check=True, timeout=240)
    return out.read_text()


def test_params_continue_with_the_models_vocabulary(synthetic_features, tmp_path):
    """--params MODEL/params.best trains on other captions with MODEL's vocabulary (their new words become <unk>):
    after one update at learning rate 0 the captions are those of MODEL; a --target-vocab that differs from it is
    refused in one line naming both files."""
    f = synthetic_features
    first = tmp_path / "first"
    run_train(train_args(f, first, "--max-updates", "2", "--checkpoint-interval", "2"))
    # other captions: a new most frequent word shifts every id of a vocabulary built from them
    other = tmp_path / "other.captions"
    other.write_text("".join("zebra %s zebra\n" % line for line in Path(f.train_captions).read_text().splitlines()))
    args = train_args(f, tmp_path / "second", "--max-updates", "1", "--checkpoint-interval", "1",
                      "--initial-learning-rate", "0", "--params", str(first / "params.best"))
    args[args.index("--target") + 1] = str(other)
    result = run_train(args)
    second = tmp_path / "second"
    assert json.loads((second / "vocab.trg.0.json").read_text()) == json.loads((first / "vocab.trg.0.json").read_text())
    assert "(the --params model's)" in result.stderr and "they become <unk>" in result.stderr, result.stderr[-2000:]
    assert _captions(second, f, tmp_path, "second.txt") == _captions(first, f, tmp_path, "first.txt")

    # a vocabulary of other ids
    from captioning import vocab as V
    other_vocab = tmp_path / "other.vocab.json"
    V.save_vocab(V.build_vocab(other.read_text().splitlines()), str(other_vocab))
    result = run_train(train_args(f, tmp_path / "third", "--params", str(first / "params.best"), "--target-vocab",
                                  str(other_vocab)), check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "differs from" in lines[-1], result.stderr[-2000:]
    assert str(other_vocab) in lines[-1] and str(first / "vocab.trg.0.json") in lines[-1]
    assert not (tmp_path / "third").exists()
