"""Model folders written by an earlier version of the code (tests/data/model_format_2, made by its
make_fixture.py) still load and give the same captions, byte for byte."""
from pathlib import Path

import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet

from captioning import captioner

DATA = Path(__file__).resolve().parents[1] / "data" / "model_format_2"
CAPTIONER = ["--beam-size", "3", "--batch-size", "2", "--output-type", "translation_with_score", "--use-cpu",
             "--max-output-length", "10", "--quiet"]


@pytest.mark.parametrize("name", ["rnn", "transformer"])
def test_a_saved_model_folder_captions_as_when_it_was_written(name, tmp_path):
    out = tmp_path / "captions"
    with pytest.raises(SystemExit) as info:
        captioner.main(["--models", str(DATA / name), "--input", str(DATA / "test.features"),
                        "--source-root", str(DATA / "features"), "--output", str(out)] + CAPTIONER)
    assert info.value.code == 0
    assert out.read_bytes() == (DATA / (name + ".captions")).read_bytes()
