"""The bundled demo/test data set: drawn scenes of simple shapes with several human-like reference captions each,
and a small CNN in MXNet model-gallery form to extract their features.

    python -m captioning.synthetic OUT_DIR [--train N --val N --test N --seed S --image-size PX]

Scenes hold 1-3 objects (shape, colour, size, position on a 3x3 grid) on a coloured background; captions are
lowercase and whitespace-tokenised, phrased in varied ways ("a big red circle on the left", "there is a large red
circle to the left of a blue square", "two blue squares on a white background"). See docs/synthetic.md for the
layout. ``--train-cnn`` retrains the bundled CNN weights (``captioning/data/``) on the scenes' attribute labels.

Modules, one per concept: `scenes` (sampling and drawing), `captions` (the grammar), `network` (the CNN and its
bundled weights), `pretraining` (its training), `dataset` (the data set on disk), `cli` (the command line).
"""
from .captions import (BACKGROUND_WORDS, INVERSE, NUMBERS, POSITION_WORDS, RELATION_WORDS, SHAPE_WORDS, SIZE_WORDS,
                       caption_candidates, make_captions)
from .cli import build_parser, main
from .dataset import SPLITS, SyntheticConfig, SyntheticDataset, check_out_dir, generate, generate_split
from .network import (BUNDLED_PARAMS, BUNDLED_SYMBOL, CNN_LAYER, CNN_NUM_CLASSES, CNN_PREFIX_NAME, CNN_WIDTHS,
                      DATA_DIR, build_symbol, init_params, save_checkpoint, write_cnn)
from .pretraining import GRID, attribute_labels, train_cnn
from .scenes import (BACKGROUNDS, COLOURS, POSITION_NAMES, SHAPES, SIZE_RADIUS, SIZES, Scene, SceneObject, draw_scene,
                     sample_scene)

__all__ = ["BACKGROUND_WORDS", "BACKGROUNDS", "BUNDLED_PARAMS", "BUNDLED_SYMBOL", "CNN_LAYER", "CNN_NUM_CLASSES",
           "CNN_PREFIX_NAME", "CNN_WIDTHS", "COLOURS", "DATA_DIR", "GRID", "INVERSE", "NUMBERS", "POSITION_NAMES",
           "POSITION_WORDS", "RELATION_WORDS", "SHAPES", "SHAPE_WORDS", "SIZES", "SIZE_RADIUS", "SIZE_WORDS", "SPLITS",
           "Scene", "SceneObject", "SyntheticConfig", "SyntheticDataset", "attribute_labels", "build_parser",
           "build_symbol", "caption_candidates", "check_out_dir", "draw_scene", "generate", "generate_split",
           "init_params", "main", "make_captions", "sample_scene", "save_checkpoint", "train_cnn", "write_cnn"]
