"""The platform on Ray: the ``ray`` resource (dagster-ray) is chosen by configuration, a Ray step on
``LocalRay`` with no Ray running starts a local Ray for the step and shuts it down with its folder after
it, and the ``training_features`` asset materializes on ``LocalRay`` (joining the session's local Ray,
which the steps leave running) through the Ray engine with workers, rows/s and retried tasks in its
metadata; the scores and the curated subset are computed one Ray task per shard with the in-process results.
"""

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("dagster_ray")

from tests.conftest import make_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _ray_folders() -> set:
    return set(Path(tempfile.gettempdir()).glob("fvray-*"))


def test_a_ray_step_starts_a_local_ray_and_shuts_it_down_after(no_local_ray):
    """ForValueLocalRay with no Ray running: the step's first use starts a local Ray with the CPUs of
    ray_init_options in its own folder; the end of the step shuts it down and removes the folder."""
    import ray
    from dagster import asset, materialize
    from dagster_ray import Lifecycle, RayResource

    from resources.ray import ForValueLocalRay, connect

    before, seen = _ray_folders(), {}

    @asset
    def on_local_ray(context, ray_cluster: RayResource) -> None:
        seen["before_connect"] = ray.is_initialized()
        connect(ray_cluster, context)
        connect(ray_cluster, context)                      # once per step: a second call reuses the connection
        seen["cpus"] = ray.cluster_resources().get("CPU")
        seen["folder"] = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).parent   # the local Ray's folder holds its token
        seen["folder_there"] = seen["folder"].is_dir()

    local = ForValueLocalRay(lifecycle=Lifecycle(connect=False, cleanup="never"), ray_init_options={"num_cpus": 1})
    assert materialize([on_local_ray], resources={"ray_cluster": local}).success
    assert seen["before_connect"] is False and seen["cpus"] == 1.0   # started by the step, with 1 CPU ...
    folder = seen["folder"]
    assert folder.name.startswith("fvray-") and seen["folder_there"] and folder not in before   # ... in its own folder
    assert not ray.is_initialized()                                  # shut down after the step ...
    assert not folder.exists() and "RAY_AUTH_TOKEN_PATH" not in os.environ   # ... its folder and token removed


def test_training_features_materialize_on_local_ray(local_ray, tiny_model_dir, tmp_path):
    import ray
    from dagster import AssetKey
    from dagster_ray import Lifecycle, LocalRay

    from forvalue_assets.testing import platform_for_test
    from resources import EngineResource, FeatureStoreResource
    from resources.ray import ForValueLocalRay

    before = _ray_folders()
    assert local_ray.temp_dir in before                    # the session's local Ray: the steps join it
    step_ray = ForValueLocalRay(lifecycle=Lifecycle(connect=False, cleanup="never"), ray_init_options={"num_cpus": 2})
    assert isinstance(step_ray, LocalRay)
    # one worker (not the default 2) writing shards of 4 samples: the scores and the subset run one task per shard
    resources = {"engine": EngineResource(engine="ray", workers=1), "ray": step_ray,
                 "feature_store": FeatureStoreResource(root=str(tmp_path / "features"), k=4, r=8, shard_size=4)}
    with platform_for_test(tmp_path, model=str(tiny_model_dir), batch_size=2, resources=resources) as p:
        data = p.write_jsonl("train", "t1", make_records(12, seed=5))
        res = p.register("train", "t1", data)
        assert res.success
        (mat,) = [m for m in res.get_asset_materialization_events()
                  if m.asset_key == AssetKey("training_features")]
        meta = {k: v.value for k, v in mat.materialization.metadata.items()}
        assert meta["engine"] == "ray" and meta["ray_cluster"] == "LocalRay"
        assert meta["workers"] == 1 and meta["retried_tasks"] == 0 and meta["rows_per_s"] > 0
        assert meta["computed"] == 12 and meta["reused"] == 0 and meta["dagster/row_count"] == 12
        folder = Path(meta["store_folder"])
        ids = Counter()
        for m in folder.glob("shard-*.json"):
            ids.update(json.loads(m.read_text())["sample_ids"])
        assert len(ids) == 12 and set(ids.values()) == {1}
        runs = p.catalog().query("SELECT n_computed, n_samples FROM feature_runs")
        assert [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in runs] == [(12, 12)]
        # the scores asset on the same engine: one Ray task per shard, the values of the in-process scoring
        assert p.register("valuation", "v1", p.write_jsonl("valuation", "v1", make_records(3, seed=6, prefix="v"))).success
        res = p.curate("t1", "v1", subset={"mode": "top_k", "value": 4})
        assert res.success
        (mat,) = [m for m in res.get_asset_materialization_events() if m.asset_key == AssetKey("forvalue_scores")]
        meta = {k: v.value for k, v in mat.materialization.metadata.items()}
        assert meta["engine"] == "ray" and meta["workers"] == 1 and meta["ray_cluster"] == "LocalRay"
        from forvalue.data.holdout import split
        from forvalue.valuator import Valuator

        cat = p.catalog()
        stored = {r["sample_id"]: r["score"] for r in cat.query("SELECT sample_id, score FROM scores")}
        model_id = cat.query("SELECT model_id FROM score_runs")[0]["model_id"]
        train_ids = cat.sample_ids("dataset", "t1", cat.current_set("dataset", "t1")["version"])
        val_ids = cat.sample_ids("valuation_set", "v1", cat.current_set("valuation_set", "v1")["version"])
        val_ids = split(val_ids, 20.0)[0]   # the part the scores use: the default hold-out keeps one for evaluation
        local = Valuator.from_store(p.feature_store(), cat.fingerprint(model_id), p.resources["feature_store"].config())
        want = local.score_stored(train_ids, val_ids).values
        got = [stored[s] for s in train_ids]
        assert len(got) == 12 and max(abs(a - b) for a, b in zip(got, want)) <= 1e-6 * max(abs(w) for w in want)
        # the curated subset (balanced: pairwise, from the stored features) on the same engine, by shard
        (mat,) = [m for m in res.get_asset_materialization_events() if m.asset_key == AssetKey("curated_subset")]
        meta = {k: v.value for k, v in mat.materialization.metadata.items()}
        assert meta["engine"] == "ray" and meta["strategy"] == "balanced" and meta["shard_tasks"] >= 2
        assert meta["retried_tasks"] == 0
        kept = [r["sample_id"] for r in cat.query("SELECT sample_id FROM subset_samples ORDER BY rank")]
        order = local.rank_stored(train_ids, val_ids, "balanced", limit=4).order
        assert kept == [train_ids[i] for i in order[:4]]
    # a step that joined a running Ray leaves it running, and starts no Ray of its own
    assert ray.is_initialized() and local_ray.temp_dir.is_dir() and _ray_folders() <= before


def test_the_ray_resource_is_chosen_by_configuration(monkeypatch):
    from dagster_ray import LocalRay, RayResource

    from forvalue_assets.definitions import build_definitions
    from resources.ray import RayClusterAddress

    for var in ("FORVALUE_RAY_ADDRESS", "FORVALUE_ENGINE", "FORVALUE_RAY_WORKERS", "FORVALUE_RAY_GPUS_PER_WORKER"):
        monkeypatch.delenv(var, raising=False)
    res = build_definitions().resources
    assert isinstance(res["ray"], LocalRay) and not res["ray"].lifecycle.connect   # connects only when used
    assert res["engine"].config().engine == "local"
    monkeypatch.setenv("FORVALUE_RAY_ADDRESS", "ray://head.example:10001")
    monkeypatch.setenv("FORVALUE_ENGINE", "ray")
    monkeypatch.setenv("FORVALUE_RAY_WORKERS", "8")
    monkeypatch.setenv("FORVALUE_RAY_GPUS_PER_WORKER", "2")
    res = build_definitions().resources
    assert isinstance(res["ray"], RayClusterAddress) and isinstance(res["ray"], RayResource)
    assert res["ray"].ray_address == "ray://head.example:10001" and res["ray"].host == "head.example"
    cfg = res["engine"].config()
    assert (cfg.engine, cfg.workers, cfg.gpus_per_worker) == ("ray", 8, 2.0)
    monkeypatch.setenv("FORVALUE_RAY_WORKERS", "many")
    with pytest.raises(ValueError, match="FORVALUE_RAY_WORKERS"):
        build_definitions()
    monkeypatch.setenv("FORVALUE_RAY_WORKERS", "2")
    monkeypatch.setenv("FORVALUE_ENGINE", "spark")
    with pytest.raises(ValueError, match="FORVALUE_ENGINE.*engine 'spark': use local or ray"):
        build_definitions()


def test_the_code_location_imports_no_ray():
    code = ("import sys, forvalue_assets.definitions as d; d.build_definitions(); "
            "heavy = [m for m in ('ray', 'torch', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
