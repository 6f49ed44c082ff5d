"""Where a training update of the tutorial model spends its time and where training's memory goes.

    OMP_NUM_THREADS=2 python -m benchmarks.train_profile [--bench /work/bench] [--updates 30] [--memory-only]

Builds exactly what ``python -m captioning.train`` builds for the tutorial model (its own parser, config and
`training.Trainer`; FLICKR-A head_conv features from ``--bench``, features in memory) and then:

1. memory: RSS (``/proc/self/statm``) and the process peak after each stage (imports, data, model, the first update
   of every bucket length, a validation pass, a checkpoint decode of the validation set at beam 3 / batch 64 /
   max length 30), with the Python-side (numpy) peak by ``tracemalloc``: what MXNet holds is the rest. The
   allocator is the environment's: run with ``LD_PRELOAD=libtcmalloc_minimal.so.4`` to profile as the tools run
   where tcmalloc is installed (`captioning.allocator`); glibc is tuned as the tools tune it unless
   ``--default-allocator``.
2. phases: ``--updates`` updates, each phase followed by ``mx.nd.waitall()`` so that its engine work is charged to it:
   data (next batch), copy to NDArrays, forward (+ loss), backward, optimizer update (+ clipping), bookkeeping;
   for forward and backward also the time the Python call takes to return (graph dispatch, before the wait).
3. free-running: the same number of updates through ``Trainer._update`` (its own single sync per update).
4. operators: ``mx.profiler`` aggregate statistics over ``--profile-updates`` free-running updates: time per
   operator type, its share of the operator total, and the operator total against the wall clock.
Run from the root of the tree to measure; logs one line per figure and writes the phases, the top operators and the
memory stages as the record ``benchmarks/results/train-profile-<time>.json``.
"""
import argparse
import logging
import os
import re
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks import harness

logger = logging.getLogger("benchmarks")
SHARED = harness.REPO.parent / "shared"
STAGES: List[Tuple[str, float, float]] = []     # (stage, RSS MB, process peak MB), in order


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(stage: str) -> None:
    """RSS, process peak and (while tracemalloc runs) the Python-allocated bytes (numpy arrays included)."""
    traced = ""
    if tracemalloc.is_tracing():
        current, python_peak = tracemalloc.get_traced_memory()
        traced = "  python-allocated %6.0f MB (peak %6.0f)" % (current / 2 ** 20, python_peak / 2 ** 20)
    STAGES.append((stage, rss_mb(), peak_mb()))
    logger.info("memory %-62s RSS %7.0f MB  peak %7.0f MB%s" % (stage, rss_mb(), peak_mb(), traced))


def parse_profile(text: str) -> List[Tuple[str, int, float]]:
    """(operator, calls, total ms) rows of ``mx.profiler.dumps()``'s aggregate table (operator sections only)."""
    rows = []
    section, previous = "", ""
    for line in text.splitlines():
        if line.startswith("====="):
            section = previous.strip()          # a section's title is the line above its underline
        previous = line
        match = re.match(r"^\s*(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if match and section.lower().startswith("operator"):
            rows.append((match.group(1), int(match.group(2)), float(match.group(3))))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="/work/bench", help="folder with features-head_conv/ and lists/")
    parser.add_argument("--updates", type=int, default=30, help="updates timed by phase and free-running")
    parser.add_argument("--profile-updates", type=int, default=20)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the memory stages (no timings)")
    parser.add_argument("--no-phases", action="store_true", help="skip the phase and free-running timings")
    parser.add_argument("--profile-table", default="/tmp/train-profile-table.txt",
                        help="where the profiler's whole aggregate table is written")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator settings as they are (the tools tune them at start-up)")
    harness.add_record_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = build_parser().parse_args(argv)
    bench = Path(args.bench)
    feats = bench / "features-head_conv"
    data = SHARED / "data" / "flickr8k-sample"
    if not (feats / "dev.features").exists() or not data.is_dir():
        print("skipped: needs %s (python -m benchmarks.train extracts it) and %s" % (feats, data))
        return
    session = harness.Session(
        benchmark="train-profile", reproduce=harness.reproduce_command("benchmarks.train_profile",
                                                                       sys.argv[1:] if argv is None else argv),
        description="where an update of the tutorial model spends its time (phases, operators) and where training holds memory, stage by stage (features in memory)",
        threads=os.environ.get("OMP_NUM_THREADS"), rounds=1, settle_s=args.settle,
        results_dir=Path(args.results_dir))
    tracemalloc.start()
    report("start (python)")
    import numpy as np
    import mxnet as mx
    from mxnet import autograd
    import captioning
    from captioning import arguments, data_io, training, utils
    from captioning import train as train_cli
    from captioning import vocab as vocab_module
    from captioning import model as model_module
    from benchmarks.train import TUTORIAL
    from captioning import allocator
    tuned = not args.default_allocator and allocator.tune_glibc()    # as the command-line tools do
    logger.info("package: %s; OMP_NUM_THREADS=%s; load average %.2f; allocator %s%s" % (
        os.path.dirname(captioning.__file__), os.environ.get("OMP_NUM_THREADS"), os.getloadavg()[0],
        allocator.in_use(), " (tuned as the tools tune it)" if tuned else ""))
    report("imports (mxnet, captioning)")

    out = Path("/tmp/train-profile-model")
    argv = ["--source-root", str(feats), "--source", str(bench / "lists" / "train.features"),
            "--target", str(bench / "lists" / "train.captions"), "--validation-source", str(feats / "dev.features"),
            "--validation-target", str(data / "dev.captions.0"), "--output", str(out), "--overwrite-output",
            "--load-all-features-to-memory", "--checkpoint-interval", "1000000"] + TUTORIAL
    targs = train_cli.build_parser().parse_args(argv)
    training.seed_everything(targs.seed)
    contexts = utils.get_context(True, targs.device_ids)
    vocab = vocab_module.build_vocab(utils.read_lines(targs.target))
    max_seq_len = arguments.target_value(targs.max_seq_len)
    train_data = data_io.load_parallel(targs.source, targs.target, vocab, max_seq_len, "training")
    val_data = data_io.load_parallel_references(targs.validation_source, train_cli.validation_targets(targs), vocab,
                                                max_seq_len, "val")
    report("captions read")
    mode = arguments.feature_store_mode(targs)
    train_store, train_index = data_io.open_store(targs.source_root, targs.source, train_data, mode)
    report("training features in memory (%s store, %.0f MB array)"
           % (mode, getattr(train_store, "array", np.zeros(0)).nbytes / 2 ** 20))
    val_store, val_index = data_io.open_store(targs.source_root, targs.validation_source, val_data, mode)
    report("validation features in memory")
    data_config = train_cli.create_data_config(targs, 1)
    train_iter = data_io.BatchIterator(train_data, train_store, train_index, data_config, shuffle=True)
    val_iter = data_io.BatchIterator(val_data, val_store, val_index, data_config, shuffle=False)
    model_config = train_cli.create_model_config(targs, train_store.feature_shape, len(vocab), 30)
    model = model_module.CaptionModel(model_config)
    model.hybridize(static_alloc=False)
    training.initialize_model(model, contexts, train_store.feature_shape)
    out.mkdir(exist_ok=True)
    trainer = training.Trainer(train_cli.create_training_config(targs, len(vocab)), model, train_iter, val_iter,
                               contexts)
    report("model and optimizer built")

    # one update of every bucket length (graph building), with the memory each adds
    for bucket in sorted(train_iter.buckets):
        members = [int(i) for i in train_iter.buckets[bucket][:64]]
        items = (members * (64 // len(members) + 1))[:64]
        batch = data_io.make_batch(train_store.get_batch(np.asarray(train_index)[items]),
                                   [train_data.caption(i) for i in items], bucket, items)
        start = time.perf_counter()
        trainer._forward_backward(batch)
        trainer.gluon_trainer.allreduce_grads()
        trainer.gluon_trainer.update(1)
        mx.nd.waitall()
        report("first update of bucket length %d (%.2f s incl. graph build)" % (bucket, time.perf_counter() - start))

    if not args.memory_only:
        tracemalloc.stop()
        timings(args, session, mx, np, autograd, trainer, train_iter, model, contexts)
        tracemalloc.start()
    validation_and_decode(args, targs, trainer, model, vocab, contexts, utils, mx, training, train_cli)
    for stage, rss, _ in STAGES:
        session.figure("RSS after: %s" % stage, "MB", False, [round(rss)])
    session.figure("process peak RSS", "MB", False, [round(max(peak for _, _, peak in STAGES))])
    session.notes.append("allocator %s (%s)" % (allocator.in_use(), "tuned as the tools tune it" if tuned
                                                 else "as the environment sets it"))
    session.finish()


def timings(args, session, mx, np, autograd, trainer, train_iter, model, contexts) -> None:
    """Phases (synchronised), free-running updates and the operator profile, recorded as figures."""
    if not args.no_phases:
        phase_timings(args, session, mx, np, autograd, trainer, train_iter, model, contexts)
    operator_profile(args, session, mx, trainer)


def phase_timings(args, session, mx, np, autograd, trainer, train_iter, model, contexts) -> None:
    """Each phase of an update followed by a wait, then free-running updates."""
    phases: Dict[str, List[float]] = {k: [] for k in ("data", "copy", "forward dispatch", "forward",
                                                      "backward dispatch", "backward", "update", "bookkeeping")}
    lengths = []
    totals = mx.nd.zeros((3,), ctx=contexts[0], dtype="float64")
    for _ in range(args.updates):
        t0 = time.perf_counter()
        batch, _ = train_iter.next_batch()
        t1 = time.perf_counter()
        f, x, y = (mx.nd.array(a, ctx=contexts[0]) for a in (batch.features, batch.target_input, batch.labels))
        mx.nd.waitall()
        t2 = time.perf_counter()
        with autograd.record():
            loss_out, stats = trainer.loss(model(f, x), y)
        t3 = time.perf_counter()
        mx.nd.waitall()
        t4 = time.perf_counter()
        autograd.backward([loss_out])
        t5 = time.perf_counter()
        mx.nd.waitall()
        t6 = time.perf_counter()
        trainer.gluon_trainer.allreduce_grads()
        trainer.gluon_trainer.update(1)
        mx.nd.waitall()
        t7 = time.perf_counter()
        totals += stats.astype("float64")      # what the objective and the speedometer keep per batch
        trainer.speed.images += len(np.unique(train_iter.image_ids[batch.indices]))
        mx.nd.waitall()
        t8 = time.perf_counter()
        for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t2, t5 - t4, t6 - t4, t7 - t6, t8 - t7)):
            phases[key].append(value)
        lengths.append(batch.target_input.shape[1])
    total = sum(statistics.mean(phases[k]) for k in ("data", "copy", "forward", "backward", "update",
                                                      "bookkeeping"))
    logger.info("phases over %d synchronised updates (mean bucket length %.1f): %.1f ms per update = %.1f samples/s"
          % (args.updates, statistics.mean(lengths), 1000 * total, 64 / total))
    for key, values in phases.items():
        mean = statistics.mean(values)
        logger.info("phase %-18s %8.1f ms  %5.1f%%%s" % (key, 1000 * mean, 100 * mean / total,
                                                   "  (Python returns; included in the next line)"
                                                   if "dispatch" in key else ""))
        if "dispatch" not in key:
            session.figure("update phase: %s (mean of %d synchronised updates)" % (key, args.updates), "ms", False,
                           [round(1000 * mean, 1)], note="%.0f%% of the update" % (100 * mean / total))
    report("after %d synchronised updates" % args.updates)

    # free-running
    mx.nd.waitall()
    start, samples0 = time.perf_counter(), trainer.state.samples
    for _ in range(args.updates):
        trainer._update()
    mx.nd.waitall()
    seconds = time.perf_counter() - start
    logger.info("free-running Trainer._update: %d updates in %.2f s = %.1f samples/s (%.1f ms per update)"
          % (args.updates, seconds, (trainer.state.samples - samples0) / seconds, 1000 * seconds / args.updates))
    session.figure("free-running update (%d updates)" % args.updates, "ms", False,
                   [round(1000 * seconds / args.updates, 1)])



def operator_profile(args, session, mx, trainer) -> None:
    """Aggregate operator statistics of free-running updates."""
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, continuous_dump=False,
                           filename="/tmp/train-profile.json")
    mx.nd.waitall()
    mx.profiler.set_state("run")
    start = time.perf_counter()
    for _ in range(args.profile_updates):
        trainer._update()
    mx.nd.waitall()
    wall = time.perf_counter() - start
    mx.profiler.set_state("stop")
    table = mx.profiler.dumps(reset=True)
    Path(args.profile_table).write_text(table)
    rows = parse_profile(table)
    op_total = sum(r[2] for r in rows)
    logger.info("profiler: %d updates, wall %.0f ms per update (profiling on); operators %.0f ms per update (%.0f%% of "
          "wall)" % (args.profile_updates, 1000 * wall / args.profile_updates, op_total / args.profile_updates,
                     100 * op_total / (1000 * wall)))
    for name, calls, ms in sorted(rows, key=lambda r: -r[2])[:args.top]:
        logger.info("operator %-40s %7d calls %9.1f ms per update %5.1f%%" % (name, calls // args.profile_updates,
                                                                         ms / args.profile_updates,
                                                                         100 * ms / op_total))
        session.figure("operator %s (%d calls per update)" % (name, calls // args.profile_updates), "ms", False,
                       [round(ms / args.profile_updates, 1)], note="%.0f%% of operator time" % (100 * ms / op_total))
    report("after profiling")


def validation_and_decode(args, targs, trainer, model, vocab, contexts, utils, mx, training, train_cli
                          ) -> None:
    """A validation pass and a checkpoint decode of the validation set: what a checkpoint adds to memory."""
    start = time.perf_counter()
    training.validate(trainer.model, trainer.loss, trainer.val_iter, trainer.contexts)
    mx.nd.waitall()
    report("validation pass (%.1f s)" % (time.perf_counter() - start))
    if not args.skip_decode:
        # as the training builds it: all the validation images, beam 3, batch 64, the validation store shared
        targs.decode_and_evaluate, targs.decode_and_evaluate_beam_size = -1, 3
        decoder = train_cli.create_checkpoint_decoder(targs, 30, contexts[0], trainer.val_iter.store)
        report("checkpoint decoder built (sharing the validation store)")
        start = time.perf_counter()
        metrics = decoder.decode_and_evaluate(model, vocab)
        report("checkpoint decode, %d images (%.1f s; %s)" % (
            len(set(utils.read_lines(targs.validation_source))), time.perf_counter() - start,
            ", ".join("%s %.3f" % kv for kv in sorted(metrics.items()))))

if __name__ == "__main__":
    main()
