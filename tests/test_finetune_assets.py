"""The fine-tune assets in-process on a tiny model, downstream of the platform's curated_subset:
finetune_run -> eval_run (MLflow runs with Dagster tags, linked), and the comparison asset."""

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions
from mlflow.tracking import MlflowClient

from forvalue.catalog.finetune_runs import FinetuneCatalog
from forvalue.data.holdout import held_out
from forvalue_assets import curation, features, finetuning, ingest
from forvalue_assets.curation.jobs import curation_job
from forvalue_assets.partitions import pair_key
from forvalue_assets.testing import platform_for_test
from resources.mlflow import MLflowResource

ROOT = Path(__file__).resolve().parents[1]
# The platform's assets and checks upstream of fine-tuning (domains ingest, features, curation).
UPSTREAM_ASSETS = ingest.ASSETS + features.ASSETS + curation.ASSETS
UPSTREAM_CHECKS = features.CHECKS + curation.CHECKS


def records(n, start=0, prefix="t"):
    return [{"id": f"{prefix}{i}", "prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}.",
             "answer": 2 * i} for i in range(start, start + n)]


def metadata(result, key):
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {k: v.value for k, v in ev.materialization.metadata.items()}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_model_dir):
    """Registered t1 (8 samples) and v1 (3: the default hold-out keeps 1 for evaluation), a top-4
    curated subset; the platform's assets + ours."""
    import torch

    tmp_path = tmp_path_factory.mktemp("platform")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        mp.setenv("FORVALUE_INCOMING", str(tmp_path / "incoming"))   # where incoming/eval/<valuation>.* is looked up
        with platform_for_test(tmp_path, model=tiny_model_dir) as p:
            p.register("train", "t1", p.write_jsonl("train", "t1", records(8)))
            p.register("valuation", "v1", p.write_jsonl("valuation", "v1", records(3, start=30, prefix="v")))
            assert p.curate("t1", "v1", subset={"mode": "top_k", "value": 4}).success
            uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
            mlflow = MLflowResource(tracking_uri=uri, experiment="platform-test", output_dir=str(tmp_path / "finetune"))
            p.defs = Definitions(assets=UPSTREAM_ASSETS + finetuning.ASSETS, asset_checks=UPSTREAM_CHECKS,
                                 jobs=finetuning.JOBS + [curation_job], resources={**p.resources, "mlflow": mlflow})
            p.mlflow_uri, p.mlflow = uri, mlflow
            yield p
    torch.set_num_threads(n)


def test_graph_and_no_heavy_imports():
    from forvalue_assets.definitions import default_resources
    from forvalue_assets.finetuning import eval_run, finetune_comparison, finetune_run

    defs = Definitions(assets=UPSTREAM_ASSETS + finetuning.ASSETS, asset_checks=UPSTREAM_CHECKS, jobs=finetuning.JOBS,
                       resources={**default_resources(), "mlflow": MLflowResource.from_env()})
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("finetune_run")).parent_keys == {AssetKey("curated_subset")}
    assert graph.get(AssetKey("eval_run")).parent_keys == {AssetKey("finetune_run")}
    assert graph.get(AssetKey("finetune_comparison")).parent_keys == {AssetKey("curated_subset")}
    for a in (finetune_run, eval_run, finetune_comparison):
        node = graph.get(a.key)
        assert node.group_name == "finetune" and node.pools == {"model"} and node.automation_condition is None
        assert node.partitions_def == graph.get(AssetKey("curated_subset")).partitions_def
    code = ("import sys, forvalue_assets.finetuning, resources.mlflow, forvalue.cli.finetune; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'mlflow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_finetune_and_eval_assets_materialize(platform, monkeypatch):
    import torch

    from resources import FinetuneResource

    pk = pair_key("t1", "v1")
    cat = platform.catalog()
    sub = cat.latest_subset("t1", "v1")
    lineage = cat.subset_lineage(sub["subset_id"])
    monkeypatch.setenv("FORVALUE_DAGSTER_URL", "http://127.0.0.1:3000/")
    # the platform's CPU thread setting (FinetuneResource.threads) holds while the runs train and evaluate
    during, set_threads = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (during.append(n), set_threads(n)))
    defs = Definitions(assets=UPSTREAM_ASSETS + finetuning.ASSETS, asset_checks=UPSTREAM_CHECKS,
                       jobs=finetuning.JOBS + [curation_job],
                       resources={**platform.resources, "mlflow": platform.mlflow, "finetune": FinetuneResource(threads=2)})
    res = defs.resolve_job_def("finetune_and_eval").execute_in_process(
        partition_key=pk, instance=platform.instance,
        run_config={"ops": {"finetune_run": {"config": {"steps": 3, "batch_size": 2}},
                            "eval_run": {"config": {"max_new_tokens": 4}}}})
    assert res.success
    assert during.count(2) == 2 and torch.get_num_threads() == 1      # set for each run, restored after
    ft = metadata(res, "finetune_run")
    ev = metadata(res, "eval_run")
    assert ft["threads"] == 2 and ft["peak_rss_mb"] > 0
    # progress in the run's log as the fine-tune goes: after the first step and the last
    lines = [e.user_message for e in platform.instance.all_logs(res.run_id) if ": step " in (e.user_message or "")]
    assert [line.split(": step ")[1].split(" loss")[0] for line in lines] == ["1/3", "3/3"]
    assert all("tokens/s" in line and "peak memory" in line for line in lines)
    # the subset's size rule and the selection strategy that ordered it, each under its own name
    assert ft["subset_id"] == sub["subset_id"] and ft["k"] == 4
    assert (ft["strategy"], ft["subset_mode"], ft["score_run_id"]) == (sub["strategy"], sub["mode"], sub["score_run_id"])
    assert sub["strategy"] == "balanced" and sub["mode"] == "top_k"
    assert ft["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/") and ft["mlflow_run_id"] in ft["mlflow_run"]
    assert ft["mlflow_run"].endswith("?workflowType=machine_learning")   # opens on runs, not GenAI traces
    assert ft["loss_curve"].startswith("![training loss](data:image/png;base64,")
    assert ev["finetune_mlflow_run_id"] == ft["mlflow_run_id"] and ev["mlflow_run_id"] in ev["mlflow_run"]
    assert 0 <= ev["accuracy"] <= 1 and "| id | reference |" in ev["predictions"]
    # no evaluation file: the default 20% hash hold-out of v1 (at least one sample) evaluates, and the
    # scores that chose the subset used the other two only
    held = held_out(cat.sample_ids("valuation_set", "v1", sub["valuation_version"]), 20.0)
    assert len(held) == 1 and ev["n_eval"] == ft["n_eval"] == 1
    assert (ev["eval_source"], ft["eval_source"], ev["eval_seen_by_selection"]) == ("holdout", "holdout", False)
    (srun,) = cat.query("SELECT * FROM score_runs WHERE score_run_id = ?", [sub["score_run_id"]])
    assert (srun["valuation_holdout"], srun["n_valuation"]) == (20.0, 2)
    assert ev["adapter_source"] == "local"

    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    run = client.get_run(ft["mlflow_run_id"])
    t = run.data.tags
    assert t["forvalue.dagster_run_id"] == res.run_id and t["forvalue.dagster_asset_key"] == "finetune_run"
    assert t["forvalue.dagster_partition"] == str(pk)
    assert run.data.params["subset_id"] == sub["subset_id"] and run.data.params["steps"] == "3"
    # the MLflow run alone says which subset, strategy, scores, features, model and Dagster run produced it
    p = run.data.params
    assert (p["selection"], p["subset_mode"], p["strategy"]) == ("balanced", "top_k", "top")
    assert (p["score_run_id"], p["train_feature_run_id"], p["val_feature_run_id"], p["scoring_model_id"],
            p["valuation_version"]) == (lineage["score_run_id"], lineage["train_feature_run_id"],
                                        lineage["val_feature_run_id"], lineage["model_id"], lineage["valuation_version"])
    assert t["forvalue.selection"] == "balanced" and t["forvalue.score_run_id"] == lineage["score_run_id"]
    assert t["forvalue.dagster_run_url"] == f"http://127.0.0.1:3000/runs/{res.run_id}"
    assert (p["eval_source"], p["eval_holdout"], p["n_eval"], t["forvalue.eval_source"]) == ("holdout", "20.0", "1",
                                                                                          "holdout")
    (ev_input,) = [d for d in run.inputs.dataset_inputs if any(x.value == "evaluation" for x in d.tags)]
    assert ev_input.dataset.name == "evaluation-holdout"
    tl = cat.query("SELECT * FROM training_run_lineage WHERE training_run_id = ?", [ft["training_run_id"]])[0]
    assert (tl["strategy"], tl["subset_strategy"], tl["subset_mode"]) == ("balanced", "balanced", "top_k")
    assert (tl["score_run_id"], tl["train_feature_run_id"]) == (lineage["score_run_id"], lineage["train_feature_run_id"])
    (inp,) = [d for d in run.inputs.dataset_inputs if any(x.value == "training" for x in d.tags)]
    assert inp.dataset.digest == ft["subset_digest"] and sub["jsonl_path"] in inp.dataset.source
    erun = client.get_run(ev["mlflow_run_id"])
    assert erun.data.tags["mlflow.parentRunId"] == ft["mlflow_run_id"]
    assert erun.data.tags["forvalue.dagster_asset_key"] == "eval_run"

    # governance: the model back to its data in one query
    (lin,) = cat.query("SELECT * FROM training_run_lineage")
    assert (lin["mlflow_run_id"], lin["subset_id"], lin["subset_mode"]) == (ft["mlflow_run_id"], sub["subset_id"], "top_k")
    assert lin["dataset_path"].endswith("t1.jsonl") and lin["training_dagster_run_id"] == res.run_id
    assert lin["subset_dagster_run_id"] == sub["dagster_run_id"] and lin["k"] == 4
    (erow,) = cat.query("SELECT * FROM eval_runs")
    assert erow["training_run_id"] == ft["training_run_id"] and erow["mlflow_run_id"] == ev["mlflow_run_id"]
    assert (erow["eval_source"], erow["n_eval"], erow["eval_holdout"]) == ("holdout", 1, 20.0)
    assert (lin["eval_source"], lin["n_eval"]) == ("holdout", 1) and lin["eval_loss"] == pytest.approx(ft["val_loss"])

    # eval_run takes the adapter from MLflow when the local folder is gone
    import shutil

    shutil.rmtree(lin["output_dir"])
    again = platform.defs.resolve_job_def("finetune_and_eval").execute_in_process(
        partition_key=pk, instance=platform.instance, asset_selection=[AssetKey("eval_run")],
        run_config={"ops": {"eval_run": {"config": {"accuracy": False}}}})
    assert again.success and metadata(again, "eval_run")["adapter_source"] == "mlflow"
    assert metadata(again, "eval_run")["val_loss"] == pytest.approx(ev["val_loss"], rel=1e-5)


def test_comparison_asset_records_the_table(platform):
    pk = pair_key("t1", "v1")
    res = platform.defs.resolve_job_def("compare_subsets").execute_in_process(
        partition_key=pk, instance=platform.instance,
        run_config={"ops": {"finetune_comparison": {"config": {
            "steps": 2, "batch_size": 2, "seeds": [0], "max_new_tokens": 3, "accuracy_limit": 2}}}})
    assert res.success
    md = metadata(res, "finetune_comparison")
    assert md["k"] == 4 and md["dagster/row_count"] == 5
    table = md["comparison"]
    assert md["eval_source"] == "holdout" and md["n_eval"] == 1
    assert table.startswith("Evaluated on the held-out 20% of valuation set v1 (1 sample; the selection used the other 2)")
    table = table.split("\n\n", 1)[1]
    assert table.startswith("| strategy | k | runs | eval loss")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["base", "top", "random", "bottom", "full"]
    cat = platform.catalog()
    rows = cat.query("SELECT * FROM finetune_comparisons ORDER BY strategy")
    assert {r["strategy"]: r["k"] for r in rows} == {"base": 0, "top": 4, "random": 4, "bottom": 4, "full": 8}
    assert all(r["comparison_id"] == md["comparison_id"] and r["val_loss"] > 0 for r in rows)
    summary = FinetuneCatalog(cat).comparison_summary(md["comparison_id"])
    assert [s["strategy"] for s in summary] == ["top", "random", "bottom", "full", "base"]
    # the top-k run trained exactly the curated subset, so it links to it; the others carry a digest only
    runs = {r["strategy"]: r for r in cat.query("SELECT * FROM training_run_lineage WHERE kind = 'comparison'")}
    assert runs["top"]["subset_id"] == cat.latest_subset("t1", "v1")["subset_id"]
    assert runs["random"]["subset_id"] is None and len(runs["random"]["subset_digest"]) == 32
    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    parent = client.get_run(md["mlflow_run_id"])
    assert parent.data.tags["forvalue.run_kind"] == "comparison"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{md['mlflow_run_id']}'")
    assert sorted(c.data.params["strategy"] for c in children) == ["bottom", "full", "random", "top"]
    # top and bottom follow the curated subset's selection strategy (balanced by default)
    assert md["selection"] == "balanced" == cat.latest_subset("t1", "v1")["strategy"]
    assert {c.data.params["strategy"]: c.data.params["selection"] for c in children} == {
        "top": "balanced", "bottom": "balanced", "random": "none", "full": "none"}
    assert {c.data.tags["forvalue.dagster_run_id"] for c in children} == {res.run_id}


def test_an_evaluation_file_evaluates_and_the_whole_valuation_set_selects(platform):
    """incoming/eval/v1.jsonl: the next scoring uses all of v1 (no hold-out), and the comparison
    (base, top, random, bottom, full) is evaluated on the file minus the sample that is also in v1."""
    pk = pair_key("t1", "v1")
    evals = records(4, start=60, prefix="e") + records(1, start=30, prefix="v")   # the last one is v1's first
    path = platform.write_jsonl("eval", "v1", evals)
    assert platform.curate("t1", "v1", subset={"mode": "top_k", "value": 4}).success
    cat = platform.catalog()
    sub = cat.latest_subset("t1", "v1")
    (srun,) = cat.query("SELECT * FROM score_runs WHERE score_run_id = ?", [sub["score_run_id"]])
    assert (srun["valuation_holdout"], srun["n_valuation"]) == (0.0, 3)
    res = platform.defs.resolve_job_def("compare_subsets").execute_in_process(
        partition_key=pk, instance=platform.instance,
        run_config={"ops": {"finetune_comparison": {"config": {
            "steps": 1, "batch_size": 2, "seeds": [0], "accuracy": False, "strategies": ["top", "random", "full"]}}}})
    assert res.success
    md = metadata(res, "finetune_comparison")
    assert (md["eval_source"], md["n_eval"], md["eval_seen_by_selection"]) == ("file", 4, False)
    assert "1 sample of" in md["eval_warnings"] and "left out of the evaluation" in md["eval_warnings"]
    assert md["comparison"].startswith(f"Evaluated on evaluation file {path.resolve()} (4 samples, 1 sample also in")
    rows = cat.query("SELECT * FROM finetune_comparisons WHERE comparison_id = ?", [md["comparison_id"]])
    assert {r["strategy"] for r in rows} == {"base", "top", "random", "full"}
    from forvalue.catalog.db import content_hash

    assert {(r["eval_source"], r["eval_version"], r["n_eval"]) for r in rows} == {("file", content_hash(path), 4)}
    client = MlflowClient(tracking_uri=platform.mlflow_uri)
    assert client.get_run(md["mlflow_run_id"]).data.params["eval_source"] == "file"
