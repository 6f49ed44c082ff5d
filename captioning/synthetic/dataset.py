"""Writing the synthetic data set: images, image lists, caption files, README.txt and the CNN."""
import dataclasses
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .. import utils
from ..config import Config
from .captions import make_captions
from .network import CNN_LAYER, CNN_PREFIX_NAME, CNN_WIDTHS, write_cnn
from .scenes import Scene, draw_scene, sample_scene

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SyntheticConfig(Config):
    """What to generate."""
    train: int = 1000
    val: int = 100
    test: int = 100
    seed: int = 1
    image_size: int = 128
    captions_per_image: int = 5


@dataclasses.dataclass
class SyntheticDataset:
    """Paths of a generated data set."""
    root: str
    image_root: str
    cnn_prefix: str
    layer: str
    image_size: Tuple[int, int, int]
    splits: Dict[str, Dict[str, object]]    # split -> {"images": path, "captions": [paths], "num_images": n}


SPLITS = ("train", "val", "test")


def generate_split(rng: np.random.RandomState, count: int, image_size: int, references: int
                   ) -> List[Tuple[Scene, Image.Image, List[str]]]:
    items = []
    for _ in range(count):
        scene = sample_scene(rng, image_size)
        image = draw_scene(scene, image_size, rng)
        items.append((scene, image, make_captions(scene, rng, references)))
    return items


README_TITLE = "Synthetic captioning data set"


def check_out_dir(out_dir: str) -> None:
    """``out_dir`` must be new, empty or a data set this module wrote (its README.txt says so): the files of any
    other folder are kept, not replaced by the data set's."""
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if not names:
        return
    readme = os.path.join(out_dir, "README.txt")
    try:
        with open(readme, encoding="utf-8") as f:
            ours = f.read(len(README_TITLE)) == README_TITLE
    except (OSError, UnicodeDecodeError):
        ours = False
    utils.check_condition(ours, "%s: the folder holds files that are not a synthetic data set (%s%s); they are "
                                "kept: choose a new or empty folder" % (out_dir, ", ".join(names[:5]),
                                                                        " ..." if len(names) > 5 else ""))


def generate(out_dir: str, config: SyntheticConfig) -> SyntheticDataset:
    """Write the data set (images, list and caption files, README.txt, CNN) into ``out_dir``."""
    utils.check_condition(not os.path.exists(out_dir) or os.path.isdir(out_dir),
                          "%s: exists and is not a folder; give a folder for the data set" % out_dir)
    utils.check_condition(config.image_size >= 16, "--image-size must be at least 16, got %d" % config.image_size)
    utils.check_condition(config.captions_per_image >= 1, "--captions-per-image must be at least 1")
    check_out_dir(out_dir)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    # written first: a run interrupted later leaves a folder recognisably ours, which the next run may fill
    utils.atomic_write_text(os.path.join(out_dir, "README.txt"), _readme(config))
    splits: Dict[str, Dict[str, object]] = {}
    k = config.captions_per_image
    for split_id, split in enumerate(SPLITS):
        count = getattr(config, split)
        rng = np.random.RandomState([config.seed, split_id])
        items = generate_split(rng, count, config.image_size, k)
        names = ["images/%s_%05d.png" % (split, i) for i in range(count)]
        for name, (_, image, _) in zip(names, items):
            with utils.atomic_path(os.path.join(out_dir, name)) as tmp:
                image.save(tmp, format="PNG", compress_level=1)
        images_path = os.path.join(out_dir, split + ".images")
        if split == "train":
            # one line per (image, caption): every reference is a training pair
            utils.atomic_write_text(images_path, "".join(name + "\n" for name in names for _ in range(k)))
            captions = [os.path.join(out_dir, "train.captions")]
            utils.atomic_write_text(captions[0], "".join(c + "\n" for _, _, caps in items for c in caps))
        else:
            utils.atomic_write_text(images_path, "".join(name + "\n" for name in names))
            captions = [os.path.join(out_dir, split + ".captions" + ("" if r == 0 else ".%d" % r)) for r in range(k)]
            for r, path in enumerate(captions):
                utils.atomic_write_text(path, "".join(caps[r] + "\n" for _, _, caps in items))
        splits[split] = {"images": images_path, "captions": captions, "num_images": count}
    prefix = write_cnn(os.path.join(out_dir, "cnn"), config.image_size, config.seed)
    logger.info("Wrote %d/%d/%d train/val/test scenes (%d captions each) to %s", config.train, config.val,
                config.test, k, out_dir)
    return SyntheticDataset(root=out_dir, image_root=out_dir, cnn_prefix=prefix, layer=CNN_LAYER,
                            image_size=(3, config.image_size, config.image_size), splits=splits)


def _readme(config: SyntheticConfig) -> str:
    k = config.captions_per_image
    grid = config.image_size // 16
    return README_TITLE + """ (captioning.synthetic, seed %(seed)d)
==================================================================
Drawn scenes of 1-3 simple shapes with %(k)d reference captions per image (lowercase, whitespace-tokenised).

images/{train,val,test}_NNNNN.png   %(size)dx%(size)d RGB images
train.images / train.captions      ONE LINE PER (image, caption) PAIR: each image line is repeated %(k)d times,
                                   once per reference (%(train)d images, %(pairs)d lines)
val.images, test.images            one line per image (%(val)d, %(test)d images)
val.captions, test.captions        reference 0 of each image; val.captions.1 .. val.captions.%(last)d: the others
cnn/%(prefix)s-symbol.json        a small CNN in MXNet model-gallery form (raw 0..255 RGB input, normalised
cnn/%(prefix)s-0000.params        inside the graph). Feature layer: %(layer)s -> (%(channels)d, %(grid)d, %(grid)d)
                                   at --source-image-size 3 %(size)d %(size)d.

Extract features (paths in the lists are relative to this folder):
  python -m captioning.extract_features --image-root . --input train.images --output-root features \\
      --output train.features --source-image-size 3 %(size)d %(size)d \\
      --image-encoder-model-path cnn/%(prefix)s --image-encoder-layer %(layer)s
""" % dict(seed=config.seed, k=k, size=config.image_size, train=config.train, pairs=config.train * k,
           val=config.val, test=config.test, last=k - 1, prefix=CNN_PREFIX_NAME, layer=CNN_LAYER,
           channels=CNN_WIDTHS[-1], grid=grid)
