"""MLflowResource: where fine-tune and eval runs are tracked.

The tracking URI is explicit: the ``tracking_uri`` field, else FORVALUE_MLFLOW_URI, else
MLFLOW_TRACKING_URI (e.g. an ``http://`` server), else ``sqlite:///<working dir>/.forvalue/mlflow.db``
(resolved by ``forvalue.training.tracking.resolve_tracking_uri``; MLflow 3's file store is not used).
Imports neither mlflow, torch nor transformers at import time.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env


class MLflowResource(ConfigurableResource):
    """Wraps ``forvalue.training.tracking.Tracker`` (an MlflowClient with an explicit tracking URI)."""

    tracking_uri: str = Field(default="", description="MLflow tracking URI; empty: FORVALUE_MLFLOW_URI, "
                                                      "MLFLOW_TRACKING_URI, else sqlite:///<cwd>/.forvalue/mlflow.db")
    experiment: str = Field(default="forvalue-finetune", description="MLflow experiment. Env: FORVALUE_MLFLOW_EXPERIMENT")
    artifact_location: str = Field(default="", description="artifact root of a new experiment; empty: next to a sqlite "
                                                           "store (mlartifacts/), the server's default otherwise")
    ui_url: str = Field(default="", description="base URL of the MLflow UI for run links; empty: the tracking URI "
                                                "when it is http(s), else http://127.0.0.1:5000. Env: FORVALUE_MLFLOW_UI")
    output_dir: str = Field(default=".forvalue/finetune", description="where adapters are written before they are "
                                                                     "logged as artifacts. Env: FORVALUE_FINETUNE_DIR")

    @classmethod
    def from_env(cls) -> "MLflowResource":
        """Each variable that is set becomes an ``EnvVar`` (resolved when a run starts); the tracking
        URI stays empty here and is resolved by ``forvalue.training.tracking`` when a run tracks."""
        env = {"experiment": "FORVALUE_MLFLOW_EXPERIMENT", "ui_url": "FORVALUE_MLFLOW_UI",
               "output_dir": "FORVALUE_FINETUNE_DIR"}
        return read_env(cls, env, run_time=env, tracking_uri="")

    def tracker(self):
        """A ``forvalue.training.tracking.Tracker`` for this store and experiment."""
        from forvalue.training.tracking import Tracker

        return Tracker(self.tracking_uri or None, experiment=self.experiment,
                       artifact_location=self.artifact_location or None, ui_url=self.ui_url or None)

    def resolved_uri(self) -> str:
        from forvalue.training.tracking import resolve_tracking_uri

        return resolve_tracking_uri(self.tracking_uri or None)
