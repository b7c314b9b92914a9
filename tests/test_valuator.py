"""The front door: Valuator's stages on a tiny model, and explanations that add up to the score."""

import numpy as np
import pytest

import forvalue
from forvalue import FeatureConfig, Valuator
from forvalue.data.samples import samples_from_records
from forvalue.valuation.scoring import score
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
    # from the store alone, streamed shard by shard, in any order of the ids
    ids, vids = [s.sample_id for s in train][::-1], [s.sample_id for s in val]
    stored = Valuator.from_store(tmp_path / "fs", tiny_lm.fingerprint)
    streamed = stored.score_stored(ids, vids)
    assert streamed.train_ids == ids and np.allclose(streamed.values, res.values[::-1], rtol=1e-6)
    assert np.allclose(streamed.normalized, res.normalized[::-1], rtol=1e-6)
    ranked = stored.rank_stored(ids, vids, "balanced", limit=5)
    assert [ids[i] for i in ranked.order[:5]] == [train[i].sample_id for i in sel.indices]
    # polars frames of the scores, the ranking and the subset
    frame = res.to_polars()
    assert frame["sample_id"].to_list() == [s.sample_id for s in train]
    assert np.allclose(frame["score"].to_numpy(), res.values) and frame["rank"].min() == 1
    assert frame.sort("rank")["sample_id"][0] == train[int(np.argmax(res.values))].sample_id
    sub = sel.to_polars(train)
    assert sub["index"].to_list() == sel.indices.tolist() and sub["position"].to_list() == [1, 2, 3, 4, 5]
    assert sub["sample_id"].to_list() == [train[i].sample_id for i in sel.indices]
    assert np.allclose(sub["score"].to_numpy(), res.values[sel.indices], rtol=1e-6)
    ranked = sel.ranking.to_polars([s.sample_id for s in train])
    assert ranked.filter(ranked["rank"] <= 5).sort("rank")["index"].to_list() == sel.indices.tolist()
    # the same model given as a spec is loaded lazily, on first use
    lazy = Valuator(forvalue.ModelConfig(model="default"))
    assert lazy._lm is None


FULL_ROWS = dict(store_dtype="float32", energy=1.0, max_rows=None)    # every row, in the compute dtype


@pytest.mark.parametrize("method,bounds", [("sparse", FULL_ROWS), ("sparse", dict(FULL_ROWS, energy=0.9, max_rows=6)),
                                           ("emb", FULL_ROWS), ("exact", FULL_ROWS), ("full-vocab", FULL_ROWS)])
def test_contributions_add_up_to_the_score(tiny_lm64, method, bounds):
    """fp64 model: the per-token contributions of each sample sum to its score (1e-9), also when
    rows are pruned (the explanation keeps the rows the sample's stored features kept)."""
    train = samples_from_records(make_records(6, 2, "t")).samples
    val = samples_from_records(make_records(3, 3, "v")).samples
    config = FeatureConfig(r=None, **bounds) if method == "emb" else FeatureConfig(**bounds)
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


def test_explain_command_json_and_terminal_view(tiny_model_dir, tmp_path, capsys):
    import json

    from forvalue.cli import main

    rows = make_records(8, 0, "t")
    rows[3]["response"] = "*bold* <b>junk</b> " + rows[3]["response"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_records(4, 1, "v")))
    base = ["explain", "--train", str(tmp_path / "t.jsonl"), "--val", str(tmp_path / "v.jsonl"), "--model",
            str(tiny_model_dir), "--store", str(tmp_path / "fs"), "--quiet", "--sample-id", "t3", "--sample-id", "t0"]
    assert main([*base, "--json", str(tmp_path / "why.json")]) == 0
    payload = json.loads((tmp_path / "why.json").read_text())
    assert [s["id"] for s in payload["samples"]] == ["t3", "t0"]
    for s in payload["samples"]:
        assert {"sample_id", "score", "tokens", "helps_most"} <= set(s)
        assert set(s["tokens"][0]) == {"text", "position", "contribution"}
        mags = [abs(t["contribution"]) for t in s["tokens"]]
        assert mags == sorted(mags, reverse=True)                    # strongest first
        assert abs(sum(t["contribution"] for t in s["tokens"]) - s["score"]) <= 1e-3 * max(1.0, abs(s["score"]))
        assert len(s["helps_most"]) == 3 and {"sample_id", "value"} <= set(s["helps_most"][0])
    # the same score as `forvalue score`
    assert main(["score", "--train", str(tmp_path / "t.jsonl"), "--val", str(tmp_path / "v.jsonl"), "--model",
                 str(tiny_model_dir), "--store", str(tmp_path / "fs"), "--out", str(tmp_path / "s.jsonl"),
                 "--quiet"]) == 0
    scores = {json.loads(x)["id"]: json.loads(x)["score"] for x in (tmp_path / "s.jsonl").read_text().splitlines()}
    # the score reads the stored float16 rows, the contributions are computed in float32: 1e-3 relative
    assert abs(payload["samples"][0]["score"] - scores["t3"]) <= 1e-3 * max(1.0, abs(scores["t3"]))
    capsys.readouterr()
    assert main([*base, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("For-Value") == 2 and "most positive:" in out and "helps most: valuation row" in out
    import re

    assert "[+" in out and "[-" in out
    assert "*bold* <b>junk</b>" in re.sub(r"\[[+-](.*?)\]", r"\1", out)    # the text as it is, marks removed
    assert main([*base[:-4], "--sample-id", "nope"]) == 2
    assert "no sample with id 'nope'" in capsys.readouterr().err
    # curate can carry each kept sample's strongest tokens
    assert main(["curate", "--train", str(tmp_path / "t.jsonl"), "--val", str(tmp_path / "v.jsonl"), "--model",
                 str(tiny_model_dir), "--store", str(tmp_path / "fs"), "--top-k", "3", "--explain-tokens", "2",
                 "--out", str(tmp_path / "kept.parquet"), "--quiet"]) == 0
    import pyarrow.parquet as pq

    kept = pq.read_table(tmp_path / "kept.parquet").to_pylist()
    assert all(0 < len(r["top_tokens"]) <= 2 and r["top_tokens"][0]["contribution"] > 0 for r in kept)
