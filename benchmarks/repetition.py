"""Effect of the repetition controls on caption quality: BLEU-4 and CIDEr-D of the FLICKR-A dev photos against
their 5 references, with and without ``no_repeat_ngram_size`` and the dangling-word ban.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repetition.py --model /work/bench/quality

Captions come from `beam_search.BeamSearch` through the Python API (the captioner's flags
``--no-repeat-ngram-size N`` and ``--no-dangling-words`` set the same options). Printed per setting: BLEU-4,
CIDEr-D, words per caption, captions that hit ``--max-output-length``, captions with a repeated trigram, captions
ending on a dangling word, and captions changed from the plain search.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO / ".." / "shared" / "data" / "flickr8k-sample"
BENCH = Path("/work/bench")


def caption_all(model, vocab, store, batch_size: int, beam_size: int, max_output_length: int,
                **options) -> List[str]:
    import mxnet as mx
    from captioning.beam_search import BeamSearch
    from captioning.vocab import ids_to_tokens, reverse_vocab
    rvocab = reverse_vocab(vocab)
    search = BeamSearch([model], beam_size=beam_size, max_output_length=max_output_length, **options)
    captions = []
    for start in range(0, len(store), batch_size):
        batch = store.get_batch(list(range(start, min(start + batch_size, len(store)))))
        for result in search.search(mx.nd.array(batch)):
            captions.append(" ".join(ids_to_tokens(result.tokens, rvocab)))
    return captions


def repeated_trigram(words: Sequence[str]) -> bool:
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=BENCH / "quality")
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--features", type=Path, default=BENCH / "features-head_conv")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-output-length", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from captioning import evaluate, features, model as model_module
    from captioning.beam_search import DANGLING_WORDS
    model, vocab = model_module.load_model(str(args.model), args.checkpoint)
    names = features.read_feature_list(str(args.features / "dev.features"))
    store = features.open_feature_store(str(args.features), names, mode="memory")
    references = [[line.strip() for line in (DATA / ("dev.captions.%d" % k)).read_text().splitlines()]
                  for k in range(5)]
    references_per_image = [list(refs) for refs in zip(*references)]
    dangling_ids = [vocab[w] for w in DANGLING_WORDS if w in vocab]
    settings = [("plain", {}), ("no-repeat-ngram-size 3", {"no_repeat_ngram_size": 3}),
                ("no-dangling-words", {"banned_final_ids": dangling_ids}),
                ("both", {"no_repeat_ngram_size": 3, "banned_final_ids": dangling_ids})]
    plain: List[str] = []
    print("%d dev photos, beam %d, batch %d, max length %d, model %s" % (len(names), args.beam_size,
                                                                         args.batch_size, args.max_output_length,
                                                                         args.model))
    print("| setting | BLEU-4 | CIDEr-D | words/caption | at the limit | repeated trigram | dangling end | "
          "changed |")
    print("|---|---|---|---|---|---|---|---|")
    for name, options in settings:
        captions = caption_all(model, vocab, store, args.batch_size, args.beam_size, args.max_output_length,
                               **options)
        plain = plain or captions
        scores = evaluate.evaluate(captions, references_per_image, metrics=("coco-bleu", "cider"))
        words = [c.split() for c in captions]
        print("| %s | %.2f | %.2f | %.1f | %d | %d | %d | %d |" % (
            name, scores["BLEU-4"], scores["CIDEr-D"], sum(map(len, words)) / len(words),
            sum(len(w) >= args.max_output_length for w in words), sum(map(repeated_trigram, words)),
            sum(bool(w) and w[-1] in DANGLING_WORDS for w in words), sum(a != b for a, b in zip(plain, captions))),
            flush=True)


if __name__ == "__main__":
    main()
