"""Captioning speed and peak memory on the FLICKR-A dev photos (BENCHMARKS.md).

    .venv/bin/python benchmarks/caption.py [--model MODEL_FOLDER] [--repeats 3]

Features: EfficientNet-Lite0 ``head_conv`` (1280x7x7) of the 113 dev photos of ``../shared/data/flickr8k-sample``,
extracted once into ``--work-dir``. Model: ``--model`` (e.g. the one the training benchmark trained), else a randomly
initialised model of the tutorial's size (1-layer LSTM 512, MLP attention, image projection 512, embedding 512,
weight normalisation, the training captions' vocabulary) with ``--max-output-length`` (default 13, the length a
trained model's captions average, so every caption costs a realistic number of steps: a random model never stops
on its own). Such a model measures speed only. Each configuration runs the real CLI (``python -m
captioning.captioner``) in a fresh process; captions/s is the captioner's own count (model loading excluded, as
Sockeye's), peak memory the process' maximum RSS; figures are medians over ``--repeats`` runs. On a shared, busy
machine wall-clock figures swing with the load (printed with them); ``CPU ms/caption`` (the process' user + system
CPU time, less that of a run with an empty input: start-up and model loading) is steadier. ``--threads 1 2`` runs
each configuration with each ``OMP_NUM_THREADS``.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO / ".." / "shared"
DATA = SHARED / "data" / "flickr8k-sample"
CNN_PREFIX = SHARED / "models" / "efficientnet-lite0" / "efficientnet-lite0"
LAYER = "head_conv"


def extract_dev_features(work: Path) -> Tuple[Path, Path, Path]:
    """Feature files of the dev photos (once), their list, and the image list."""
    import numpy as np
    import mxnet as mx
    from captioning import cnn, features, image_io
    feature_root = work / "features"
    listing = work / "dev.features"
    images = [line.strip() for line in (DATA / "dev.images").read_text().splitlines() if line.strip()]
    image_list = work / "dev.images"
    image_list.write_text("".join(p + "\n" for p in images))
    if listing.exists():
        return feature_root, listing, image_list
    feature_root.mkdir(parents=True, exist_ok=True)
    config = cnn.CNNConfig(model_path=str(CNN_PREFIX), epoch=0, layer=LAYER, image_size=(3, 224, 224))
    extractor = cnn.FeatureExtractor(config, mx.cpu(), batch_size=32)
    names = []
    for start in range(0, len(images), 32):
        batch = images[start:start + 32]
        arrays = np.stack([image_io.load_image(str(DATA / p), (224, 224)) for p in batch])
        for path, feature in zip(batch, extractor.extract(arrays)):
            name = features.feature_file_name(path)
            np.save(feature_root / name, feature)
            names.append(name)
    listing.write_text("".join(n + "\n" for n in names))
    return feature_root, listing, image_list


def make_random_model(folder: Path, max_output_length: int) -> Path:
    """A randomly initialised tutorial-size model folder (speed only)."""
    import mxnet as mx
    from captioning import vocab as vocab_module
    from captioning.cnn import CNNConfig
    from captioning.decoder import RecurrentDecoderConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig, save_model_config
    from captioning import constants as C
    if (folder / C.PARAMS_BEST_NAME).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for k in range(5):
        captions.extend((DATA / ("train.captions.%d" % k)).read_text().splitlines())
    vocab = vocab_module.build_vocab(captions)
    cnn_config = CNNConfig(model_path=str(CNN_PREFIX), epoch=0, layer=LAYER, image_size=(3, 224, 224))
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(1280, 7, 7), num_hidden=512),
                         vocab_size=len(vocab), decoder="rnn",
                         rnn=RecurrentDecoderConfig(num_hidden=512, state_init="zero", attention_type="mlp"),
                         num_embed=512, weight_normalization=True, max_output_length=max_output_length,
                         cnn_config=cnn_config.to_dict())
    mx.random.seed(1)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier())
    model.save_parameters(str(folder / C.PARAMS_BEST_NAME))
    save_model_config(config, str(folder))
    vocab_module.save_vocab(vocab, str(folder / C.VOCAB_TRG_NAME))
    return folder


def run_captioner(args: List[str], env: Dict[str, str], empty: bool = False) -> Tuple[float, float, float, float]:
    """(captions/s by the captioner's count, wall seconds of the whole process, peak RSS in MB, CPU seconds of
    the process); ``empty``: the input is empty (start-up cost only; captions/s is 0)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "captioning.captioner", *args], cwd=str(REPO), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit("captioner failed:\n" + stderr[-3000:])
    cpu = usage.ru_utime + usage.ru_stime
    if empty:
        return 0.0, wall, usage.ru_maxrss / 1024.0, cpu
    match = re.search(r"Processed (\d+) lines \((\d+) failed\) in ([\d.]+)s: ([\d.]+) captions/s", stderr)
    assert match, stderr[-2000:]
    return float(match.group(4)), wall, usage.ru_maxrss / 1024.0, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=str, default=None, help="A trained model folder (default: random init).")
    parser.add_argument("--work-dir", type=str, default="/tmp/captioning-bench-caption")
    parser.add_argument("--max-output-length", type=int, default=13)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=str, nargs="+", default=[None],
                        help="OMP_NUM_THREADS for the captioner, one or more values; 'all' (the default) leaves "
                             "it unset: every core")
    parser.add_argument("--skip-images", action="store_true", help="Do not time --extract-image-features.")
    parser.add_argument("--gpu", action="store_true", help="Caption on gpu(0) (--device-ids 0; benchmarks/gpu.sh).")
    args = parser.parse_args()
    if not DATA.is_dir() or not Path(str(CNN_PREFIX) + "-symbol.json").exists():
        raise SystemExit("needs %s and %s" % (DATA, CNN_PREFIX))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    feature_root, listing, image_list = extract_dev_features(work)
    empty_list = work / "empty.list"
    empty_list.write_text("")
    model = Path(args.model) if args.model else make_random_model(work / "random-model", args.max_output_length)
    n = len(listing.read_text().splitlines())
    print("model: %s (%s)" % (model, "trained" if args.model else "RANDOM INIT: speed only"))
    common = ["--models", str(model), "--beam-size", str(args.beam_size), "--max-output-length",
              str(args.max_output_length)] + (["--device-ids", "0"] if args.gpu else ["--use-cpu"])
    for threads in args.threads:
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)
        if threads and threads != "all":
            env["OMP_NUM_THREADS"] = threads
        env["PYTHONPATH"] = str(REPO)
        print("inputs: %d dev photos, beam %d, max output length %d, OMP_NUM_THREADS=%s, load average %.2f"
              % (n, args.beam_size, args.max_output_length, env.get("OMP_NUM_THREADS", "unset (all cores)"),
                 os.getloadavg()[0]))
        startup = statistics.median(run_captioner(common + ["--input", str(empty_list), "--source-root",
                                                            str(feature_root)], env, empty=True)[3]
                                    for _ in range(args.repeats))
        rows = []
        for batch in args.batch_sizes:
            runs = [run_captioner(common + ["--input", str(listing), "--source-root", str(feature_root),
                                            "--batch-size", str(batch)], env) for _ in range(args.repeats)]
            rows.append(("features, batch %d" % batch, runs))
        if not args.skip_images:
            runs = [run_captioner(common + ["--extract-image-features", "--input", str(image_list),
                                            "--source-root", str(DATA), "--batch-size", "64"], env)
                    for _ in range(args.repeats)]
            rows.append(("images (--extract-image-features), batch 64", runs))
        print("%-46s %12s %10s %12s %16s" % ("configuration", "captions/s", "wall s", "peak RSS MB",
                                             "CPU ms/caption"))
        for name, runs in rows:
            cpu_ms = 1000.0 * (statistics.median(r[3] for r in runs) - startup) / n
            print("%-46s %12.1f %10.2f %12.0f %16.2f" % (name, statistics.median(r[0] for r in runs),
                                                         statistics.median(r[1] for r in runs),
                                                         statistics.median(r[2] for r in runs), cpu_ms))
        print("(start-up CPU %.2f s, not counted; load average now %.2f)" % (startup, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
