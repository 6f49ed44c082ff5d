"""The captioner CLI end to end on tiny random models: SPEC's commands, input order, batch/chunk independence,
images vs features, bad lines, output types, constraints, ensembles."""
import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

import captioning  # noqa: F401 - sets OMP_NUM_THREADS before mxnet
import mxnet as mx

from captioning import captioner
from captioning import constants as C

REPO = Path(__file__).resolve().parents[2]
WORDS = ["a", "dog", "cat", "runs", "on", "the", "grass", "red", "ball", "sits", "in", "snow", "man", "with",
         "blue", "shirt"]
FEATURE_SHAPE = (8, 4, 4)


def make_model_folder(folder: Path, seed: int = 0, feature_shape=FEATURE_SHAPE, words: Sequence[str] = WORDS,
                      cnn_config: Optional[dict] = None, decoder: str = "rnn") -> Path:
    """A random-weight tiny model folder as training writes it (config, version, vocabulary, params.best)."""
    from captioning.decoder import RecurrentDecoderConfig, TransformerDecoderConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.model import CaptionModel, ModelConfig, save_model_config
    from captioning.vocab import save_vocab
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {s: i for i, s in enumerate(C.VOCAB_SYMBOLS)}
    for w in words:
        vocab[w] = len(vocab)
    decoders = {"rnn": RecurrentDecoderConfig(num_hidden=16, state_init="zero"),
                "transformer": TransformerDecoderConfig(model_size=16, attention_heads=2, feed_forward_num_hidden=16)}
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=tuple(feature_shape), num_hidden=16),
                         vocab_size=len(vocab), decoder=decoder, num_embed=16, max_output_length=8,
                         cnn_config=cnn_config, **{decoder: decoders[decoder]})
    mx.random.seed(seed)
    model = CaptionModel(config)
    model.initialize(mx.init.Xavier(magnitude=2.5))
    # a stronger </s> bias so that random models end their captions at varied lengths
    model.output_layer.collect_params()
    for name, param in model.collect_params().items():
        if name.endswith("output_bias"):
            bias = np.random.RandomState(seed).randn(len(vocab)).astype(np.float32)
            bias[C.EOS_ID] = 1.0
            param.set_data(mx.nd.array(bias))
    model.save_parameters(str(folder / C.PARAMS_BEST_NAME))
    save_model_config(config, str(folder))
    save_vocab(vocab, str(folder / C.VOCAB_TRG_NAME))
    return folder


def make_features(root: Path, count: int, seed: int = 1, shape=FEATURE_SHAPE) -> List[str]:
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = "img%03d.jpg.npy" % i
        np.save(root / name, (rng.rand(*shape) * 4).astype(np.float32))
        names.append(name)
    return names


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("captioner")
    model = make_model_folder(base / "model")
    names = make_features(base / "feats", 23)
    listing = base / "list.features"
    listing.write_text("".join(n + "\n" for n in names))
    return base, model, listing


def run_main(argv: Sequence[str]) -> int:
    with pytest.raises(SystemExit) as info:
        captioner.main(list(argv))
    return info.value.code


def caption(setup_tuple, *extra: str, out_name: str = "out.txt") -> Tuple[int, List[str]]:
    base, model, listing = setup_tuple
    out = base / out_name
    code = run_main(["--models", str(model), "--input", str(listing), "--source-root", str(base / "feats"),
                     "--output", str(out), "--use-cpu", "--quiet", *extra])
    return code, out.read_text(encoding="utf-8").splitlines() if out.exists() else []


def test_spec_command_verbatim(setup):
    base, model, listing = setup
    proc = subprocess.run([sys.executable, "-m", "captioning.captioner", "--models", str(model), "--input",
                           str(listing), "--source-root", str(base / "feats"), "--max-output-length", "60",
                           "--batch-size", "1024", "--chunk-size", "2048", "--beam-size", "3", "--device-id", "0"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 23
    assert all(line.strip() for line in lines)
    assert set(" ".join(lines).split()) <= set(WORDS) | {C.UNK_SYMBOL}
    assert "No GPU available" in proc.stderr  # --device-id on a CPU-only build: a warning, then the CPU
    assert "Traceback" not in proc.stderr
    code, same = caption(setup, "--max-output-length", "60", "--batch-size", "1", "--beam-size", "3")
    assert code == 0 and same == lines


def test_outputs_do_not_depend_on_batch_or_chunk_size(setup):
    code, reference = caption(setup, "--beam-size", "3", "--batch-size", "1")
    assert code == 0 and len(reference) == 23
    assert len(set(reference)) > 3  # the random model gives varied captions: the comparison means something
    for batch, chunk in [(7, None), (64, None), (7, 5), (4, 1), (64, 13)]:
        extra = ["--beam-size", "3", "--batch-size", str(batch)] + (["--chunk-size", str(chunk)] if chunk else [])
        code, lines = caption(setup, *extra, out_name="out_%d_%s.txt" % (batch, chunk))
        assert code == 0
        assert lines == reference, (batch, chunk)
    code, greedy = caption(setup, "--beam-size", "1", "--batch-size", "5", out_name="greedy.txt")
    code1, greedy1 = caption(setup, "--beam-size", "1", "--batch-size", "1", out_name="greedy1.txt")
    assert code == code1 == 0 and greedy == greedy1


def test_max_output_length_default_from_model_folder(setup):
    code, lines = caption(setup, "--beam-size", "2", "--batch-size", "8")
    assert code == 0
    assert max(len(line.split()) for line in lines) <= 8  # the folder's max_output_length
    code, short = caption(setup, "--beam-size", "2", "--batch-size", "8", "--max-output-length", "2",
                          out_name="short.txt")
    assert code == 0 and max(len(line.split()) for line in short) <= 2


def test_bad_lines_give_empty_outputs_and_exit_1(setup, tmp_path, capsys):
    base, model, listing = setup
    names = listing.read_text().splitlines()
    np.save(base / "feats" / "wrong.npy", np.zeros((3, 2, 2), dtype=np.float32))
    bad = tmp_path / "bad.list"
    bad.write_text("\n".join([names[0], "", "missing.npy", "wrong.npy", "../escape.npy", names[1]]) + "\n")
    out = tmp_path / "out.txt"
    code = run_main(["--models", str(model), "--input", str(bad), "--source-root", str(base / "feats"),
                     "--output", str(out), "--use-cpu", "--beam-size", "2", "--batch-size", "3"])
    assert code == 1
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    assert lines[0] and lines[5] and lines[1:5] == ["", "", "", ""]
    errors = "\n".join(line for line in capsys.readouterr().err.splitlines() if " ERROR " in line)
    for number in (2, 3, 4, 5):
        assert "bad.list, line %d" % number in errors
    assert "missing.npy" in errors and "(3, 2, 2)" in errors
    code, good = caption(setup, "--beam-size", "2", "--batch-size", "3")
    assert lines[0] == good[0] and lines[5] == good[1]


def test_empty_input_gives_no_output(setup, tmp_path):
    base, model, _ = setup
    empty = tmp_path / "empty.list"
    empty.write_text("")
    out = tmp_path / "out.txt"
    code = run_main(["--models", str(model), "--input", str(empty), "--source-root", str(base / "feats"),
                     "--output", str(out), "--use-cpu", "--quiet"])
    assert code == 0 and out.read_text() == ""


def test_missing_model_folder_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "captioning.captioner", "--models", str(tmp_path / "nope"),
                           "--use-cpu"], cwd=REPO, capture_output=True, text=True, input="")
    assert proc.returncode == 1
    assert "no such model folder" in proc.stderr and "Traceback" not in proc.stderr


def test_json_input_constraints_and_output_types(setup, tmp_path):
    base, model, listing = setup
    names = listing.read_text().splitlines()
    code, plain = caption(setup, "--beam-size", "3")
    avoided = next(w for w in plain[1].split() + WORDS if w not in ("red", "ball"))  # a possible constraint
    records = [{"text": names[0], "id": "first"},
               {"text": names[1], "constraints": ["red ball"], "avoid": [avoided]},
               "{not json",
               {"text": names[2], "constraints": ["snow", "zebra"]}]
    source = tmp_path / "in.json"
    source.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    out = tmp_path / "out.json"
    code = run_main(["--models", str(model), "--input", str(source), "--source-root", str(base / "feats"),
                     "--output", str(out), "--use-cpu", "--quiet", "--json-input", "--output-type", "json",
                     "--beam-size", "3", "--nbest-size", "2", "--batch-size", "2"])
    assert code == 1  # the malformed line
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[2] == ""
    first, second, fourth = json.loads(lines[0]), json.loads(lines[1]), json.loads(lines[3])
    assert first["id"] == "first" and first["sentence_id"] == 1 and first["text"] == names[0]
    assert first["translation"] == plain[0]
    assert len(first["translations"]) == 2 and first["translations"][0] == first["translation"]
    assert first["scores"][0] == pytest.approx(first["score"])
    assert " red ball " in " %s " % second["translation"]
    assert avoided not in second["translation"].split()
    assert "snow" in fourth["translation"].split()  # 'zebra' is unknown: ignored with a warning


def test_score_and_alignment_output_types(setup):
    code, translations = caption(setup, "--beam-size", "3")
    code, scored = caption(setup, "--beam-size", "3", "--output-type", "translation_with_score",
                           out_name="scored.txt")
    assert code == 0
    for line, caption_line in zip(scored, translations):
        score, text = line.split("\t")
        float(score)
        assert text == caption_line
    code, aligned = caption(setup, "--beam-size", "3", "--output-type", "translation_with_alignments",
                            out_name="aligned.txt")
    assert code == 0
    for line, caption_line in zip(aligned, translations):
        text, grid, rows = line.split("\t")
        assert text == caption_line and grid == "4 4"
        rows = rows.split(" ||| ") if rows else []
        assert len(rows) == len(text.split())
        for row in rows:
            weights = [float(w) for w in row.split()]
            assert len(weights) == 16 and 0.0 < sum(weights) <= 1.0 + 1e-3


def test_ensemble_and_vocabulary_mismatch(setup, tmp_path):
    base, model, listing = setup
    second = make_model_folder(tmp_path / "m2", seed=5)
    for mode in ("linear", "log_linear"):
        code, lines = caption(setup, "--beam-size", "3", "--batch-size", "4", "--ensemble-mode", mode,
                              out_name="ens_%s.txt" % mode)
        code = run_main(["--models", str(model), str(second), "--input", str(listing), "--source-root",
                         str(base / "feats"), "--output", str(tmp_path / "e.txt"), "--use-cpu", "--quiet",
                         "--ensemble-mode", mode, "--beam-size", "3"])
        assert code == 0 and len((tmp_path / "e.txt").read_text().splitlines()) == 23
    other = make_model_folder(tmp_path / "m3", seed=1, words=WORDS[:-1] + ["zebra"])
    proc = subprocess.run([sys.executable, "-m", "captioning.captioner", "--models", str(model), str(other),
                           "--input", str(listing), "--source-root", str(base / "feats"), "--use-cpu"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "vocabulary differs" in proc.stderr and "Traceback" not in proc.stderr


def test_images_give_the_same_captions_as_their_features(tiny_cnn, image_factory, tmp_path):
    from captioning import cnn, image_io
    config = cnn.CNNConfig(model_path=tiny_cnn.prefix, epoch=0, layer=tiny_cnn.layer,
                           image_size=tuple(tiny_cnn.image_size))
    model = make_model_folder(tmp_path / "model", seed=2, feature_shape=tiny_cnn.feature_shape,
                              cnn_config=config.to_dict())
    paths = [image_factory("sub/im%d.png" % i, mode=("RGB", "L", "RGBA")[i % 3], size=(50 + i, 40), seed=i)
             for i in range(9)]
    image_root = paths[0].parent.parent
    relative = [str(p.relative_to(image_root)) for p in paths]
    (tmp_path / "images.list").write_text("".join(r + "\n" for r in relative))
    extractor = cnn.FeatureExtractor(config, mx.cpu(), batch_size=4)
    feats = tmp_path / "feats"
    feats.mkdir()
    names = []
    for r in relative:
        image = image_io.load_image(str(image_root / r), tuple(tiny_cnn.image_size[1:]))
        name = r.replace("/", "_") + ".npy"
        np.save(feats / name, extractor.extract(image[None])[0])
        names.append(name)
    (tmp_path / "feats.list").write_text("".join(n + "\n" for n in names))
    common = ["--models", str(model), "--use-cpu", "--beam-size", "3", "--batch-size", "4"]
    code = run_main(common + ["--input", str(tmp_path / "feats.list"), "--source-root", str(feats),
                              "--output", str(tmp_path / "from_features.txt")])
    assert code == 0
    proc = subprocess.run([sys.executable, "-m", "captioning.captioner", "--extract-image-features",
                           "--input", str(tmp_path / "images.list"), "--source-root", str(image_root),
                           "--num-workers", "2"] + common, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from_features = (tmp_path / "from_features.txt").read_text().splitlines()
    assert proc.stdout.splitlines() == from_features
    assert len(set(from_features)) > 1
    assert not list(image_root.rglob("*.npy"))  # nothing written beside the images


@pytest.mark.slow
def test_stdin_is_captioned_line_by_line(setup):
    """Interactive use: at --batch-size 1 each caption comes back before the next line is sent."""
    base, model, listing = setup
    names = listing.read_text().splitlines()[:3]
    code, expected = caption(setup, "--beam-size", "2")
    proc = subprocess.Popen([sys.executable, "-m", "captioning.captioner", "--models", str(model), "--source-root",
                             str(base / "feats"), "--use-cpu", "--quiet", "--beam-size", "2"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for k, name in enumerate(names):
            proc.stdin.write(name + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "no caption within 60 s of sending line %d: the captioner waits for more input" % (k + 1)
            assert proc.stdout.readline().rstrip("\n") == expected[k]
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_input_from_a_pipe_path(setup):
    """--input <(...) hands the captioner a /dev/fd/N pipe."""
    base, model, listing = setup
    code, expected = caption(setup, "--beam-size", "2")
    read, write = os.pipe()
    os.write(write, listing.read_bytes())
    os.close(write)
    try:
        code, piped = caption((base, model, "/dev/fd/%d" % read), "--beam-size", "2", out_name="piped.txt")
    finally:
        os.close(read)
    assert code == 0 and piped == expected


def test_explicit_default_image_size_is_not_overridden(tmp_path):
    """--source-image-size 3 224 224 (the default value) given explicitly wins over the model's recorded size."""
    from captioning.captioner import cnn_config_for
    from captioning.model import ModelConfig
    from captioning.encoder import ImageEncoderConfig
    from captioning.arguments import ConfigArgumentParser, add_captioner_args
    from captioning.inference import CaptionerConfig
    parser = ConfigArgumentParser()
    add_captioner_args(parser, CaptionerConfig)
    config = ModelConfig(encoder=ImageEncoderConfig(feature_shape=(8, 4, 4), num_hidden=8), vocab_size=10,
                         cnn_config={"model_path": "/cnn/x", "layer": "l_output", "epoch": 2,
                                     "image_size": [3, 64, 64]})
    recorded = cnn_config_for(parser.parse_args(["--models", "m"]), config, str(tmp_path))
    assert recorded.image_size == (3, 64, 64) and recorded.epoch == 2 and recorded.layer == "l"
    explicit = cnn_config_for(parser.parse_args(["--models", "m", "--source-image-size", "3", "224", "224"]),
                              config, str(tmp_path))
    assert explicit.image_size == (3, 224, 224)


def test_recorded_cnn_path_is_found_from_anywhere(tmp_path, monkeypatch):
    """The recorded CNN prefix is relative to the training feature folder; the captioner finds it through the
    model folder's args.yaml from any working directory."""
    from captioning.captioner import resolve_cnn_path
    feats = tmp_path / "feats"
    (feats / "cnn").mkdir(parents=True)
    (feats / "cnn" / "net-symbol.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "args.yaml").write_text("source_root: %s\n" % feats)
    monkeypatch.chdir(tmp_path)
    assert resolve_cnn_path("cnn/net", str(model)) == str(feats / "cnn" / "net")
    (model / "args.yaml").write_text("source_root: feats\n")   # relative to where training ran
    assert os.path.samefile(resolve_cnn_path("cnn/net", str(model)) + "-symbol.json",
                            feats / "cnn" / "net-symbol.json")
    (model / "args.yaml").write_text("[unclosed")                # a corrupt args.yaml is no crash
    assert resolve_cnn_path("cnn/net", str(model)) == "cnn/net"
    (model / "args.yaml").write_text("source_root: %s\n" % feats)
    (feats / "cnn" / "encoder.onnx").write_bytes(b"onnx")        # an ONNX encoder is a file, not a prefix
    assert resolve_cnn_path("cnn/encoder.onnx", str(model)) == str(feats / "cnn" / "encoder.onnx")


def test_sample_seed_and_repetition_flags(setup):
    code, first = caption(setup, "--sample", "--seed", "5", "--nbest-size", "3", "--batch-size", "4",
                          "--output-type", "json", out_name="s1.json")
    code2, again = caption(setup, "--sample", "--seed", "5", "--nbest-size", "3", "--batch-size", "4",
                           "--output-type", "json", out_name="s2.json")
    assert code == code2 == 0 and first == again
    assert all(len(json.loads(line)["translations"]) == 3 for line in first)
    code, top = caption(setup, "--sample", "2", "--temperature", "0.5", "--seed", "1", out_name="s3.txt")
    assert code == 0 and len(top) == 23
    code, lines = caption(setup, "--no-repeat-ngram-size", "1", "--no-dangling-words", out_name="r.txt")
    assert code == 0 and all(len(set(line.split())) == len(line.split()) for line in lines)
    assert run_main(["--models", "m", "--sample", "--no-dangling-words", "--use-cpu"]) == 1


def _cli(*argv: str, threads: str = "2") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=threads)
    return subprocess.run([sys.executable, "-m", "captioning.captioner", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_search_processes_give_the_same_outputs_in_input_order(setup, tmp_path):
    base, model, listing = setup
    names = listing.read_text().splitlines()
    lines = names[:7] + ["missing.npy"] + names[7:15]
    bad = tmp_path / "mixed.list"
    bad.write_text("\n".join(lines) + "\n")
    common = ["--models", str(model), "--input", str(bad), "--source-root", str(base / "feats"), "--use-cpu",
              "--beam-size", "3", "--batch-size", "2"]
    single = _cli(*common)
    multi = _cli(*common, "--search-processes", "3")
    assert single.returncode == multi.returncode == 1, multi.stderr
    assert multi.stdout == single.stdout and len(multi.stdout.splitlines()) == 16
    assert multi.stdout.splitlines()[7] == "" and len(set(multi.stdout.splitlines())) > 3
    assert "Captioning in 3 processes of 1 thread(s) each" in multi.stderr
    assert "mixed.list, line 8" in multi.stderr and "missing.npy" in multi.stderr
    assert "Processed 16 lines (1 failed)" in multi.stderr and "Traceback" not in multi.stderr


def test_search_processes_sample_reproducibly_under_a_seed(setup):
    runs = [caption(setup, "--sample", "--seed", "5", "--batch-size", "4", "--search-processes", str(n),
                    out_name="sp%d_%d.txt" % (n, k)) for n, k in [(2, 0), (2, 1), (3, 0)]]
    assert all(code == 0 for code, _ in runs)
    assert runs[0][1] == runs[1][1] == runs[2][1] and len(runs[0][1]) == 23   # batch k draws with seed + k


def test_search_processes_stop_with_one_line_when_the_models_cannot_load(tmp_path):
    proc = _cli("--models", str(tmp_path / "nope"), "--use-cpu", "--search-processes", "2", "--input", os.devnull)
    assert proc.returncode == 1
    assert "no such model folder" in proc.stderr and "Traceback" not in proc.stderr


def _die(args):
    os._exit(3)


def test_a_search_process_that_dies_is_an_error_not_a_hang():
    import argparse
    from captioning import search_processes, utils
    args = argparse.Namespace(quiet=True, loglevel="ERROR", seed=None)
    with pytest.raises(utils.CaptioningError, match=r"search process 0 ended unexpectedly \(exit code 3\)"):
        search_processes.SearchPool(1, args, _die, batch_size=2)


def test_threads_are_shared_out_between_search_processes(monkeypatch):
    from captioning.search_processes import threads_per_process
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert [threads_per_process(n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]
