"""The benchmark scripts' own logic: FLOP counting, log parsing, skipping where the original is absent."""
import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gemm  # noqa: E402
import peer  # noqa: E402
import train as train_bench  # noqa: E402
import train_profile  # noqa: E402


def test_symbol_flops_counts_each_matrix_product():
    data = mx.sym.var("data")
    hidden = mx.sym.FullyConnected(data, num_hidden=7, flatten=False, name="fc")             # (2, 3, 5) -> 7
    scores = mx.sym.batch_dot(hidden, hidden, transpose_b=True, name="bd")                    # (2, 3, 3)
    out = mx.sym.dot(mx.sym.reshape(hidden, shape=(-1, 7)), mx.sym.var("w"), name="d")       # (6, 7) x (7, 4)
    flops = gemm.symbol_flops(mx.sym.Group([scores, out]), {"data": (2, 3, 5), "w": (7, 4)})
    assert flops["FullyConnected"] == 2 * 6 * 5 * 7
    assert flops["batch_dot"] == 2 * 2 * 3 * 7 * 3
    assert flops["dot"] == 2 * 6 * 7 * 4


def test_bucket_lengths_round_up_to_the_bucket_width(tmp_path):
    captions = tmp_path / "c"
    captions.write_text("a b c d\n" + "w " * 5 + "\n" + "x " * 70 + "\n")
    assert gemm.bucket_lengths([captions], bucket_width=5, max_seq_len=60) == {5: 1, 10: 1}


def test_speed_lines_of_both_tools_are_parsed():
    assert peer.PEER_TRAIN_SPEED.findall("Epoch[0] Batch [50]\tSpeed: 10.54 samples/sec 13493.18 tokens/sec") == \
        ["10.54"]
    assert peer.OURS_TRAIN_SPEED.findall("Epoch 1, update 100: 12.2 samples/s (captions), 11.5 images/s") == ["12.2"]
    line = "Processed 113 lines. Total time: 3.1000, sec/sent: 0.0274, sent/sec: 36.4516"
    assert peer.PEER_CAPTION_SPEED.search(line).group(1) == "36.4516"
    line = "Processed 113 lines (0 failed) in 2.50s: 45.2 captions/s"
    assert peer.OURS_CAPTION_SPEED.search(line).group(1) == "45.2"


def test_words_per_caption_counts_captions_at_the_limit(tmp_path):
    out = tmp_path / "captions"
    out.write_text("a dog runs\n" + " ".join(["w"] * 29) + "\n")
    words, at_limit = peer.words_per_caption(out, 30)
    assert words == pytest.approx(16.0) and at_limit == 1


def test_peer_benchmark_skips_without_the_original(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "peer.py"), "--peer", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "skipped: no original Sockeye at %s" % (tmp_path / "absent") in proc.stdout


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


def test_simultaneous_runs_are_each_timed_to_their_own_end(tmp_path):
    env = dict(os.environ)
    runs = [peer.start([sys.executable, "-c", "import time; time.sleep(%s); print('done')" % t], env, str(tmp_path),
                       tmp_path / ("log%d" % k)) for k, t in enumerate((1.5, 0.1))]
    slow, fast = peer.finish_all(runs)
    assert slow.wall > fast.wall + 1.0
    assert "done" in slow.output and "done" in fast.output


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
