"""CIDEr-D speed for self-critical rewards: `captioning.cider.CiderD` against pycocoevalcap's ``Cider``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cider.py [--shared ../shared] [--images 64] [--samples 5]
        [--repeats 20]

The task of one self-critical update: ``--images`` training images x ``--samples`` sampled captions each, every
sample scored against all 5 references of its image. Data: flickr8k-sample's training captions (753 images x 5);
the "samples" are other images' captions cut to a random length (seeded), so lengths and words are realistic.

- pycocoevalcap: ``Cider().compute_score`` on the batch, one entry per sample (document frequencies from the batch's
  references: all it can do).
- ours, same semantics: ``CiderD(batch references)`` built and scored per batch (equal to pycocoevalcap to 1e-6:
  checked here).
- ours, as training uses it: ``CiderD(all training references)`` built once (time printed separately), then
  ``score`` per batch.
Prints the median time per batch of each and the speed-ups.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(REPO / ".." / "shared"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from pycocoevalcap.cider.cider import Cider
    from captioning.cider import CiderD

    data = Path(args.shared) / "data" / "flickr8k-sample"
    corpus = [list(r) for r in zip(*[(data / ("train.captions.%d" % k)).read_text().splitlines()
                                     for k in range(5)])]
    rng = np.random.RandomState(0)
    images = rng.choice(len(corpus), size=args.images, replace=False)
    batch_images = np.repeat(images, args.samples)
    samples = []
    for _ in batch_images:
        words = corpus[rng.randint(len(corpus))][rng.randint(5)].split()
        samples.append(" ".join(words[:rng.randint(3, len(words) + 1)]))
    batch_refs = [corpus[i] for i in batch_images]

    def pycoco():
        return Cider().compute_score({k: refs for k, refs in enumerate(batch_refs)},
                                     {k: [s] for k, s in enumerate(samples)})[1]

    def ours_batch():
        return CiderD(batch_refs).score(samples, np.arange(len(samples)))

    np.testing.assert_allclose(ours_batch(), pycoco(), atol=1e-6)
    start = time.perf_counter()
    corpus_cider = CiderD(corpus)
    build = time.perf_counter() - start

    def ours_corpus():
        return corpus_cider.score(samples, batch_images)

    t_pycoco = timed(pycoco, args.repeats)
    t_batch = timed(ours_batch, args.repeats)
    t_corpus = timed(ours_corpus, args.repeats)
    print("CIDEr-D rewards: %d images x %d samples, 5 references each (median of %d)"
          % (args.images, args.samples, args.repeats))
    print("pycocoevalcap Cider, per batch:                  %8.2f ms" % (t_pycoco * 1e3))
    print("captioning CiderD(batch refs) + score, per batch: %8.2f ms  (%.1fx faster; equal to 1e-6)"
          % (t_batch * 1e3, t_pycoco / t_batch))
    print("captioning CiderD(corpus).score, per batch:      %8.2f ms  (%.1fx faster; corpus of %d images built "
          "once in %.2f s)" % (t_corpus * 1e3, t_pycoco / t_corpus, len(corpus), build))


if __name__ == "__main__":
    main()
