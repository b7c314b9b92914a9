"""The asset chain in-process on a tiny model: registration -> features -> scores -> subset,
incremental re-scoring, failures that leave stored data intact, blocking checks."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey

from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, Catalog
from forvalue_assets.partitions import pair_key
from forvalue_assets.testing import platform_for_test


def train_records(n, start=0):
    return [{"id": f"t{i}", "prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."}
            for i in range(start, start + n)]


def val_records(n, word="sum"):
    return [{"id": f"{word}{i}", "prompt": f"Give the {word} of {i} and {i + 1}.", "response": f"The {word} is {2 * i + 1}."}
            for i in range(n)]


@pytest.fixture
def platform(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    with platform_for_test(tmp_path, model=tiny_model_dir) as p:
        yield p


def mat_metadata(result, key):
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {k: v.value for k, v in ev.materialization.metadata.items()}


def check_results(result):
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def feature_counts(platform):
    rows = platform.catalog().fetch("feature_run_totals")
    return {r["set_kind"]: (r["runs"], r["computed"]) for r in rows}


def test_whole_chain_materializes(platform):
    t_path = platform.write_jsonl("train", "t1", train_records(6) + [train_records(1)[0] | {"id": "dup"}])
    v_path = platform.write_jsonl("valuation", "v1", val_records(3))

    reg = platform.register("train", "t1", t_path)
    assert reg.success
    meta = mat_metadata(reg, "training_dataset")
    assert (meta["dagster/row_count"], meta["rows_read"], meta["duplicates"]) == (6, 7, 1)
    assert "| row |" in meta["preview"]
    feats = mat_metadata(reg, "training_features")
    assert (feats["computed"], feats["reused"], feats["dagster/row_count"]) == (6, 0, 6)
    assert feats["model_fingerprint"]["name"] == "tiny-llama-0"
    assert check_results(reg)["training_features_cover_samples"].passed

    vreg = platform.register("valuation", "v1", v_path)
    assert vreg.success and mat_metadata(vreg, "valuation_features")["computed"] == 3

    cur = platform.curate("t1", "v1")
    assert cur.success
    checks = check_results(cur)
    assert set(checks) == {"scores_one_row_per_sample", "scores_are_finite", "subset_size_matches_config"}
    assert all(c.passed for c in checks.values())
    smeta = mat_metadata(cur, "forvalue_scores")
    assert smeta["dagster/row_count"] == 6 and smeta["dagster/table_name"] == "scores"
    assert smeta["histogram"].startswith("![score histogram](data:image/png;base64,")
    # the scores' own top 5 follow the order the subset uses (the curation resource's balanced)
    assert smeta["strategy"] == "balanced" and "top_and_bottom" not in smeta
    assert "bottom_samples" not in smeta                  # a round-robin order stops near the cut
    top_ids = [r.data["id"] for r in smeta["top_samples"].records]
    assert [r.data["rank"] for r in smeta["top_samples"].records] == [1, 2, 3, 4, 5]
    assert smeta["seconds"] >= 0 and smeta["model_fingerprint"]["dtype"] == "float32"

    cat = platform.catalog()
    scores = cat.query("SELECT * FROM scores ORDER BY rank")
    ids = cat.sample_ids(KIND_DATASET, "t1", cat.current_set(KIND_DATASET, "t1")["version"])
    assert sorted(r["sample_id"] for r in scores) == sorted(ids) and len(scores) == 6
    assert [r["rank"] for r in scores] == list(range(1, 7))
    assert all(np.isfinite(r["score"]) for r in scores)

    # default subset: drop the lowest 10% -> 6 - round(0.6) = 5 samples
    sub = cat.latest_subset("t1", "v1")
    assert (sub["mode"], sub["n_total"], sub["n_selected"]) == ("drop_lowest_p", 6, 5)
    lines = [json.loads(x) for x in open(sub["jsonl_path"])]
    assert len(lines) == 5 and all(set(x) == {"id", "prompt", "response"} for x in lines)
    kept = pq.read_table(sub["parquet_path"]).to_pylist()
    assert [r["rank"] for r in kept] == [1, 2, 3, 4, 5]
    # the consistency checks ran on the stored values: what they dropped is recorded, and the sample
    # the cut left out is the one that failed worst
    drops = cat.subset_checks(sub["subset_id"])
    summary = json.loads(sub["checks"])["grounding"]
    assert summary["failed"] == len(drops) >= 1 and {d["check_name"] for d in drops} == {"grounding"}
    assert all(d["check_value"] > d["threshold"] == pytest.approx(summary["threshold"]) for d in drops)
    assert {r["sample_id"] for r in scores} - {r["sample_id"] for r in kept} == {drops[-1]["sample_id"]}
    cmeta = mat_metadata(cur, "curated_subset")
    assert cmeta["n_dropped_by_checks"] == len(drops)
    kept_rows = cmeta["top_kept"].records
    assert [r.data["id"] for r in kept_rows] == top_ids
    # ranked by the cosine with the valuation unit whose turn took the sample (a sample a consistency check
    # dropped has none: it comes after the strategy's picks), the raw score beside it
    checked = {d["sample_id"] for d in drops}
    by_check = [r for r in kept_rows if r.data["ranked_by"] is None]
    assert all(-1 <= r.data["ranked_by"] <= 1 for r in kept_rows if r.data["ranked_by"] is not None)
    assert len(by_check) == len(checked & {r["sample_id"] for r in kept})
    assert {c.name: c.description for c in cmeta["top_kept"].schema.columns}["ranked_by"].startswith(
        "what set the order: balanced order, cosine with the valuation unit")
    near = cmeta["kept_and_dropped"].records       # both sides of the cut: 5 kept, the checked one dropped
    assert [(r.data["rank"], r.data["kept"]) for r in near] == [(i, i <= 5) for i in range(1, 7)]
    assert near[-1].data["dropped_by_check"] == "grounding" and near[-1].data["ranked_by"] is None
    assert all((r.data["ranked_by"] is None) == bool(r.data["dropped_by_check"]) for r in near)
    view = cat.query("SELECT * FROM subset_kept_dropped WHERE subset_id = ? ORDER BY rank", [sub["subset_id"]])
    assert [(r["rank"], r["kept"], r["dropped_by_check"]) for r in view] == [
        (r.data["rank"], r.data["kept"], r.data["dropped_by_check"] or None) for r in near]
    assert [r["ranked_by"] for r in view[:5]] == pytest.approx([r.data["ranked_by"] for r in near[:5]], abs=1e-4)
    assert cmeta["consistency_checks"].startswith(f"grounding check dropped {len(drops)} of 6")
    assert (platform.root / "subsets" / "t1" / "v1" / "current.jsonl").read_text() == open(sub["jsonl_path"]).read()

    # lineage: subset -> scores -> features -> model, datasets, valuation set, Dagster run ids
    lin = cat.subset_lineage(sub["subset_id"])
    assert lin["dataset_dagster_run_id"] == reg.run_id == lin["train_features_dagster_run_id"]
    assert lin["valuation_dagster_run_id"] == vreg.run_id == lin["val_features_dagster_run_id"]
    assert lin["scores_dagster_run_id"] == cur.run_id == lin["subset_dagster_run_id"]
    assert lin["model_name"] == "tiny-llama-0" and lin["dataset_path"] == str(t_path)
    assert lin["dataset_version"] == cat.current_set(KIND_DATASET, "t1")["version"]

    # a top-k subset through run config; the size check follows the config
    top = platform.curate("t1", "v1", subset={"mode": "top_k", "value": 2},
                          asset_selection=[AssetKey("curated_subset")])
    assert top.success and check_results(top)["subset_size_matches_config"].passed
    assert cat.latest_subset("t1", "v1")["n_selected"] == 2
    bad = platform.curate("t1", "v1", subset={"mode": "top_x", "value": 2}, raise_on_error=False,
                          asset_selection=[AssetKey("curated_subset")])
    assert not bad.success
    assert cat.latest_subset("t1", "v1")["n_selected"] == 2

    # registering unchanged content again computes nothing
    again = platform.register("train", "t1", t_path)
    assert mat_metadata(again, "training_dataset")["already_registered"] is True
    assert (mat_metadata(again, "training_features")["computed"], mat_metadata(again, "training_features")["reused"]) == (0, 6)


def test_new_valuation_set_rescores_without_training_features(platform):
    platform.register("train", "t1", platform.write_jsonl("train", "t1", train_records(5)))
    platform.register("train", "t2", platform.write_jsonl("train", "t2", train_records(4, start=20)))
    platform.register("valuation", "v1", platform.write_jsonl("valuation", "v1", val_records(2)))
    first = platform.automate()
    assert {(a, p) for a, p in first if a == "forvalue_scores"} == {
        ("forvalue_scores", str(pair_key("t1", "v1"))), ("forvalue_scores", str(pair_key("t2", "v1")))}
    assert ("curated_subset", str(pair_key("t1", "v1"))) in first
    assert not [a for a, _ in first if a.endswith("_features")]
    cat = platform.catalog()
    assert cat.count("subsets") == 2
    before = feature_counts(platform)
    assert before[KIND_DATASET] == (2, 9)
    store, cfg = platform.feature_store(), platform.resources["feature_store"].config()
    fp = cat.fingerprint(cat.query("SELECT model_id FROM models")[0]["model_id"])
    train_ids_before = store.existing_ids(fp, cfg)

    # a new valuation set arrives: only its own features are computed ...
    vreg = platform.register("valuation", "v2", platform.write_jsonl("valuation", "v2", val_records(3, "product")))
    assert mat_metadata(vreg, "valuation_features")["computed"] == 3
    # ... and automation re-scores every training dataset against it from stored training features
    second = platform.automate()
    assert sorted(p for a, p in second if a == "forvalue_scores") == sorted(
        [str(pair_key("t1", "v2")), str(pair_key("t2", "v2"))])
    assert not [a for a, _ in second if a.endswith("_features")]
    after = feature_counts(platform)
    assert after[KIND_DATASET] == before[KIND_DATASET]          # zero new training feature runs / samples
    assert after[KIND_VALUATION] == (2, 5)
    assert store.existing_ids(fp, cfg) - train_ids_before == set(cat.sample_ids(
        KIND_VALUATION, "v2", cat.current_set(KIND_VALUATION, "v2")["version"]))
    assert cat.query("SELECT count(*) AS n FROM scores WHERE valuation_set = 'v2'")[0]["n"] == 9
    assert cat.count("subsets") == 4
    assert platform.automate() == []                             # nothing left to do

    # a changed training file: new content version, only the new samples computed, re-scored
    reg = platform.register("train", "t1", platform.write_jsonl("train", "t1", train_records(7)))
    assert (mat_metadata(reg, "training_features")["computed"], mat_metadata(reg, "training_features")["reused"]) == (2, 5)
    third = platform.automate()
    assert sorted(p for a, p in third if a == "forvalue_scores") == sorted(
        [str(pair_key("t1", "v1")), str(pair_key("t1", "v2"))])
    assert cat.query("SELECT count(*) AS n FROM scores WHERE dataset_name = 't1' AND valuation_set = 'v1'")[0]["n"] == 7
    latest = cat.query("SELECT DISTINCT dataset_version FROM latest_scores WHERE dataset_name = 't1'")
    assert [r["dataset_version"] for r in latest] == [cat.current_set(KIND_DATASET, "t1")["version"]]


def test_failed_run_leaves_previous_scores(platform, monkeypatch):
    platform.register("train", "t1", platform.write_jsonl("train", "t1", train_records(5)))
    platform.register("valuation", "v1", platform.write_jsonl("valuation", "v1", val_records(2)))
    assert platform.curate("t1", "v1").success
    cat = platform.catalog()
    snapshot = cat.query("SELECT * FROM scores ORDER BY sample_id")
    runs, subsets = cat.count("score_runs"), cat.count("subsets")

    # 1. the write fails inside the transaction, after the old rows were deleted
    real = Catalog._insert_arrow

    def failing(self, con, name, *args, **kwargs):
        if name == "insert_scores":
            raise OSError("disk full while writing scores")
        return real(self, con, name, *args, **kwargs)

    monkeypatch.setattr(Catalog, "_insert_arrow", failing)
    res = platform.curate("t1", "v1", raise_on_error=False)
    assert not res.success
    failures = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "disk full" in str(failures[0].event_specific_data.error)
    assert "curated_subset" not in {e.step_key for e in res.all_events if e.event_type_value == "STEP_SUCCESS"}
    monkeypatch.setattr(Catalog, "_insert_arrow", real)
    assert cat.query("SELECT * FROM scores ORDER BY sample_id") == snapshot
    assert (cat.count("score_runs"), cat.count("subsets")) == (runs, subsets)

    # 2. the scores come out NaN: refused before anything is written
    import forvalue.valuation.scoring

    monkeypatch.setattr(forvalue.valuation.scoring, "source_values", lambda source, vf, **kw: (np.full(len(source), np.nan),) * 3)
    res = platform.curate("t1", "v1", raise_on_error=False)
    assert not res.success
    failures = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "NaN or inf" in str(failures[0].event_specific_data.error)
    assert cat.query("SELECT * FROM scores ORDER BY sample_id") == snapshot


def test_bad_input_fails_cleanly_and_keeps_previous_version(platform):
    good = platform.write_jsonl("train", "t1", train_records(3))
    assert platform.register("train", "t1", good).success
    cat = platform.catalog()
    version = cat.current_set(KIND_DATASET, "t1")["version"]
    rows = train_records(4)
    del rows[2]["response"]
    bad = platform.write_jsonl("train", "t1", rows)
    res = platform.register("train", "t1", bad, raise_on_error=False)
    assert not res.success
    failure = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = str(failure.event_specific_data.error)
    assert str(bad) in message and "row 3" in message and "'response'" in message
    assert cat.current_set(KIND_DATASET, "t1")["version"] == version
    assert cat.count("datasets") == 1 and cat.count("samples") == 3
    # the same file with on_error=skip registers the good rows and counts the bad one
    res = platform.register("train", "t1", bad, on_error="skip")
    assert mat_metadata(res, "training_dataset")["skipped_rows"] == 1
    assert cat.current_set(KIND_DATASET, "t1")["n_samples"] == 3


def test_blocking_check_holds_back_the_subset(platform):
    platform.register("train", "t1", platform.write_jsonl("train", "t1", train_records(4)))
    platform.register("valuation", "v1", platform.write_jsonl("valuation", "v1", val_records(2)))
    assert platform.curate("t1", "v1", asset_selection=[AssetKey("forvalue_scores")]).success
    cat = platform.catalog()
    victim = cat.query("SELECT sample_id FROM scores ORDER BY rank LIMIT 1")[0]["sample_id"]
    with cat.transaction() as con:  # a stored table gone wrong
        con.execute("DELETE FROM scores WHERE sample_id = ?", [victim])
    checks = platform.run_checks("forvalue_scores", pair_key("t1", "v1"), raise_on_error=False)
    assert not checks.success  # a failed blocking check fails its step
    results = check_results(checks)
    assert not results["scores_one_row_per_sample"].passed
    assert results["scores_one_row_per_sample"].metadata["n_missing"].value == 1
    assert results["scores_are_finite"].passed
    # scores are newer than the (missing) subset, but the failed blocking check holds it back
    assert AssetKey("curated_subset") not in {k for keys in platform.evaluate_automation().values() for k in keys}
    assert cat.latest_subset("t1", "v1") is None
    # re-scoring repairs the table; its checks pass and the subset follows
    assert platform.curate("t1", "v1", asset_selection=[AssetKey("forvalue_scores")]).success
    assert ("curated_subset", str(pair_key("t1", "v1"))) in platform.automate()
    assert cat.latest_subset("t1", "v1")["n_total"] == 4


def test_subset_strategies_and_normalized_scores(platform):
    from forvalue.curation.consistency import rank_checked
    from forvalue.data.holdout import split

    platform.register("train", "t1", platform.write_jsonl("train", "t1", train_records(10)))
    platform.register("valuation", "v1", platform.write_jsonl("valuation", "v1", val_records(3) + val_records(2, "product")))
    assert platform.curate("t1", "v1", subset={"mode": "top_k", "value": 4, "strategy": "raw-mean"}).success
    cat = platform.catalog()
    scores = cat.query("SELECT * FROM scores ORDER BY rank")
    assert all(np.isfinite(r["normalized"]) and -1 <= r["normalized"] <= 1 and r["norm"] > 0 for r in scores)
    # SQL users re-rank: score / norm orders like normalized
    by_norm = [r["sample_id"] for r in sorted(scores, key=lambda r: -r["score"] / r["norm"])]
    assert by_norm == [r["sample_id"] for r in sorted(scores, key=lambda r: -r["normalized"])]
    sub = cat.latest_subset("t1", "v1")
    assert sub["strategy"] == "raw-mean"
    kept = pq.read_table(sub["parquet_path"]).to_pylist()
    failed = [d["sample_id"] for d in cat.subset_checks(sub["subset_id"])]   # after every passing sample
    assert len(failed) == json.loads(sub["checks"])["grounding"]["failed"] >= 1
    order = [r["sample_id"] for r in scores if r["sample_id"] not in failed] + failed
    assert [r["sample_id"] for r in kept] == order[:4]
    assert cat.subset_lineage(sub["subset_id"])["strategy"] == "raw-mean"

    # balanced (the default): the order the library computes from the stored features
    res = platform.curate("t1", "v1", subset={"mode": "top_k", "value": 4},
                          asset_selection=[AssetKey("curated_subset")])
    assert res.success and mat_metadata(res, "curated_subset")["strategy"] == "balanced"
    sub = cat.latest_subset("t1", "v1")
    fs = platform.resources["feature_store"]
    fp = cat.fingerprint(sub["model_id"])
    ids = [r["sample_id"] for r in scores]
    # against the valuation samples the scores used: the default hold-out keeps 1 of the 5 for evaluation
    val_ids, held = split(cat.sample_ids(KIND_VALUATION, "v1", sub["valuation_version"]), 20.0)
    assert (len(val_ids), len(held)) == (4, 1)
    assert cat.subset_lineage(sub["subset_id"])["n_valuation"] == 4
    want = rank_checked(fs.store().load(fp, fs.config(), ids), fs.store().load(fp, fs.config(), val_ids), "balanced")
    kept = pq.read_table(sub["parquet_path"]).to_pylist()
    assert [r["sample_id"] for r in kept] == [ids[i] for i in want.order[:4]]
    assert [r["rank"] for r in kept] == [1, 2, 3, 4] and {r["strategy"] for r in kept} == {"balanced"}
    assert sub["strategy"] == "balanced" and check_results(res)["subset_size_matches_config"].passed

    for strategy in ("cosine-mean", "max-cosine", "round-robin"):
        assert platform.curate("t1", "v1", subset={"mode": "drop_lowest_p", "value": 20, "strategy": strategy},
                               asset_selection=[AssetKey("curated_subset")]).success
        assert cat.latest_subset("t1", "v1")["strategy"] == strategy
    bad = platform.curate("t1", "v1", subset={"mode": "top_k", "value": 2, "strategy": "best"},
                          asset_selection=[AssetKey("curated_subset")], raise_on_error=False)
    assert not bad.success and cat.latest_subset("t1", "v1")["strategy"] == "round-robin"
    # a size that keeps none of the 10 samples fails like the commands refuse it; the last subset stays
    empty = platform.curate("t1", "v1", subset={"mode": "top_p", "value": 1, "strategy": "raw-mean"},
                            asset_selection=[AssetKey("curated_subset")], raise_on_error=False)
    assert not empty.success and cat.latest_subset("t1", "v1")["strategy"] == "round-robin"
    assert any("keeps no sample of the 10" in (e.event_specific_data.error.message or "")
               for e in empty.all_events if e.is_failure and e.event_specific_data and
               getattr(e.event_specific_data, "error", None))
