"""The front door: Valuator's stages on a tiny model, and explanations that add up to the score."""

import numpy as np
import pytest

import forvalue
from forvalue import FeatureConfig, Valuator
from forvalue.data import samples_from_records
from forvalue.scoring import score
from tests.conftest import make_records


def test_public_api_is_the_front_door():
    assert "Valuator" in forvalue.__all__ and forvalue.Valuator is Valuator
    for name in forvalue.__all__:
        assert hasattr(forvalue, name), name
    doc = Valuator.__doc__
    for stage in ("featurize", "score", "select", "explain"):
        assert f"``{stage}(" in doc and callable(getattr(Valuator, stage))


def test_stages_agree_with_the_library(tiny_lm, tmp_path):
    train = samples_from_records(make_records(12, 0, "t")).samples
    val = samples_from_records(make_records(4, 1, "v")).samples
    v = Valuator(tiny_lm, store=tmp_path / "fs", batch_size=4)
    first = v.featurize(train)
    assert (first.computed, first.reused) == (12, 0) and v.featurize(train).computed == 0
    res = v.score(train, val)
    direct = score(tiny_lm, train, val)
    assert np.allclose(res.values, direct.values, rtol=1e-6)
    assert res.normalized is not None and np.all(np.abs(res.normalized) <= 1 + 1e-9)
    sel = v.select(train, val, "top_k", 5)
    assert sel.strategy == "balanced" and len(sel.indices) == 5 and len(set(sel.indices.tolist())) == 5
    assert [s.sample_id for s in sel.samples(train)] == [train[i].sample_id for i in sel.indices]
    raw = v.select(train, val, "top_k", 5, strategy="raw-mean")
    assert raw.indices.tolist() == np.argsort(-direct.values, kind="stable")[:5].tolist()
    # the same model given as a spec is loaded lazily, on first use
    lazy = Valuator(forvalue.ModelConfig(model="default"))
    assert lazy._lm is None


@pytest.mark.parametrize("method", ["sparse", "emb"])
def test_contributions_add_up_to_the_score(tiny_lm64, method):
    """fp64 model: the per-token contributions of each sample sum to its score (1e-9)."""
    train = samples_from_records(make_records(6, 2, "t")).samples
    val = samples_from_records(make_records(3, 3, "v")).samples
    config = FeatureConfig(r=None) if method == "emb" else FeatureConfig()
    v = Valuator(tiny_lm64, config)
    want = v.score(train, val, method=method).values
    why = v.explain(train, val, method=method)
    assert [e.sample_id for e in why] == [s.sample_id for s in train]
    for e, w in zip(why, want):
        total = sum(t.contribution for t in e.tokens)
        assert abs(total - w) <= 1e-9 * max(1.0, abs(w)) and abs(e.score - total) < 1e-12
        assert len(e.helps_most) == 3 and {s for s, _ in e.helps_most} <= {x.sample_id for x in val}
        positive, negative = e.strongest(2)
        assert all(p.contribution >= q.contribution for p in positive for q in negative)
        assert e.tokens == sorted(e.tokens, key=lambda t: t.position)
        assert all(isinstance(t.text, str) and t.position >= 1 for t in e.tokens)
    d = why[0].to_dict()
    assert set(d) == {"sample_id", "score", "tokens", "helps_most"}
    assert set(d["tokens"][0]) == {"text", "position", "contribution"}
