"""The grounding check (forvalue/consistency.py): thresholded on the valuation set, failing samples
ordered last with the reason recorded, the passing ones in the strategy's own order."""

import numpy as np
import pytest

from forvalue.consistency import grounding, ifd, rank_checked
from forvalue.data import samples_from_records
from forvalue.features import FeatureConfig, extract_sparse
from forvalue.selection import rank_features
from tests.conftest import make_records


@pytest.fixture(scope="module")
def feats(tiny_lm64):
    cfg = FeatureConfig()
    train = extract_sparse(tiny_lm64, samples_from_records(make_records(12, seed=7)).samples, cfg, grounding=True)
    val = extract_sparse(tiny_lm64, samples_from_records(make_records(3, seed=8, prefix="v")).samples, cfg,
                         grounding=True)
    return train, val


def with_ifd(f, values):
    """The same features with s(A|Q) over the first tokens set so that IFD takes ``values`` (s(A) kept)."""
    from dataclasses import replace

    return replace(f, losses_first=np.asarray(values, float) * f.losses_alone)


def test_ifd_is_the_ratio_of_the_two_passes(feats):
    train, _ = feats
    np.testing.assert_allclose(ifd(train), train.losses_first / train.losses_alone)
    from dataclasses import replace

    with pytest.raises(ValueError, match="grounding=True"):
        ifd(replace(train, losses_alone=None))


def test_failing_samples_go_last_with_their_reason(feats):
    train, val = feats
    values = np.array([0.5, 0.9, 0.6, 1.2, 0.4, 0.7, 0.95, 0.3, 0.65, 0.55, 0.8, 0.2])
    train, val = with_ifd(train, values), with_ifd(val, [0.5, 0.6, 0.75])
    check = grounding(train, val)
    assert check.threshold == pytest.approx(0.75)
    failed = {1, 3, 6, 10}
    assert set(np.flatnonzero(check.failed)) == failed
    assert grounding(train, val, quantile=0.5).threshold == pytest.approx(0.6)

    ranking, (res,) = rank_checked(train, val, "balanced")
    kept = [i for i in range(12) if i not in failed]
    inner = rank_features(train.select([train.sample_ids[i] for i in kept]), val, "balanced")
    assert list(ranking.order[:8]) == [kept[j] for j in inner.order]          # the strategy's order of the rest
    assert list(ranking.order[8:]) == [10, 1, 6, 3]                              # least failing first
    assert sorted(ranking.order) == list(range(12)) and ranking.complete
    assert set(ranking.info["dropped_by"]) == failed
    assert ranking.info["dropped_by"][3] == "grounding: 1.200 > 0.750 (the valuation set's limit)"
    assert ranking.info["checks"] == {"grounding": {"threshold": pytest.approx(0.75), "failed": 4}}
    # every sample keeps its For-Value values, the failing ones too
    full = rank_features(train, val, "raw-mean")
    np.testing.assert_allclose(ranking.raw, full.raw, rtol=1e-9)
    # a top-8 subset holds no failing sample; a top-10 only after every passing one
    assert not set(ranking.indices("top_k", 8)) & failed
    assert set(ranking.indices("top_k", 10)) - set(kept) == {10, 1}


def test_a_check_that_fails_everything_is_an_error(feats):
    train, val = feats
    with pytest.raises(ValueError, match="every training sample failed"):
        rank_checked(with_ifd(train, np.full(12, 2.0)), with_ifd(val, [0.5, 0.6, 0.7]), "balanced")
    with pytest.raises(ValueError, match="unknown check"):
        rank_checked(train, val, "balanced", checks=("spelling",))
