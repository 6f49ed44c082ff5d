"""The "Training and captioning from Python" example of docs/architecture.md runs as written (issue 12 item 2)."""
import os
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def example_code() -> str:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("#### Training and captioning from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_architecture_example_trains_and_captions(synthetic_features, tmp_path, monkeypatch, capsys):
    code = example_code()
    assert len(code.strip().splitlines()) <= 20
    f = synthetic_features
    os.symlink(f.feature_root, tmp_path / "features")
    (tmp_path / "lists").mkdir()
    (tmp_path / "data").mkdir()
    for split in ("train", "val", "test"):
        shutil.copy(getattr(f, split + "_features"), tmp_path / "lists" / (split + ".features"))
    shutil.copy(f.train_captions, tmp_path / "data" / "train.captions")
    shutil.copy(f.val_captions, tmp_path / "data" / "val.captions")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/architecture.md", "exec"), {})
    captions = capsys.readouterr().out.splitlines()
    assert len(captions) == 3 and all(c.strip() for c in captions)
    names = set(os.listdir(tmp_path / "model"))
    assert {"config", "version", "vocab.trg.0.json", "params.00000", "params.00002", "params.best", "metrics",
            "training_state"} <= names
    # the folder is a model folder like the CLI's: the captioner's loader reads it
    from captioning.model import load_model
    model, vocab = load_model(str(tmp_path / "model"))
    assert model.config.rnn.num_hidden == 32 and len(vocab) == model.config.vocab_size
