"""Fine-tune and eval runs in the DuckDB catalog (no Dagster here).

Rows go into the platform's ``training_runs`` table (sql/schema.sql) plus the tables and the
``training_run_lineage`` view of ``sql/finetune.sql`` (its ``schema`` block, created with the rest of
the catalog). Queries are the catalog's named queries (``forvalue.catalog.db.Catalog.execute``): one
loader, one parameter binding, one transaction per write; values are always bound parameters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from .._version import __version__
from .db import Catalog, to_json, utcnow

_EVAL_COLUMNS = ("eval_source", "eval_set", "eval_version", "eval_holdout", "eval_seen_by_selection")


def _eval_values(evaluation: dict | None) -> dict:
    """The eval_* columns of a row from :meth:`forvalue.data.holdout.EvalSet.params` (all NULL without one)."""
    return {c: (evaluation or {}).get(c) for c in _EVAL_COLUMNS}

@dataclass
class FinetuneCatalog:
    catalog: Catalog

    def ensure_schema(self) -> None:
        """The fine-tuning tables and the ``training_run_lineage`` view exist (sql/finetune.sql)."""
        self.catalog.ensure("finetune.sql")

    def _exec(self, con, name: str, **values):
        return self.catalog.execute(con, name, **values)

    def fetch(self, name: str, **values) -> list[dict]:
        self.ensure_schema()
        return self.catalog.fetch(name, **values)

    # ------------------------------------------------------------------ training runs
    def record_training_run(self, *, kind: str, dataset_name: str, dataset_version: str, valuation_set: str,
                            valuation_version: str, result, base_model_id: str, subset_id: str | None = None,
                            strategy: str, k: int, seed: int, steps: int, comparison_id: str | None = None,
                            tracking_uri: str | None = None, experiment_id: str | None = None,
                            dagster_run_id: str | None = None, dagster_asset_key: str | None = None,
                            status: str = "finished", evaluation: dict | None = None) -> str:
        """Record a ``forvalue.training.finetune.FinetuneResult`` (training_runs + finetune_details + the
        samples it trained on in training_samples, one transaction); ``evaluation``: what its final
        evaluation ran on (EvalSet.params())."""
        import pyarrow as pa

        self.ensure_schema()
        run_id = uuid.uuid4().hex
        with self.catalog.transaction() as con:
            self._exec(con, "insert_training_run", training_run_id=run_id, subset_id=subset_id,
                       base_model_id=base_model_id, mlflow_run_id=result.mlflow_run_id, status=status,
                       metrics=to_json(result.metrics), code_version=__version__, dagster_run_id=dagster_run_id,
                       created_at=utcnow())
            self._exec(con, "insert_finetune_details", training_run_id=run_id, kind=kind, dataset_name=dataset_name,
                       dataset_version=dataset_version, valuation_set=valuation_set,
                       valuation_version=valuation_version, strategy=strategy, k=int(k), seed=int(seed),
                       method=result.method, steps=int(steps), subset_digest=result.subset_digest,
                       comparison_id=comparison_id, output_dir=str(result.output_dir.resolve()),
                       weights_sha256=result.meta.get("weights_sha256"), params=to_json(result.params),
                       tracking_uri=tracking_uri, mlflow_experiment_id=experiment_id,
                       dagster_asset_key=dagster_asset_key, n_eval=(evaluation or {}).get("n_eval"),
                       **_eval_values(evaluation))
            ids = pa.table({"sample_id": pa.array(list(result.sample_ids), pa.string())})
            self.catalog._insert_arrow(con, "insert_training_samples", "new_training_samples", ids,
                                       training_run_id=run_id)
        return run_id

    def latest_training_run(self, dataset_name: str, valuation_set: str) -> dict | None:
        rows = self.fetch("latest_training_run", dataset_name=dataset_name, valuation_set=valuation_set)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ eval runs
    def record_eval_run(self, *, valuation_set: str, valuation_version: str, model_fingerprint: str,
                        metrics: dict, training_run_id: str | None = None, mlflow_run_id: str | None = None,
                        finetune_mlflow_run_id: str | None = None, dagster_run_id: str | None = None,
                        evaluation: dict | None = None) -> str:
        self.ensure_schema()
        eid = uuid.uuid4().hex
        with self.catalog.transaction() as con:
            self._exec(con, "insert_eval_run", eval_run_id=eid, training_run_id=training_run_id,
                       mlflow_run_id=mlflow_run_id, finetune_mlflow_run_id=finetune_mlflow_run_id,
                       valuation_set=valuation_set, valuation_version=valuation_version,
                       model_fingerprint=model_fingerprint, val_loss=metrics.get("val_loss"),
                       perplexity=metrics.get("val_perplexity"), accuracy=metrics.get("accuracy"),
                       n_eval=int(metrics["n_eval"]) if metrics.get("n_eval") is not None else None,
                       metrics=to_json(metrics), code_version=__version__, dagster_run_id=dagster_run_id,
                       created_at=utcnow(), **_eval_values(evaluation))
        return eid

    # ------------------------------------------------------------------ comparisons
    def record_comparison(self, comparison_id: str, rows: Sequence[dict], *, dataset_name: str,
                          dataset_version: str, valuation_set: str, valuation_version: str,
                          score_run_id: str | None, curated_subset_id: str | None,
                          dagster_run_id: str | None = None, evaluation: dict | None = None) -> None:
        """Rows: dicts with strategy, k, seed, steps, val_loss, perplexity, accuracy, n_eval,
        training_run_id, mlflow_run_id (one transaction); ``evaluation``: what they were evaluated on."""
        self.ensure_schema()
        now = utcnow()
        with self.catalog.transaction() as con:
            for r in rows:
                self._exec(con, "insert_comparison_row", comparison_id=comparison_id, dataset_name=dataset_name,
                           dataset_version=dataset_version, valuation_set=valuation_set,
                           valuation_version=valuation_version, score_run_id=score_run_id,
                           curated_subset_id=curated_subset_id, strategy=r["strategy"], k=int(r["k"]),
                           seed=int(r["seed"]), steps=int(r["steps"]), training_run_id=r.get("training_run_id"),
                           mlflow_run_id=r.get("mlflow_run_id"), val_loss=r.get("val_loss"),
                           perplexity=r.get("perplexity"), accuracy=r.get("accuracy"),
                           n_eval=r.get("n_eval") or (evaluation or {}).get("n_eval"), code_version=__version__, dagster_run_id=dagster_run_id,
                           created_at=now, **_eval_values(evaluation))

    def comparison_summary(self, comparison_id: str) -> list[dict]:
        return self.fetch("comparison_summary", comparison_id=comparison_id)

    def subset_members(self, subset_id: str) -> list[dict]:
        return self.fetch("subset_members", subset_id=subset_id)


def finetune_catalog(catalog: Catalog | Any) -> FinetuneCatalog:
    return FinetuneCatalog(catalog)
