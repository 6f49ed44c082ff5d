"""Shared fixtures for the whole suite.

- ``shared_dir``: ``<repo>/../shared`` (real data and models); skips the test where it is absent.
- ``synthetic_data``: a small synthetic data set (300 train / 50 val / 50 test images, 5 captions each) generated
  with ``captioning.synthetic``, with its CNN. Session-scoped: treat it as READ-ONLY (copy what you modify).
- ``synthetic_features``: the train/val/test features of ``synthetic_data`` extracted with its CNN into one feature
  folder, plus every path a training / captioning test needs (see `SyntheticFeatures`). Read-only too.
- ``tiny_cnn``: a tiny random-weight CNN checkpoint in model-gallery form (see `TinyCNN`).
- ``image_factory``: writes small test images of any PIL mode.
"""
import dataclasses
import sys
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SYNTHETIC_SIZES = {"train": 300, "val": 50, "test": 50}
SYNTHETIC_REFERENCES = 5
SYNTHETIC_IMAGE_SIZE = 128
SYNTHETIC_SEED = 7


@dataclasses.dataclass(frozen=True)
class SyntheticFeatures:
    """Paths (all str) of the session's synthetic data set and its extracted features.

    train_images/train_captions: one line per (image, caption) pair (each image repeated 5 times);
    train_features: the matching feature list (names relative to ``feature_root``).
    val_*/test_*: one line per image; ``*_captions`` is reference 0, ``*_references`` all 5 reference files.
    """
    root: str                      # the data set folder (= image_root)
    image_root: str                # image list paths are relative to it
    feature_root: str              # --source-root: feature files, sidecar, cnn/ copy
    train_images: str
    train_features: str
    train_captions: str
    val_images: str
    val_features: str
    val_captions: str
    val_references: Tuple[str, ...]
    test_images: str
    test_features: str
    test_captions: str
    test_references: Tuple[str, ...]
    cnn_prefix: str                # --image-encoder-model-path of the original CNN (in the data set folder)
    layer: str                     # --image-encoder-layer
    image_size: Tuple[int, int, int]       # --source-image-size
    feature_shape: Tuple[int, int, int]    # (C, H, W) of every feature
    num_references: int

    def split(self, name: str) -> Tuple[str, str, str]:
        """(images, features, captions) paths of 'train', 'val' or 'test'."""
        return getattr(self, name + "_images"), getattr(self, name + "_features"), getattr(self, name + "_captions")


@dataclasses.dataclass(frozen=True)
class TinyCNN:
    """A tiny random-weight CNN: ``prefix``-symbol.json + ``prefix``-0000.params; at ``image_size`` the layer
    ``layer`` gives ``feature_shape``. Layer names follow MXNet's resnet gallery (conv0, stageS_unitU_conv1/2, bn1,
    relu1, pool1, fc1, softmax)."""
    prefix: str
    epoch: int
    layer: str
    image_size: Tuple[int, int, int]
    feature_shape: Tuple[int, int, int]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (the real data and models); skips where it is absent."""
    path = (REPO_ROOT / ".." / "shared").resolve()
    if not path.is_dir():
        pytest.skip("../shared is absent (real data and models): skipped")
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory):
    """A `captioning.synthetic.SyntheticDataset` (300/50/50 images, 5 captions each, 128x128, with its CNN)."""
    from captioning import synthetic
    out = tmp_path_factory.mktemp("synthetic")
    config = synthetic.SyntheticConfig(train=SYNTHETIC_SIZES["train"], val=SYNTHETIC_SIZES["val"],
                                       test=SYNTHETIC_SIZES["test"], seed=SYNTHETIC_SEED,
                                       image_size=SYNTHETIC_IMAGE_SIZE, captions_per_image=SYNTHETIC_REFERENCES)
    return synthetic.generate(str(out), config)


@pytest.fixture(scope="session")
def synthetic_features(synthetic_data, tmp_path_factory: pytest.TempPathFactory) -> SyntheticFeatures:
    """Features of the synthetic train/val/test images (one feature folder), and all their paths."""
    import mxnet as mx
    from captioning import cnn, extract_features
    feature_root = tmp_path_factory.mktemp("synthetic_features")
    lists = feature_root / "lists"
    lists.mkdir()
    config = cnn.CNNConfig(model_path=synthetic_data.cnn_prefix, layer=synthetic_data.layer, epoch=0,
                           image_size=tuple(synthetic_data.image_size))
    shape = None
    feature_lists = {}
    for split in ("train", "val", "test"):
        output = str(lists / (split + ".features"))
        result = extract_features.extract(extract_features.ExtractionConfig(
            image_root=synthetic_data.image_root, input=synthetic_data.splits[split]["images"],
            output_root=str(feature_root / "features"), output=output, cnn=config, batch_size=64, num_workers=0,
            progress=False), mx.cpu())
        shape = result.features_shape
        feature_lists[split] = output
    splits = synthetic_data.splits
    return SyntheticFeatures(
        root=synthetic_data.root, image_root=synthetic_data.image_root, feature_root=str(feature_root / "features"),
        train_images=splits["train"]["images"], train_features=feature_lists["train"],
        train_captions=splits["train"]["captions"][0],
        val_images=splits["val"]["images"], val_features=feature_lists["val"],
        val_captions=splits["val"]["captions"][0],
        val_references=tuple(splits["val"]["captions"]),
        test_images=splits["test"]["images"], test_features=feature_lists["test"],
        test_captions=splits["test"]["captions"][0], test_references=tuple(splits["test"]["captions"]),
        cnn_prefix=synthetic_data.cnn_prefix, layer=synthetic_data.layer, image_size=tuple(synthetic_data.image_size),
        feature_shape=tuple(shape), num_references=SYNTHETIC_REFERENCES)


@pytest.fixture(scope="session")
def tiny_cnn(tmp_path_factory: pytest.TempPathFactory) -> TinyCNN:
    """A tiny random-weight CNN checkpoint (widths 4/4/8/8): 3x64x64 input -> stage4_unit2_conv2 (8, 4, 4)."""
    from captioning import synthetic
    folder = tmp_path_factory.mktemp("tiny_cnn")
    prefix = str(folder / "tiny-cnn")
    symbol = synthetic.build_symbol(widths=(4, 4, 8, 8), num_classes=5)
    args, auxs = synthetic.init_params(symbol, seed=3, image_size=64)
    synthetic.save_checkpoint(prefix, symbol, args, auxs, epoch=0)
    return TinyCNN(prefix=prefix, epoch=0, layer="stage4_unit2_conv2", image_size=(3, 64, 64), feature_shape=(8, 4, 4))


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    """``image_factory(name, mode="RGB", size=(W, H), seed=0, fmt=None) -> Path``: a random image of PIL ``mode``
    written under ``tmp_path/images`` (format from the extension unless ``fmt``)."""
    from PIL import Image

    def make(name: str, mode: str = "RGB", size: Tuple[int, int] = (40, 30), seed: int = 0, fmt: str = None) -> Path:
        rng = np.random.RandomState(seed)
        width, height = size
        if mode in ("I;16",):
            image = Image.fromarray(rng.randint(0, 65536, size=(height, width)).astype(np.uint16))
        elif mode == "RGBA":
            image = Image.fromarray(rng.randint(0, 256, size=(height, width, 4)).astype(np.uint8))
        else:
            image = Image.fromarray(rng.randint(0, 256, size=(height, width, 3)).astype(np.uint8), mode="RGB")
            if mode != "RGB":
                image = image.convert(mode)
        path = tmp_path / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format=fmt)
        return path

    return make

