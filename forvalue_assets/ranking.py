"""The order of a score run's training samples by a selection strategy (shared by the curation
and fine-tuning domains)."""

from contextlib import contextmanager

import numpy as np
from dagster import Failure, MetadataValue

from resources import FeatureStoreResource

from .evaluation import selection_val_ids


def subset_ranking(cat, feature_store: FeatureStoreResource, run: dict, scores, strategy: str,
                   limit: int | None = None, *, engine=None, ray=None, context=None, limits=None):
    """The order of a score run's training samples (``scores``: its stored scores, a polars frame
    with sample_id, score, normalized, norm) by ``strategy``
    (:meth:`forvalue.Valuator.rank_scores`): from the stored values for raw-mean / cosine-mean, from
    the stored features otherwise (one Ray task per shard and pass when ``engine`` says ray), after the
    consistency checks at ``limits`` (``forvalue.curation.consistency.CheckLimits``; default: the library's)."""
    from forvalue.curation.selection import PAIRWISE_STRATEGIES, check_strategy

    try:
        check_strategy(strategy)
    except ValueError as e:
        raise Failure(description=str(e)) from e
    if strategy == "cosine-mean" and scores["normalized"].null_count():
        raise Failure(description="these scores were stored without normalized values: re-materialize "
                                  "forvalue_scores")
    values = {c: None if scores[c].null_count() else scores[c].to_numpy().astype(np.float64)
              for c in ("score", "normalized", "norm")}
    if strategy not in PAIRWISE_STRATEGIES:   # the sorting strategies read no features: no Ray
        engine = None
    valuator = stored_valuator(cat, feature_store, run["model_id"], engine=engine, ray=ray, context=context,
                               limits=limits)
    val_ids = selection_val_ids(cat, run)   # the part the scores used (a held-out part never selects)
    with _missing_features(valuator), valuator.session():   # streamed shard by shard: any store size
        return valuator.rank_scores(scores["sample_id"].to_list(), val_ids, strategy, scores=values["score"],
                                    normalized=values["normalized"], norms=values["norm"], limit=limit)


def stored_valuator(cat, feature_store: FeatureStoreResource, model_id: str, *, engine=None, ray=None, context=None,
                    limits=None):
    """A model-less :class:`forvalue.Valuator` over the features ``model_id`` stored, on the step's
    engine (``engine``: an EngineResource; on ray the step's Ray resource ``ray`` is connected here)."""
    from forvalue.valuator import Valuator

    return Valuator.from_store(feature_store.store(), cat.fingerprint(model_id), feature_store.config(),
                               engine=_engine(engine, ray, context), limits=limits)


@contextmanager
def _missing_features(valuator):
    """Missing stored features as a clear failure."""
    try:
        yield
    except KeyError as e:
        raise Failure(description=f"features missing from {valuator.store.root}: {e}; re-materialize the "
                                  f"features") from e


def _engine(engine, ray, context):
    """The EngineConfig of a step (None: in-process); with ray, the step's Ray resource connected."""
    if engine is None or engine.engine != "ray":
        return None
    from resources.ray import connect

    connect(ray, context)
    return engine.config()


def stored_scores(valuator, train_ids, val_ids):
    """(:class:`forvalue.valuation.scoring.ScoreResult`, what the Ray run did as a dict, or None): the
    sparse scores of stored features in the order of ``train_ids`` (:meth:`forvalue.Valuator.score_stored`,
    streamed, on the valuator's engine); a clear failure when some features are missing."""
    with _missing_features(valuator), valuator.session():
        res = valuator.score_stored(train_ids, val_ids)
    return res, res.info.get("engine")


def engine_metadata(stats: dict | None, ray) -> dict:
    """Asset metadata of where the passes over the store ran: ``engine`` local, or ray with the
    cluster, workers, worker processes, shard tasks, retried tasks (a worker died) and stored samples
    read per second."""
    if not stats:
        return {"engine": MetadataValue.text("local")}
    return {"engine": MetadataValue.text("ray"), "ray_cluster": MetadataValue.text(ray.name),
            "workers": MetadataValue.int(stats["workers"]), "worker_processes": MetadataValue.int(stats["processes"]),
            "shard_tasks": MetadataValue.int(stats["batches"]), "retried_tasks": MetadataValue.int(stats["retried_tasks"]),
            "rows_per_s": MetadataValue.float(stats["rows_per_s"])}


def recorded_limits(checks_json: str | None):
    """The ``CheckLimits`` a subset was selected with, from its recorded checks (``subsets.checks``:
    each check's quantile); the library's defaults where it recorded none."""
    import json

    from forvalue.curation.consistency import CheckLimits

    recorded = json.loads(checks_json) if checks_json else {}
    q = {c: v["quantile"] for c, v in recorded.items() if isinstance(v, dict) and "quantile" in v}
    return CheckLimits(**q)
