"""The code location: Definitions load and validate, the asset graph's shape, resources from the
environment, the instance template (pools), and no torch at import."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
)

from forvalue_assets.definitions import build_definitions, defs

ROOT = Path(__file__).resolve().parents[1]
ASSETS = {
    "training_dataset": ("ingest", "duckdb", set()),
    "valuation_set": ("ingest", "duckdb", set()),
    "training_features": ("features", "model", {"training_dataset"}),
    "valuation_features": ("features", "model", {"valuation_set"}),
    "forvalue_scores": ("scoring", "duckdb", {"training_features", "valuation_features"}),
    "curated_subset": ("curation", "duckdb", {"forvalue_scores"}),
    "finetune_run": ("finetune", "model", {"curated_subset"}),
    "eval_run": ("finetune", "model", {"finetune_run"}),
    "finetune_comparison": ("finetune", "model", {"curated_subset"}),
}


def test_definitions_load_and_validate():
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(ASSETS)
    for name, (group, pool, parents) in ASSETS.items():
        node = graph.get(AssetKey(name))
        assert node.group_name == group, name
        assert node.pools == {pool}, name
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        assert node.owners == ["team:data-curation"], name
        assert node.kinds and len(node.description) > 40, name
    parts = {n: graph.get(AssetKey(n)).partitions_def for n in ASSETS}
    assert isinstance(parts["training_dataset"], DynamicPartitionsDefinition)
    assert parts["training_dataset"].name == "training_datasets" and parts["valuation_set"].name == "valuation_sets"
    assert isinstance(parts["forvalue_scores"], MultiPartitionsDefinition)
    assert graph.get(AssetKey("training_dataset")).automation_condition is None  # the sensor registers
    for name in ("training_features", "valuation_features", "forvalue_scores", "curated_subset"):
        assert graph.get(AssetKey(name)).automation_condition is not None
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {("training_features", "training_features_cover_samples"),
                      ("valuation_features", "valuation_features_cover_samples"),
                      ("forvalue_scores", "scores_one_row_per_sample"), ("forvalue_scores", "scores_are_finite"),
                      ("curated_subset", "subset_size_matches_config")}
    assert all(graph.get(k).blocking for k in graph.asset_check_keys)


def test_jobs_sensors_schedule_running_by_default():
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    assert {"register_training_dataset", "register_valuation_set", "curation", "finetune_and_eval",
            "compare_subsets"} <= set(jobs)
    assert {k.name for k in jobs["curation"].asset_layer.asset_graph.asset_check_keys} == {
        "scores_one_row_per_sample", "scores_are_finite", "subset_size_matches_config"}
    sensors = {s.name: defs.resolve_sensor_def(s.name) for s in defs.sensors}
    assert set(sensors) == {"incoming_files", "forvalue_automation"}
    assert all(s.default_status == DefaultSensorStatus.RUNNING for s in sensors.values())
    (schedule,) = [defs.resolve_schedule_def(s.name) for s in defs.schedules]
    assert schedule.name == "nightly_curation" and schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_resources_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FORVALUE_FEATURES", raising=False)   # set for the CLI by conftest
    built = build_definitions()
    res = built.resources
    assert (res["model"].model, res["model"].device, res["model"].batch_size) == ("default", "auto", 8)
    assert res["catalog"].path == ".forvalue/forvalue.duckdb" and res["feature_store"].root == ".forvalue/features"
    assert res["feature_store"].config().to_dict()["k"] == 8
    monkeypatch.setenv("FORVALUE_MODEL", str(tmp_path / "model"))
    monkeypatch.setenv("FORVALUE_BATCH_SIZE", "2")
    monkeypatch.setenv("FORVALUE_DB", str(tmp_path / "c.duckdb"))
    monkeypatch.setenv("FORVALUE_FEATURES", str(tmp_path / "f"))
    monkeypatch.setenv("FORVALUE_TOPK", "3")
    monkeypatch.setenv("FORVALUE_RANK", "none")
    res = build_definitions().resources
    assert res["model"].model == str(tmp_path / "model") and res["model"].batch_size == 2
    assert res["catalog"].catalog().path == tmp_path / "c.duckdb"
    cfg = res["feature_store"].config()
    assert (cfg.k, cfg.r) == (3, None) and res["feature_store"].store().root == tmp_path / "f"
    monkeypatch.setenv("FORVALUE_TOPK", "many")
    with pytest.raises(ValueError, match="FORVALUE_TOPK"):
        build_definitions()


def test_code_location_does_not_import_torch():
    code = ("import sys, forvalue_assets.definitions, sensors, resources; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_instance_template_limits_pools_to_one(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "forvalue_assets" / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        for pool in ("model", "duckdb"):
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.limit == 1, pool


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                          "workspace.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_serve_prepares_dagster_home(tmp_path, monkeypatch):
    from forvalue_assets import serve

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    home = serve.prepare_home()
    assert home == tmp_path / "home"
    assert (home / "dagster.yaml").read_text() == (ROOT / "forvalue_assets" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 2\n")
    serve.prepare_home()  # an existing file is kept
    assert "default_limit: 2" in (home / "dagster.yaml").read_text()
    cmd = serve.dev_command(3123, ["--verbose"])
    assert cmd[1:] == ["dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", "3123", "--verbose"]
    monkeypatch.delenv("DAGSTER_HOME")
    assert serve.prepare_home(tmp_path / "other") == tmp_path / "other"
