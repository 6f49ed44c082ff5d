"""Training must learn: a small RNN decoder reaches a test BLEU-4 floor on the synthetic set; every decoder and
attention type trains a few updates and lowers the validation perplexity."""
import collections
from pathlib import Path

import pytest

from captioning import train

# measured 33.3 (5 references, beam 3) after 400 updates of the configuration below (the bundled synthetic CNN);
# the floor leaves a margin for other seeds and thread counts. A blind baseline (the most frequent training caption
# for every image) scores about 20.
BLEU_FLOOR = 27.0


def _args(f, output, *extra):
    return ["--source-root", f.feature_root, "--source", f.train_features, "--target", f.train_captions,
            "--validation-source", f.val_features, "--validation-target", f.val_captions, "--output", str(output),
            "--use-cpu", "--seed", "5", "--decode-and-evaluate", "0", "--quiet"] + list(extra)


def _metrics(folder):
    rows = []
    for line in (Path(folder) / "metrics").read_text().splitlines():
        _, *pairs = line.split("\t")
        rows.append({k: float(v) for k, v in (p.split("=") for p in pairs)})
    return rows


def _test_bleu(f, folder):
    import mxnet as mx
    import sacrebleu
    from captioning import checkpoint_decoder, features, model as model_module
    names = [n.strip() for n in Path(f.test_features).read_text().splitlines()]
    references = [Path(r).read_text().splitlines() for r in f.test_references]
    store = features.open_feature_store(f.feature_root, names, mode="memory", list_path=f.test_features)
    model, vocab = model_module.load_model(str(folder), None, mx.cpu())
    decoder = checkpoint_decoder.CheckpointDecoder(store, references[0], sample_size=-1, beam_size=3,
                                                   batch_size=50, max_output_length=40, ctx=mx.cpu())
    hypotheses = decoder.decode(model, vocab)
    blind = collections.Counter(Path(f.train_captions).read_text().splitlines()).most_common(1)[0][0]
    baseline = sacrebleu.corpus_bleu([blind] * len(names), references, tokenize="none").score
    return sacrebleu.corpus_bleu(hypotheses, references, tokenize="none").score, baseline


@pytest.mark.slow
def test_rnn_decoder_learns_to_caption(synthetic_features, tmp_path):
    out = tmp_path / "model"
    train._main(_args(synthetic_features, out, "--rnn-num-hidden", "64", "--num-embed", "32",
                      "--image-encoder-num-hidden", "64", "--batch-size", "32", "--checkpoint-interval", "50",
                      "--max-updates", "400", "--initial-learning-rate", "0.003", "--no-rnn-input-feeding",
                      "--rnn-decoder-hidden-dropout", "0.1"))
    rows = _metrics(out)
    assert rows[-1]["perplexity-val"] < 0.3 * rows[0]["perplexity-val"]
    bleu, baseline = _test_bleu(synthetic_features, out)
    print("test BLEU-4: %.2f (blind baseline %.2f)" % (bleu, baseline))
    assert bleu >= BLEU_FLOOR and bleu > baseline + 5


TINY = ["--num-embed", "16", "--image-encoder-num-hidden", "16", "--batch-size", "16", "--checkpoint-interval", "8",
        "--max-updates", "16", "--initial-learning-rate", "0.005", "--max-num-checkpoint-not-improved", "-1"]


@pytest.mark.parametrize("variant", [
    ["--rnn-attention-type", "mlp"], ["--rnn-attention-type", "dot"], ["--rnn-attention-type", "bilinear"],
    ["--rnn-attention-type", "mhdot", "--rnn-attention-mhdot-heads", "2"], ["--rnn-attention-type", "location"],
    ["--rnn-attention-type", "coverage"],
    ["--decoder", "transformer", "--transformer-model-size", "16", "--transformer-attention-heads", "2",
     "--transformer-feed-forward-num-hidden", "32"],
    ["--decoder", "cnn", "--cnn-num-hidden", "16"],
], ids=["mlp", "dot", "bilinear", "mhdot", "location", "coverage", "transformer", "cnn"])
def test_every_decoder_lowers_the_loss(synthetic_features, tmp_path, variant):
    out = tmp_path / "model"
    train._main(_args(synthetic_features, out, "--rnn-num-hidden", "16", *TINY, *variant))
    rows = _metrics(out)
    assert len(rows) == 2
    assert rows[1]["perplexity-val"] < rows[0]["perplexity-val"] < 100
