"""How training's cost grows with the data: synthetic float16 memory-mapped features and captions at 10k, 100k and
600k captions (MS-COCO size: 5 captions per image, 120k images at 600k).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/scale.py --root /work/scale [--sizes 10000 100000 600000]
        [--stores mmap memory] [--updates 40] [--delete]

For each size, ``--root``/SIZE holds (made once, then reused): ``features.mmap.npy`` (N_images x 1280 x 7 x 7
float16, random), its index ``features.mmap.json`` and sidecar (what ``extract_features --mmap-store
--mmap-dtype float16`` writes), a feature list and captions (5 per image; lengths drawn from FLICKR-A's training
captions, words drawn from its vocabulary). With ``--stores memory`` and a size whose float32 features fit in
``--memory-limit-gb``, one ``.npy`` file per image is also written for the in-memory store.

Each (size, store) runs in a fresh process that builds what ``python -m captioning.train`` builds for the tutorial
model (its parser, configs, data iterator, model and `training.Trainer`) and reports: the seconds from process start
to the end of the first update, split into reading the captions (``data_io.load_parallel``), opening the feature
store, building the bucketed batch plan, building the model and the first update; the Python-allocated memory of
the data per caption (``tracemalloc``, on a second reading after the timed one: it slows reading several times);
steady samples/s over ``--updates`` updates after one update per bucket length (graph building); the size of the
iterator state saved at every checkpoint; peak RSS.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

START = time.perf_counter()
HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared"
FEATURE_SHAPE = (1280, 7, 7)


def make_data(folder: Path, captions: int, per_image: int, with_files: bool, sparse: bool = False) -> None:
    """Synthetic features (float16 mmap store, optionally per-image float32 .npy files) and captions. ``sparse``:
    the store is left unwritten (a sparse file of zeros: no disk and no time to make; reads come from zero
    pages, so the data path is cheaper than with real features)."""
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    images = captions // per_image
    names = ["img%07d.jpg.npy" % i for i in range(images)]
    store = folder / "features.mmap.npy"
    rng = np.random.default_rng(0)
    if not (folder / "features.mmap.json").exists():
        array = np.lib.format.open_memmap(str(store) + ".tmp", mode="w+", dtype=np.float16,
                                          shape=(images,) + FEATURE_SHAPE)
        chunk = 512     # 8 random chunks of 512 images, written in turn (drawing 15 GB of numbers took an hour)
        pool = [rng.uniform(0, 6, (min(chunk, images),) + FEATURE_SHAPE).astype(np.float16)
                for _ in range(0 if sparse else min(8, -(-images // chunk)))]
        for j, start in enumerate(range(0, 0 if sparse else images, chunk)):
            n = min(chunk, images - start)
            array[start:start + n] = pool[j % len(pool)][:n]
        array.flush()
        del array
        os.replace(str(store) + ".tmp", store)
        (folder / "image_feature_sizes.json").write_text(json.dumps(
            {"image_shape": [3, 224, 224], "features_shape": list(FEATURE_SHAPE)}) + "\n")
        (folder / "features.mmap.json").write_text(json.dumps(
            {"names": names, "dtype": "float16", "shape": [images] + list(FEATURE_SHAPE)}) + "\n")
    if with_files and not (folder / names[-1]).exists():
        array = np.load(store, mmap_mode="r")
        for i, name in enumerate(names):
            np.save(folder / name, np.asarray(array[i], dtype=np.float32))
    if not (folder / "train.captions").exists():
        sources = [SHARED / "data" / "flickr8k-sample" / ("train.captions.%d" % k) for k in range(5)]
        lines = [l.split() for p in sources for l in p.read_text().splitlines()]
        lengths = np.array([len(l) for l in lines])
        vocab = sorted({w for l in lines for w in l})
        picked = rng.choice(lengths, size=images * per_image)
        words = rng.integers(0, len(vocab), size=int(picked.sum()))
        out, pos = [], 0
        for n in picked:
            out.append(" ".join(vocab[w] for w in words[pos:pos + n]))
            pos += n
        (folder / "train.captions").write_text("\n".join(out) + "\n")
        (folder / "train.features").write_text("".join(n + "\n" for n in names for _ in range(per_image)))
        (folder / "dev.features").write_text("".join(n + "\n" for n in names[:100]))
        (folder / "dev.captions").write_text("\n".join(out[:100 * per_image:per_image]) + "\n")


def child(args: argparse.Namespace) -> None:
    """One (size, store) measurement in this process; prints one JSON line."""
    import tracemalloc
    sys.path.insert(0, str(HERE))
    from train import TUTORIAL
    folder = Path(args.folder)
    times: Dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        times[name] = now - mark
        mark = now

    import numpy as np
    import mxnet as mx
    from captioning import arguments, data_io, training, utils
    from captioning import train as train_cli
    from captioning import vocab as vocab_module
    from captioning import model as model_module
    utils.tune_allocator()       # as every command-line tool does at start (utils.run_cli)
    lap("imports")
    argv = ["--source-root", str(folder), "--source", str(folder / "train.features"), "--target",
            str(folder / "train.captions"), "--validation-source", str(folder / "dev.features"),
            "--validation-target", str(folder / "dev.captions"), "--output", "/tmp/scale-model",
            "--feature-store", args.store, "--checkpoint-interval", "1000000"] + TUTORIAL
    targs = train_cli.build_parser().parse_args(argv)
    training.seed_everything(targs.seed)
    contexts = utils.get_context(True, None)
    vocab = vocab_module.build_vocab(utils.read_lines(targs.target))
    max_seq_len = arguments.target_value(targs.max_seq_len)
    train_data = data_io.load_parallel(targs.source, targs.target, vocab, max_seq_len, "training")
    lap("vocabulary and captions")
    store, index = data_io.open_store(targs.source_root, targs.source, train_data, args.store)
    lap("feature store")
    config = train_cli.create_data_config(targs, 1)
    train_iter = data_io.BatchIterator(train_data, store, index, config, shuffle=True)
    lap("batch plan")
    # the Python-held bytes, from a second reading under tracemalloc (which slows reading several times over);
    # the memory store's features are counted as its array, not loaded twice
    tracemalloc.start()
    again = data_io.load_parallel(targs.source, targs.target, vocab, max_seq_len, "training")
    captions_bytes = tracemalloc.get_traced_memory()[0]
    if args.store == "memory":
        store_bytes = store.array.nbytes + store.rows.nbytes
    else:
        again_store = data_io.open_store(targs.source_root, targs.source, again, args.store)
        store_bytes = tracemalloc.get_traced_memory()[0] - captions_bytes
        del again_store
    data_bytes = captions_bytes + store_bytes
    tracemalloc.stop()
    del again
    lap("measuring memory")          # left out of the time to the first update
    state_bytes = len(json.dumps(train_iter.state_dict()))
    val_data = data_io.load_parallel(targs.validation_source, train_cli.validation_targets(targs)[0], vocab,
                                     max_seq_len, "val")
    val_store, val_index = data_io.open_store(targs.source_root, targs.validation_source, val_data, args.store)
    val_iter = data_io.BatchIterator(val_data, val_store, val_index, config, shuffle=False)
    model_config = train_cli.create_model_config(targs, store.feature_shape, len(vocab), 30)
    model = model_module.CaptionModel(model_config)
    model.hybridize(static_alloc=False)
    training.initialize_model(model, contexts, store.feature_shape)
    Path("/tmp/scale-model").mkdir(exist_ok=True)
    trainer = training.Trainer(train_cli.create_training_config(targs, len(vocab)), model, train_iter, val_iter,
                               contexts)
    lap("model")
    trainer._update()
    mx.nd.waitall()
    lap("first update")
    first_update = time.perf_counter() - START - times["measuring memory"]
    # one update per bucket length, then steady state
    seen = set()
    for _ in range(4 * len(train_iter.buckets) if args.updates > 0 else 0):
        if len(seen) == len(train_iter.buckets):
            break
        bucket, _ = train_iter.plan[train_iter.position]
        seen.add(bucket)
        trainer._update()
    mx.nd.waitall()
    rates = []
    for _ in range(args.repeats if args.updates > 0 else 0):
        start, samples = time.perf_counter(), trainer.state.samples
        for _ in range(args.updates // args.repeats):
            trainer._update()
        mx.nd.waitall()
        rates.append((trainer.state.samples - samples) / (time.perf_counter() - start))
    get_batch = []
    for _ in range(20):
        bucket, items = train_iter.plan[np.random.randint(len(train_iter.plan))]
        start = time.perf_counter()
        store.get_batch(train_iter.feature_index[items])
        get_batch.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "first_update": first_update, "rates": rates,
                      "captions": len(train_data), "images": len(store.distinct),
                      "captions_bytes": captions_bytes, "store_bytes": store_bytes, "data_bytes": data_bytes,
                      "state_bytes": state_bytes, "get_batch_ms": 1000 * statistics.median(get_batch),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/work/scale")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 600000])
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--stores", nargs="+", default=["mmap", "memory"], choices=["mmap", "memory", "lazy"])
    parser.add_argument("--memory-limit-gb", type=float, default=6.0,
                        help="largest float32 feature set tried with the memory store")
    parser.add_argument("--sparse-above", type=int, default=None,
                        help="sizes above this get an unwritten (sparse, all-zero) feature store")
    parser.add_argument("--updates", type=int, default=40, help="0: no steady-state timing (data path and first "
                                                                 "update only)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--repo", default=None, help="tree whose captioning package is measured (default: "
                                                     "PYTHONPATH, else this checkout)")
    parser.add_argument("--delete", action="store_true", help="delete --root at the end")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repo:
        sys.path.insert(0, args.repo)
    elif not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(HERE.parent))
    if args.child:
        child(args)
        return
    if not (SHARED / "data" / "flickr8k-sample").is_dir():
        print("skipped: no %s (captions are drawn from it)" % (SHARED / "data" / "flickr8k-sample"))
        return
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(root)
    print("CPU: %s; OMP_NUM_THREADS=%s; %s free at %s; load average %.2f"
          % (next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name")), "?"), os.environ.get("OMP_NUM_THREADS"),
             "%.0f GB" % (usage.free / 1e9), root, os.getloadavg()[0]), flush=True)
    image_bytes = 2 * 1280 * 49
    for size in args.sizes:
        images = size // args.captions_per_image
        fits = images * image_bytes * 2 / 1e9 <= args.memory_limit_gb
        stores = [s for s in args.stores if s == "mmap" or fits]
        need = images * image_bytes * (3 if fits and "memory" in stores else 1) / 1e9
        if args.sparse_above is not None and size > args.sparse_above:
            need = 0.0
        if need > shutil.disk_usage(root).free / 1e9 - 5:
            print("size %d: skipped, needs %.1f GB of disk" % (size, need))
            continue
        folder = root / str(size)
        start = time.time()
        sparse = args.sparse_above is not None and size > args.sparse_above
        make_data(folder, size, args.captions_per_image, with_files="memory" in stores or "lazy" in stores,
                  sparse=sparse)
        print("size %d: %d images, data made or found in %.0f s (%.1f GB float16 store%s)"
              % (size, images, time.time() - start, images * image_bytes / 1e9,
                 ", sparse: all zeros, not written" if sparse else ""), flush=True)
        for store in stores:
            cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--store", store, "--updates",
                   str(args.updates), "--repeats", str(args.repeats)] + (["--repo", args.repo] if args.repo else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print("size %d, %s store: FAILED\n%s" % (size, store, proc.stderr[-2000:]))
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            t = r["times"]
            print("size %d captions, %s store: first update after %.1f s (imports %.1f, captions %.1f, store %.1f, "
                  "plan %.2f, model %.1f, update %.1f); steady %.1f samples/s (%s); get_batch %.1f ms; "
                  "Python-held data %.0f MB (%.0f bytes per caption: captions %.0f, store %.0f); iterator "
                  "state %.1f MB per checkpoint; peak RSS %.2f GB; load %.2f"
                  % (r["captions"], store, r["first_update"], t["imports"], t["vocabulary and captions"],
                     t["feature store"], t["batch plan"], t["model"], t["first update"],
                     statistics.median(r["rates"]) if r["rates"] else float("nan"),
                     " / ".join("%.1f" % x for x in r["rates"]) or "--updates 0", r["get_batch_ms"],
                     r["data_bytes"] / 2 ** 20, r["data_bytes"] / r["captions"],
                     r["captions_bytes"] / r["captions"], r["store_bytes"] / r["captions"], r["state_bytes"] / 1e6,
                     r["peak_rss_mb"] / 1024.0, os.getloadavg()[0]), flush=True)
    if args.delete:
        shutil.rmtree(root, ignore_errors=True)
        print("deleted %s" % root)


if __name__ == "__main__":
    main()
