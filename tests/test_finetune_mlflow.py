"""Fine-tune and eval runs logged to a temporary sqlite MLflow store (tiny model, a few steps)."""

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from forvalue.data.samples import samples_from_records
from forvalue.training.evaluate import EvalConfig
from forvalue.training.finetune import SubsetInfo, TrainConfig, finetune, run_evaluation
from forvalue.training.tracking import (TAG_ASSET_KEY, TAG_DAGSTER_RUN, Tracker, TrackingError, default_tracking_uri,
                                        resolve_tracking_uri, subset_digest)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, OpenMP threads of a tiny model spin against other processes."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sums(n, start=0):
    return [{"id": f"q{i}", "prompt": f"What is {i} plus {i + 3}?", "response": f"{i} plus {i + 3} is {2 * i + 3}.",
             "answer": 2 * i + 3} for i in range(start, start + n)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return root, f"sqlite:///{root / 'mlflow.db'}"


def test_finetune_run_logs_params_metrics_and_dataset_input(tiny_lm, tmp_path, store, monkeypatch):
    root, uri = store
    monkeypatch.chdir(tmp_path)
    train = samples_from_records(sums(6), source="train.jsonl").samples
    val = samples_from_records(sums(3, start=20), source="val.jsonl").samples
    tracker = Tracker(uri, experiment="test-finetune")
    res = finetune(tiny_lm, train, out_dir=tmp_path / "adapter", config=TrainConfig(steps=4, batch_size=3, seed=1),
                   val=val, tracker=tracker,
                   subset=SubsetInfo(strategy="top", k=6, p=50.0, subset_id="subset-123", source="train.jsonl",
                                     n_total=12, name="t1-top-6"),
                   tags={TAG_DAGSTER_RUN: "dagster-run-1", TAG_ASSET_KEY: "finetune_run"})

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("test-finetune").experiment_id
    p = run.data.params
    assert p["model_fingerprint"] == tiny_lm.fingerprint.id
    assert (p["subset_id"], p["strategy"], p["k"], p["seed"], p["n_total"]) == ("subset-123", "top", "6", "1", "12")
    assert (p["method"], p["steps"], p["batch_size"], p["lr"], p["lora_r"]) == ("lora", "4", "3", "0.001", "8")
    assert p["subset_digest"] == subset_digest([s.sample_id for s in train]) == res.subset_digest
    assert p["positions"] == "response" and p["chat_template"] == "True"

    # per-step metrics at steps 1..4, and the final ones
    hist = client.get_metric_history(res.mlflow_run_id, "train_loss")
    assert sorted(m.step for m in hist) == [1, 2, 3, 4]
    losses = [m.value for m in sorted(hist, key=lambda m: m.step)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert [h["train_loss"] for h in res.history] == pytest.approx(losses)
    assert {"lr", "grad_norm"} <= set(run.data.metrics)
    m = run.data.metrics
    assert m["val_loss"] == pytest.approx(res.metrics["val_loss"])
    assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["train_loss_final"] > 0 and m["train_seconds"] > 0

    # the subset as a dataset input with its digest; the valuation set as the evaluation input
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    ds = inputs["training"]
    assert (ds.name, ds.digest) == ("t1-top-6", res.subset_digest)
    assert "train.jsonl" in ds.source and json.loads(ds.profile)["num_rows"] == 6
    assert {c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]} >= {"sample_id", "prompt", "response"}
    assert inputs["evaluation"].digest == subset_digest([s.sample_id for s in val])

    # tags: Dagster run id and asset key, run kind
    t = run.data.tags
    assert (t[TAG_DAGSTER_RUN], t[TAG_ASSET_KEY], t["forvalue.run_kind"]) == ("dagster-run-1", "finetune_run", "finetune")
    assert t["forvalue.subset_id"] == "subset-123"

    # the adapter as artifacts (safetensors, no pickles) and the exact sample ids
    arts = {f.path for f in client.list_artifacts(res.mlflow_run_id, "adapter")}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/forvalue_finetune.json"} <= arts
    assert not [a for a in arts if a.endswith((".bin", ".pt", ".pkl"))]
    local = client.download_artifacts(res.mlflow_run_id, "subset/sample_ids.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read())["sample_ids"] == [s.sample_id for s in train]
    assert (root / "mlflow.db").is_file() and (root / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / ".forvalue").exists()

    # an eval run of the adapter is a child of the fine-tune run and reproduces its valuation loss
    er = run_evaluation(None, val, adapter=res.output_dir, tracker=tracker, config=EvalConfig(max_new_tokens=4))
    erun = client.get_run(er.mlflow_run_id)
    assert erun.data.tags["mlflow.parentRunId"] == res.mlflow_run_id
    assert erun.data.tags["forvalue.finetune_run_id"] == res.mlflow_run_id
    assert erun.data.tags["forvalue.run_kind"] == "eval"
    assert erun.data.params["finetune_run_id"] == res.mlflow_run_id
    assert erun.data.metrics["val_loss"] == pytest.approx(res.metrics["val_loss"], rel=1e-5)
    assert erun.data.metrics["n_eval"] == 3 and 0 <= erun.data.metrics["accuracy"] <= 1
    (ein,) = erun.inputs.dataset_inputs
    assert ein.dataset.digest == inputs["evaluation"].digest
    assert "eval/predictions.json" in {f.path for f in client.list_artifacts(er.mlflow_run_id, "eval")}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{res.mlflow_run_id}'")
    assert [c.info.run_id for c in children] == [er.mlflow_run_id]


def test_step_metrics_reach_mlflow_while_the_run_trains(tiny_lm, tmp_path, store):
    """Every report (after steps 1, 2, 4 and 5 with log_every 2) finds the steps so far already in MLflow."""
    _, uri = store
    client = MlflowClient(tracking_uri=uri)
    tracker = Tracker(uri, experiment="test-progress")
    seen = {}

    def check(progress):
        (running,) = client.search_runs([tracker.experiment_id()], "attributes.status = 'RUNNING'")
        history = client.get_metric_history(running.info.run_id, "train_loss")
        seen[progress.step] = sorted(m.step for m in history)

    train = samples_from_records(sums(6)).samples
    res = finetune(tiny_lm, train, out_dir=tmp_path / "ad", config=TrainConfig(steps=5, batch_size=2), tracker=tracker,
                   log_every=2, on_progress=check)
    assert seen == {1: [1], 2: [1, 2], 4: [1, 2, 3, 4], 5: [1, 2, 3, 4, 5]}
    for name in ("train_loss", "lr", "tokens_per_s", "elapsed_s"):
        assert sorted(m.step for m in client.get_metric_history(res.mlflow_run_id, name)) == [1, 2, 3, 4, 5], name
    # peak memory per step, and once more at the last step for the whole run (evaluation included)
    assert sorted(m.step for m in client.get_metric_history(res.mlflow_run_id, "peak_rss_mb")) == [1, 2, 3, 4, 5, 5]
    elapsed = [m.value for m in sorted(client.get_metric_history(res.mlflow_run_id, "elapsed_s"), key=lambda m: m.step)]
    assert elapsed == sorted(elapsed)
    final = client.get_run(res.mlflow_run_id).data.metrics
    assert final["peak_rss_mb"] >= final["train_peak_rss_mb"] > 0


def test_failed_run_is_marked_failed(store):
    _, uri = store
    tracker = Tracker(uri, experiment="test-failures")
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.start_run("doomed", kind="finetune") as run:
            run.log_metrics({"train_loss": 1.0}, step=1)
            raise RuntimeError("boom")
    r = MlflowClient(tracking_uri=uri).get_run(run.run_id)
    assert r.info.status == "FAILED" and r.data.tags["forvalue.error"] == "RuntimeError: boom"
    assert r.data.metrics["train_loss"] == 1.0


def test_experiments_are_marked_as_model_training(store):
    """MLflow 3's UI opens an experiment tagged custom_model_development on its runs (not on GenAI traces):
    a new experiment gets the tag, one an older release made without it gets it on first use, and a
    kind a person chose is kept."""
    from forvalue.training.tracking import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND

    _, uri = store
    client = MlflowClient(tracking_uri=uri)
    assert (TAG_EXPERIMENT_KIND, EXPERIMENT_KIND) == ("mlflow.experimentKind", "custom_model_development")
    Tracker(uri, experiment="kind-new").experiment_id()
    assert client.get_experiment_by_name("kind-new").tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    old = client.create_experiment("kind-old")                     # as before: no kind
    assert TAG_EXPERIMENT_KIND not in client.get_experiment(old).tags
    assert Tracker(uri, experiment="kind-old").experiment_id() == old
    assert client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    chosen = client.create_experiment("kind-chosen", tags={TAG_EXPERIMENT_KIND: "finetuning"})
    Tracker(uri, experiment="kind-chosen").experiment_id()
    assert client.get_experiment(chosen).tags[TAG_EXPERIMENT_KIND] == "finetuning"


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    from resources.mlflow import MLflowResource

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORVALUE_MLFLOW_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = f"sqlite:///{tmp_path.resolve()}/.forvalue/mlflow.db"
    assert resolve_tracking_uri() == default == default_tracking_uri()
    assert MLflowResource().resolved_uri() == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri() == "http://mlflow.example:5000"
    monkeypatch.setenv("FORVALUE_MLFLOW_URI", f"sqlite:///{tmp_path}/other.db")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/other.db"
    assert resolve_tracking_uri("http://explicit:5000") == "http://explicit:5000"
    assert MLflowResource(tracking_uri="http://explicit:5000").tracker().tracking_uri == "http://explicit:5000"
    assert resolve_tracking_uri("runs.db") == f"sqlite:///{(tmp_path / 'runs.db').resolve()}"
    with pytest.raises(TrackingError, match="no longer supports the file store"):
        resolve_tracking_uri(str(tmp_path / "mlruns"))
    with pytest.raises(TrackingError, match="sqlite:///"):
        resolve_tracking_uri("file:///tmp/mlruns")
    tr = Tracker("http://mlflow.example:5000")
    assert tr.ui_url == "http://mlflow.example:5000"
    assert Tracker(f"sqlite:///{tmp_path}/x.db").ui_url == "http://127.0.0.1:5000"
