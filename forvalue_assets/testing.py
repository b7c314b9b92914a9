"""Run the platform in-process against temporary folders (tests, notebooks, debugging).

    with platform_for_test(tmp_path, model="path/to/tiny-model") as p:
        p.register("train", "t1", p.write_jsonl("train", "t1", records))
        p.register("valuation", "v1", p.write_jsonl("valuation", "v1", val_records))
        p.automate()            # what the automation sensor would run: scores, subsets
        p.catalog().query("SELECT * FROM subset_lineage")

Everything lives under one root folder: a temporary Dagster instance (DAGSTER_HOME), the DuckDB
catalog, the feature store, subset exports and the incoming folder. The resources are explicit
(the embedded defaults, not the environment), except ``mlflow``, which comes from the environment
as in ``build_definitions``; ``platform.resources`` holds the explicit ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dagster import AssetKey, DagsterInstance, Definitions, evaluate_automation_conditions, instance_for_test

from forvalue.io import atomic_write_text
from resources import (CurationResource, DuckDBStoreResource, EngineResource, FeatureStoreResource, FinetuneResource,
                       ModelResource, ray_resource_from_env)
from sensors.settings import TRAIN_SUBDIR, VALUATION_SUBDIR

from .definitions import build_definitions
from .partitions import pair_key, training_datasets, valuation_sets

JOBS = {TRAIN_SUBDIR: ("register_training_dataset", "training_dataset", training_datasets),
        VALUATION_SUBDIR: ("register_valuation_set", "valuation_set", valuation_sets)}


@dataclass
class Platform:
    root: Path
    resources: dict
    defs: Definitions
    instance: DagsterInstance
    automation_cursor: object = None
    executed: list = field(default_factory=list)

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def catalog(self):
        return self.resources["catalog"].catalog()

    def feature_store(self):
        return self.resources["feature_store"].store()

    def write_jsonl(self, subdir: str, name: str, records: list[dict]) -> Path:
        return atomic_write_text(self.incoming / subdir / f"{name}.jsonl",
                                 "".join(json.dumps(r) + "\n" for r in records))

    def register(self, subdir: str, name: str, path: str | Path | None = None, *, raise_on_error: bool = True,
                 **config):
        """Run the registration job (register + features) for one name, as the sensor would."""
        job_name, asset_name, parts = JOBS[subdir]
        if not self.instance.has_dynamic_partition(parts.name, name):
            self.instance.add_dynamic_partitions(parts.name, [name])
        cfg = dict(config)
        if path is not None:
            cfg["path"] = str(path)
        return self.defs.resolve_job_def(job_name).execute_in_process(
            partition_key=name, instance=self.instance, raise_on_error=raise_on_error,
            run_config={"ops": {asset_name: {"config": cfg}}})

    def curate(self, dataset: str, valuation: str, *, subset: dict | None = None, raise_on_error: bool = True,
               asset_selection: list[AssetKey] | None = None):
        """Run the curation job (scores + subset + checks) for one pair."""
        run_config = {"ops": {"curated_subset": {"config": subset}}} if subset else None
        return self.defs.resolve_job_def("curation").execute_in_process(
            partition_key=pair_key(dataset, valuation), instance=self.instance, run_config=run_config,
            raise_on_error=raise_on_error, asset_selection=asset_selection)

    def run_checks(self, asset: str, partition_key: str, *, raise_on_error: bool = True):
        """Execute only the asset checks of ``asset`` for one partition (as "Execute checks" in the UI)."""
        job_name = {"training_features": "register_training_dataset",
                    "valuation_features": "register_valuation_set"}.get(asset, "curation")
        job = self.defs.resolve_job_def(job_name)
        keys = {c for c in job.asset_layer.asset_graph.asset_check_keys if c.asset_key == AssetKey(asset)}
        return job.get_subset(asset_selection=set(), asset_check_selection=keys).execute_in_process(
            instance=self.instance, partition_key=str(partition_key), raise_on_error=raise_on_error)

    def evaluate_automation(self):
        result = evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                cursor=self.automation_cursor)
        self.automation_cursor = result.cursor
        requested = defaultdict(list)
        for res in result.results:
            if isinstance(res.key, AssetKey):
                for pk in result.get_requested_partitions(res.key):
                    requested[pk].append(res.key)
        return requested

    def automate(self, max_ticks: int = 6) -> list[tuple[str, str]]:
        """Tick the automation conditions and execute what they request (grouped by partition, as
        the automation sensor does) until nothing more is requested. Returns (asset, partition)."""
        done = []
        global_job = self.defs.resolve_implicit_global_asset_job_def()
        for _ in range(max_ticks):
            requested = self.evaluate_automation()
            if not requested:
                return done
            for pk, keys in sorted(requested.items(), key=lambda kv: str(kv[0])):
                global_job.execute_in_process(instance=self.instance, partition_key=pk, asset_selection=keys)
                done.extend((k.to_user_string(), str(pk)) for k in keys)
        raise RuntimeError(f"automation still requesting after {max_ticks} ticks: {done}")


@contextmanager
def platform_for_test(root: str | Path, *, model: str, k: int = 4, r: int | None = 8, batch_size: int = 4,
                      persistent: bool = False, resources: dict | None = None) -> Iterator[Platform]:
    """``persistent``: a SQLite-backed instance in <root>/dagster_home (what schedules and
    anything that reloads the instance need) instead of the faster in-memory one. ``resources``
    replaces some of the platform's resources, e.g. ``{"curation": CurationResource.from_env()}``."""
    root = Path(root)
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    resources = {
        "model": ModelResource(model=str(model), device="cpu", dtype="float32", batch_size=batch_size),
        "catalog": DuckDBStoreResource(path=str(root / "forvalue.duckdb"), export_dir=str(root / "subsets"),
                                       lock_timeout=30.0),
        "feature_store": FeatureStoreResource(root=str(root / "features"), k=k, r=r),
        "curation": CurationResource(),
        "finetune": FinetuneResource(),
        "engine": EngineResource(),              # in-process unless a test passes another
        "ray": ray_resource_from_env(),
        **(resources or {}),
    }
    defs = build_definitions(resources)
    make = (lambda: instance_for_test(temp_dir=str(home))) if persistent else (
        lambda: DagsterInstance.ephemeral(tempdir=str(home)))
    with make() as instance:
        platform = Platform(root=root, resources=resources, defs=defs, instance=instance)
        # The automation sensor runs from the start: take its first (baseline) tick now, so later
        # ticks see updates relative to it.
        platform.evaluate_automation()
        yield platform
