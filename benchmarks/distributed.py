"""Distributed training speed: ``--kvstore dist_sync`` with N workers next to one process, same global batch.

    .venv/bin/python benchmarks/distributed.py [--workers 2] [--global-batch 64] [--updates 10] [--rounds 3]

Three runs of the same update loop (forward, backward, ``gluon.Trainer.step``) on a network with the parameter
shapes of the tutorial's model (image projection 1280->512 over 7x7 positions, target embedding 512, one LSTM layer of
512 with dot attention over the positions, output layer over a 2,800-word vocabulary; random data):

  single   one process, the global batch, every core, kvstore ``local``          (what ``captioning.train`` does)
  dist     ``python -m captioning.launch -n N -s 1``, each worker global/N captions, ``dist_sync`` with one
           parameter server; as in ``captioning.training``, ``step`` = push gradients, pull their sum, update locally
  alone    one process with one worker's share of batch and cores, kvstore ``local``: the work of one worker
           without communication, so dist - alone is what the kvstore costs

On one machine the N workers share its cores, so ``dist`` is not expected to beat ``single``: what carries over
to N machines is the communication time per update, set against the gradient bytes and a network's bandwidth
(printed at the end). Figures: medians over --rounds rounds (the three runs interleaved) of medians over the
timed updates (after warm-up). A dist step includes waiting for the slower worker.

``--workload train`` runs ``python -m captioning.train`` itself instead (the tutorial's model flags, random
1280x7x7 features and random captions): one process with the global batch next to ``captioning.launch -n N -s 1``
with ``--kvstore dist_sync`` and global/N each, samples/s from each run's "Training stopped" log line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULT_TAG = "RESULT "


# ---------------------------------------------------------------------------------------------------------------
# the worker: one update loop (runs in its own process)
# ---------------------------------------------------------------------------------------------------------------

def build_network(vocab: int, hidden: int, feature_channels: int):
    """A HybridBlock with the tutorial model's parameter shapes and per-caption compute (teacher forcing)."""
    from mxnet import gluon

    class Network(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.project = gluon.nn.Dense(hidden, flatten=False, activation="relu")
                self.embed = gluon.nn.Embedding(vocab, hidden)
                self.lstm = gluon.rnn.LSTM(hidden, layout="NTC")
                self.combine = gluon.nn.Dense(hidden, flatten=False, activation="tanh")
                self.output = gluon.nn.Dense(vocab, flatten=False)

        def hybrid_forward(self, F, features, words):  # features (B, L, C), words (B, T)
            positions = self.project(features)                                   # (B, L, d)
            hidden_states = self.lstm(self.embed(words))                         # (B, T, d)
            weights = F.softmax(F.batch_dot(hidden_states, positions, transpose_b=True), axis=-1)   # (B, T, L)
            context = F.batch_dot(weights, positions)                            # (B, T, d)
            attentional = self.combine(F.concat(hidden_states, context, dim=2))
            return self.output(attentional)                                      # (B, T, V)

    return Network()


def run_worker(args: argparse.Namespace) -> Dict[str, float]:
    """Time ``args.updates`` updates after ``args.warmup``; returns medians and sizes."""
    import captioning  # noqa: F401 - sets OMP_NUM_THREADS before MXNet starts, as every tool of the package does
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon

    kv = mx.kv.create(args.kvstore)
    rank = kv.rank if args.kvstore.startswith("dist") else 0
    mx.random.seed(13)
    net = build_network(args.vocab, args.hidden, args.channels)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=True)
    # as captioning.training does with dist_sync: workers push gradients, pull their sum and update locally
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.0003, "clip_gradient": 1.0},
                            kvstore=kv, update_on_kvstore=False)
    rng = np.random.RandomState(rank)
    batch = args.batch_size
    features = mx.nd.array(rng.rand(batch, args.positions, args.channels) * 4)
    words = mx.nd.array(rng.randint(4, args.vocab, size=(batch, args.length)))
    labels = mx.nd.array(rng.randint(4, args.vocab, size=(batch, args.length)))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    forward_backward: List[float] = []
    step: List[float] = []
    for update in range(args.warmup + args.updates):
        start = time.perf_counter()
        with autograd.record():
            loss = loss_fn(net(features, words), labels)
        loss.backward()
        mx.nd.waitall()
        middle = time.perf_counter()
        trainer.step(batch * (kv.num_workers if args.kvstore.startswith("dist") else 1))
        mx.nd.waitall()
        end = time.perf_counter()
        if update >= args.warmup:
            forward_backward.append(middle - start)
            step.append(end - middle)
    parameters = sum(int(np.prod(p.shape)) for p in net.collect_params().values())
    update_seconds = statistics.median(f + s for f, s in zip(forward_backward, step))
    return {"rank": rank, "batch": batch, "threads": int(os.environ.get("OMP_NUM_THREADS", "0")),
            "forward_backward_s": statistics.median(forward_backward), "step_s": statistics.median(step),
            "update_s": update_seconds, "samples_per_s": batch / update_seconds, "parameters": parameters,
            "gradient_bytes": parameters * 4}


# ---------------------------------------------------------------------------------------------------------------
# the driver: three runs, then the table and the arithmetic
# ---------------------------------------------------------------------------------------------------------------

def _worker_argv(args: argparse.Namespace, kvstore: str, batch: int) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "--worker", "--kvstore", kvstore, "--batch-size", str(batch),
            "--updates", str(args.updates), "--warmup", str(args.warmup), "--vocab", str(args.vocab),
            "--hidden", str(args.hidden), "--channels", str(args.channels), "--positions", str(args.positions),
            "--length", str(args.length)]


def _results(output: str) -> List[Dict[str, float]]:
    return [json.loads(line.split(RESULT_TAG, 1)[1]) for line in output.splitlines() if RESULT_TAG in line]


def _run(argv: List[str], threads: int = 0) -> List[Dict[str, float]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)   # the launcher gives each worker its share of the cores
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit("benchmark run failed: %s" % " ".join(argv))
    return _results(result.stdout)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _median_run(runs: List[Dict[str, float]]) -> Dict[str, float]:
    """Per-field medians over the rounds of one run type."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def drive(args: argparse.Namespace) -> None:
    cores = _cores()
    n = args.workers
    share = args.global_batch // n
    launch = [sys.executable, "-m", "captioning.launch", "-n", str(n), "-s", "1", "--quiet", "--"]
    rounds: Dict[str, List] = {"single": [], "alone": [], "dist": []}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):   # the three runs interleaved, so that other load on the machine hits all alike
        rounds["single"].append(_run(_worker_argv(args, "local", args.global_batch), threads=cores)[0])
        rounds["alone"].append(_run(_worker_argv(args, "local", share), threads=max(1, cores // n))[0])
        workers = sorted(_run(launch + _worker_argv(args, "dist_sync", share)), key=lambda r: r["rank"])
        assert len(workers) == n, workers
        rounds["dist"].append(workers)
    single = _median_run(rounds["single"])
    alone = _median_run(rounds["alone"])
    workers = [_median_run([r[rank] for r in rounds["dist"]]) for rank in range(n)]
    dist_update = statistics.median(max(w["update_s"] for w in r) for r in rounds["dist"])
    total = n * share / dist_update

    print("distributed benchmark: %d cores (load average %.1f before, %.1f after), global batch %d, medians of "
          "%d rounds x %d timed updates, %s parameters (%.1f MB of fp32 gradients per update)" % (
              cores, load_before, os.getloadavg()[0], args.global_batch, args.rounds, args.updates,
              format(int(single["parameters"]), ","), single["gradient_bytes"] / 1e6))
    print("| run | processes x threads | batch per process | fwd+bwd s | step s | update s | samples/s per "
          "process | samples/s total |")
    print("|---|---|---|---|---|---|---|---|")
    print("| single (local) | 1 x %d | %d | %.3f | %.3f | %.3f | %.1f | %.1f |" % (
        single["threads"], single["batch"], single["forward_backward_s"], single["step_s"], single["update_s"],
        single["samples_per_s"], single["samples_per_s"]))
    for w in workers:
        print("| dist_sync worker %d | %d x %d | %d | %.3f | %.3f | %.3f | %.1f | |" % (
            w["rank"], n, w["threads"], w["batch"], w["forward_backward_s"], w["step_s"], w["update_s"],
            w["samples_per_s"]))
    print("| dist_sync total | | %d | | | %.3f | | %.1f |" % (n * share, dist_update, total))
    print("| alone (one worker's share, local) | 1 x %d | %d | %.3f | %.3f | %.3f | %.1f | |" % (
        alone["threads"], alone["batch"], alone["forward_backward_s"], alone["step_s"], alone["update_s"],
        alone["samples_per_s"]))

    step_dist = statistics.median(w["step_s"] for w in workers)
    overhead = step_dist - alone["step_s"]
    print("communication per update (dist step - local step): %.3f s = %.0f%% of a dist_sync update; "
          "dist_sync total / single: %.2f" % (overhead, 100 * overhead / dist_update, total / single["samples_per_s"]))
    gradient_mb = single["gradient_bytes"] / 1e6
    compute = single["update_s"]   # one machine, its batch, no network
    print("N machines, one worker + one server each, batch %d per machine (compute %.3f s per update as 'single'):"
          % (args.global_batch, compute))
    print("  each machine sends and receives 2 x G x (N-1)/N per update, G = %.1f MB" % gradient_mb)
    for gbits in (1, 10, 25):
        for machines in (2, 8, 32):
            wire = 2 * gradient_mb * (machines - 1) / machines / (gbits * 1000 / 8)
            print("  %2d Gb/s, N=%2d: %.3f s on the wire per update -> %.0f%% scaling efficiency "
                  "(%.0f samples/s total) if not overlapped" % (
                      gbits, machines, wire, 100 * compute / (compute + wire),
                      machines * args.global_batch / (compute + wire)))


# ---------------------------------------------------------------------------------------------------------------
# --workload train: the real trainer (python -m captioning.train), single process vs launched workers
# ---------------------------------------------------------------------------------------------------------------

TUTORIAL_MODEL = ["--encoder", "image-pretrain-cnn", "--decoder", "rnn", "--num-layers", "1", "--rnn-num-hidden", "512",
                  "--rnn-decoder-state-init", "zero", "--rnn-attention-type", "mlp", "--image-encoder-num-hidden",
                  "512", "--num-embed", "512", "--initial-learning-rate", "0.0003", "--gradient-clipping-type", "abs",
                  "--gradient-clipping-threshold", "1.0", "--bucket-width", "5", "--max-seq-len", "60",
                  "--weight-normalization", "--load-all-features-to-memory", "--decode-and-evaluate", "0",
                  "--use-cpu", "--seed", "13"]


def make_training_data(folder: str, images: int, vocab: int, seed: int = 1) -> Dict[str, str]:
    """Random 1280x7x7 features (FLICKR-A's shape) and random captions of 8-15 words over ``vocab`` words, 4
    captions per image, in the tool's formats."""
    import numpy as np
    rng = np.random.RandomState(seed)
    features = os.path.join(folder, "features")
    os.makedirs(features, exist_ok=True)
    names, captions = [], []
    words = ["w%d" % i for i in range(vocab)]
    for i in range(images):
        name = "img%04d.jpg.npy" % i
        np.save(os.path.join(features, name), (rng.rand(1280, 7, 7) * 4).astype("float32"))
        for _ in range(4):
            names.append(name)
            captions.append(" ".join(rng.choice(words, size=rng.randint(8, 16))))
    with open(os.path.join(features, "image_feature_sizes.json"), "w") as f:
        json.dump({"image_shape": [3, 224, 224], "features_shape": [1280, 7, 7]}, f)
    paths = {"root": features}
    for split, (lo, hi) in {"train": (0, len(names)), "val": (0, 64)}.items():
        paths[split + "_features"] = os.path.join(folder, split + ".features")
        paths[split + "_captions"] = os.path.join(folder, split + ".captions")
        with open(paths[split + "_features"], "w") as f:
            f.write("\n".join(names[lo:hi]) + "\n")
        with open(paths[split + "_captions"], "w") as f:
            f.write("\n".join(captions[lo:hi]) + "\n")
    return paths


def _train_speed(output: str, workers: int) -> List[float]:
    """Samples/s of each worker's (or the one process's) "Training stopped: ... N samples in Ts" line."""
    import re
    found = re.findall(r"Training stopped: .*? (\d+) samples in ([\d.]+)s", output)
    if len(found) != workers:
        sys.stderr.write(output[-5000:])
        raise SystemExit("expected %d 'Training stopped' lines, found %d" % (workers, len(found)))
    return [int(n) / float(t) for n, t in found]


def drive_train(args: argparse.Namespace) -> None:
    import tempfile
    n = args.workers
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_training_data(tmp, images=args.images, vocab=args.vocab)
        common = ["-m", "captioning.train", "--source-root", data["root"], "--source", data["train_features"],
                  "--target", data["train_captions"], "--validation-source", data["val_features"],
                  "--validation-target", data["val_captions"], "--max-updates", str(args.updates),
                  "--checkpoint-interval", str(args.updates)] + TUTORIAL_MODEL
        speeds: Dict[str, List[List[float]]] = {"single": [], "dist": []}
        for round_ in range(args.rounds):
            single = [sys.executable] + common + ["--batch-size", str(args.global_batch), "--output",
                                                  os.path.join(tmp, "single%d" % round_)]
            result = subprocess.run(single, env=env, cwd=REPO, capture_output=True, text=True)
            speeds["single"].append(_train_speed(result.stderr, 1))
            dist = [sys.executable, "-m", "captioning.launch", "-n", str(n), "-s", "1", "--"] + [sys.executable] + \
                common + ["--batch-size", str(args.global_batch // n), "--kvstore", "dist_sync", "--output",
                          os.path.join(tmp, "dist%d" % round_)]
            result = subprocess.run(dist, env=env, cwd=REPO, capture_output=True, text=True)
            # every worker logs the job's samples (all workers) over its own time
            speeds["dist"].append(_train_speed(result.stderr, n))
    single = statistics.median(s[0] for s in speeds["single"])
    total = statistics.median(statistics.median(r) for r in speeds["dist"])
    print("captioning.train, tutorial model (1-layer LSTM 512, MLP attention, 1280x7x7 features, %d-word "
          "vocabulary, random words), %d updates of a global batch of %d, medians of %d rounds (training time "
          "incl. the final checkpoint; start-up excluded)" % (args.vocab, args.updates, args.global_batch, args.rounds))
    print("| run | samples/s per process | samples/s total |")
    print("|---|---|---|")
    print("| single process, --batch-size %d | %.1f | %.1f |" % (args.global_batch, single, single))
    print("| launch -n %d -s 1, --kvstore dist_sync, --batch-size %d each | %.1f | %.1f |" % (
        n, args.global_batch // n, total / n, total))
    print("dist_sync total / single: %.2f" % (total / single))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--updates", type=int, default=10, help="Timed updates per run.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of the three runs (medians are reported).")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=2800)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--positions", type=int, default=49)
    parser.add_argument("--length", type=int, default=13)
    parser.add_argument("--workload", choices=["loop", "train"], default="loop",
                        help="loop: the update loop of a stand-in network (three runs, communication isolated); "
                             "train: python -m captioning.train itself on random tutorial-shaped data.")
    parser.add_argument("--images", type=int, default=160, help="(train) images of the random data set.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kvstore", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(RESULT_TAG + json.dumps(run_worker(args)), flush=True)
    elif args.workload == "train":
        drive_train(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
