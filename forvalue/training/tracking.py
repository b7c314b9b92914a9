"""MLflow tracking for fine-tune and eval runs (no Dagster here).

Every call goes through an ``MlflowClient`` built with an explicit tracking URI; the process-wide
``mlflow.set_tracking_uri`` state is never touched, so two trackers (two stores) can live in one
process (tests, Dagster's in-process executor).

Tracking URI, first found wins:
1. the ``tracking_uri`` argument (CLI ``--tracking-uri``, the Dagster ``MLflowResource``);
2. ``FORVALUE_MLFLOW_URI``; 3. ``MLFLOW_TRACKING_URI`` (e.g. ``http://mlflow.internal:5000``);
4. ``sqlite:///<project>/.forvalue/mlflow.db`` with ``<project>`` the working directory, made absolute.

MLflow >= 3.13 no longer accepts the plain file store, so a bare ``*.db`` path becomes a sqlite URI
and a folder path is refused with a message. With a sqlite store, artifacts (adapters) go to
``<folder of the db>/mlartifacts/<experiment id>`` unless an artifact location is given.

Run layout (what a fine-tune run carries, see :mod:`forvalue.training.finetune`): params (model fingerprint,
subset id and digest, strategy, k, seed, hyper-parameters), per-step metrics, final metrics, the
subset as a dataset input (context ``training``) whose digest is the subset digest, the adapter as
artifacts under ``adapter/``, and tags (``forvalue.*``: Dagster run id, asset key, partition).
An eval run is a child of its fine-tune run (``mlflow.parentRunId``) and names it in the tag
``forvalue.finetune_run_id``. The experiment is tagged ``mlflow.experimentKind`` =
``custom_model_development``, so MLflow 3's UI opens it on its runs and metrics, not on GenAI traces.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from ..errors import TrackingError  # noqa: F401  (re-exported)

ENV_URIS = ("FORVALUE_MLFLOW_URI", "MLFLOW_TRACKING_URI")
DEFAULT_EXPERIMENT = "forvalue-finetune"
DEFAULT_UI = "http://127.0.0.1:5000"

TAG_KIND = "forvalue.run_kind"               # finetune | eval
# MLflow 3's UI opens an experiment by its kind: without this tag it may infer "GenAI apps & agents" and open
# on traces and evaluations; "custom_model_development" ("Machine learning" in the UI) opens on the runs and
# their metrics (the value the UI writes when a person picks that kind; mlflow/server/js, MLflow 3.17).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_FINETUNE_RUN = "forvalue.finetune_run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_DAGSTER_RUN = "forvalue.dagster_run_id"
TAG_ASSET_KEY = "forvalue.dagster_asset_key"
TAG_PARTITION = "forvalue.dagster_partition"


# ----------------------------------------------------------------------------- URIs
def default_tracking_uri(project: str | Path | None = None) -> str:
    root = Path(project) if project is not None else Path.cwd()
    return f"sqlite:///{(root / '.forvalue' / 'mlflow.db').resolve()}"


def resolve_tracking_uri(uri: str | None = None, *, project: str | Path | None = None) -> str:
    """The tracking URI to use (argument > FORVALUE_MLFLOW_URI > MLFLOW_TRACKING_URI > default)."""
    chosen = (uri or "").strip()
    if not chosen:
        for name in ENV_URIS:
            chosen = os.environ.get(name, "").strip()
            if chosen:
                break
    if not chosen:
        return default_tracking_uri(project)
    scheme = urlparse(chosen).scheme
    if scheme in ("", "file"):
        path = Path(chosen[len("file://"):] if scheme == "file" else chosen)
        if path.suffix == ".db":
            return f"sqlite:///{path.resolve()}"
        raise TrackingError(
            f"tracking URI {chosen!r}: MLflow 3 no longer supports the file store; use "
            f"sqlite:///{(path / 'mlflow.db').resolve()} or an http(s):// server")
    return chosen


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


# MLflow 3's UI opens in GenAI mode (traces, evaluations) unless the link names the workflow: its
# toggle lives in the browser's local storage, not in the experiment's kind (checked with 3.17 in Chromium).
UI_WORKFLOW = "?workflowType=machine_learning"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, opened as model training (runs and metrics)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{UI_WORKFLOW}"


def ui_url_for(tracking_uri: str, ui_url: str | None = None) -> str:
    """Where a person opens the MLflow UI: the server itself for http(s) URIs; otherwise ``ui_url``
    (default http://127.0.0.1:5000, what ``mlflow ui --backend-store-uri <uri>`` serves)."""
    if ui_url:
        return ui_url
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri
    return DEFAULT_UI


# ----------------------------------------------------------------------------- digests
def subset_digest(sample_ids: Sequence[str]) -> str:
    """Digest of a set of samples (order-free): 32 hex characters (MLflow keeps at most 36)."""
    blob = "\n".join(sorted(set(sample_ids))).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def file_sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


# ----------------------------------------------------------------------------- tracker
class Tracker:
    """One MLflow store + experiment. ``Tracker.from_env()`` resolves the URI as described above."""

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = DEFAULT_EXPERIMENT,
                 artifact_location: str | None = None, ui_url: str | None = None):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.artifact_location = artifact_location or None
        self.ui_url = ui_url_for(self.tracking_uri, ui_url)
        self._client = None
        self._experiment_id: str | None = None

    @classmethod
    def from_env(cls, **kwargs) -> "Tracker":
        return cls(None, **kwargs)

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            db = sqlite_path(self.tracking_uri)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        """The experiment's id; created on first use, marked as model training (``mlflow.experimentKind``,
        also on an experiment an older release created without it; a kind set by a person is kept)."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                self._experiment_id = exp.experiment_id
                if TAG_EXPERIMENT_KIND not in (exp.tags or {}):
                    self.client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            else:
                location = self.artifact_location
                db = sqlite_path(self.tracking_uri)
                if location is None and db is not None:
                    location = (db.parent / "mlartifacts" / self.experiment).resolve().as_uri()
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
                except Exception:  # created meanwhile by another process
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
        return self._experiment_id

    @contextmanager
    def start_run(self, run_name: str, *, kind: str, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None) -> Iterator["RunLogger"]:
        """A run that ends FINISHED when the block ends and FAILED (tag ``forvalue.error``) when it raises."""
        all_tags = {TAG_KIND: kind, **{k: str(v) for k, v in (tags or {}).items() if v is not None}}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id(), tags=all_tags, run_name=run_name)
        logger = RunLogger(self, run.info.run_id)
        try:
            yield logger
        except BaseException as e:
            try:
                self.client.set_tag(logger.run_id, "forvalue.error", f"{type(e).__name__}: {e}"[:4000])
                self.client.set_terminated(logger.run_id, "FAILED" if not isinstance(e, KeyboardInterrupt) else "KILLED")
            except Exception:
                pass
            raise
        logger.flush()
        self.client.set_terminated(logger.run_id, "FINISHED")

    def url(self, run_id: str) -> str:
        return run_url(self.ui_url, self.experiment_id(), run_id)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)


@dataclass
class RunLogger:
    tracker: Tracker
    run_id: str

    def __post_init__(self):
        self._pending: list = []

    @property
    def client(self):
        return self.tracker.client

    @property
    def url(self) -> str:
        return self.tracker.url(self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, *, buffer: bool = False) -> None:
        """Log now, or (``buffer``) collect and write with the next unbuffered call / flush."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        if not buffer or len(self._pending) >= 500:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_dataset(self, rows: list[dict], *, name: str, digest: str, source: str, context: str,
                    extra_tags: Mapping[str, str] | None = None) -> None:
        """Log a table of samples as a dataset input (schema and row count from pandas; our digest)."""
        import mlflow.data
        import pandas as pd
        from mlflow.entities import Dataset, DatasetInput, InputTag

        df = pd.DataFrame(rows)
        with warnings.catch_warnings():
            # schema hints about integer columns and ambiguous local sources are noise here
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
            d = ds.to_dict()
        entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                         schema=d.get("schema"), profile=d.get("profile"))
        tags = [InputTag("mlflow.data.context", context)]
        tags += [InputTag(k, str(v)) for k, v in (extra_tags or {}).items()]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_file: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_file), artifact_path)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)
