import itertools

import numpy as np
import pytest

from forvalue.metrics import auc_recall, auc_recall_from_pseudo, detection_rate, roc_auc


def brute_force_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    total = 0.0
    for p, n in itertools.product(pos, neg):
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


# ----------------------------------------------------------------- roc_auc


def test_roc_auc_perfect_and_reversed():
    labels = [1, 1, 0, 0]
    assert roc_auc([4, 3, 2, 1], labels) == 1.0
    assert roc_auc([1, 2, 3, 4], labels) == 0.0


def test_roc_auc_hand_computed_ties():
    # pairs (pos, neg): (1,1)=1/2, (1,0)=1, twice -> 3/4
    assert roc_auc([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.75)
    # (3,2)=1 (3,1)=1 (2,2)=1/2 (2,1)=1 -> 3.5/4
    assert roc_auc([3, 2, 2, 1], [1, 1, 0, 0]) == pytest.approx(0.875)
    # all tied -> 1/2
    assert roc_auc([5, 5, 5], [1, 0, 1]) == pytest.approx(0.5)


def test_roc_auc_matches_brute_force_on_random_data_with_ties():
    rng = np.random.default_rng(123)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 6, size=n).astype(float)  # many ties
        labels = rng.integers(0, 2, size=n)
        if labels.all() or not labels.any():
            labels[0] = 1 - labels[0]
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_roc_auc_matches_scipy_mannwhitneyu():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(size=200), 1)  # rounding creates ties
    labels = rng.integers(0, 2, size=200)
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / ((labels == 1).sum() * (labels == 0).sum())
    assert roc_auc(scores, labels) == pytest.approx(expected)


def test_roc_auc_handles_infinities_as_equal_values():
    assert roc_auc([np.inf, np.inf, 0.0], [1, 0, 0]) == pytest.approx(0.75)


def test_roc_auc_errors():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 2, 3], [1, 1, 1])
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="length"):
        roc_auc([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([1, 2, 3], [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([1, np.nan, 3], [0, 1, 0])


# ----------------------------------------------------------------- auc_recall


def test_auc_recall_perfect_ranking():
    train = np.array([0, 0, 1, 1, 2, 2])
    val = np.array([0, 1, 2])
    scores = (val[:, None] == train[None, :]).astype(float) + 0.01 * np.arange(6)
    res = auc_recall(scores, train, val)
    assert res["auc_mean"] == 1.0 and res["recall_mean"] == 1.0
    assert res["auc_std"] == 0.0 and res["recall_std"] == 0.0
    np.testing.assert_array_equal(res["auc"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(res["recall"], [1.0, 1.0, 1.0])


def test_auc_recall_reversed_ranking():
    train = np.array([0, 0, 1, 1, 2, 2])
    val = np.array([0, 1, 2])
    scores = -(val[:, None] == train[None, :]).astype(float)
    res = auc_recall(scores, train, val)
    assert res["auc_mean"] == 0.0
    assert res["recall_mean"] == 0.0


def test_auc_recall_hand_computed_with_ties_and_population_std():
    train = np.array([0, 0, 1, 1])
    val = np.array([0, 1])
    scores = np.array(
        [
            [1.0, 1.0, 1.0, 0.0],  # positives {0,1}: AUC 3/4, top-2 {0,1} -> recall 1
            [1.0, 1.0, 1.0, 0.0],  # positives {2,3}: AUC (1/2+0+1/2+0)/4 = 1/4, top-2 {0,1} -> 0
        ]
    )
    res = auc_recall(scores, train, val)
    np.testing.assert_allclose(res["auc"], [0.75, 0.25])
    np.testing.assert_allclose(res["recall"], [1.0, 0.0])
    assert res["auc_mean"] == pytest.approx(0.5)
    assert res["auc_std"] == pytest.approx(0.25)  # population std
    assert res["recall_mean"] == pytest.approx(0.5)
    assert res["recall_std"] == pytest.approx(0.5)


def test_recall_ties_broken_by_index_order():
    pseudo = np.array([[0, 1, 1, 0]])
    res = auc_recall_from_pseudo(np.array([[1.0, 1.0, 1.0, 0.0]]), pseudo)
    assert res["auc"][0] == pytest.approx(0.75)
    assert res["recall"][0] == pytest.approx(0.5)  # top-2 = indices 0, 1


def test_auc_recall_partial_recall():
    train = np.array([0, 0, 0, 1, 1, 1])
    val = np.array([0])
    scores = np.array([[0.9, 0.2, 0.8, 0.7, 0.1, 0.3]])
    res = auc_recall(scores, train, val)
    # top-3: 0.9 (pos), 0.8 (pos), 0.7 (neg)
    assert res["recall"][0] == pytest.approx(2 / 3)
    assert res["auc"][0] == pytest.approx(brute_force_auc(scores[0], train == 0))


def test_auc_recall_calls_pseudo_variant_consistently():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 4, size=50)
    val = np.array([0, 1, 2, 3, 1])
    scores = rng.normal(size=(5, 50))
    a = auc_recall(scores, train, val)
    b = auc_recall_from_pseudo(scores, (val[:, None] == train[None, :]).astype(int))
    np.testing.assert_allclose(a["auc"], b["auc"])
    np.testing.assert_allclose(a["recall"], b["recall"])
    for i in range(5):
        assert a["auc"][i] == pytest.approx(brute_force_auc(scores[i], train == val[i]))


def test_auc_recall_from_pseudo_mislabeled_style():
    # pseudo = same label and clean; dirty sample 1 has the right label but low value
    labels = np.array([0, 0, 1, 1])
    clean = np.array([True, False, True, True])
    val = np.array([0])
    pseudo = (labels[None, :] == val[:, None]) & clean[None, :]
    scores = np.array([[0.9, 0.1, 0.5, 0.4]])
    res = auc_recall_from_pseudo(scores, pseudo)
    assert res["auc"][0] == 1.0
    assert res["recall"][0] == 1.0


def test_auc_recall_errors():
    train = np.array([0, 0, 1, 1])
    val = np.array([0, 1])
    with pytest.raises(ValueError, match="shape"):
        auc_recall(np.zeros((2, 3)), train, val)
    with pytest.raises(ValueError, match="shape"):
        auc_recall(np.zeros((3, 4)), train, val)
    with pytest.raises(ValueError, match="valuation sample 1"):
        auc_recall(np.zeros((2, 4)), train, np.array([0, 5]))  # no positives
    with pytest.raises(ValueError, match="valuation sample 0"):
        auc_recall(np.zeros((1, 2)), np.array([0, 0]), np.array([0]))  # no negatives
    with pytest.raises(ValueError, match="does not match"):
        auc_recall_from_pseudo(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        auc_recall_from_pseudo(np.zeros(4), np.zeros(4))


# ----------------------------------------------------------------- detection_rate


def test_detection_rate_basic():
    values = np.arange(20, dtype=float)[::-1]  # index 0 is the most valuable
    is_clean = np.array([True, False] + [True] * 18)
    assert detection_rate(values, is_clean, top_frac=0.1) == pytest.approx(0.5)
    assert detection_rate(values, is_clean, top_frac=0.05) == pytest.approx(1.0)
    assert detection_rate(values, is_clean, top_frac=1.0) == pytest.approx(19 / 20)


def test_detection_rate_ties_stable_by_index():
    values = np.ones(10)
    is_clean = np.array([False] + [True] * 9)
    # all tied: top-1 is index 0 (dirty)
    assert detection_rate(values, is_clean, top_frac=0.1) == 0.0
    assert detection_rate(values, is_clean[::-1], top_frac=0.1) == 1.0


def test_detection_rate_errors():
    with pytest.raises(ValueError):
        detection_rate([1.0, 2.0], [True], top_frac=0.5)
    with pytest.raises(ValueError):
        detection_rate([1.0, 2.0], [True, False], top_frac=0.0)
    with pytest.raises(ValueError):
        detection_rate([], [], top_frac=0.1)
