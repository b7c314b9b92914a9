"""Fine-tune and evaluate on curated subsets, tracked in MLflow.

    curated_subset[t|v] ──> finetune_run[t|v] ──> eval_run[t|v]
                       └──> finetune_comparison[t|v]

- ``finetune_run``: LoRA (or full) fine-tune of the platform's model on the latest curated subset
  of the pair; an MLflow run (params, per-step metrics, the subset as a dataset input with its
  digest, the adapter as artifacts, tags with the Dagster run id, asset key and partition); a row
  in DuckDB ``training_runs`` (+ ``finetune_details``; lineage in the ``training_run_lineage`` view).
- ``eval_run``: loss, perplexity and accuracy of the latest fine-tuned model of the pair on data its
  selection never saw (forvalue_assets/evaluation.py: the pair's evaluation file, else the held-out
  part of the valuation set); an MLflow run that is a child of the fine-tune run; a row in ``eval_runs``.
- ``finetune_comparison``: the same budget (steps, batch size, hyper-parameters) on For-Value
  top-k, random-k, bottom-k and the full set (k = the curated subset's size unless configured),
  every seed; the table in DuckDB ``finetune_comparisons`` and as Markdown metadata.

Response tokens, chat template and length limit follow the feature store's config, so the SFT loss
trains exactly the tokens For-Value scored. None of these assets is automated: fine-tuning is
launched (job ``finetune_and_eval`` / ``compare_subsets``, or Materialize in the UI).
torch, transformers, peft and mlflow are imported inside the asset functions only.
"""

import tempfile
import time
import uuid
from pathlib import Path

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from forvalue.catalog.db import KIND_DATASET, CatalogError
from forvalue.data.samples import DataError
from resources import DuckDBStoreResource, FeatureStoreResource, FinetuneResource, ModelResource
from resources.mlflow import MLflowResource

from .. import metadata as md
from ..common import CURATED_SUBSET, MODEL_POOL, AssetDefaults, catalog_failure, data_failure, subset_report_path
from ..evaluation import evaluation_metadata, evaluation_set
from ..partitions import dataset_pairs, split_pair
from ..ranking import recorded_limits, subset_ranking
from .config import ComparisonConfig, EvalFields, TrainFields

# Every fine-tuning asset: group finetune, pool model, one partition per (training dataset, valuation
# set) pair; launched, never automated.
DEFAULTS = AssetDefaults(group="finetune", pool=MODEL_POOL, kinds=frozenset({"pytorch", "mlflow", "duckdb"}),
                         partitions_def=dataset_pairs)


# ----------------------------------------------------------------------------- helpers
def _tags(context: AssetExecutionContext, dataset: str, valuation: str) -> dict:
    from forvalue.training.tracking import TAG_ASSET_KEY, TAG_DAGSTER_RUN, TAG_PARTITION

    return {TAG_DAGSTER_RUN: context.run_id, TAG_ASSET_KEY: context.asset_key.to_user_string(),
            TAG_PARTITION: str(context.partition_key), "forvalue.dataset": dataset,
            "forvalue.valuation_set": valuation}


def _subset_info(context: AssetExecutionContext, cat, sub: dict, k: int, name: str):
    """What the fine-tune run records of its subset: the size rule (mode, value), the selection
    strategy that ordered it, and the ids of the score run, feature runs, scoring model and set
    versions that produced it (MLflow params and ``forvalue.*`` tags), with a link to the Dagster run
    when ``FORVALUE_DAGSTER_URL`` names the webserver."""
    import os

    from forvalue.training.finetune import SubsetInfo

    lin = cat.subset_lineage(sub["subset_id"]) or {}
    lineage = {key: lin.get(key) for key in ("score_run_id", "train_feature_run_id", "val_feature_run_id",
                                             "feature_config_id", "dataset_version", "valuation_version")}
    lineage["scoring_model_id"] = lin.get("model_id")
    report = subset_report_path(sub["jsonl_path"])
    url = os.environ.get("FORVALUE_DAGSTER_URL", "").rstrip("/")
    if url:
        lineage["dagster_run_url"] = f"{url}/runs/{context.run_id}"
    return SubsetInfo(strategy="bottom" if sub["mode"] == "bottom_p" else "top", k=k,
                      p=float(sub["value"]) if sub["mode"] != "top_k" else None, subset_id=sub["subset_id"],
                      source=sub["jsonl_path"], n_total=sub["n_total"], name=name,
                      selection=sub.get("strategy") or "raw-mean", mode=sub["mode"], value=float(sub["value"]),
                      lineage=lineage, report=str(report) if report.is_file() else None)


def _latest_subset(cat, dataset: str, valuation: str) -> dict:
    sub = cat.latest_subset(dataset, valuation)
    if sub is None:
        raise Failure(description=f"no curated subset for {dataset} x {valuation}: materialize curated_subset first")
    return sub


def _subset_inputs(context: AssetExecutionContext, catalog: DuckDBStoreResource):
    """(dataset, valuation, catalog, finetune catalog, latest subset row, training samples, evaluation
    set) of the partition's (dataset, valuation set) pair; catalog errors fail the asset. The
    evaluation set is data the selection never saw where there is any (forvalue_assets/evaluation.py)."""
    from forvalue.catalog.finetune_runs import FinetuneCatalog

    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    fcat = FinetuneCatalog(cat)
    try:
        sub = _latest_subset(cat, dataset, valuation)
        samples = cat.load_samples(KIND_DATASET, dataset, sub["dataset_version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    return dataset, valuation, cat, fcat, sub, samples, evaluation_set(cat, sub["subset_id"], context.log)


def _subset_samples(fcat, sub: dict, samples: list, dataset: str) -> list:
    """The samples of the curated subset ``sub``, in its order; fails when one is missing or it is empty."""
    try:
        members = fcat.subset_members(sub["subset_id"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    by_id = {s.sample_id: s for s in samples}
    missing = [m["sample_id"] for m in members if m["sample_id"] not in by_id]
    if missing:
        raise Failure(description=f"{len(missing)} samples of subset {sub['subset_id']} are not in dataset "
                                  f"{dataset} version {sub['dataset_version'][:12]}, e.g. {missing[0]}")
    train = [by_id[m["sample_id"]] for m in members]
    if not train:
        raise Failure(description=f"subset {sub['subset_id']} ({sub['mode']} {sub['value']:g}) is empty")
    return train


def _loss_curve_png(history: list[dict], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), dpi=90)
    ax = fig.subplots()
    ax.plot([h["step"] for h in history], [h["train_loss"] for h in history], color="#4477aa", label="train")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", color="#cc3311", label="evaluation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per response token")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _progress_log(context: AssetExecutionContext):
    """The fine-tune's progress callback: each report a line in the run's log ("...: step 10/30 loss ...")."""
    return lambda progress: context.log.info(progress.line())


def _metric(value) -> MetadataValue:
    return MetadataValue.float(float(value)) if value is not None else MetadataValue.text("-")


def _md_predictions(preds: list[dict], n: int = 10) -> str:
    """Markdown table of evaluation predictions; every cell that comes from the data is escaped."""
    lines = ["| id | reference | prediction | correct | generated |", "|---|---|---|---|---|"]
    for p in preds[:n]:
        cells = [md.md_cell(p["id"] or p["sample_id"][:12], 40), md.md_cell(p["reference"], 60),
                 md.md_cell(p["prediction"], 60), "yes" if p["correct"] else "no", md.md_cell(p["generated"], 80)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def config_eval_loss_only(feature_config):
    """The fine-tune run's own evaluation: loss and perplexity on the evaluation set (eval_run adds accuracy)."""
    from forvalue.training.evaluate import EvalConfig

    return EvalConfig(accuracy=False, chat_template=feature_config.chat_template, max_length=feature_config.max_length)


def config_dtype(model: ModelResource) -> str:
    return model.dtype or "auto"


# ----------------------------------------------------------------------------- fine-tune
@DEFAULTS.asset(
    deps=[CURATED_SUBSET],
    description="Fine-tune (LoRA by default) the platform's model on the latest curated subset of a (training "
                "dataset, valuation set) pair, loss on response tokens only, and log it to MLflow: params, "
                "per-step metrics, the subset as a dataset input with its digest, the adapter as artifacts, "
                "Dagster run id and asset key as tags; its final loss is on data the selection never saw (the "
                "evaluation file, else the held-out part of the valuation set). Recorded in DuckDB "
                "`training_runs` / `finetune_details` / `training_samples`.",
)
def finetune_run(context: AssetExecutionContext, config: TrainFields, model: ModelResource,
                 catalog: DuckDBStoreResource, feature_store: FeatureStoreResource,
                 mlflow: MLflowResource, finetune: FinetuneResource) -> MaterializeResult:
    from forvalue.training.finetune import FinetuneError
    from forvalue.training.finetune import finetune as run_finetune

    t0 = time.perf_counter()
    dataset, valuation, cat, fcat, sub, samples, ev = _subset_inputs(context, catalog)
    train = _subset_samples(fcat, sub, samples, dataset)
    fcfg = feature_store.config()
    try:
        tcfg = config.train_config(fcfg, default_steps=finetune.steps)
    except ValueError as e:
        raise Failure(description=f"fine-tune config: {e}") from e
    tracker = mlflow.tracker()
    info = _subset_info(context, cat, sub, len(train), f"{dataset}/{valuation}/{sub['mode']}-{sub['value']:g}")
    out = Path(mlflow.output_dir) / dataset / valuation / f"{sub['mode']}-{context.run_id[:12]}"
    try:
        with finetune.cpu_threads():
            res = run_finetune(model.model, train, out_dir=out, config=tcfg, val=ev.samples,
                               eval_config=config_eval_loss_only(fcfg), tracker=tracker, subset=info,
                               tags=_tags(context, dataset, valuation), device=model.device,
                               dtype=config.dtype or None, overwrite=True,
                               run_name=f"{dataset}-{valuation}-{sub['mode']}-{len(train)}",
                               evaluation=ev.params(), on_progress=_progress_log(context))
    except DataError as e:
        raise data_failure(e) from e
    except FinetuneError as e:
        raise Failure(description=str(e)) from e
    model_id = cat.record_model(res.meta["base_fingerprint"], spec=model.model)
    training_run_id = fcat.record_training_run(
        kind="curated", dataset_name=dataset, dataset_version=sub["dataset_version"], valuation_set=valuation,
        valuation_version=sub["valuation_version"], result=res, base_model_id=model_id, subset_id=sub["subset_id"],
        strategy=info.selection, k=len(train), seed=tcfg.seed, steps=tcfg.steps, tracking_uri=tracker.tracking_uri,
        experiment_id=tracker.experiment_id(), dagster_run_id=context.run_id,
        dagster_asset_key=context.asset_key.to_user_string(), evaluation=ev.params())
    context.log.info(f"fine-tuned on {len(train)} samples: MLflow run {res.mlflow_run_id} ({res.mlflow_url})")
    png = _loss_curve_png(res.history, f"{dataset} x {valuation}: {sub['mode']} {sub['value']:g} ({len(train)} samples)")
    return MaterializeResult(metadata={
        "mlflow_run_id": MetadataValue.text(res.mlflow_run_id),
        "mlflow_run": MetadataValue.url(res.mlflow_url),
        "tracking_uri": MetadataValue.text(tracker.tracking_uri),
        "training_run_id": MetadataValue.text(training_run_id),
        "subset_id": MetadataValue.text(sub["subset_id"]),
        "subset_digest": MetadataValue.text(res.subset_digest),
        "strategy": MetadataValue.text(info.selection),
        "subset_mode": MetadataValue.text(sub["mode"]),
        "subset_value": MetadataValue.float(float(sub["value"])),
        "score_run_id": MetadataValue.text(sub["score_run_id"]),
        "k": MetadataValue.int(len(train)),
        "seed": MetadataValue.int(tcfg.seed),
        "steps": MetadataValue.int(tcfg.steps),
        "method": MetadataValue.text(tcfg.method),
        "train_loss_final": _metric(res.metrics.get("train_loss_final")),
        "val_loss": _metric(res.metrics.get("val_loss")),
        "val_perplexity": _metric(res.metrics.get("val_perplexity")),
        "peak_rss_mb": _metric(res.metrics.get("peak_rss_mb")),
        "threads": MetadataValue.int(finetune.threads),
        **evaluation_metadata(ev),
        "loss_curve": md.md_image(png, "training loss"),
        "output_dir": MetadataValue.path(str(res.output_dir.resolve())),
        "model_fingerprint": MetadataValue.text(res.params["model_fingerprint"]),
        "tables": MetadataValue.text("training_runs, finetune_details (lineage: training_run_lineage view)"),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


# ----------------------------------------------------------------------------- eval
def _adapter(tracker, tr: dict, tmp: str) -> tuple[Path, str]:
    """The fine-tuned model's folder and where it came from: the local output folder, else (another
    machine trained it) the artifact downloaded from MLflow into ``tmp``."""
    adapter = Path(tr["output_dir"])
    if adapter.is_dir():
        return adapter, "local"
    artifact = "adapter" if tr["method"] == "lora" else "model"
    try:
        return Path(tracker.client.download_artifacts(tr["mlflow_run_id"], artifact, tmp)), "mlflow"
    except Exception as e:
        raise Failure(description=f"the fine-tuned model of training run {tr['training_run_id']} is neither "
                                  f"at {tr['output_dir']} nor downloadable from MLflow run "
                                  f"{tr['mlflow_run_id']}: {e}") from e


@DEFAULTS.asset(
    deps=[finetune_run],
    description="Evaluate the latest fine-tuned model of a pair on data its selection never saw (the evaluation "
                "file incoming/eval/<valuation set>.*, else the held-out part of the valuation set): loss, "
                "perplexity and task accuracy (greedy decoding, answer extractor, exact match). An MLflow run that "
                "is a child of the fine-tune run; recorded in DuckDB `eval_runs` with what it evaluated on.",
)
def eval_run(context: AssetExecutionContext, config: EvalFields, model: ModelResource,
             catalog: DuckDBStoreResource, feature_store: FeatureStoreResource,
             mlflow: MLflowResource, finetune: FinetuneResource) -> MaterializeResult:
    from forvalue.training.finetune import FinetuneError
    from forvalue.training.finetune import run_evaluation
    from forvalue.catalog.finetune_runs import FinetuneCatalog

    t0 = time.perf_counter()
    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    fcat = FinetuneCatalog(cat)
    tr = fcat.latest_training_run(dataset, valuation)
    if tr is None:
        raise Failure(description=f"no finished fine-tune run for {dataset} x {valuation}: materialize finetune_run first")
    ev = evaluation_set(cat, tr["subset_id"], context.log)
    tracker = mlflow.tracker()
    fcfg = feature_store.config()
    with tempfile.TemporaryDirectory(prefix="forvalue-eval-") as tmp:
        adapter, source = _adapter(tracker, tr, tmp)
        try:
            with finetune.cpu_threads():
                r = run_evaluation(None, ev.samples, adapter=adapter, config=config.eval_config(fcfg), tracker=tracker,
                                   finetune_run_id=tr["mlflow_run_id"], tags=_tags(context, dataset, valuation),
                                   run_name=f"eval-{dataset}-{valuation}",
                                   dataset_name=f"{ev.source}-{Path(ev.name).name}@{ev.version[:12]}",
                                   device=model.device, dtype=config_dtype(model), evaluation=ev.params())
        except DataError as e:
            raise data_failure(e) from e
        except (FinetuneError, ValueError) as e:
            raise Failure(description=str(e)) from e
    m = r.result.metrics
    eval_id = fcat.record_eval_run(valuation_set=valuation, valuation_version=tr["valuation_version"],
                                   model_fingerprint=r.model_fingerprint, metrics=m,
                                   training_run_id=tr["training_run_id"], mlflow_run_id=r.mlflow_run_id,
                                   finetune_mlflow_run_id=tr["mlflow_run_id"], dagster_run_id=context.run_id,
                                   evaluation=ev.params())
    meta = {
        "mlflow_run_id": MetadataValue.text(r.mlflow_run_id),
        "mlflow_run": MetadataValue.url(r.mlflow_url),
        "finetune_mlflow_run_id": MetadataValue.text(tr["mlflow_run_id"]),
        "finetune_mlflow_run": MetadataValue.url(tracker.url(tr["mlflow_run_id"])),
        "training_run_id": MetadataValue.text(tr["training_run_id"]),
        "eval_run_id": MetadataValue.text(eval_id),
        "model_fingerprint": MetadataValue.text(r.model_fingerprint),
        "adapter_source": MetadataValue.text(source),
        "val_loss": _metric(m.get("val_loss")),
        "val_perplexity": _metric(m.get("val_perplexity")),
        "accuracy": _metric(m.get("accuracy")),
        **evaluation_metadata(ev),
        "tables": MetadataValue.text("eval_runs"),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    }
    if r.result.accuracy is not None:
        meta["predictions"] = MetadataValue.md(_md_predictions(r.result.accuracy.predictions))
    return MaterializeResult(metadata=meta)


# ----------------------------------------------------------------------------- comparison
def _comparison_order(cat, feature_store: FeatureStoreResource, sub: dict, samples: list, dataset: str,
                      valuation: str):
    """(the score run id of the stored scores, scores of ``samples``, their order by the strategy that
    made the curated subset, that strategy): top and bottom of the comparison follow the curated
    subset's order."""
    import numpy as np
    import polars as pl

    try:
        frame = cat.scores_frame(dataset, valuation, sub["feature_config_id"], sub["model_id"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    run_id = frame["score_run_id"][0] if len(frame) else sub["score_run_id"]
    scores = frame.filter(pl.col("dataset_version") == sub["dataset_version"])
    score_of = dict(zip(scores["sample_id"].to_list(), scores["score"].to_list()))
    unscored = [s.sample_id for s in samples if s.sample_id not in score_of]
    if unscored:
        raise Failure(description=f"{len(unscored)} of {len(samples)} samples of {dataset} have no stored score for "
                                  f"the curated subset's model and feature config: re-materialize forvalue_scores")
    values = np.array([score_of[s.sample_id] for s in samples], dtype=np.float64)
    selection = sub.get("strategy") or "raw-mean"
    score_run = {"model_id": sub["model_id"], "valuation_set": valuation, "valuation_version": sub["valuation_version"],
                 "valuation_holdout": (cat.subset_lineage(sub["subset_id"]) or {}).get("valuation_holdout")}
    # the subset's own limits: the comparison trains on what curated_subset kept
    ranking = subset_ranking(cat, feature_store, score_run, scores, selection, limits=recorded_limits(sub.get("checks")))
    ids = scores["sample_id"].to_list()
    position = {ids[i]: j for j, i in enumerate(ranking.order)}
    order = np.array(sorted(range(len(samples)), key=lambda i: position[samples[i].sample_id]), dtype=np.int64)
    return run_id, values, order, selection


def _same_members(fcat, sub: dict, res) -> bool:
    ids = {m["sample_id"] for m in fcat.subset_members(sub["subset_id"])}
    return ids == set(res.sample_ids)


def _comparison_recorder(context: AssetExecutionContext, model: ModelResource, cat, fcat, tracker, sub: dict,
                         comparison_id: str, evaluation: dict):
    """The ``on_run`` callback of ``compare_strategies``: records each fine-tune as a training run."""
    model_ids: dict = {}
    dataset, valuation = split_pair(context.partition_key)

    def on_run(row, res):
        if res is None:
            return
        if "id" not in model_ids:
            model_ids["id"] = cat.record_model(res.meta["base_fingerprint"], spec=model.model)
        row["training_run_id"] = fcat.record_training_run(
            kind="comparison", dataset_name=dataset, dataset_version=sub["dataset_version"], valuation_set=valuation,
            valuation_version=sub["valuation_version"], result=res, base_model_id=model_ids["id"],
            subset_id=sub["subset_id"] if row["strategy"] == "top" and _same_members(fcat, sub, res) else None,
            strategy=row["strategy"], k=row["k"], seed=row["seed"], steps=row["steps"], comparison_id=comparison_id,
            tracking_uri=tracker.tracking_uri, experiment_id=tracker.experiment_id(), dagster_run_id=context.run_id,
            dagster_asset_key=context.asset_key.to_user_string(), evaluation=evaluation)
        context.log.info(f"{row['strategy']} seed {row['seed']}: eval loss {row['val_loss']:.4f}"
                         + (f", accuracy {row['accuracy']:.3f}" if row.get("accuracy") is not None else ""))

    return on_run


def _md_runs(rows: list[dict]) -> str:
    """Markdown table of the comparison's fine-tune runs."""
    lines = ["| strategy | seed | k | eval loss | accuracy | MLflow run |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f}%"
        lines.append(f"| {md.md_cell(r['strategy'], 40)} | {r['seed'] if r['seed'] >= 0 else '-'} | {r['k']} | "
                     f"{r['val_loss']:.4f} | {acc} | {md.md_cell(r.get('mlflow_run_id') or '-', 40)} |")
    return "\n".join(lines)


@DEFAULTS.asset(
    deps=[CURATED_SUBSET],
    description="Does For-Value's selection beat random selection? Fine-tunes the same budget (steps, batch, "
                "hyper-parameters) on For-Value top-k and bottom-k (in the order of the curated subset's selection "
                "strategy), random-k and the full set (k = the curated subset's size), for every configured seed, "
                "evaluates each and the base model on data the selection never saw (the evaluation file, else the "
                "held-out part of the valuation set) and records the comparison table in DuckDB "
                "`finetune_comparisons` and as Markdown; MLflow runs are children of one comparison run.",
)
def finetune_comparison(context: AssetExecutionContext, config: ComparisonConfig, model: ModelResource,
                        catalog: DuckDBStoreResource, feature_store: FeatureStoreResource,
                        mlflow: MLflowResource, finetune: FinetuneResource) -> MaterializeResult:
    from forvalue.training.finetune import FinetuneError, compare_strategies, markdown_table

    t0 = time.perf_counter()
    dataset, valuation, cat, fcat, sub, samples, ev = _subset_inputs(context, catalog)
    score_run_id, values, order, selection = _comparison_order(cat, feature_store, sub, samples, dataset, valuation)
    k = config.k or int(sub["n_selected"])
    fcfg = feature_store.config()
    try:
        tcfg = config.train_config(fcfg, default_steps=finetune.steps)
        ecfg = config.eval_config(fcfg)
    except ValueError as e:
        raise Failure(description=f"comparison config: {e}") from e
    tracker = mlflow.tracker()
    comparison_id = uuid.uuid4().hex
    try:
        with finetune.cpu_threads():
            comp = compare_strategies(
                model.model, samples, ev.samples, values=values, order=order, selection=selection, k=k,
                strategies=config.strategies, seeds=config.seeds,
                config=tcfg, eval_config=ecfg, include_base=config.include_base, tracker=tracker,
                tags=_tags(context, dataset, valuation) | {"forvalue.comparison_id": comparison_id},
                out_root=Path(mlflow.output_dir) / dataset / valuation / f"comparison-{comparison_id[:12]}",
                source=samples[0].source, device=model.device, dtype=config.dtype or None,
                on_run=_comparison_recorder(context, model, cat, fcat, tracker, sub, comparison_id, ev.params()),
                evaluation=ev.params(), on_progress=_progress_log(context))
    except DataError as e:
        raise data_failure(e) from e
    except FinetuneError as e:
        raise Failure(description=str(e)) from e
    fcat.record_comparison(comparison_id, comp.rows, dataset_name=dataset, dataset_version=sub["dataset_version"],
                           valuation_set=valuation, valuation_version=sub["valuation_version"],
                           score_run_id=score_run_id, curated_subset_id=sub["subset_id"],
                           dagster_run_id=context.run_id, evaluation=ev.params())
    stored = fcat.comparison_summary(comparison_id)
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(comp.rows)),
        "dagster/table_name": MetadataValue.text("finetune_comparisons"),
        "comparison_id": MetadataValue.text(comparison_id),
        "comparison": MetadataValue.md(f"Evaluated on {md.escape_md(ev.describe())}.\n\n"
                                       + markdown_table(comp.summary)),
        **evaluation_metadata(ev),
        "runs": MetadataValue.md(_md_runs(comp.rows)),
        "summary": MetadataValue.json([{k2: v for k2, v in r.items()} for r in stored]),
        "k": MetadataValue.int(comp.k),
        "strategies": MetadataValue.text(", ".join(config.strategies)),
        "selection": MetadataValue.text(selection),
        "seeds": MetadataValue.text(", ".join(map(str, config.seeds))),
        "steps": MetadataValue.int(tcfg.steps),
        "curated_subset_id": MetadataValue.text(sub["subset_id"]),
        "mlflow_run_id": MetadataValue.text(comp.mlflow_run_id),
        "mlflow_run": MetadataValue.url(comp.mlflow_url),
        "tracking_uri": MetadataValue.text(tracker.tracking_uri),
        "tables": MetadataValue.text("finetune_comparisons, training_runs, finetune_details"),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })
