"""``python -m captioning.synthetic``: write the synthetic data set, or pretrain its CNN (``--train-cnn``)."""
from typing import Optional, Sequence

from .. import arguments, log, utils
from .dataset import SyntheticConfig, generate
from .network import BUNDLED_PARAMS, CNN_PREFIX_NAME
from .pretraining import train_cnn


def build_parser() -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.synthetic",
                                            description="Generate the synthetic captioning data set (drawn "
                                                        "scenes, several captions each, and a small CNN).")
    parser.add_argument("out_dir", nargs="?", default=None, help="Folder to write the data set into.")
    parser.add_argument("--train", type=arguments.int_greater_or_equal(0), default=1000, help="Training images.")
    parser.add_argument("--val", type=arguments.int_greater_or_equal(0), default=100, help="Validation images.")
    parser.add_argument("--test", type=arguments.int_greater_or_equal(0), default=100, help="Test images.")
    parser.add_argument("--seed", type=int, default=1, help="Random seed: the same seed gives the same data set.")
    parser.add_argument("--image-size", type=arguments.int_greater_or_equal(16), default=128,
                        help="Side of the square images in pixels (the bundled CNN was trained at 128).")
    parser.add_argument("--captions-per-image", type=arguments.int_greater_or_equal(1), default=5,
                        help="Reference captions per image.")
    group = parser.add_argument_group("Pretraining the bundled CNN")
    group.add_argument("--train-cnn", action="store_true", default=False,
                       help="Instead of writing a data set, pretrain the synthetic CNN on attribute labels and save "
                            "its weights (and symbol) to --cnn-output.")
    group.add_argument("--train-cnn-steps", type=arguments.int_greater_or_equal(1), default=2000,
                       help="Updates (batches of 32 scenes) of --train-cnn.")
    group.add_argument("--train-cnn-seconds", type=arguments.float_greater_or_equal(1.0), default=600.0,
                       help="Wall-clock cap of --train-cnn (stops early).")
    group.add_argument("--cnn-output", type=str, default=None,
                       help="Where --train-cnn writes the weights (PREFIX-0000.params; PREFIX-symbol.json beside it). "
                            "Default: the package's bundled weights, captioning/data/%s-0000.params." % CNN_PREFIX_NAME)
    arguments.add_logging_args(parser)
    return parser


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    if args.train_cnn:
        train_cnn(args.cnn_output or BUNDLED_PARAMS, steps=args.train_cnn_steps, seconds=args.train_cnn_seconds,
                  seed=args.seed)
        return
    if args.out_dir is None:
        parser.error("give OUT_DIR (or --train-cnn)")
    generate(args.out_dir, SyntheticConfig(train=args.train, val=args.val, test=args.test, seed=args.seed,
                                           image_size=args.image_size, captions_per_image=args.captions_per_image))


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)
