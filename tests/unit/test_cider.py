"""CiderD equals pycocoevalcap's Cider (corpus and per image) and scores per-sample rewards against a fixed corpus."""
import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from captioning.cider import CiderD, corpus_cider

WORDS = "a the dog cat man woman runs sits on in grass red blue ball park with water".split()


def random_caption(rng, low=1, high=12) -> str:
    return " ".join(rng.choice(WORDS, size=rng.randint(low, high)))


def generated_corpus(seed=0, images=40):
    rng = np.random.RandomState(seed)
    refs = [[random_caption(rng) for _ in range(rng.randint(1, 6))] for _ in range(images)]
    hyps = [random_caption(rng, 0, 14) if i % 4 else refs[i][0] for i in range(images)]
    hyps[1] = ""                     # empty hypothesis
    hyps[2] = "zebra zebra unicorn"  # n-grams no reference has
    return hyps, refs


def pycoco(hyps, refs):
    score, scores = Cider().compute_score({i: list(r) for i, r in enumerate(refs)},
                                          {i: [h] for i, h in enumerate(hyps)})
    return score, np.asarray(scores)


def test_equals_pycocoevalcap_on_generated_captions():
    hyps, refs = generated_corpus()
    expected, expected_per_image = pycoco(hyps, refs)
    score, per_image = CiderD(refs).corpus_score(hyps)
    assert 0 < expected < 10
    assert score == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(per_image, expected_per_image, rtol=0, atol=1e-6)
    assert corpus_cider(hyps, refs) == pytest.approx(expected, abs=1e-6)
    assert per_image[1] == 0.0 and per_image[2] == 0.0
    assert per_image[4] > 1.0        # a hypothesis equal to one of its references


def test_token_ids_score_like_strings():
    hyps, refs = generated_corpus(seed=1)
    ids = {w: i for i, w in enumerate(WORDS)}
    as_ids = [[[ids[w] for w in r.split()] for r in rs] for rs in refs]
    hyp_ids = [[ids.get(w, 100 + len(w)) for w in h.split()] for h in hyps]
    np.testing.assert_allclose(CiderD(as_ids).corpus_score(hyp_ids)[1], CiderD(refs).corpus_score(hyps)[1],
                               atol=1e-12)


def pycoco_against_corpus(hyps, refs):
    """pycocoevalcap's per-image scores of one hypothesis per image, document frequencies from all of ``refs``."""
    scorer = CiderScorer(n=4, sigma=6.0)
    for h, r in zip(hyps, refs):
        scorer += (h, list(r))
    return np.asarray(scorer.compute_score()[1])


def test_samples_scored_against_a_fixed_corpus_like_pycocoevalcap():
    # per-sample rewards: K candidates per image, any subset of images, document frequencies from the whole corpus
    _, refs = generated_corpus(seed=2, images=30)
    rng = np.random.RandomState(3)
    cider = CiderD(refs)
    samples = [[random_caption(rng, 0, 12) for _ in range(30)] for _ in range(3)]
    images = np.array([5, 5, 0, 29, 7])
    for k in range(3):
        expected = pycoco_against_corpus(samples[k], refs)
        np.testing.assert_allclose(cider.score(samples[k], np.arange(30)), expected, atol=1e-6)
        np.testing.assert_allclose(cider.score([samples[k][i] for i in images], images), expected[images],
                                   atol=1e-6)
    assert cider.score([], []).shape == (0,)


@pytest.mark.shared
def test_equals_pycocoevalcap_on_flickr8k_captions(shared_dir):
    data = shared_dir / "data" / "flickr8k-sample"
    columns = [(data / ("dev.captions.%d" % k)).read_text().splitlines() for k in range(5)]
    refs = [list(r[1:]) for r in zip(*columns)]
    n = len(refs)
    # hypotheses: the held-out reference, another image's caption, and a truncated caption
    hyps = [columns[0][i] if i % 3 == 0 else columns[0][(i * 7 + 1) % n] if i % 3 == 1 else
            " ".join(columns[0][i].split()[:4]) for i in range(n)]
    expected, expected_per_image = pycoco(hyps, refs)
    score, per_image = CiderD(refs).corpus_score(hyps)
    assert score == pytest.approx(expected, abs=1e-6) and expected > 0.3
    np.testing.assert_allclose(per_image, expected_per_image, rtol=0, atol=1e-6)
    train = [list(r) for r in zip(*[(data / ("train.captions.%d" % k)).read_text().splitlines()
                                    for k in range(5)])]
    train = train[:250]
    hyps = [r[(i % 5)] for i, r in enumerate(train)]
    np.testing.assert_allclose(CiderD(train).corpus_score(hyps)[1], pycoco(hyps, train)[1], rtol=0, atol=1e-6)
