"""Scores and subsets of a (training dataset, valuation set) pair.

- ``forvalue_scores`` (group scoring, pool ``duckdb``): the ``scores`` table for the pair, from
  stored features only, replaced in one transaction.
- ``curated_subset`` (group curation, pool ``duckdb``): top-k / top-p% / bottom-p% / drop-the-lowest-p%
  of the order of a selection strategy (default ``balanced``, see forvalue/curation/selection.py), exported
  as JSONL and Parquet and recorded in ``subsets``. Its defaults come from the ``curation``
  resource (``CurationResource``); a run's config overrides any of them.
"""

import time
import uuid
from dataclasses import dataclass

import numpy as np
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue

from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, CatalogError
from forvalue.errors import ConfigError
from forvalue.data.holdout import part_warnings, split
from forvalue.io import atomic_copy, atomic_write_bytes
from forvalue.curation.selection import STRATEGIES
from dagster_ray import RayResource
from resources import CurationResource, DuckDBStoreResource, EngineResource, FeatureStoreResource, ModelResource
from resources._fields import config_class
from resources.curation import subset_fields

from .. import metadata as md
from ..common import (
    AUTOMATION,
    DUCKDB_POOL,
    FORVALUE_SCORES,
    KIND_LABEL,
    TRAINING_FEATURES,
    VALUATION_FEATURES,
    AssetDefaults,
    catalog_failure,
    subset_report_path,
)
from ..partitions import dataset_pairs, split_pair
from ..evaluation import eval_file, scoring_holdout
from ..explaining import explanation_metadata
from ..ranking import engine_metadata, stored_scores, stored_valuator, subset_ranking

# Every curation asset: group curation, pool duckdb (it writes the catalog), one partition per
# (training dataset, valuation set) pair, automated.
DEFAULTS = AssetDefaults(group="curation", pool=DUCKDB_POOL, partitions_def=dataset_pairs,
                         automation_condition=AUTOMATION)


# ----------------------------------------------------------------------------- scores
def scoring_inputs(cat, feature_store: FeatureStoreResource, dataset: str, valuation: str) -> dict:
    """What a (dataset, valuation set) score is computed from: current versions, the feature runs
    that produced their features, and the model those runs used."""
    cfg = feature_store.config()
    tinfo = cat.require_set(KIND_DATASET, dataset)
    vinfo = cat.require_set(KIND_VALUATION, valuation)
    tfr = cat.latest_feature_run(KIND_DATASET, dataset, tinfo["version"], cfg.id)
    vfr = cat.latest_feature_run(KIND_VALUATION, valuation, vinfo["version"], cfg.id)
    for fr, kind, nm, asset_name in ((tfr, KIND_DATASET, dataset, "training_features"),
                                     (vfr, KIND_VALUATION, valuation, "valuation_features")):
        if fr is None:
            raise Failure(description=(
                f"no features for {KIND_LABEL[kind]} {nm!r} (its current version) with feature config {cfg.id}: "
                f"materialize {asset_name}[{nm}] first"))
    if tfr["model_id"] != vfr["model_id"]:
        raise Failure(description=(
            f"features of training dataset {dataset!r} come from model {tfr['model_id']} but those of valuation set "
            f"{valuation!r} from {vfr['model_id']}: re-materialize the older features with the current model"))
    return {"config": cfg, "train": tinfo, "val": vinfo, "train_run": tfr, "val_run": vfr,
            "fingerprint": cat.fingerprint(tfr["model_id"]), "model_id": tfr["model_id"]}


def shown_rows(cat, dataset: str, version: str, ids, values: np.ndarray, ranking, positions, *,
               kept: np.ndarray | None = None, checks: dict | None = None) -> list:
    """:class:`forvalue_assets.metadata.Shown` rows of the training samples at ``positions`` (of
    ``ids``, a polars Series of sample ids; in that order), loaded alone: rank in ``ranking``'s
    order, the value it ranked by, the stored score ``values``; with ``kept`` (a mask) whether the
    subset holds each, and with ``checks`` (sample id -> check) the check that dropped it."""
    positions = [int(i) for i in positions]
    want = ids.gather(positions).to_list() if positions else []
    by_id = {s.sample_id: s for s in cat.load_samples(KIND_DATASET, dataset, version, sample_ids=want)}
    rank, (_, by) = ranking.rank, ranking.ranked_by()
    return [md.Shown(int(rank[i]), float(by[i]), float(values[i]), by_id[sid],
                     None if kept is None else bool(kept[i]), (checks or {}).get(sid))
            for i, sid in zip(positions, want) if sid in by_id]


def _scores_in_subset_order(context, cat, feature_store: FeatureStoreResource, curation: CurationResource,
                            engine, ray, dataset: str, valuation: str, n: int = 5):
    """(Ranking, the first and last ``n`` as Shown rows, best first) of the pair's stored
    scores in the order curated_subset cuts by default: the curation resource's strategy after its
    consistency checks. The round-robin strategies rank the first ``n`` only (their bottom is
    curated_subset's kept_and_dropped table); the others order every sample."""
    run, scores = _current_scores(cat, feature_store, dataset, valuation)
    try:
        ranking = subset_ranking(cat, feature_store, run, scores, curation.strategy, engine=engine, ray=ray,
                                 limits=curation.limits(), context=context, limit=n)
    except ValueError as e:
        raise Failure(description=f"curation strategy {curation.strategy}: {e}") from e
    ends = ranking.order[:n]
    if ranking.complete:
        ends = np.concatenate([ends, ranking.order[max(n, len(ranking) - n):]])
    values = scores["score"].to_numpy().astype(np.float64)
    return ranking, shown_rows(cat, dataset, run["dataset_version"], scores["sample_id"], values, ranking, ends)


def _order_metadata(ranking, ranked: list) -> dict:
    """The scores' top (and bottom) samples in the order curated_subset uses, and what that order is."""
    what, _ = ranking.ranked_by()
    out = md.top_bottom_tables(ranked, "samples", f"{ranking.strategy} order, {what}")
    out["order"] = MetadataValue.text(
        f"top_samples / bottom_samples / explanations follow the order curated_subset cuts by default: strategy "
        f"{ranking.strategy} (curation resource, FORVALUE_SUBSET_STRATEGY) after the consistency checks; "
        f"ranked_by = {what}"
        + ("" if ranking.complete else "; this strategy orders samples up to a cut, so no bottom_samples here"))
    out["strategy"] = MetadataValue.text(ranking.strategy)
    return out


@DEFAULTS.asset(
    # Each feature asset maps to one dimension of the pair (inferred: a MultiToSingleDimensionPartitionMapping).
    deps=[TRAINING_FEATURES, VALUATION_FEATURES],
    group_name="scoring",         # the one asset of this domain outside group curation (lineage reads
                                  # ingest -> features -> scoring -> curation -> finetune)
    kinds={"duckdb", "numpy"},
    description="For-Value scores of every training sample against a valuation set (mean inner product of "
                "lm_head-gradient-like features; higher = more valuable), from stored features only (no model "
                "load). DuckDB table `scores`, keyed by training dataset x valuation set x feature config "
                "(x model), replaced in one transaction; history in `score_runs`.",
)
def forvalue_scores(context: AssetExecutionContext, catalog: DuckDBStoreResource,
                    feature_store: FeatureStoreResource, model: ModelResource,
                    curation: CurationResource, engine: EngineResource, ray: RayResource) -> MaterializeResult:
    from forvalue.valuation.scoring import rank

    t0 = time.perf_counter()
    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    try:
        inp = scoring_inputs(cat, feature_store, dataset, valuation)
        train_ids = cat.sample_ids(KIND_DATASET, dataset, inp["train"]["version"])
        all_val_ids = cat.sample_ids(KIND_VALUATION, valuation, inp["val"]["version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    holdout = scoring_holdout(curation, valuation)   # the evaluation part is never scored against
    val_ids, eval_ids = split(all_val_ids, holdout)
    for warning in part_warnings(len(val_ids), len(eval_ids)) if eval_ids else ():
        context.log.warning(f"valuation set {valuation}: {warning}")
    # stored features only (no model load), on Ray one task per shard when the engine says so
    valuator = stored_valuator(cat, feature_store, inp["model_id"], engine=engine, ray=ray, context=context)
    t_score = time.perf_counter()
    res, stats = stored_scores(valuator, train_ids, val_ids)   # streamed shard by shard: any store size
    values, normalized, norms = res.values, res.normalized, res.norms
    score_s = time.perf_counter() - t_score
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise Failure(description=f"{bad} of {len(values)} scores are NaN or inf; the stored scores were left unchanged")
    ranks = rank(values)
    score_run_id = cat.replace_scores(
        dataset_name=dataset, dataset_version=inp["train"]["version"], valuation_set=valuation,
        valuation_version=inp["val"]["version"], model_id=inp["model_id"], feature_config_id=inp["config"].id,
        sample_ids=train_ids, values=values, ranks=ranks, method="sparse", normalized=normalized, norms=norms,
        train_feature_run_id=inp["train_run"]["feature_run_id"], val_feature_run_id=inp["val_run"]["feature_run_id"],
        seconds=time.perf_counter() - t0, dagster_run_id=context.run_id, valuation_holdout=holdout if eval_ids else 0.0,
        n_valuation=len(val_ids))
    ranking, ranked = _scores_in_subset_order(context, cat, feature_store, curation, engine, ray, dataset,
                                              valuation)
    png = md.histogram_png(values, title=f"{dataset} vs {valuation}")
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(values)),
        "dagster/table_name": MetadataValue.text("scores"),
        "table": MetadataValue.text("scores (history: score_runs; the latest per dataset version x valuation "
                                    "set version x model x method x feature config: latest_scores view)"),
        "score_run_id": MetadataValue.text(score_run_id),
        "valuation_samples": MetadataValue.int(len(val_ids)),
        "valuation_held_out": MetadataValue.int(len(eval_ids)),
        "evaluation_data": MetadataValue.text(_evaluation_note(valuation, holdout, val_ids, eval_ids)),
        "score_mean": MetadataValue.float(float(values.mean())),
        "score_std": MetadataValue.float(float(values.std())),
        "score_min": MetadataValue.float(float(values.min())),
        "score_max": MetadataValue.float(float(values.max())),
        "histogram": md.md_image(png, "score histogram"),
        **_order_metadata(ranking, ranked),
        **explanation_metadata(curation, model, feature_store, cat, inp["model_id"], valuation, inp["val"]["version"],
                               ranked, holdout=holdout if eval_ids else 0.0),
        "model_fingerprint": MetadataValue.json(inp["fingerprint"].to_dict()),
        "feature_config_id": MetadataValue.text(inp["config"].id),
        "dataset_version": MetadataValue.text(inp["train"]["version"]),
        "valuation_version": MetadataValue.text(inp["val"]["version"]),
        "seconds_score": MetadataValue.float(round(score_s, 3)),
        "feature_shards_read": MetadataValue.int(int(res.info.get("shards", 0))),
        **engine_metadata(stats, ray),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


def _evaluation_note(valuation: str, holdout: float, val_ids: list, eval_ids: list) -> str:
    if eval_ids:
        return (f"{len(eval_ids)} samples ({holdout:g}%) of valuation set {valuation} held out by hash for evaluation; "
                f"scored against the other {len(val_ids)}")
    if holdout:
        return f"valuation set {valuation} is too small to hold samples out: scored against all {len(val_ids)}"
    path = eval_file(valuation)
    if path is not None:
        return f"scored against all {len(val_ids)} samples; evaluation file {path}"
    return f"scored against all {len(val_ids)} samples; no hold-out (eval_holdout 0): evaluations reuse them"


# ----------------------------------------------------------------------------- curation
SubsetConfig = config_class(
    "SubsetConfig", Config,
    "Which samples to keep (fields: forvalue.curation.selection.SubsetSpec). A field left empty takes the value "
    "of the ``curation`` resource (CurationResource: FORVALUE_SUBSET_MODE / FORVALUE_SUBSET_VALUE / "
    "FORVALUE_SUBSET_STRATEGY, default drop_lowest_p 10, balanced), which automation and the nightly schedule use.",
    subset_fields(empty="the curation resource's value"))


@dataclass(frozen=True)
class Subset:
    """The subset a run keeps: its config over the curation resource's defaults."""

    mode: str
    value: float
    strategy: str

    @classmethod
    def resolve(cls, config: SubsetConfig, curation: CurationResource) -> "Subset":
        from forvalue.curation.selection import SubsetSpec

        subset = cls(mode=curation.mode if config.mode is None else config.mode,
                     value=float(curation.value if config.value is None else config.value),
                     strategy=curation.strategy if config.strategy is None else config.strategy)
        try:   # the library's rules for a subset: a known mode and strategy, a value in range
            SubsetSpec(subset.mode, subset.value, subset.strategy)
        except (ValueError, ConfigError) as e:
            raise Failure(description=f"subset config: {e}") from e
        return subset

    @property
    def value_text(self) -> str:
        return str(int(self.value)) if float(self.value).is_integer() else f"{self.value:g}"

    @property
    def label(self) -> str:
        return f"{self.mode} {self.value_text} ({self.strategy})"

    @property
    def stem(self) -> str:
        return f"{self.mode}-{self.value_text}-{self.strategy}"


def _current_scores(cat, feature_store: FeatureStoreResource, dataset: str, valuation: str):
    """(latest score run, its scores as a polars frame); fails when the scores are missing or older
    than the dataset. No sample is loaded: the subset's files are streamed out of the catalog."""
    cfg = feature_store.config()
    try:
        tinfo = cat.require_set(KIND_DATASET, dataset)
        vinfo = cat.require_set(KIND_VALUATION, valuation)
        run = cat.latest_score_run(dataset, valuation, cfg.id)
        if run is None:
            raise Failure(description=f"no scores for {dataset} x {valuation} with feature config {cfg.id}: "
                                      f"materialize forvalue_scores first")
        for what, name, info, key in (("training dataset", dataset, tinfo, "dataset_version"),
                                      ("valuation set", valuation, vinfo, "valuation_version")):
            if run[key] != info["version"]:
                raise Failure(description=f"the scores of {dataset} x {valuation} are for {what} {name} version "
                                          f"{run[key][:12]}, the current version is {info['version'][:12]}: "
                                          f"re-materialize forvalue_scores")
        scores = cat.scores_frame(dataset, valuation, cfg.id, run["model_id"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    return run, scores


def _histogram(values: np.ndarray, idx: np.ndarray, sub, title: str, path):
    """The scores' histogram with the kept and the dropped samples in two colours (PNG bytes, written
    to ``path``), and the subset's cut-off score where the strategy sorts by the score."""
    kept = np.zeros(len(values), dtype=bool)
    kept[idx] = True
    cut = None
    if sub.strategy == "raw-mean" and len(idx):
        cut = float(values[idx].min() if sub.mode != "bottom_p" else values[idx].max())
    png = md.histogram_png(values, title=title, cut=cut, kept=kept)
    atomic_write_bytes(path, png)
    return png


def checks_metadata(ranking, dropped: list[dict], idx: np.ndarray) -> dict:
    """What the consistency checks did: a line per check, how many they dropped (and how many of
    those the subset still holds, when it is larger than what passed) and the first dropped."""
    checked = ranking.checks
    if checked is None:
        return {"consistency_checks": MetadataValue.text(str(ranking.info.get("checks", "not applied")))}
    kept = int(checked.failed[idx].sum())
    rows = "\n".join(f"| {d['sample_id']} | {d['check']} | {d['value']:.3f} | {d['threshold']:.3f} |"
                     for d in dropped[::-1][:10])
    out = {"consistency_checks": MetadataValue.text(checked.describe()),
           "n_dropped_by_checks": MetadataValue.int(len(dropped)),
           "n_kept_despite_checks": MetadataValue.int(kept)}
    if dropped:
        out["dropped_by_checks"] = MetadataValue.md(
            "Most failing first (all of them: `SELECT * FROM subset_checks WHERE subset_id = ...`)\n\n"
            "| sample_id | check | value | limit |\n|---|---|---:|---:|\n" + rows)
    return out


def _kept_ends(cat, dataset: str, version: str, ids, values: np.ndarray, ranking, idx: np.ndarray, mode: str):
    """Shown rows of the first and last 5 kept, best first (bottom_p keeps the worst first): what the
    tables and explanations show, loaded alone (the subset is never loaded whole)."""
    shown = idx if len(idx) <= 10 else np.concatenate([idx[:5], idx[-5:]])
    ranked = shown_rows(cat, dataset, version, ids, values, ranking, shown)
    return ranked[::-1] if mode == "bottom_p" else ranked


def _near_cut(ranking, ids, values: np.ndarray, sub):
    """(positions of the dropped samples nearest the cut, nearest first; the Arrow table of them for
    subset_near_cut: sample_id, rank, score, ranked_by)."""
    import pyarrow as pa

    from forvalue.curation.selection import NEAR_CUT

    near = ranking.near_cut(sub.mode, sub.value, NEAR_CUT)
    by = ranking.ranked_by()[1]
    return near, pa.table({"sample_id": ids.gather(near).to_arrow(), "rank": pa.array(ranking.rank[near], pa.int32()),
                           "score": pa.array(values[near], pa.float64()),
                           "ranked_by": pa.array(by[near], pa.float64())})


def _cut_metadata(cat, dataset: str, version: str, ids, values, ranking, idx, near, dropped: list[dict], sub) -> dict:
    """``kept_and_dropped``: the 5 kept and the 5 dropped samples nearest the subset's cut, in the
    strategy's order, with the value it ranked by and the check that dropped a sample; ``cut``: the
    ranks kept."""
    kept = np.zeros(len(values), dtype=bool)
    kept[idx] = True
    shown = np.concatenate([idx[-5:], near[:5]]).astype(np.int64)
    rows = shown_rows(cat, dataset, version, ids, values, ranking, shown[np.argsort(ranking.rank[shown])],
                      kept=kept, checks={d["sample_id"]: d["check"] for d in dropped})
    n, count = len(values), len(idx)
    ranks = f"{n - count + 1} to {n}" if sub.mode == "bottom_p" else f"1 to {count}"
    return {"kept_and_dropped": md.kept_dropped_table(rows, f"{sub.strategy} order, {ranking.ranked_by()[0]}"),
            "cut": MetadataValue.text(f"{sub.label} keeps ranks {ranks} of the {n} samples in the {sub.strategy} "
                                      f"order; every sample, kept or dropped: SELECT * FROM subset_kept_dropped "
                                      f"WHERE subset_id = '<subset_id>' ORDER BY rank")}


def _report(context, cat, subset_id: str, path, curation: CurationResource, model: ModelResource,
            feature_store: FeatureStoreResource, model_id: str) -> dict:
    """Write the subset's HTML curation report (forvalue.report) beside its files: ``{"report": path,
    "report_open": how to open it}``. Tokens are coloured when the curation resource explains and the
    platform's model made the scores. A report that cannot be written is a warning, not a failed subset."""
    from forvalue.errors import ForValueError
    from forvalue.report import subset_report

    lm = model.load() if curation.explain else None
    explain = 3 if lm is not None and lm.fingerprint.id == model_id else 0
    try:
        out = subset_report(cat.path, subset_id, path, features_root=feature_store.root, explain_tokens=explain,
                            model=lm if explain else None)
    except (ForValueError, OSError) as e:
        context.log.warning(f"the curation report of subset {subset_id} was not written: {e}")
        return {}
    out = out.resolve()
    return {"report": MetadataValue.path(str(out)),
            "report_open": MetadataValue.text(f"open the report file in a browser, or serve it on 127.0.0.1: "
                                              f"forvalue report --subset {subset_id[:12]} --serve")}


@DEFAULTS.asset(
    deps=[FORVALUE_SCORES],
    kinds={"duckdb", "parquet", "json"},
    description="A curated subset of a training dataset by For-Value against a valuation set: top-k, top-p%, "
                "bottom-p% or 'drop the lowest p%' (config) of the order of a selection strategy (config; "
                "default balanced: cosine round-robin over the valuation set, computed from stored features). "
                "Exported as JSONL (the original rows, in file order: a drop-in training file) and Parquet "
                "(in the strategy's order, with scores), and recorded in DuckDB `subsets` / `subset_samples`; "
                "lineage in the `subset_lineage` view.",
)
def curated_subset(context: AssetExecutionContext, config: SubsetConfig, catalog: DuckDBStoreResource,
                   feature_store: FeatureStoreResource, curation: CurationResource,
                   model: ModelResource, engine: EngineResource, ray: RayResource) -> MaterializeResult:
    import pyarrow as pa

    from forvalue.catalog.db import export_subset
    from forvalue.curation.selection import NEAR_CUT, needed_prefix

    t0 = time.perf_counter()
    (dataset, valuation), sub = split_pair(context.partition_key), Subset.resolve(config, curation)
    cat = catalog.catalog()
    run, scores = _current_scores(cat, feature_store, dataset, valuation)
    ids, values = scores["sample_id"], scores["score"].to_numpy().astype(np.float64)
    try:   # the pairwise strategies read the stored features: on Ray one task per shard and pass
        ranking = subset_ranking(cat, feature_store, run, scores, sub.strategy, engine=engine, ray=ray,
                                 limits=curation.limits(), context=context,
                                 limit=needed_prefix(len(ids), sub.mode, sub.value, past_cut=NEAR_CUT))
        idx = ranking.indices(sub.mode, sub.value)
    except ValueError as e:
        raise Failure(description=f"subset config: {e}") from e
    if not len(idx):   # as the commands: a size that keeps nothing is refused, the previous subset stays
        raise Failure(description=f"subset config: {sub.mode} {sub.value:g} keeps no sample of the {len(ids)} "
                                  f"scored; give a size that keeps at least one")
    members = pa.table({"sample_id": ids.gather(idx).to_arrow(), "rank": pa.array(ranking.rank[idx], pa.int32()),
                        "score": pa.array(values[idx], pa.float64()),
                        "ranked_by": pa.array(ranking.ranked_by()[1][idx], pa.float64())})
    near, near_table = _near_cut(ranking, ids, values, sub)
    subset_id = uuid.uuid4().hex
    folder = catalog.subset_folder(dataset, valuation)
    stem = f"{sub.stem}-{subset_id[:12]}"
    try:
        jsonl, parquet = export_subset(cat, KIND_DATASET, dataset, run["dataset_version"], members, folder, stem,
                                       strategy=sub.strategy)
    except CatalogError as e:
        raise catalog_failure(e) from e
    png_path = folder / f"{stem}.png"
    png = _histogram(values, idx, sub, f"{dataset} vs {valuation}: {sub.label}", png_path)
    dropped = [] if ranking.checks is None else ranking.checks.records(ids.to_list())
    sid = cat.record_subset(score_run=run, mode=sub.mode, value=sub.value, n_total=len(ids), members=members,
                            jsonl_path=jsonl.resolve(), parquet_path=parquet.resolve(), subset_id=subset_id,
                            dagster_run_id=context.run_id, strategy=sub.strategy, checks=ranking.info.get("checks"),
                            dropped=dropped, near_cut=near_table)
    # Stable names for consumers: current.jsonl / current.parquet (copied, then renamed into place).
    atomic_copy(jsonl, folder / "current.jsonl")
    atomic_copy(parquet, folder / "current.parquet")
    ranked_kept = _kept_ends(cat, dataset, run["dataset_version"], ids, values, ranking, idx, sub.mode)
    report = _report(context, cat, sid, subset_report_path(jsonl), curation, model, feature_store, run["model_id"])
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(idx)),
        "dagster/table_name": MetadataValue.text("subsets"),
        "subset_id": MetadataValue.text(sid),
        "mode": MetadataValue.text(sub.mode),
        "value": MetadataValue.float(sub.value),
        "strategy": MetadataValue.text(sub.strategy),
        "strategy_description": MetadataValue.text(STRATEGIES.get(sub.strategy, "")),
        "n_total": MetadataValue.int(len(ids)),
        "n_dropped": MetadataValue.int(len(ids) - len(idx)),
        "jsonl": MetadataValue.path(str(jsonl.resolve())),
        "parquet": MetadataValue.path(str(parquet.resolve())),
        "histogram": md.md_image(png, "scores: kept and dropped, with the cut-off"),
        "histogram_png": MetadataValue.path(str(png_path.resolve())),
        **report,
        **md.top_bottom_tables(ranked_kept, "kept", f"{sub.strategy} order, {ranking.ranked_by()[0]}"),
        **_cut_metadata(cat, dataset, run["dataset_version"], ids, values, ranking, idx, near, dropped, sub),
        **checks_metadata(ranking, dropped, idx),
        **explanation_metadata(curation, model, feature_store, cat, run["model_id"], valuation,
                               run["valuation_version"], ranked_kept, holdout=run.get("valuation_holdout")),
        "score_run_id": MetadataValue.text(run["score_run_id"]),
        "model_id": MetadataValue.text(run["model_id"]),
        "tables": MetadataValue.text("subsets, subset_samples, subset_checks, subset_near_cut (kept and dropped: "
                                     "subset_kept_dropped view; lineage: subset_lineage view)"),
        **engine_metadata(ranking.info.get("engine"), ray),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })
