"""Writes this folder: tiny model folders trained by the captioning code of the time, a few feature files, and the
captions that code gave for them. tests/unit/test_saved_models.py loads the folders with today's code and expects
the same captions byte for byte; rerun this script only to record a new model format on purpose.

    python tests/data/model_format_2/make_fixture.py

Models: ``rnn`` (LSTM, MLP attention, input feeding, weight normalisation, initial state from the last position)
and ``transformer`` (one layer). Both train a few updates on random features and a small made-up caption set.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
FEATURE_SHAPE = (8, 2, 2)
NUM_TRAIN = 24
NUM_TEST = 6
WORDS = "a dog cat runs sits on the grass red blue ball in snow".split()
KEEP = ("config", "version", "vocab.trg.0.json", "params.best")
MODELS = {
    "rnn": ["--decoder", "rnn", "--rnn-num-hidden", "16", "--rnn-attention-type", "mlp",
            "--rnn-attention-num-hidden", "8", "--rnn-decoder-state-init", "last", "--weight-normalization"],
    "transformer": ["--decoder", "transformer", "--transformer-model-size", "16", "--transformer-attention-heads",
                    "2", "--transformer-feed-forward-num-hidden", "16"],
}
CAPTIONER = ["--beam-size", "3", "--batch-size", "2", "--output-type", "translation_with_score", "--use-cpu",
             "--max-output-length", "10"]


def write_features(root: Path, names, rng) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(root / name, rng.rand(*FEATURE_SHAPE).astype(np.float32))


def run(module: str, args) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", module] + list(args), cwd=str(REPO), env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout


def main() -> None:
    rng = np.random.RandomState(5)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_names = ["train%02d.npy" % i for i in range(NUM_TRAIN)]
        write_features(work / "feats", train_names, rng)
        (work / "train.features").write_text("".join(n + "\n" for n in train_names))
        captions = [" ".join(rng.choice(WORDS, size=rng.randint(2, 7))) for _ in train_names]
        (work / "train.captions").write_text("".join(c + "\n" for c in captions))
        test_names = ["test%d.npy" % i for i in range(NUM_TEST)]
        write_features(HERE / "features", test_names, rng)
        (HERE / "test.features").write_text("".join(n + "\n" for n in test_names))
        for name, flags in MODELS.items():
            out = work / name
            run("captioning.train", ["--source-root", str(work / "feats"), "--source", str(work / "train.features"),
                                     "--target", str(work / "train.captions"),
                                     "--validation-source", str(work / "train.features"),
                                     "--validation-target", str(work / "train.captions"),
                                     "--output", str(out), "--num-embed", "16", "--image-encoder-num-hidden", "16",
                                     "--batch-size", "8", "--bucket-width", "10", "--decode-and-evaluate", "0",
                                     "--use-cpu", "--seed", "3", "--checkpoint-interval", "6",
                                     "--max-updates", "6"] + flags)
            target = HERE / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for keep in KEEP:
                shutil.copy(out / keep, target / keep)
            text = run("captioning.captioner", ["--models", str(target), "--input", str(HERE / "test.features"),
                                                "--source-root", str(HERE / "features")] + CAPTIONER)
            (HERE / (name + ".captions")).write_text(text)


if __name__ == "__main__":
    main()
