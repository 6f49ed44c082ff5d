"""captioning.average: which checkpoints each strategy chooses, and the averaged parameters a model folder loads."""
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from captioning import average
from captioning import constants as C
from captioning.model import load_model

from .test_captioner import make_model_folder

# (checkpoint, perplexity-val) in training order: best 3 (9.0), then 5 (9.5), 1 (10.0)
PERPLEXITY = [(1, 10.0), (2, 12.0), (3, 9.0), (4, 11.0), (5, 9.5), (6, 13.0)]


@pytest.mark.parametrize("strategy, size, maximize, expected", [
    ("best", 2, False, [3, 5]),
    ("best", 10, False, [3, 5, 1, 4, 2, 6]),
    ("best", 2, True, [6, 2]),
    ("last", 2, False, [2, 3]),          # the two up to and including the best
    ("last", 5, False, [1, 2, 3]),
    ("last", 2, True, [5, 6]),
    # 1 is best for checkpoints 2 (lifespan 1), then 3 for 4, 5 and 6 (lifespan 3); the rest by value
    ("lifespan", 3, False, [3, 1, 5]),
])
def test_strategies_choose_the_checkpoints_sockeye_does(strategy, size, maximize, expected):
    assert average.select_checkpoints(PERPLEXITY, size, strategy, maximize) == expected


def _folder_with_checkpoints(tmp_path):
    """A model folder with checkpoints 1-3 (different random parameters), metrics, and params.best linked to 2."""
    folder = make_model_folder(tmp_path / "model", seed=0)
    for k in (1, 2, 3):
        source = make_model_folder(tmp_path / ("seed%d" % k), seed=k)
        shutil.copy(source / C.PARAMS_BEST_NAME, folder / (C.PARAMS_NAME % k))
    os.remove(folder / C.PARAMS_BEST_NAME)
    os.symlink(C.PARAMS_NAME % 2, folder / C.PARAMS_BEST_NAME)
    (folder / C.METRICS_NAME).write_text("1\tperplexity-val=20.0\tcider-val=30.0\n"
                                         "2\tperplexity-val=18.0\tcider-val=nan\n"
                                         "3\tperplexity-val=19.0\tcider-val=35.0\n")
    return folder


def test_a_folder_averages_the_chosen_checkpoints_into_params_best(tmp_path):
    folder = _folder_with_checkpoints(tmp_path)
    loaded = {k: mx.nd.load(str(folder / (C.PARAMS_NAME % k))) for k in (1, 2, 3)}
    checkpoint_2 = (folder / (C.PARAMS_NAME % 2)).read_bytes()
    with pytest.raises(SystemExit) as done:
        average.main([str(folder), "-n", "2", "--metric", "cider", "--output", str(folder / C.PARAMS_BEST_NAME),
                      "--quiet"])
    assert done.value.code == 0
    # checkpoint 2 has no cider-val: the two best by cider are 3 and 1; the link is replaced, not its target
    assert not os.path.islink(folder / C.PARAMS_BEST_NAME)
    assert (folder / (C.PARAMS_NAME % 2)).read_bytes() == checkpoint_2
    averaged = mx.nd.load(str(folder / C.PARAMS_BEST_NAME))
    assert set(averaged) == set(loaded[1])
    for name, value in averaged.items():
        expected = (loaded[1][name].asnumpy().astype(np.float64) + loaded[3][name].asnumpy()) / 2
        np.testing.assert_allclose(value.asnumpy(), expected, rtol=1e-6, atol=1e-7)
        assert value.dtype == np.float32
    assert not np.allclose(averaged[name].asnumpy(), loaded[1][name].asnumpy())
    model, _ = load_model(str(folder))      # the captioner's default file is now the average
    np.testing.assert_array_equal(model.output_layer.bias.data().asnumpy(), averaged["output_layer.bias"].asnumpy())


def test_files_given_are_averaged_as_given(tmp_path):
    folder = _folder_with_checkpoints(tmp_path)
    one = str(folder / (C.PARAMS_NAME % 1))
    with pytest.raises(SystemExit) as done:
        average.main([one, one, one, "--output", str(tmp_path / "same.params"), "--quiet"])
    assert done.value.code == 0
    original, averaged = mx.nd.load(one), mx.nd.load(str(tmp_path / "same.params"))
    for name in original:   # the mean of copies of one file is that file, bit for bit
        np.testing.assert_array_equal(averaged[name].asnumpy(), original[name].asnumpy())
    # by perplexity (the default), best strategy, n=4 > 3 checkpoints: all three
    assert average.find_checkpoints(str(folder), 4, "best", "perplexity") == \
        [str(folder / (C.PARAMS_NAME % k)) for k in (2, 3, 1)]


def test_checkpoints_of_models_with_other_vocabularies_are_refused(tmp_path):
    """Same shapes, other word ids: averaging would mix the rows of different words."""
    from .test_captioner import WORDS
    first = make_model_folder(tmp_path / "first")
    second = make_model_folder(tmp_path / "second", words=list(reversed(WORDS)))
    with pytest.raises(SystemExit) as info:
        average.main([str(first / C.PARAMS_BEST_NAME), str(second / C.PARAMS_BEST_NAME), "--output",
                      str(tmp_path / "avg.params"), "--quiet"])
    assert info.value.code == 1 and not (tmp_path / "avg.params").exists()
    same = make_model_folder(tmp_path / "same", seed=5)   # same vocabulary, other weights: averaged
    with pytest.raises(SystemExit) as info:
        average.main([str(first / C.PARAMS_BEST_NAME), str(same / C.PARAMS_BEST_NAME), "--output",
                      str(tmp_path / "avg.params"), "--quiet"])
    assert info.value.code == 0 and (tmp_path / "avg.params").is_file()


def test_output_params_best_replaces_the_link_not_the_checkpoint(tmp_path):
    """--output MODEL/params.best (a link to one of the averaged checkpoints) replaces the link; every checkpoint
    stays byte-identical."""
    folder = make_model_folder(tmp_path / "model")
    for number in (1, 2):
        shutil.copy(folder / C.PARAMS_BEST_NAME, folder / (C.PARAMS_NAME % number))
    os.remove(folder / C.PARAMS_BEST_NAME)
    os.symlink(C.PARAMS_NAME % 2, folder / C.PARAMS_BEST_NAME)
    before = {n: (folder / (C.PARAMS_NAME % n)).read_bytes() for n in (1, 2)}
    with pytest.raises(SystemExit) as info:
        average.main([str(folder / (C.PARAMS_NAME % 1)), str(folder / (C.PARAMS_NAME % 2)), "--output",
                      str(folder / C.PARAMS_BEST_NAME), "--quiet"])
    assert info.value.code == 0
    assert not os.path.islink(folder / C.PARAMS_BEST_NAME)
    assert {n: (folder / (C.PARAMS_NAME % n)).read_bytes() for n in (1, 2)} == before
