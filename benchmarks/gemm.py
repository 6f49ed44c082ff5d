"""Compute ceiling of this CPU for the tutorial model: fp32 (and bfloat16) FullyConnected GFLOP/s with oneDNN, and
the model's matrix-product FLOPs per training caption and per captioning step, counted from its own graphs.

    .venv/bin/python benchmarks/gemm.py [--threads 1 2] [--train-samples-per-s 60]

1. GEMM: ``mx.nd.FullyConnected`` on the shapes the tutorial model runs (encoder projection, the LSTM step with
   input feeding, the attentional hidden layer, the output layer over the vocabulary) and a 1024^3 square one;
   median of ``--repeats`` timings of ``--iters`` calls each, for every ``--threads`` value (each in a fresh process:
   MXNet reads OMP_NUM_THREADS when it is imported). The ceiling is the best rate on a model shape.
2. bfloat16: whether the CPU has ``avx512_bf16`` / ``amx_bf16`` (``/proc/cpuinfo``), and what MXNet 1.9.1 does with a
   bf16 FullyConnected (inputs cast with ``mx.nd.amp_cast``): its rate and largest error against fp32, or the error
   it raises.
3. FLOPs: the tutorial model (built from ``captioning.train``'s own flags, vocabulary of ``--vocab-size`` words) is
   traced for each bucket length of the FLICKR-A training captions (``--captions``); the matrix products of the
   traced symbol (FullyConnected, dot, batch_dot, RNN) are counted with their inferred shapes. Training costs ~3x
   the forward products (forward, and two products per product in backward); the figure per caption is weighted by
   the captions' bucket lengths. ``--train-samples-per-s`` (optional, measured elsewhere, e.g. by peer.py) is then
   expressed as a fraction of the ceiling.
Prints the CPU model, one line per figure.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CAPTIONS = [SHARED / "data" / "flickr8k-sample" / ("train.captions.%d" % k) for k in range(5)]

# (rows M, inputs K, outputs N) of the tutorial model's products, batch 64, bucket length T=15, vocabulary 2,823
SHAPES = [("encoder projection 64*49 x 1280 -> 512", 64 * 49, 1280, 512),
          ("LSTM step (embedding + fed hidden + recurrent) 64 x 1536 -> 2048", 64, 1536, 2048),
          ("embedding share of the gates, all steps 64*15 x 512 -> 2048", 64 * 15, 512, 2048),
          ("attentional hidden 64 x 1024 -> 512", 64, 1024, 512),
          ("output layer 64*15 x 512 -> 2823", 64 * 15, 512, 2823),
          ("square 1024 x 1024 -> 1024", 1024, 1024, 1024)]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags() -> List[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return line.split(":", 1)[1].split()
    return []


def time_fc(mx, m: int, k: int, n: int, dtype: str, iters: int, repeats: int) -> Tuple[float, float]:
    """(median GFLOP/s, max abs error against fp32 relative to max |fp32|) of FullyConnected (M,K)x(K,N)."""
    data = mx.nd.random.uniform(-1, 1, (m, k))
    weight = mx.nd.random.uniform(-1, 1, (n, k)) * (1.0 / k ** 0.5)
    bias = mx.nd.zeros((n,))
    reference = mx.nd.FullyConnected(data, weight, bias, num_hidden=n).asnumpy()
    if dtype == "bfloat16":
        from mxnet.contrib.amp.amp import bfloat16   # MXNet's bf16 dtype (numpy has none)
        data, weight, bias = (mx.nd.amp_cast(x, dtype=bfloat16) for x in (data, weight, bias))
    out = mx.nd.FullyConnected(data, weight, bias, num_hidden=n)
    error = float(abs(mx.nd.amp_cast(out, dtype="float32").asnumpy() - reference).max() / abs(reference).max())
    rates = []
    for _ in range(repeats):
        mx.nd.waitall()
        start = time.perf_counter()
        for _ in range(iters):
            out = mx.nd.FullyConnected(data, weight, bias, num_hidden=n)
        out.wait_to_read()
        rates.append(2.0 * m * k * n * iters / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates), error


def child(args: argparse.Namespace) -> None:
    """Runs in a process with OMP_NUM_THREADS set: prints one JSON line of results."""
    import mxnet as mx
    results: Dict[str, Dict[str, object]] = {}
    for name, m, k, n in SHAPES:
        iters = max(3, int(args.iters * 2e8 / (2.0 * m * k * n)))   # ~ args.iters calls of 0.2 GFLOP
        row: Dict[str, object] = {}
        for dtype in ("float32", "bfloat16"):
            try:
                rate, error = time_fc(mx, m, k, n, dtype, iters, args.repeats)
                row[dtype] = {"gflops": rate, "error": error}
            except Exception as e:  # noqa: BLE001 - reported, not raised: what MXNet does is the figure
                row[dtype] = {"failed": str(e).strip().splitlines()[0][:200]}
        results[name] = row
    print(json.dumps(results))


def bucket_lengths(paths: Sequence[Path], bucket_width: int = 5, max_seq_len: int = 60) -> Dict[int, int]:
    """{bucket length: captions} of the training captions (tokens + </s>, rounded up to the bucket width)."""
    counts: Dict[int, int] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            need = len(line.split()) + 1
            if need > max_seq_len:
                continue
            bucket = min(max_seq_len, -(-need // bucket_width) * bucket_width)
            counts[bucket] = counts.get(bucket, 0) + 1
    return counts


def symbol_flops(symbol, shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, float]:
    """Forward FLOPs of the matrix products of ``symbol`` by operator type (2 per multiply-add)."""
    import numpy as np
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(**shapes)
    shape_of = dict(zip(internals.list_outputs(), out_shapes))
    arg_shapes, _, aux_shapes = internals.infer_shape_partial(**shapes)
    shape_of.update(zip(internals.list_arguments(), arg_shapes))
    shape_of.update(zip(internals.list_auxiliary_states(), aux_shapes))
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]

    def name_of(entry: List[int]) -> str:
        node = nodes[entry[0]]
        if node["op"] == "null":
            return node["name"]
        single = "%s_output" % node["name"]
        return single if entry[1] == 0 and single in shape_of else "%s_output%d" % (node["name"], entry[1])

    totals: Dict[str, float] = {}
    for node in nodes:
        op, attrs = node["op"], node.get("attrs", {})
        if op not in ("FullyConnected", "dot", "batch_dot", "RNN"):
            continue
        ins = [shape_of.get(name_of(e)) for e in node["inputs"]]
        if any(s is None or 0 in s for s in ins[:2]):
            raise RuntimeError("no shape for an input of %s" % node["name"])
        if op == "FullyConnected":
            data, weight = ins[0], ins[1]
            rows = int(np.prod(data[:-1])) if attrs.get("flatten", "True") in ("False", "false", "0") \
                else int(data[0])
            flops = 2.0 * rows * weight[0] * weight[1]
        elif op == "dot":
            a, b = ins[0], ins[1]
            ta = attrs.get("transpose_a", "False") in ("True", "true", "1")
            tb = attrs.get("transpose_b", "False") in ("True", "true", "1")
            m = a[-1] if ta else int(np.prod(a[:-1]))
            k = int(np.prod(a[:-1])) if ta else a[-1]
            n = int(np.prod(b[:-1])) if tb else b[-1]
            flops = 2.0 * m * k * n
        elif op == "batch_dot":
            a, b = ins[0], ins[1]
            ta = attrs.get("transpose_a", "False") in ("True", "true", "1")
            tb = attrs.get("transpose_b", "False") in ("True", "true", "1")
            m, k = (a[2], a[1]) if ta else (a[1], a[2])
            n = b[1] if tb else b[2]
            flops = 2.0 * a[0] * m * k * n
        else:  # fused RNN (used only without input feeding): 4 gates, input and recurrent products per step
            data = ins[0]
            hidden = int(attrs["state_size"])
            flops = 2.0 * data[0] * data[1] * 4 * hidden * (data[2] + hidden)
        totals[op] = totals.get(op, 0.0) + flops
    return totals


def model_flops(vocab_size: int, buckets: Dict[int, int], batch: int = 64, beam: int = 3) -> Dict[str, float]:
    """Matrix-product FLOPs of the tutorial model: per training caption (forward x3, weighted over ``buckets``), and
    per captioning step and encode at beam ``beam``."""
    sys.path.insert(0, str(REPO))
    import mxnet as mx
    from captioning import train as train_cli
    from captioning.model import CaptionModel
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train import TUTORIAL
    args = train_cli.build_parser().parse_args(["--source-root", "x", "--source", "x", "--target", "y", "--validation-source", "x",
                                                "--validation-target", "y", "--output", "z"] + TUTORIAL)
    config = train_cli.create_model_config(args, (1280, 7, 7), vocab_size, 30)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier())
    model.hybridize(static_alloc=False)
    per_bucket = {}
    for length in sorted(buckets):
        features = mx.nd.zeros((batch, 1280, 7, 7))
        words = mx.nd.zeros((batch, length))
        model(features, words)
        graph = model._graphs.get(("sequence", length))
        inputs, symbol = graph._cached_graph
        shapes = {inputs[0].name: (batch, 1280, 7, 7), inputs[1].name: (batch, length)}
        per_bucket[length] = sum(symbol_flops(symbol, shapes).values())
    total_captions = sum(buckets.values())
    forward_per_caption = sum(per_bucket[b] / batch * n for b, n in buckets.items()) / total_captions
    # inference at beam K: encode (B rows), then steps of B*K rows
    features = mx.nd.zeros((1, 1280, 7, 7))
    states = model.encode(features)
    inputs, symbol = model._graphs.get(("encode", 0))._cached_graph
    encode = sum(symbol_flops(symbol, {inputs[0].name: (1, 1280, 7, 7)}).values())
    prev = mx.nd.zeros((beam,))
    static = model.num_static_states
    states = states[:static] + [mx.nd.repeat(s, repeats=beam, axis=0) for s in states[static:]]
    model.decode_step(prev, states, beam_size=beam)
    step_graph = model._graphs.get(("step", beam))
    inputs, symbol = step_graph._cached_graph
    shapes = {}
    for var, value in zip(inputs, [prev, model._step_weight] + list(states)):
        shapes[var.name] = tuple(value.shape)
    step = sum(symbol_flops(symbol, shapes).values())
    return {"train_forward_per_caption": forward_per_caption, "train_per_caption": 3.0 * forward_per_caption,
            "encode": encode, "step_beam": step, "per_bucket_forward": per_bucket}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", nargs="+", default=["1", "2"])
    parser.add_argument("--iters", type=int, default=20, help="calls per timing (scaled to ~0.2 GFLOP each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab-size", type=int, default=2823, help="FLICKR-A training vocabulary")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--train-samples-per-s", type=float, nargs="*", default=[],
                        help="training rates to express as a fraction of the ceiling (threads in --threads order)")
    parser.add_argument("--words-per-caption", type=float, default=12.0,
                        help="steps per caption for the captioning FLOPs (words + </s>)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    flags = cpu_flags()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    print("CPU: %s; %d cores; flags of note: %s; load average %.2f"
          % (cpu_model(), os.cpu_count() or 0, ", ".join(bf16) or "no avx512f, no avx512_bf16, no amx_bf16",
             os.getloadavg()[0]))
    ceilings = {}
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        out = subprocess.run([sys.executable, __file__, "--child", "--iters", str(args.iters), "--repeats",
                              str(args.repeats)], env=env, check=True, capture_output=True, text=True).stdout
        results = json.loads(out.strip().splitlines()[-1])
        best = 0.0
        for name, row in results.items():
            parts = []
            for dtype in ("float32", "bfloat16"):
                r = row[dtype]
                parts.append("%s %s" % (dtype, "%.1f GFLOP/s (max rel. error %.1e)" % (r["gflops"], r["error"])
                                        if "gflops" in r else "FAILED: %s" % r["failed"]))
            f32, b16 = row["float32"], row["bfloat16"]
            if "gflops" in f32 and "gflops" in b16:
                parts.append("bf16/fp32 %.2fx" % (b16["gflops"] / f32["gflops"]))
            if "gflops" in f32 and not name.startswith("square"):
                best = max(best, f32["gflops"])
            print("gemm %d thread(s): %-66s %s" % (int(threads), name, "; ".join(parts)))
        ceilings[threads] = best
        print("fp32 ceiling, %s thread(s): %.1f GFLOP/s (best model shape)" % (threads, best))
    if all(p.exists() for p in CAPTIONS):
        buckets = bucket_lengths(CAPTIONS)
        flops = model_flops(args.vocab_size, buckets, beam=args.beam_size)
        print("tutorial model, batch 64: forward matrix products by bucket length: %s"
              % ", ".join("T=%d %.2f GFLOP" % (b, f / 1e9) for b, f in sorted(flops["per_bucket_forward"].items())))
        print("training: %.3f GFLOP per caption (3 x forward %.3f; captions weighted by bucket length %s)"
              % (flops["train_per_caption"] / 1e9, flops["train_forward_per_caption"] / 1e9,
                 ", ".join("%d:%d" % kv for kv in sorted(buckets.items()))))
        per_caption = flops["encode"] + args.words_per_caption * flops["step_beam"]
        print("captioning, beam %d: encode %.1f MFLOP + %.1f MFLOP per step = %.3f GFLOP per caption of %.0f steps"
              % (args.beam_size, flops["encode"] / 1e6, flops["step_beam"] / 1e6, per_caption / 1e9,
                 args.words_per_caption))
        for threads in args.threads:
            limit = ceilings[threads] * 1e9 / flops["train_per_caption"]
            print("ceiling, %s thread(s): %.0f training samples/s; %.0f captions/s at beam %d"
                  % (threads, limit, ceilings[threads] * 1e9 / per_caption, args.beam_size))
        for threads, rate in zip(args.threads, args.train_samples_per_s):
            print("measured %.1f training samples/s with %s thread(s) = %.1f%% of the fp32 ceiling"
                  % (rate, threads, 100.0 * rate * flops["train_per_caption"] / (ceilings[threads] * 1e9)))
    else:
        print("FLOP count skipped: %s not found" % CAPTIONS[0])


if __name__ == "__main__":
    main()
