"""The audit questions of docs/governance.md, asked with the page's own SQL (read from the file)
of a catalog that the Dagster platform built from 2 training datasets (one in 2 versions) x 2
valuation sets x 2 tiny models, with a fine-tune, its evaluation and a comparison on one subset.
Each answer is checked against what the runs did (exported files, file hashes, model fingerprints,
Dagster run ids, MLflow runs), and the answers about one subset must not change when a second
valuation set, model or dataset version arrives."""

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey

from forvalue.catalog.db import content_hash
from forvalue.data.samples import samples_from_records
from forvalue_assets.partitions import pair_key
from forvalue_assets.testing import platform_for_test
from resources import CurationResource
from resources.mlflow import MLflowResource

DOC = Path(__file__).resolve().parents[1] / "docs" / "governance.md"


def audit_queries() -> dict[str, str]:
    """The page's SQL blocks that start with ``-- audit: <name>``."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    return {m.group(1): b for b in blocks if (m := re.match(r"-- audit: (\w+)\n", b))}


QUERIES = audit_queries()


def arithmetic(prefix, n, start=0):
    return [{"id": f"{prefix}-{i}", "prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."}
            for i in range(start, start + n)]


def spelling(prefix, words):
    return [{"id": f"{prefix}-{i}", "prompt": f"Spell {w}.", "response": " ".join(w.upper())}
            for i, w in enumerate(words)]


DATA = {
    ("train", "d1"): arithmetic("d1", 10),
    ("train", "d2"): spelling("d2", ["cat", "dog", "owl", "emu", "yak", "elk"]),
    ("valuation", "va"): arithmetic("va", 3, start=30),
    ("valuation", "vb"): spelling("vb", ["ant", "bee", "cow"]),
}
D1_V2 = arithmetic("d1", 9, start=1) + arithmetic("d1", 2, start=20)   # d1-0 gone, d1-20 and d1-21 new


def user_ids(records) -> dict[str, str]:
    """content id -> the file's own id, as the platform computes content ids."""
    return {s.sample_id: r["id"] for s, r in zip(samples_from_records(records).samples, records)}


def meta(result, key):
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {k: v.value for k, v in ev.materialization.metadata.items()}


class Record:
    """What the test ran: per subset, its pair, model, files and runs."""

    def __init__(self):
        self.subsets: dict[str, dict] = {}
        self.registrations: dict[tuple, dict] = {}   # (model label, subdir, name) -> run id, version, feature run id

    def register(self, p, label, subdir, name, records):
        path = p.write_jsonl(subdir, name, records)
        res = p.register(subdir, name, path)
        feats = meta(res, "training_features" if subdir == "train" else "valuation_features")
        self.registrations[(label, subdir, name)] = {"run_id": res.run_id, "version": content_hash(path),
                                                     "feature_run_id": feats["feature_run_id"], "path": path}

    def everything(self, p, label):
        """Register every file of DATA (features with the platform's model) and curate every pair."""
        for (subdir, name), records in DATA.items():
            self.register(p, label, subdir, name, records)
        for d in ("d1", "d2"):
            for v in ("va", "vb"):
                self.curate(p, label, d, v)

    def curate(self, p, label, dataset, valuation, version_key="v1"):
        res = p.curate(dataset, valuation, subset={"mode": "top_k", "value": 4})
        assert res.success
        sub, sc = meta(res, "curated_subset"), meta(res, "forvalue_scores")
        kept = pq.read_table(sub["parquet"]).to_pylist()
        self.subsets[sub["subset_id"]] = {
            "model": label, "dataset": dataset, "valuation": valuation, "version_key": version_key,
            "run_id": res.run_id, "score_run_id": sc["score_run_id"],
            "members": [(r["rank"], r["sample_id"], r["score"]) for r in kept]}
        return sub["subset_id"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_model_dir):
    import torch

    from forvalue.models.loading import load_model
    from tiny import build_tiny_text_model

    root = tmp_path_factory.mktemp("governance")
    model_b = root / "model-b"
    build_tiny_text_model(model_b, seed=1)
    fingerprints = {"A": load_model(str(tiny_model_dir), device="cpu").fingerprint.id,
                    "B": load_model(str(model_b), device="cpu").fingerprint.id}
    assert fingerprints["A"] != fingerprints["B"]
    rec = Record()
    out = {"record": rec, "fingerprints": fingerprints, "root": root}
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        mp.setenv("FORVALUE_INCOMING", str(root / "incoming"))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        out["mlflow_uri"] = uri
        mlflow = MLflowResource(tracking_uri=uri, experiment="governance", output_dir=str(root / "finetune"))
        quiet = {"curation": CurationResource(explain=False), "mlflow": mlflow}
        with platform_for_test(root, model=tiny_model_dir, resources=quiet) as p:
            rec.everything(p, "A")
            cat = p.catalog()
            x = cat.latest_subset("d1", "va")["subset_id"]
            other = cat.latest_subset("d2", "vb")["subset_id"]
            out["x"], out["other"] = x, other
            out["before"] = {sid: answers_about(cat, sid) for sid in (x, other)}
            ft = p.defs.resolve_job_def("finetune_and_eval").execute_in_process(
                partition_key=pair_key("d1", "va"), instance=p.instance,
                run_config={"ops": {"finetune_run": {"config": {"steps": 1, "batch_size": 2}},
                                    "eval_run": {"config": {"accuracy": False}}}})
            cmp = p.defs.resolve_job_def("compare_subsets").execute_in_process(
                partition_key=pair_key("d1", "va"), instance=p.instance,
                run_config={"ops": {"finetune_comparison": {"config": {
                    "steps": 1, "batch_size": 2, "accuracy": False, "strategies": ["top", "random"]}}}})
            assert ft.success and cmp.success
            out["finetune"], out["eval"] = meta(ft, "finetune_run"), meta(ft, "eval_run")
            out["comparison"] = meta(cmp, "finetune_comparison")
        # the second model: the same files again (features with model B), every pair re-scored
        with platform_for_test(root, model=model_b, resources=quiet) as p:
            rec.everything(p, "B")
            out["y1"] = p.catalog().latest_subset("d1", "va")["subset_id"]
            # a second version of d1, curated against va only
            rec.register(p, "B", "train", "d1", D1_V2)
            out["y2"] = rec.curate(p, "B", "d1", "va", version_key="v2")
            out["catalog"] = p.catalog()
    torch.set_num_threads(n)
    return out


def ask(cat, name, **params):
    return cat.query(QUERIES[name], params)


def answers_about(cat, subset_id):
    """Every answer about one subset (and the current scores of its pair and model)."""
    sub = cat.query("SELECT * FROM subsets WHERE subset_id = ?", [subset_id])[0]
    return {name: ask(cat, name, subset_id=subset_id)
            for name in ("subset_members", "subset_origin", "dropped_samples", "subset_cutoff")} | {
        "pair_scores": ask(cat, "pair_scores", dataset=sub["dataset_name"], valuation=sub["valuation_set"],
                           model_id=sub["model_id"])}


def test_the_page_has_every_audit_query():
    assert set(QUERIES) == {"subset_members", "subset_origin", "subsets_with_sample", "finetunes_with_sample",
                            "subset_changes", "dropped_samples", "subset_cutoff", "subset_finetunes",
                            "subset_comparisons", "pair_scores", "pair_subsets"}
    assert "docs/governance.md" in (DOC.parents[1] / "README.md").read_text()


def test_members_and_origin_of_a_subset(audited):
    cat, rec, x = audited["catalog"], audited["record"], audited["x"]
    ran = rec.subsets[x]
    ids = user_ids(DATA[("train", "d1")])
    got = ask(cat, "subset_members", subset_id=x)
    assert [(r["rank"], r["sample_id"]) for r in got] == [(rk, sid) for rk, sid, _ in ran["members"]]
    assert [r["user_id"] for r in got] == [ids[sid] for _, sid, _ in ran["members"]]
    assert [r["score"] for r in got] == pytest.approx([sc for _, _, sc in ran["members"]])

    (o,) = ask(cat, "subset_origin", subset_id=x)
    reg = rec.registrations
    d1, va = reg[("A", "train", "d1")], reg[("A", "valuation", "va")]
    assert (o["dataset_name"], o["dataset_version"], o["dataset_path"]) == ("d1", d1["version"], str(d1["path"]))
    assert (o["valuation_set"], o["valuation_version"]) == ("va", va["version"])
    assert (o["model_id"], o["score_method"], o["strategy"], o["mode"], o["value"]) == (
        audited["fingerprints"]["A"], "sparse", "balanced", "top_k", 4.0)
    assert (o["train_feature_run_id"], o["val_feature_run_id"]) == (d1["feature_run_id"], va["feature_run_id"])
    assert (o["dataset_dagster_run_id"], o["train_features_dagster_run_id"]) == (d1["run_id"], d1["run_id"])
    assert (o["valuation_dagster_run_id"], o["val_features_dagster_run_id"]) == (va["run_id"], va["run_id"])
    assert o["scores_dagster_run_id"] == o["subset_dagster_run_id"] == ran["run_id"]
    assert (o["score_run_id"], o["valuation_holdout"], o["n_valuation"]) == (ran["score_run_id"], 20.0, 2)


def test_which_subsets_and_fine_tunes_hold_a_sample(audited):
    from mlflow.tracking import MlflowClient

    cat, rec, x = audited["catalog"], audited["record"], audited["x"]
    _, sid, _ = rec.subsets[x]["members"][0]
    user_id = user_ids(DATA[("train", "d1")])[sid]
    want = {s: next(rk for rk, i, _ in r["members"] if i == sid) for s, r in rec.subsets.items()
            if any(i == sid for _, i, _ in r["members"])}
    got = ask(cat, "subsets_with_sample", user_id=user_id)
    assert {r["subset_id"]: r["rank"] for r in got} == want and x in want
    assert {r["dataset_name"] for r in got} == {"d1"}

    client = MlflowClient(tracking_uri=audited["mlflow_uri"])
    exp = client.get_experiment_by_name("governance").experiment_id
    trained = set()
    for run in client.search_runs([exp], "tags.`forvalue.run_kind` = 'finetune'"):
        path = client.download_artifacts(run.info.run_id, "subset/sample_ids.json", str(audited["root"] / "dl"))
        if sid in json.loads(Path(path).read_text())["sample_ids"]:
            trained.add(run.info.run_id)
    got = ask(cat, "finetunes_with_sample", user_id=user_id)
    assert {r["mlflow_run_id"] for r in got} == trained and audited["finetune"]["mlflow_run_id"] in trained
    assert {r["kind"] for r in got} >= {"curated", "comparison"}
    # the curated run carries its subset's HTML curation report (MLflow shows it as the page)
    run_id = audited["finetune"]["mlflow_run_id"]
    report = Path(cat.subset_lineage(x)["jsonl_path"]).with_suffix(".html").name
    assert f"subset/{report}" in {a.path for a in client.list_artifacts(run_id, "subset")}
    page = Path(client.download_artifacts(run_id, f"subset/{report}", str(audited["root"] / "dl"))).read_text()
    assert page.lower().startswith("<!doctype html>") and x in page
    # a sample no run trained on: no answer
    assert ask(cat, "finetunes_with_sample", user_id="d1-nobody") == []


def test_what_changed_between_two_subsets_of_a_pair(audited):
    cat, rec = audited["catalog"], audited["record"]
    y1, y2 = rec.subsets[audited["y1"]], rec.subsets[audited["y2"]]
    assert (y1["model"], y2["model"], y1["version_key"], y2["version_key"]) == ("B", "B", "v1", "v2")
    old = {sid: (rk, sc) for rk, sid, sc in y1["members"]}
    new = {sid: (rk, sc) for rk, sid, sc in y2["members"]}
    got = ask(cat, "subset_changes", old_subset_id=audited["y1"], new_subset_id=audited["y2"])
    assert {r["sample_id"] for r in got if r["change"] == "added"} == set(new) - set(old)
    assert {r["sample_id"] for r in got if r["change"] == "removed"} == set(old) - set(new)
    assert got, "the two versions keep different samples"
    ids = user_ids(DATA[("train", "d1")]) | user_ids(D1_V2)
    for r in got:
        side = new if r["change"] == "added" else old
        assert (r["new_rank"] if r["change"] == "added" else r["old_rank"]) == side[r["sample_id"]][0]
        assert r["user_id"] == ids[r["sample_id"]]
    # pair_subsets: every subset cut from (d1, va), in order, whatever the model or version
    pair = [s for s, r in rec.subsets.items() if (r["dataset"], r["valuation"]) == ("d1", "va")]
    assert [r["subset_id"] for r in ask(cat, "pair_subsets", dataset="d1", valuation="va")] == pair


def test_dropped_samples_and_the_cut_off(audited):
    cat, rec, x = audited["catalog"], audited["record"], audited["x"]
    kept = {sid for _, sid, _ in rec.subsets[x]["members"]}
    ids = user_ids(DATA[("train", "d1")])
    got = ask(cat, "dropped_samples", subset_id=x)
    assert {r["sample_id"] for r in got} == set(ids) - kept and len(got) == 6
    assert {r["user_id"] for r in got} == {ids[s] for s in set(ids) - kept}
    assert all(r["score"] is not None for r in got)      # model A's scores of the pair are still current
    # the cut: top_k 4 keeps ranks 1-4; every dropped sample has its rank (the order reached them all),
    # nearest the cut first
    assert [r["rank"] for r in got] == list(range(5, 11)) and {r["cut_rank"] for r in got} == {4}
    assert not any(r["kept"] for r in got) and {r["strategy"] for r in got} == {"balanced"}
    members = {sid: rk for rk, sid, _ in rec.subsets[x]["members"]}
    both = cat.query("SELECT sample_id, rank FROM subset_kept_dropped WHERE subset_id = $subset_id AND kept",
                     {"subset_id": x})
    assert {r["sample_id"]: r["rank"] for r in both} == members
    # which were left out by a consistency check, with the value and limit the catalog recorded
    checked = {r["sample_id"]: r for r in cat.subset_checks(x)}
    assert {r["sample_id"] for r in got if r["dropped_by_check"]} == set(checked) and not set(checked) & kept
    for r in got:
        if r["dropped_by_check"]:
            c = checked[r["sample_id"]]
            assert (r["dropped_by_check"], r["check_value"], r["check_threshold"]) == (
                c["check_name"], c["check_value"], c["threshold"]) and r["check_value"] > r["check_threshold"]
    summary = json.loads(cat.query("SELECT checks FROM subsets WHERE subset_id = ?", [x])[0]["checks"])
    assert summary["grounding"]["failed"] == len(checked) >= 1
    (cut,) = ask(cat, "subset_cutoff", subset_id=x)
    scores = [sc for _, _, sc in rec.subsets[x]["members"]]
    assert (cut["n_total"], cut["n_selected"], cut["n_dropped"], cut["last_kept_rank"]) == (10, 4, 6, 4)
    assert cut["lowest_kept_score"] == pytest.approx(min(scores)) and cut["n_dropped_scored"] == 6
    assert cut["highest_dropped_score"] == pytest.approx(max(r["score"] for r in got))


def test_fine_tunes_of_a_subset_and_their_held_out_losses(audited):
    cat, x = audited["catalog"], audited["x"]
    ft, ev, cmp = audited["finetune"], audited["eval"], audited["comparison"]
    got = ask(cat, "subset_finetunes", subset_id=x)
    curated = [r for r in got if r["kind"] == "curated"]
    assert [r["mlflow_run_id"] for r in curated] == [ft["mlflow_run_id"]]
    (c,) = curated
    assert (c["eval_source"], c["n_eval"], c["eval_seen_by_selection"]) == ("holdout", 1, False)
    assert c["eval_loss"] == pytest.approx(ft["val_loss"]) and c["eval_run_loss"] == pytest.approx(ev["val_loss"])
    assert c["eval_run_source"] == "holdout" and c["eval_run_id"] == ev["eval_run_id"]
    # the comparison's top-k trained exactly subset X, so it is one of X's fine-tunes; random is not
    assert {(r["kind"], r["strategy"]) for r in got} == {("curated", "balanced"), ("comparison", "top")}
    rows = ask(cat, "subset_comparisons", subset_id=x)
    assert {r["strategy"] for r in rows} == {"base", "top", "random"}
    assert {(r["comparison_id"], r["eval_source"], r["n_eval"]) for r in rows} == {(cmp["comparison_id"], "holdout", 1)}


def test_other_pairs_answers_do_not_change(audited):
    """A second valuation set (vb), a second model (B) and a second version of d1 arrived after X
    and the other subset were cut: every answer about them is what it was."""
    cat = audited["catalog"]
    for sid in (audited["x"], audited["other"]):
        assert answers_about(cat, sid) == audited["before"][sid]
    rec, fp = audited["record"], audited["fingerprints"]
    for s, r in rec.subsets.items():   # each pair and model's current scores are its own newest run's
        got = ask(cat, "pair_scores", dataset=r["dataset"], valuation=r["valuation"], model_id=fp[r["model"]])
        newest = [t for t, q in rec.subsets.items() if (q["dataset"], q["valuation"], q["model"]) ==
                  (r["dataset"], r["valuation"], r["model"])][-1]
        assert {g["score_run_id"] for g in got} == {rec.subsets[newest]["score_run_id"]}
        n = len(D1_V2) if (r["dataset"], r["model"], rec.subsets[newest]["version_key"]) == ("d1", "B", "v2") else \
            len(DATA[("train", r["dataset"])])
        assert len(got) == n
