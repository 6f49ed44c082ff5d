"""The benchmark harness and the benchmarks' own logic, with tiny fake commands instead of real benchmarks: the
alternating order, what a run measures, the load-average invalidation, record writing, the results page, and each
benchmark's argument parsing and command building."""
import ast
import datetime
import json
import logging
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import mxnet as mx
import pytest

from benchmarks import caption, caption_memory, cuda_compat, harness, page, peer, quality, train_profile
from benchmarks import train as train_bench

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"

# a fake tool: prints a speed line like ours (a given speed), allocates MB megabytes, burns a little CPU
FAKE = ("import sys, time\nblock = bytearray(int(sys.argv[2]) * 2 ** 20)\nfor i in range(0, len(block), 4096): "
        "block[i] = 1\nend = time.process_time() + 0.15\nwhile time.process_time() < end: pass\n"
        "print('Epoch 1, update 50: %s samples/s (captions), 3.0 images/s' % sys.argv[1])\n")


def fake_job(tmp_path: Path, speed: float, megabytes: int, name: str, env=None) -> harness.Job:
    return harness.Job([sys.executable, "-c", FAKE, str(speed), str(megabytes)],
                       dict(harness.ours_environment(REPO, "1"), **(env or {})), str(tmp_path), tmp_path / name)


def session(tmp_path: Path, loads, **kwargs) -> harness.Session:
    readings = iter(loads)
    slept = []
    made = harness.Session(benchmark="fake", reproduce="python -m benchmarks.fake", baseline="a slower fake",
                           threads="1", results_dir=tmp_path / "results", load_reader=lambda: next(readings),
                           sleep=slept.append, settle_s=7.0, **kwargs)
    made.slept = slept
    return made


# ------------------------------------------------------------------------------------------------------------ harness
def test_order_alternates_baseline_ours_ours_baseline():
    assert harness.order(2) == [("baseline", 0), ("ours", 0), ("ours", 1), ("baseline", 1)]
    assert [s for s, _ in harness.order(4)] == ["baseline", "ours", "ours", "baseline"] * 2
    assert harness.order(3, ("ours",)) == [("ours", 0), ("ours", 1), ("ours", 2)]


def test_ratio_is_above_one_when_ours_is_better():
    assert harness.ratio(30.0, 20.0, higher_is_better=True) == pytest.approx(1.5)
    assert harness.ratio(1.0, 2.0, higher_is_better=False) == pytest.approx(2.0)      # memory: less is better
    assert harness.ratio(None, 2.0, True) is None and harness.ratio(3.0, 0.0, True) is None
    assert harness.median([3.0, 1.0, 2.0]) == 2.0 and harness.median([]) is None


def test_a_run_measures_wall_cpu_and_peak_memory_of_a_fresh_process(tmp_path):
    small = harness.run_process(fake_job(tmp_path, 10.0, 5, "small.log"))
    large = harness.run_process(fake_job(tmp_path, 20.0, 300, "large.log"))
    assert large.peak_rss_mb > small.peak_rss_mb + 250
    assert large.user_s + large.sys_s >= 0.14 and large.wall_s >= large.user_s * 0.5
    assert harness.figures_in(harness.OURS_TRAIN_SPEED, large.output) == [20.0]
    assert (tmp_path / "large.log").read_text() == large.output


def test_tree_sampling_counts_the_children_of_a_process(tmp_path):
    child = "import time\nblock = bytearray(300 * 2 ** 20)\nblock[::4096] = b'1' * len(block[::4096])\n" \
            "time.sleep(0.8)\nprint('child done')"
    parent = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', %r]).wait()" % child
    job = harness.Job([sys.executable, "-c", parent], harness.ours_environment(REPO, "1"), str(tmp_path),
                      tmp_path / "tree.log")
    run = harness.run_process(job, sample_tree=True)
    assert run.peak_tree_rss_mb > 250                # the child's 300 MB, which the parent never holds
    assert run.peak_rss_mb < 100 and "child done" in run.output


def test_runs_together_are_each_timed_to_their_own_end(tmp_path):
    jobs = [harness.Job([sys.executable, "-c", "import time; time.sleep(%s); print('done')" % t],
                        harness.ours_environment(REPO, "1"), str(tmp_path), tmp_path / ("log%d" % k))
            for k, t in enumerate((1.5, 0.1))]
    slow, fast = harness.run_together(jobs)
    assert slow.wall_s > fast.wall_s + 1.0
    assert "done" in slow.output and "done" in fast.output


def test_a_failed_command_is_an_error_with_its_exit_code_and_log(tmp_path):
    job = harness.Job([sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"],
                      harness.ours_environment(REPO, "1"), str(tmp_path), tmp_path / "failed.log")
    with pytest.raises(harness.BenchmarkError, match=r"exit 3\).*\n.*bad input"):
        harness.run_process(job)


def test_a_session_alternates_the_sides_and_writes_one_record(tmp_path):
    made = session(tmp_path, [(0.2, 0.3, 0.3), (0.4, 0.3, 0.3)])
    order = []

    def measure(side, k):
        order.append(side)
        speed, megabytes = (10.0, 200) if side == "baseline" else (20.0, 20)
        run = made.run(side, k, fake_job(tmp_path, speed, megabytes, "%s-%d.log" % (side, k),
                                         {"MALLOC_ARENA_MAX": "2"}))
        return {"speed": harness.figures_in(harness.OURS_TRAIN_SPEED, run.output)[0], "rss": run.peak_rss_mb}
    results = made.alternate(measure)
    made.figure_from("speed", "samples/s", True, results, "speed")
    made.figure_from("peak RSS", "MB", False, results, "rss")
    path = made.finish()
    assert order == ["baseline", "ours", "ours", "baseline"]
    assert made.slept == [7.0]
    assert path.parent == tmp_path / "results" and path.name.startswith("fake-") and path.suffix == ".json"
    assert not list(path.parent.glob(".record.*"))               # written through a temporary name
    record = json.loads(path.read_text())
    assert record["valid"] is True and record["invalid_reason"] is None
    assert record["order"] == ["baseline", "ours", "ours", "baseline"]
    speed, rss = record["figures"]
    assert speed["ours"] == [20.0, 20.0] and speed["baseline"] == [10.0, 10.0] and speed["ratio"] == 2.0
    assert rss["ratio"] > 2                                        # baseline / ours: ours holds less
    assert record["machine"]["load_before"] == [0.2, 0.3, 0.3] and record["machine"]["load_after"][0] == 0.4
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert set(record["machine"]["flags"]) <= set(harness.CPU_FLAGS)
    assert record["environment"]["ours"]["OMP_NUM_THREADS"] == "1"
    assert record["environment"]["baseline"]["MALLOC_ARENA_MAX"] == "2"
    assert "samples/s" in record["commands"]["ours"][0] and len(record["runs"]) == 4
    assert all(r["peak_rss_mb"] > 0 and r["wall_s"] > 0 for r in record["runs"])
    assert record["git"]["commit"] and record["packages"]["ours"]["numpy"]
    assert record["reproduce"] == "python -m benchmarks.fake"


@pytest.mark.parametrize("loads, when", [([(1.6, 0.2, 0.2), (0.1, 0.1, 0.1)], "before"),
                                         ([(0.1, 0.1, 0.1), (9.0, 3.0, 1.0)], "after")])
def test_a_busy_machine_makes_the_record_invalid_and_warns(tmp_path, caplog, monkeypatch, loads, when):
    monkeypatch.setattr(harness, "machine", lambda: {"cpu": "test CPU", "flags": [], "cores": 2, "memory_gb": 1.0,
                                                     "python": "3"})
    made = session(tmp_path, loads)
    made.figure("speed", "samples/s", True, [2.0], [1.0])
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        record = json.loads(made.finish().read_text())
    assert record["valid"] is False
    assert "load average" in record["invalid_reason"] and when in record["invalid_reason"]
    assert "above 1.0 (2 cores)" in record["invalid_reason"]
    assert "INVALID" in caplog.text


def test_a_busy_machine_is_only_noted_where_no_figure_depends_on_time(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "machine", lambda: {"cpu": "test CPU", "flags": [], "cores": 2, "memory_gb": 1.0,
                                                     "python": "3"})
    loads = iter([(1.6, 0.2, 0.2), (3.0, 1.0, 1.0)])
    made = harness.Session(benchmark="fake", reproduce="x", results_dir=tmp_path, settle_s=0.0, timed=False,
                           load_reader=lambda: next(loads))
    made.figure("CIDEr-D", "", True, [40.0], [39.0])
    record = json.loads(made.finish().read_text())
    assert record["valid"] is True and record["timed"] is False
    assert any("busy" in note and "1.60" in note for note in record["notes"])


def test_records_never_overwrite_each_other(tmp_path):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    path = harness.write_record({"benchmark": "x"}, tmp_path, when)
    assert path.name == "x-20260102T030405Z.json"
    with pytest.raises(harness.BenchmarkError, match="exists"):
        harness.write_record({"benchmark": "x", "other": 1}, tmp_path, when)
    assert json.loads(path.read_text()) == {"benchmark": "x"}


def test_validation_perplexity_is_the_last_checkpoints(tmp_path):
    (tmp_path / "metrics").write_text("1\tperplexity-train=200.1\tperplexity-val=150.5\n"
                                      "2\tperplexity-train=100.0\tperplexity-val=109.25\n")
    assert harness.validation_perplexity(tmp_path) == 109.25
    (tmp_path / "metrics").write_text("")
    with pytest.raises(harness.BenchmarkError, match="metrics"):
        harness.validation_perplexity(tmp_path)


def test_machine_facts_come_from_cpuinfo_and_meminfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f "
                                      "amx_tile sse\nprocessor\t: 1\nmodel name\t: Test CPU 9000\n")
    (tmp_path / "meminfo").write_text("MemTotal:       8388608 kB\n")
    facts = harness.machine(str(tmp_path / "cpuinfo"), str(tmp_path / "meminfo"))
    assert facts["cpu"] == "Test CPU 9000" and facts["flags"] == ["avx2", "avx512f", "amx_tile"]
    assert facts["memory_gb"] == 8.0


def test_only_the_variables_that_change_a_run_are_recorded():
    env = {"OMP_NUM_THREADS": "2", "MALLOC_TRIM_THRESHOLD_": "1", "HOME": "/root", "MXNET_ENGINE_TYPE": "x",
           "SECRET_TOKEN": "t"}
    assert harness.relevant_env(env) == {"MALLOC_TRIM_THRESHOLD_": "1", "MXNET_ENGINE_TYPE": "x",
                                         "OMP_NUM_THREADS": "2"}


def test_no_benchmark_edits_sys_path_and_every_module_imports():
    for path in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                raise AssertionError("%s uses sys.path" % path.name)
        __import__("benchmarks.%s" % path.stem)


# --------------------------------------------------------------------------------------------------------------- page
def record(tmp_path: Path, name: str, date: str, valid: bool = True, value: float = 2.0) -> None:
    stamp = date.replace("-", "").replace(":", "")
    (tmp_path / ("%s-%s.json" % (name, stamp))).write_text(json.dumps({
        "benchmark": name, "date": date, "valid": valid, "invalid_reason": None if valid else "busy",
        "machine": {"cpu": "Test CPU", "flags": ["avx2"], "cores": 2, "memory_gb": 8, "load_before": [0.1, 0, 0],
                    "load_after": [0.3, 0, 0]},
        "threads": "1", "ours": "captioning", "baseline": "the original", "git": {"commit": "abcdef0123456",
                                                                                 "dirty": False},
        "reproduce": "python -m benchmarks.peer --parts train", "notes": [],
        "figures": [{"figure": "training speed", "unit": "samples/s", "higher_is_better": True,
                     "ours": [value, value], "baseline": [1.0, 1.0], "ours_median": value, "baseline_median": 1.0,
                     "ratio": value, "note": ""}]}))


def test_the_page_shows_the_latest_valid_record_of_each_benchmark(tmp_path):
    record(tmp_path, "peer-train-t1", "2026-01-01T10:00:00+00:00", value=2.0)
    record(tmp_path, "peer-train-t1", "2026-01-02T10:00:00+00:00", value=3.0)
    record(tmp_path, "peer-train-t1", "2026-01-03T10:00:00+00:00", valid=False, value=9.0)
    record(tmp_path, "something-new", "2026-01-01T10:00:00+00:00", value=4.0)
    text = page.render(tmp_path)
    train = text.split("### Training against the original, 1 thread")[1].split("###")[0]
    assert "| training speed | 3.00 samples/s (3.00 / 3.00) | 1.00 samples/s (1.00 / 1.00) | 3.00x | " \
        "`peer-train-t1-20260102T100000+0000.json` |" in train
    assert "peer-train-t1-20260102T100000+0000.json" in train and "9.00" not in text
    assert "Test CPU (avx2), 2 cores" in train and "abcdef0123" in train
    assert "reproduce: `python -m benchmarks.peer --parts train`" in train
    two = text.split("### Training on 2 cores against the original with 2 threads")[1].split("###")[0]
    assert "No recorded result yet" in two and "|" not in two
    assert "### something-new" in text and "4.00x" in text
    assert "{results}" not in text and text.startswith("# Benchmarks")


def test_a_broken_record_is_an_error_naming_its_file(tmp_path):
    (tmp_path / "peer-train-t1-x.json").write_text("{not json")
    with pytest.raises(harness.BenchmarkError, match="peer-train-t1-x.json"):
        page.render(tmp_path)


def test_figures_are_shown_with_three_significant_digits():
    assert [page.number(v) for v in (123.456, 45.67, 1.2345, None)] == ["123", "45.7", "1.23", "-"]


# ---------------------------------------------------------------------------------------------------------- the peer
def test_speed_lines_of_both_tools_are_parsed():
    assert peer.PEER_TRAIN_SPEED.findall("Epoch[0] Batch [50]\tSpeed: 10.54 samples/sec 13493.18 tokens/sec") == \
        ["10.54"]
    assert peer.OURS_TRAIN_SPEED.findall("Epoch 1, update 100: 12.2 samples/s (captions), 11.5 images/s") == ["12.2"]
    line = "Processed 113 lines. Total time: 3.1000, sec/sent: 0.0274, sent/sec: 36.4516"
    assert peer.PEER_CAPTION_SPEED.search(line).group(1) == "36.4516"
    assert peer.PEER_CAPTION_TIME.search(line).group(2) == "3.1000"
    line = "Processed 113 lines (0 failed) in 2.50s: 45.2 captions/s"
    assert peer.OURS_CAPTION_SPEED.search(line).group(1) == "45.2"


def test_peer_commands_build_the_same_model_for_both_tools(tmp_path):
    args = peer.parse_args(["--peer", str(tmp_path / "peer"), "--parts", "train", "--threads", "1",
                            "--train-updates", "100"])
    assert args.parts == ["train"] and args.threads == ["1"] and args.rounds == 2 and args.train_updates == 100
    paths = peer.flickr_paths(tmp_path / "shared", tmp_path / "bench")
    tools = peer.Tools(tmp_path / "peer", tmp_path / "ours", "1")
    original = tools.job("baseline", "train", peer.train_rest("baseline", paths, tmp_path / "o", 100),
                         tmp_path / "o.log")
    ours = tools.job("ours", "train", peer.train_rest("ours", paths, tmp_path / "u", 100), tmp_path / "u.log")
    assert original.argv[:3] == [str(tmp_path / "peer" / "venv" / "bin" / "python"), str(tmp_path / "peer" / "sk.py"),
                                 "train"]
    assert ours.argv[:3] == [sys.executable, "-m", "captioning.train"]
    assert original.env["OMP_NUM_THREADS"] == ours.env["OMP_NUM_THREADS"] == "1"
    assert original.env["PYTHONPATH"].endswith("sockeye-1.18.115") and ours.env["PYTHONPATH"] == str(tmp_path / "ours")
    for job in (original, ours):
        flags = job.argv
        assert flags[flags.index("--max-updates") + 1] == "100" and flags[flags.index("--rnn-num-hidden") + 1] == "512"
        assert "--load-all-features-to-memory" in flags and "--weight-normalization" in flags
    assert "--validation-source-root" in original.argv and "--use-cpu" in ours.argv
    extract = tools.argv("baseline", "extract_features", ["--x"])
    assert extract[1:] == ["-m", "sockeye.image_captioning.extract_features", "--x"]


def test_peer_caption_commands_use_each_tools_model(tmp_path):
    args = peer.parse_args(["--parts", "caption", "--ours-model", "/m/ours", "--peer-model", "/m/peer",
                            "--peer-checkpoint", "4", "--batch-sizes", "1"])
    ours = peer.caption_rest("ours", args, tmp_path / "list", tmp_path, tmp_path / "out", 1)
    original = peer.caption_rest("baseline", args, tmp_path / "list", tmp_path, tmp_path / "out", 1)
    assert ours[ours.index("--models") + 1] == "/m/ours" and "--checkpoints" not in ours
    assert original[original.index("--models") + 1] == "/m/peer" and original[-2:] == ["--checkpoints", "4"]
    assert ours[ours.index("--max-output-length") + 1] == "30" and ours[ours.index("--beam-size") + 1] == "3"


def test_peer_benchmark_skips_without_the_original(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peer", "--peer", str(tmp_path / "absent"),
                           "--results-dir", str(tmp_path / "results")], capture_output=True, text=True, timeout=60,
                          cwd=str(REPO))
    assert proc.returncode == 0
    assert "skipped: no original Sockeye at %s" % (tmp_path / "absent") in proc.stdout
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------------------ other benchmarks
def test_caption_benchmark_commands_of_a_baseline_option_set(tmp_path):
    args = caption.parse_args(["--model", "/m", "--input", str(tmp_path / "dev.features"), "--ours-args",
                               "--search-processes 2", "--batch-sizes", "64"])
    assert args.baseline_tree == args.ours and args.source_root == str(tmp_path)
    ours = caption.command(args, "ours", 64, tmp_path / "out")
    baseline = caption.command(args, "baseline", 64, tmp_path / "out")
    assert ours[:3] == [sys.executable, "-m", "captioning.captioner"]
    assert ours[-2:] == ["--search-processes", "2"] and baseline == ours[:-2]
    assert "with --search-processes 2" in caption.describe(args, "ours")
    exported = caption.parse_args(["--model", "/m", "--ours-model", "/m-onnx", "--input", "/d/dev.features"])
    ours = caption.command(exported, "ours", 1, tmp_path / "out")
    baseline = caption.command(exported, "baseline", 1, tmp_path / "out")
    assert ours[ours.index("--models") + 1] == "/m-onnx" and baseline[baseline.index("--models") + 1] == "/m"


def test_caption_benchmark_compares_and_scores_both_sides_captions(tmp_path):
    refs = tmp_path / "refs"
    refs.write_text("a dog runs on the grass\na man rides a red bike\n")
    session = harness.Session(benchmark="caption", reproduce="x", description="d", baseline="b", ours="o",
                              threads="1", ours_tree=harness.REPO, rounds=1, settle_s=0.0,
                              results_dir=tmp_path)
    outputs = {"baseline": ["a dog runs on grass", "a cat"], "ours": ["a dog runs on grass", "a man rides a bike"]}
    caption.compare_captions(session, 1, outputs, [str(refs)])
    assert session.notes == ["batch 1: 1 of 2 captions identical on both sides"]
    (figure,) = session.figures
    assert figure["ours_median"] > figure["baseline_median"] > 0


def test_caption_memory_inputs_and_command(tmp_path):
    args = caption_memory.parse_args(["--lines", "10", "--distinct", "3"])
    assert args.baseline_tree is None and args.lines == [10]
    inputs = caption_memory.make_inputs(tmp_path, 10, 3)
    names = inputs.read_text().splitlines()
    assert len(names) == 10 and len(set(names)) == 3
    argv = caption_memory.command(args, tmp_path / "model", inputs, tmp_path / "feats")
    assert argv[argv.index("--batch-size") + 1] == "64" and argv[-1] == str(inputs) + ".captions"


def test_train_benchmark_arguments_and_recipes():
    args = train_bench.parse_args(["--short", "--recipe", "no-smoothing", "--layer", "head_relu6"])
    assert (args.speed_updates, args.quality_updates) == (60, 800)
    assert train_bench.quality_name(args) == "train-quality-no-smoothing-head_relu6"
    assert train_bench.model_folder(args) == "quality-head_relu6-no-smoothing"
    assert train_bench.model_folder(train_bench.parse_args([])) == "quality"
    flags = train_bench.quality_extra("no-smoothing", 800)
    assert flags[flags.index("--label-smoothing") + 1] == "0" and flags[flags.index("--max-updates") + 1] == "800"
    assert train_bench.speed_extra("mmap", 60)[:2] == ["--feature-store", "mmap"]
    assert train_bench.speeds("a 5.0 samples/s (captions) b 7.0 samples/s (captions)") == [7.0]


def test_quality_benchmark_self_critical_flags(tmp_path):
    args = quality.parse_args(["flickr", "--sc-updates", "10", "--samples", "3", "--xe-checkpoint", "2"])
    flags = quality.self_critical_flags(tmp_path, args)
    assert flags[:2] == ["--params", str(tmp_path / "params.00002")]
    assert flags[flags.index("--self-critical-samples") + 1] == "3" and "--self-critical-sample-dropout" not in flags
    assert quality.sc_name(args) == "sc-mean-k3-b32-lr2e-05-from2"
    # the recipe of docs/training.md; top-K left to train's default
    recipe = {flag: flags[flags.index(flag) + 1] for flag in ("--initial-learning-rate", "--batch-size",
                                                              "--max-num-checkpoint-not-improved",
                                                              "--optimized-metric", "--decode-and-evaluate")}
    assert recipe == {"--initial-learning-rate": "2e-05", "--batch-size": "32", "--max-num-checkpoint-not-improved": "4",
                      "--optimized-metric": "cider", "--decode-and-evaluate": "-1"}
    assert "--self-critical-top-k" not in flags
    defaults = quality.parse_args(["flickr"])
    assert (defaults.checkpoint_interval, defaults.sc_updates) == (25, 200)
    scenes = quality.parse_args(["scenes", "--scenes-seed", "202", "--scenes-model", "tutorial", "--sc-references",
                                 "one"])
    assert quality.scenes_name(scenes) == "scenes-tutorial-seed202-1000x5" and scenes.xe_references == "all"
    with pytest.raises(SystemExit):
        quality.parse_args(["speed"])                     # the one-off speed stage is gone


def test_flickr_lists_pair_every_view_with_the_five_captions(tmp_path):
    data = tmp_path / "shared" / "data" / "flickr8k-sample"
    data.mkdir(parents=True)
    for k in range(5):
        (data / ("train.captions.%d" % k)).write_text("cap%d of a\ncap%d of b\n" % (k, k))
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "train.features").write_text("a.npy\nb.npy\n")
    (feats / "dev.features").write_text("d.npy\n")
    (feats / "train.features.centre-flip").write_text("a.centre-flip.npy\nb.centre-flip.npy\n")
    paths = train_bench.make_lists(tmp_path / "shared", feats, tmp_path, "flip")
    sources = Path(paths["source"]).read_text().splitlines()
    targets = Path(paths["target"]).read_text().splitlines()
    assert len(sources) == len(targets) == 2 * 2 * 5
    pairs = set(zip(sources, targets))
    assert ("a.centre-flip.npy", "cap3 of a") in pairs and ("b.npy", "cap0 of b") in pairs
    assert all(s.split(".")[0] == t.split()[-1] for s, t in pairs)     # every view of a photo has its captions
    plain = train_bench.make_lists(tmp_path / "shared", feats, tmp_path)
    assert Path(plain["source"]).read_text().splitlines() == sources[:10]


def test_profile_table_is_parsed():
    text = ("Profile Statistics:\n\tNote the difference in units for different entries.\n"
            "operator\n=================\n"
            "Name                          Total Count        Time (ms)    Min Time (ms)    Max Time (ms)    Avg Time (ms)\n"
            "----                          -----------        ---------    -------------    -------------    -------------\n"
            "FullyConnected                        120          30.5000           0.1000           1.0000           0.2542\n"
            "_backward_FullyConnected              120          60.2500           0.2000           2.0000           0.5021\n"
            "\nMXNET_C_API\n=================\n"
            "MXNDArrayWaitAll                        1          10.0000          10.0000          10.0000          10.0000\n")
    assert train_profile.parse_profile(text) == [("FullyConnected", 120, 30.5),
                                                 ("_backward_FullyConnected", 120, 60.25)]
    assert train_profile.build_parser().parse_args(["--memory-only"]).memory_only


def _fatbin(entries) -> bytes:
    """A .nv_fatbin section: one container per (kind, arch) list, 8 zero bytes of padding between containers."""
    section = b""
    for container in entries:
        body = b""
        for kind, arch in container:
            header = struct.pack("<HHIQ", kind, 0x101, 64, 8).ljust(28, b"\0") + struct.pack("<I", arch)
            body += header.ljust(64, b"\0") + b"\xab" * 8
        section += struct.pack("<IHHQ", cuda_compat.FATBIN_MAGIC, 1, 16, len(body)) + body + b"\0" * 8
    return section


def test_fatbin_entries_are_read_by_kind_and_compute_capability():
    section = _fatbin([[(2, 50), (2, 86)], [(2, 86), (1, 86), (2, 70)]])
    assert cuda_compat.fatbin_kernels(section) == {"SASS": [50, 70, 86], "PTX": [86]}
    assert cuda_compat.fatbin_kernels(b"") == {"SASS": [], "PTX": []}


def test_a_card_runs_sass_of_its_major_version_and_older_ptx():
    mxnet_cu117 = {"SASS": [50, 60, 70, 80, 86], "PTX": []}         # what both CUDA wheels of MXNet 1.9.1 carry
    assert cuda_compat.runs_on(mxnet_cu117, (9, 0)) is None          # Hopper: no kernel image
    assert cuda_compat.runs_on(mxnet_cu117, (8, 9)) == "SASS sm_86"
    assert cuda_compat.runs_on(mxnet_cu117, (8, 0)) == "SASS sm_80"
    assert cuda_compat.runs_on(mxnet_cu117, (7, 5)) == "SASS sm_70"
    assert cuda_compat.runs_on({"SASS": [75], "PTX": []}, (7, 0)) is None
    assert cuda_compat.runs_on({"SASS": [86], "PTX": [86]}, (9, 0)).startswith("PTX compute_86")
    assert cuda_compat.runs_on({"SASS": [], "PTX": [90]}, (8, 6)) is None


def test_libraries_are_summarised_from_the_file_and_from_a_wheel(tmp_path):
    folder = Path(mx.__file__).parent
    cpu = cuda_compat.summarise(str(folder / "libmxnet.so"))          # MXNet's CPU build: no GPU code
    assert cpu.kernels == {"SASS": [], "PTX": []}
    assert {"libopenblas.so.0", "libc.so.6"} <= set(cpu.needed)
    assert "libopenblas.so.0" in cpu.bundled and "libc.so.6" not in cpu.bundled
    wheel = tmp_path / "mxnet_x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(folder / "libgfortran.so.3", "mxnet/libmxnet.so")     # an ELF that needs libquadmath.so.0
        z.writestr("mxnet/libquadmath.so.0", b"")
    summary = cuda_compat.summarise(str(wheel))
    assert summary.library == wheel.name + ":mxnet/libmxnet.so"
    assert summary.needed[0] == "libquadmath.so.0" and "libc.so.6" in summary.needed
    assert summary.bundled == ["libquadmath.so.0"]


def test_verdict_of_a_summary_for_a_given_card(tmp_path):
    summary = tmp_path / "s.json"

    def verdict(sass, needed, capability):
        summary.write_text(json.dumps({"library": "x", "kernels": {"SASS": sass, "PTX": []}, "needed": needed,
                                       "bundled": []}))
        return subprocess.run([sys.executable, "-m", "benchmarks.cuda_compat", "--summary", str(summary),
                               "--compute-capability", capability], capture_output=True, text=True, cwd=str(REPO))
    ok = verdict([80, 90], ["libc.so.6"], "9.0")
    assert ok.returncode == 0 and "runs the kernels as SASS sm_90" in ok.stdout
    assert ok.stdout.rstrip().endswith("verdict: this build can run here")
    too_new = verdict([50, 86], ["libc.so.6"], "9.0")
    assert too_new.returncode == 1 and "NO kernel image" in too_new.stdout
    missing = verdict([90], ["libc.so.6", "libcudart.so.11.0-not-here"], "9.0")
    assert missing.returncode == 1 and "missing libraries: libcudart.so.11.0-not-here" in missing.stdout


FAKE_TRAINER = r'''
import sys
from pathlib import Path
args = sys.argv[1:]
if args and args[0] == "train":        # the original's launcher: sk.py train ARGS
    args = args[1:]
out = Path(args[args.index("--output") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "metrics").write_text("1\tperplexity-train=90.0\tperplexity-val=%s\n" % SPEED_PPL[1])
print(LINE % SPEED_PPL[0])
'''


def test_peer_train_part_runs_both_tools_and_records_their_figures(tmp_path):
    """The whole train part with a fake original (sk.py) and a fake ours (a tree with its own captioning.train)."""
    original, ours = tmp_path / "peer", tmp_path / "ours"
    (original / "venv" / "bin").mkdir(parents=True)
    (original / "venv" / "bin" / "python").symlink_to(sys.executable)
    (original / "sk.py").write_text("SPEED_PPL = (10.0, 120.0)\nLINE = 'Epoch[0] Batch [50]\\tSpeed: %s samples/sec'\n"
                                     + FAKE_TRAINER)
    (ours / "captioning").mkdir(parents=True)
    (ours / "captioning" / "__init__.py").write_text("")
    (ours / "captioning" / "train.py").write_text("SPEED_PPL = (25.0, 110.0)\nLINE = 'update 50: %s samples/s "
                                                  "(captions), 3.0 images/s'\n" + FAKE_TRAINER)
    shared, bench = tmp_path / "shared", tmp_path / "bench"
    (shared / "data" / "flickr8k-sample").mkdir(parents=True)
    (shared / "models" / "efficientnet-lite0").mkdir(parents=True)
    (shared / "models" / "efficientnet-lite0" / "efficientnet-lite0-symbol.json").write_text("{}")
    (bench / "features-head_conv").mkdir(parents=True)
    (bench / "lists").mkdir()
    for path in (bench / "features-head_conv" / "dev.features", bench / "lists" / "train.features",
                 bench / "lists" / "train.captions"):
        path.write_text("x\n")
    results = tmp_path / "results"
    peer.main(["--peer", str(original), "--ours", str(ours), "--shared", str(shared), "--bench", str(bench),
               "--work-dir", str(tmp_path / "work"), "--parts", "train", "--threads", "1", "--train-updates", "7",
               "--settle", "0", "--results-dir", str(results), "--ours-train-args", "--processes 2"])
    [path] = list(results.glob("peer-train-t1-*.json"))
    record = json.loads(path.read_text())
    figures = {f["figure"]: f for f in record["figures"]}
    speed = figures["training speed (median of logged, 7 updates)"]
    assert speed["baseline"] == [10.0, 10.0] and speed["ours"] == [25.0, 25.0] and speed["ratio"] == 2.5
    assert figures["validation perplexity after 7 updates"]["ratio"] == pytest.approx(120.0 / 110.0)
    assert record["order"] == ["baseline", "ours", "ours", "baseline"] and record["threads"] == "1"
    assert record["baseline"] == "original Sockeye 1.18.115"
    assert "sk.py train" in record["commands"]["baseline"][0] and "--max-updates 7" in record["commands"]["ours"][0]
    assert record["commands"]["ours"][0].endswith("--processes 2") and "--processes" not in \
        record["commands"]["baseline"][0]
    assert record["environment"]["baseline"]["OMP_NUM_THREADS"] == "1"
    assert record["reproduce"].startswith("python -m benchmarks.peer --peer ")
    assert "training peak RSS (all processes)" in figures and len(record["runs"]) == 4

    models = ["--peer", str(original), "--ours", str(ours), "--shared", str(shared), "--bench", str(bench),
              "--work-dir", str(tmp_path / "work"), "--parts", "models", "--threads", "1", "--model-updates", "9",
              "--settle", "0", "--results-dir", str(results), "--peer-model", str(tmp_path / "pm"),
              "--ours-model", str(tmp_path / "om")]
    peer.main(models)
    [path] = list(results.glob("peer-models-t1-*.json"))
    record = json.loads(path.read_text())
    assert record["order"] == ["baseline", "ours"]                  # one run each
    assert "--checkpoint-interval 200" in record["commands"]["ours"][0]
    assert (tmp_path / "pm" / "metrics").exists() and (tmp_path / "om" / "metrics").exists()
    with pytest.raises(harness.BenchmarkError, match="exists"):
        peer.main(models)                                            # never trains over a model folder

