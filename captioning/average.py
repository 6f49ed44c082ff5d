"""CLI: average the parameters of several checkpoints (Sockeye's ``sockeye.average``).

    python -m captioning.average MODEL -n 4 --strategy best --metric perplexity --output MODEL/params.avg
    python -m captioning.average MODEL/params.00007 MODEL/params.00008 --output averaged.params

Given a model folder, the checkpoints are chosen from its ``metrics`` file (``METRIC-val`` of each checkpoint whose
``params.NNNNN`` still exists):

- ``best``: the ``-n`` checkpoints with the best values;
- ``last``: the ``-n`` checkpoints up to and including the best one;
- ``lifespan``: the checkpoints that stayed the best for the most checkpoints after them, then the best values.

Given parameter files, exactly those are averaged. Every file must hold the same parameter names and shapes.
The output is written under a temporary name and renamed when complete; ``--output MODEL/params.best`` makes the
captioner use the average (``params.best`` is a link to a checkpoint: the link is replaced, not the checkpoint).
Parameter files are read in MXNet's NDArray format, which runs no code.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import arguments, log, utils
from . import constants as C
from .model_folder import read_metrics

logger = logging.getLogger(__name__)


def select_checkpoints(points: Sequence[Tuple[int, float]], size: int, strategy: str, maximize: bool) -> List[int]:
    """The checkpoints to average among ``points`` ((checkpoint, value) in training order), by ``strategy``."""
    def better(a: float, b: float) -> bool:
        return a > b if maximize else a < b

    def rank(point: Tuple[int, float]) -> float:
        return -point[1] if maximize else point[1]

    if strategy == "best":
        return [c for c, _ in sorted(points, key=rank)[:size]]
    if strategy == "last":
        best = min(range(len(points)), key=lambda i: (rank(points[i]), i))
        return [c for c, _ in points[max(0, best + 1 - size):best + 1]]
    if strategy == "lifespan":
        lifespans, champion = {}, None
        for checkpoint, value in points:
            if champion is None or better(value, champion[1]):
                champion = (checkpoint, value)
                lifespans[checkpoint] = 0
            else:
                lifespans[champion[0]] += 1
        ordered = sorted(points, key=lambda p: (-lifespans.get(p[0], 0), rank(p)))
        return [c for c, _ in ordered[:size]]
    raise ValueError("unknown strategy %r (choose from %s)" % (strategy, ", ".join(C.AVERAGE_STRATEGIES)))


def find_checkpoints(folder: str, size: int, strategy: str, metric: str) -> List[str]:
    """The parameter files of the checkpoints chosen from ``folder``'s metrics file."""
    path = os.path.join(folder, C.METRICS_NAME)
    utils.check_condition(os.path.isfile(path), "%s: missing; is %s a model folder written by training?"
                          % (path, folder))
    key = "%s-val" % metric
    points = []
    for record in read_metrics(path):
        checkpoint = int(record["checkpoint"])
        if key in record and os.path.isfile(os.path.join(folder, C.PARAMS_NAME % checkpoint)):
            points.append((checkpoint, record[key]))
    utils.check_condition(bool(points), "%s: no checkpoint with both a %s value and its %s file"
                          % (path, key, C.PARAMS_NAME.replace("%05d", "NNNNN")))
    chosen = select_checkpoints(points, size, strategy, C.METRIC_MAXIMIZE[metric])
    values = dict(points)
    logger.info("Checkpoints by %s (%s): %s", key, strategy, ", ".join("%d (%g)" % (c, values[c]) for c in chosen))
    return [os.path.join(folder, C.PARAMS_NAME % c) for c in chosen]


def check_same_vocabulary(paths: Sequence[str]) -> None:
    """Checkpoints of model folders with different vocabularies (the same ids for other words) must not be
    averaged; parameter files outside a model folder are not checked."""
    from .vocab import load_vocab, vocab_beside
    vocabs = [(path, vocab) for path, vocab in ((path, vocab_beside(path)) for path in paths) if vocab is not None]
    for path, vocab_path in vocabs[1:]:
        utils.check_condition(load_vocab(vocab_path) == load_vocab(vocabs[0][1]),
                              "%s: its model's vocabulary %s differs from %s (of %s); checkpoints of models with "
                              "different vocabularies cannot be averaged"
                              % (path, vocab_path, vocabs[0][1], vocabs[0][0]))


def average(paths: Sequence[str]) -> Dict[str, np.ndarray]:
    """The element-wise mean of the parameter files ``paths`` (summed in float64, returned in each array's
    type); they must name the same parameters with the same shapes."""
    utils.check_condition(bool(paths), "nothing to average")
    from .model import load_parameter_arrays
    first = load_parameter_arrays(paths[0])
    sums = {name: value.astype(np.float64) for name, value in first.items()}
    for path in paths[1:]:
        arrays = load_parameter_arrays(path)
        utils.check_condition(set(arrays) == set(sums), "%s: its parameters differ from those of %s (%s)"
                              % (path, paths[0], ", ".join(sorted(set(arrays) ^ set(sums))[:5])))
        for name, value in arrays.items():
            utils.check_condition(value.shape == sums[name].shape, "%s: %s has shape %s, %s has %s"
                                  % (path, name, value.shape, paths[0], sums[name].shape))
            sums[name] += value
    return {name: (total / len(paths)).astype(first[name].dtype) for name, total in sums.items()}


def save(arrays: Dict[str, np.ndarray], path: str) -> None:
    """Write ``arrays`` in MXNet's parameter format, atomically."""
    import mxnet as mx
    with utils.atomic_path(path) as tmp:
        mx.nd.save(tmp, {name: mx.nd.array(value, dtype=value.dtype) for name, value in arrays.items()})


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = arguments.ConfigArgumentParser(
        prog="python -m captioning.average",
        description="Average the parameters of several checkpoints: chosen from a model folder's metrics, or "
                    "given as parameter files.")
    arguments.add_average_args(parser)
    args = parser.parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    if len(args.inputs) == 1 and os.path.isdir(args.inputs[0]):
        paths = find_checkpoints(args.inputs[0], args.n, args.strategy, args.metric)
    else:
        paths = list(args.inputs)
        for path in paths:
            utils.check_condition(not os.path.isdir(path), "%s: a folder; give one model folder alone, or "
                                                           "parameter files" % path)
    # --output MODEL/params.best replaces the link to the best checkpoint, not the checkpoint
    utils.check_not_an_input(args.output, "--output", [("the checkpoint", path) for path in paths],
                             replaces_links=True)
    utils.check_output_file(args.output)
    check_same_vocabulary(paths)
    save(average(paths), args.output)
    logger.info("Averaged %d checkpoints into %s", len(paths), args.output)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point."""
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
