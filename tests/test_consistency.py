"""The consistency checks (forvalue/curation/consistency.py): thresholded on the valuation set, failing samples
never picked by the strategy and ordered last with the reason recorded, the passing ones in the
strategy's own order; the same through the feature store, streamed, as in memory."""

import warnings
from dataclasses import replace

import numpy as np
import pytest

from forvalue.curation.consistency import CheckLimits, Checked, grounding, ifd, inputs_of, rank_checked, run_checks
from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig, extract_sparse
from forvalue.curation.selection import STRATEGIES, rank_features
from forvalue.store.feature_store import FeatureStore
from forvalue.valuator import Valuator
from tests.conftest import make_records

TRAIN_IFD = np.array([0.5, 0.9, 0.6, 1.2, 0.4, 0.7, 0.95, 0.3, 0.65, 0.55, 0.8, 0.2])
FAILED = {1, 3, 6, 10}     # above the valuation maximum 0.75


@pytest.fixture(scope="module")
def feats(tiny_lm64):
    cfg = FeatureConfig()
    train = extract_sparse(tiny_lm64, samples_from_records(make_records(12, seed=7)).samples, cfg, grounding=True)
    val = extract_sparse(tiny_lm64, samples_from_records(make_records(3, seed=8, prefix="v")).samples, cfg,
                         grounding=True)
    return train, val


def with_ifd(f, values):
    """The same features with s(A|Q) over the first tokens set so that IFD takes ``values`` (s(A) kept)."""
    return replace(f, losses_first=np.asarray(values, float) * f.losses_alone)


@pytest.fixture(scope="module")
def set_feats(feats):
    train, val = feats
    return with_ifd(train, TRAIN_IFD), with_ifd(val, [0.5, 0.6, 0.75])


def test_ifd_is_the_ratio_of_the_two_passes(feats):
    train, _ = feats
    assert np.isfinite(train.losses_alone).all() and (train.losses_alone > 0).all()
    np.testing.assert_allclose(ifd(train.losses_first, train.losses_alone), train.losses_first / train.losses_alone)
    with pytest.raises(ValueError, match="grounding: the features carry no values for it"):
        run_checks(inputs_of(replace(train, losses_alone=None)), inputs_of(feats[1]), ("grounding",))


def test_threshold_is_the_valuation_sets_quantile(set_feats):
    train, val = set_feats
    check = grounding(inputs_of(train), inputs_of(val))
    assert check.threshold == pytest.approx(0.75)
    assert set(np.flatnonzero(check.failed)) == FAILED
    assert grounding(inputs_of(train), inputs_of(val), quantile=0.5).threshold == pytest.approx(0.6)
    # a sample the check cannot judge (NaN: no instruction) passes and is counted
    t = inputs_of(train)
    t = dict(t, losses_alone=np.where(np.arange(12) == 3, np.nan, t["losses_alone"]))
    res = grounding(t, inputs_of(val))
    assert not res.failed[3] and res.summary()["not_judged"] == 1 and res.summary()["failed"] == 3


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_failing_samples_go_last_with_their_reason(set_feats, strategy):
    train, val = set_feats
    ranking = rank_checked(train, val, strategy, limits=CheckLimits(grounding=1.0))   # at the valuation maximum
    kept = [i for i in range(12) if i not in FAILED]
    inner = rank_features(train.select([train.sample_ids[i] for i in kept]), val, strategy)
    assert list(ranking.order[:8]) == [kept[j] for j in inner.order]          # the strategy's order of the rest
    assert list(ranking.order[8:]) == [10, 1, 6, 3]                              # least failing first
    assert sorted(ranking.order) == list(range(12)) and ranking.complete
    checked = ranking.checks
    assert set(checked.reasons()) == FAILED
    assert checked.reasons()[3] == "grounding: 1.200 > 0.750 (the valuation set's maximum)"
    summary = checked.summary()
    assert summary["grounding"] == {"threshold": pytest.approx(0.75), "quantile": 1.0, "failed": 4, "not_judged": 0}
    assert summary["answer"] == "not applied: no valuation sample has a value (no response ends a computation " \
                                "with '= <number>')"   # the tiny records compute nothing
    rows = checked.records(train.sample_ids)
    assert [r["sample_id"] for r in rows] == [train.sample_ids[i] for i in (10, 1, 6, 3)]
    assert rows[-1]["check"] == "grounding" and rows[-1]["value"] == pytest.approx(1.2)
    # every sample keeps its For-Value values, the failing ones too, computed in the same passes
    full = rank_features(train, val, "raw-mean")
    np.testing.assert_allclose(ranking.raw, full.raw, rtol=1e-9)
    np.testing.assert_allclose(ranking.normalized, full.normalized, rtol=1e-9)
    # a top-8 subset holds no failing sample; a top-10 only after every passing one
    assert not set(ranking.indices("top_k", 8)) & FAILED
    assert set(ranking.indices("top_k", 10)) - set(kept) == {10, 1}
    assert list(ranking.indices("bottom_p", 25)) == [3, 6, 1]


def test_the_default_limits_and_their_settings(set_feats, tmp_path, capsys):
    """The default grounding limit is the valuation set's 0.95 quantile (the answer limit its maximum);
    the limits are settings of the Valuator, the commands and the curation resource, checked up front."""
    from forvalue.cli import main
    from resources import CurationResource

    train, val = set_feats
    checked = run_checks(inputs_of(train), inputs_of(val))
    limit = float(np.quantile([0.5, 0.6, 0.75], 0.95))      # 0.735: stricter than the maximum 0.75
    assert checked.results[0].threshold == pytest.approx(limit) and limit < 0.75
    assert set(checked.dropped) == {i for i, x in enumerate(TRAIN_IFD) if x > limit}
    assert checked.reasons()[3] == f"grounding: 1.200 > {limit:.3f} (the valuation set's 0.95 quantile)"
    assert checked.summary()["grounding"]["quantile"] == 0.95
    v = Valuator(None, FeatureConfig(), limits=CheckLimits(grounding=0.5))
    assert v.rank(train, val, "raw-mean").checks.results[0].threshold == pytest.approx(0.6)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="limit must be a quantile in"):
            CheckLimits(grounding=bad)
    rc = main(["curate", "--train", str(tmp_path / "t.jsonl"), "--val", str(tmp_path / "v.jsonl"), "--top-k", "2",
               "--out", str(tmp_path / "o.jsonl"), "--grounding-limit", "1.5"])
    assert rc == 2 and "grounding limit must be a quantile in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
    res = CurationResource(grounding=0.9, answer=0.99)
    assert res.limits() == CheckLimits(grounding=0.9, answer=0.99)


def test_the_answer_check_drops_unexpected_results_and_says_which_check(set_feats):
    """Two checks: a sample fails when either does; the reason names the first that failed; a
    response without a computed result (NaN) is not judged by the answer check."""
    train, val = set_feats
    answer = np.array([1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, np.nan, 4.5, 1.0, 1.0])
    train, val = replace(train, losses_answer=answer), replace(val, losses_answer=np.array([1.0, 2.0, np.nan]))
    ranking = rank_checked(train, val, "balanced")
    checked = ranking.checks
    assert set(np.flatnonzero(checked.failed)) == FAILED | {2, 9}
    answer_res = next(r for r in checked.results if r.name == "answer")
    assert answer_res.threshold == 2.0 and answer_res.summary()["not_judged"] == 1
    reasons = checked.reasons()
    assert reasons[2] == "answer: 5.000 > 2.000 (the valuation set's maximum)"
    assert reasons[3].startswith("grounding: ")
    # least failing first, by the margin over each check's limit relative to it
    assert list(ranking.order[-6:]) == [10, 1, 6, 3, 9, 2]
    assert {r["check"] for r in checked.records(train.sample_ids)} == {"grounding", "answer"}


def test_a_partial_order_stops_before_the_dropped(set_feats):
    train, val = set_feats
    part = rank_checked(train, val, "balanced", limit=5)
    assert len(part.order) == 5 and not set(part.order) & FAILED
    whole = rank_checked(train, val, "balanced")
    assert list(part.order) == list(whole.order[:5])
    reach = rank_checked(train, val, "balanced", limit=10)   # past the passing samples: the dropped follow
    assert list(reach.order) == list(whole.order[:10])


def test_when_every_sample_fails_the_order_is_the_failing_order(set_feats):
    train, val = set_feats
    ranking = rank_checked(with_ifd(train, np.linspace(1.0, 2.1, 12)), val, "balanced")
    assert list(ranking.order) == list(range(12)) and ranking.checks.failed.all()
    with pytest.raises(ValueError, match="unknown check"):
        rank_checked(train, val, "balanced", checks=("spelling",))


def test_store_serves_the_checks_and_the_streamed_order_matches(tiny_lm, tmp_path):
    """Features stored with the checks (the default configuration) carry both losses; the streamed
    ranking over the store drops the same samples and gives the in-memory order."""
    train = samples_from_records(make_records(30, seed=3)).samples
    val = samples_from_records(make_records(5, seed=4, prefix="v")).samples
    v = Valuator(tiny_lm, FeatureConfig(), store=tmp_path / "store")
    tf, vf = v.featurize(train).features, v.featurize(val).features
    assert inputs_of(tf) is not None and inputs_of(vf) is not None
    stored = v.store.sample_values(tiny_lm.fingerprint, v.config, [s.sample_id for s in train][::-1],
                                   ("losses_first", "losses_alone"))
    np.testing.assert_allclose(stored["losses_alone"], tf.losses_alone[::-1])
    mem = v.rank(tf, vf, "balanced")
    assert isinstance(mem.checks, Checked) and mem.checks.failed.any() and not mem.checks.failed.all()
    ids = [s.sample_id for s in train]
    streamed = Valuator.from_store(v.store, tiny_lm.fingerprint, v.config).rank_stored(
        ids, [s.sample_id for s in val], "balanced")
    assert list(streamed.order) == list(mem.order)
    assert streamed.checks.reasons() == mem.checks.reasons()
    assert streamed.info["checks"] == mem.info["checks"]
    sel = v.select(train, val, "top_k", 5)
    frame = sel.dropped(train)
    assert frame["index"].to_list() == list(mem.checks.dropped) and frame["sample_id"].to_list() == [
        train[i].sample_id for i in mem.checks.dropped]
    assert (frame["value"] > frame["threshold"]).all() and frame["row"].to_list() == [
        train[i].row for i in mem.checks.dropped]
    assert not set(sel.indices) & set(frame["index"].to_list())
    off = v.rank(tf, vf, "balanced", checks=False)
    assert off.checks is None and off.info["checks"].startswith("not applied")
    assert set(off.order[:len(ids) - mem.checks.failed.sum()]) != set(mem.order[:len(ids) - mem.checks.failed.sum()])


def test_features_without_checks_keep_their_store_and_warn(tiny_lm, tmp_path):
    """--no-checks keeps the feature configuration (and store folder) of features stored before the
    checks existed; selecting over such features warns that no check ran."""
    on, off = FeatureConfig(), FeatureConfig(checks=False)
    assert on.id != off.id
    old = {k: v for k, v in on.to_dict().items() if k != "checks"}    # a configuration stored before the checks
    assert FeatureConfig.from_dict(old) == off and FeatureConfig.from_dict(on.to_dict()) == on
    assert FeatureConfig(positions="all").checks is False
    train = samples_from_records(make_records(8, seed=3)).samples
    val = samples_from_records(make_records(3, seed=4, prefix="v")).samples
    v = Valuator(tiny_lm, off, store=FeatureStore(tmp_path / "store"))
    tf, vf = v.featurize(train).features, v.featurize(val).features
    assert tf.losses_alone is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ranking = Valuator(tiny_lm, on).rank(tf, vf, "balanced")
    assert ranking.checks is None and "grounding: the features carry no values" in ranking.info["checks"]
    assert any("consistency checks not applied" in str(x.message) for x in w)


def test_the_checks_leave_the_features_and_scores_unchanged(tiny_lm64):
    """The checks add per-sample values beside the features; the vectors, hence every score and the
    influence benchmarks' AUC / recall, are the same bits with and without them."""
    from forvalue.valuation.scoring import score_features

    train = samples_from_records(make_records(10, seed=11)).samples
    val = samples_from_records(make_records(3, seed=12, prefix="v")).samples
    on, off = FeatureConfig(), FeatureConfig(checks=False)
    got = {c.checks: [extract_sparse(tiny_lm64, s, c, grounding=c.checks) for s in (train, val)] for c in (on, off)}
    for a, b in zip(got[True], got[False]):
        for name in ("row_sample", "token_ids", "vectors", "emb", "n_positions", "losses", "losses_first"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.losses_alone is not None and b.losses_alone is None
    np.testing.assert_array_equal(score_features(*got[True]).values, score_features(*got[False]).values)
