"""The benchmark scripts' own logic: FLOP counting, log parsing, skipping where the original is absent."""
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import mxnet as mx
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cuda_compat  # noqa: E402
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
        return subprocess.run([sys.executable, str(BENCHMARKS / "cuda_compat.py"), "--summary", str(summary),
                               "--compute-capability", capability], capture_output=True, text=True)
    ok = verdict([80, 90], ["libc.so.6"], "9.0")
    assert ok.returncode == 0 and "runs the kernels as SASS sm_90" in ok.stdout
    assert ok.stdout.rstrip().endswith("verdict: this build can run here")
    too_new = verdict([50, 86], ["libc.so.6"], "9.0")
    assert too_new.returncode == 1 and "NO kernel image" in too_new.stdout
    missing = verdict([90], ["libc.so.6", "libcudart.so.11.0-not-here"], "9.0")
    assert missing.returncode == 1 and "missing libraries: libcudart.so.11.0-not-here" in missing.stdout
