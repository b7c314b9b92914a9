"""Curated subsets from files: order training samples by a selection strategy, from fresh features
or from a scores table written by ``forvalue score``, and build the rows of the kept samples.

A scores table (Parquet) carries in its schema metadata what produced it: the model fingerprint,
the feature configuration, the valuation sample ids and the feature store. That is enough to order
the same samples by any strategy later without a forward pass: the sorting strategies read the
table's columns, the pairwise ones (:data:`forvalue.curation.selection.PAIRWISE_STRATEGIES`) load the
stored features.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.reader import read_output_table
from ..data.samples import DataError, Sample
from ..curation.selection import PAIRWISE_STRATEGIES, Ranking, check_strategy


def table_rows(samples: Sequence[Sample], columns: dict[str, Sequence]) -> list[dict]:
    """One row per sample: ``sample_id``, the given columns (in order), then every input column
    (renamed ``input_<name>`` where it clashes; :func:`forvalue.cli.output.write_table` leaves binary
    columns such as image bytes out, and says so)."""
    rows = []
    for j, s in enumerate(samples):
        row = {"sample_id": s.sample_id}
        for name, values in columns.items():
            v = values[j]
            row[name] = v.item() if isinstance(v, np.generic) else v
        for key, val in s.record.items():
            row[key if key not in row else f"input_{key}"] = val
        rows.append(row)
    return rows


def subset_rows(samples: Sequence[Sample], ranking: Ranking, indices: np.ndarray) -> list[dict]:
    """Rows of the kept samples, in the order of ``indices``: score (the raw For-Value), normalized
    (cosine with the mean valuation gradient), norm (||G||), rank (position in the strategy's
    order), strategy, then the input columns."""
    idx = np.asarray(indices, dtype=np.int64)
    rank = ranking.rank

    def finite(a):
        return [float(x) if math.isfinite(x) else None for x in np.asarray(a, dtype=np.float64)[idx]]

    return table_rows([samples[i] for i in idx], {
        "score": [float(x) for x in ranking.raw[idx]], "normalized": finite(ranking.normalized),
        "norm": finite(ranking.norm), "rank": [int(r) for r in rank[idx]], "strategy": [ranking.strategy] * len(idx)})


# ----------------------------------------------------------------------------- scores tables
def read_scores_table(path: str | Path) -> tuple[dict[str, dict], dict]:
    """(sample_id -> {"score", "normalized", "norm"}, metadata) of a ``forvalue score`` table
    (Parquet, JSONL or CSV; only Parquet carries metadata). Bad rows stop with file, row and field."""
    rows, meta = read_output_table(path, {"score": True, "normalized": False, "norm": False}, "`forvalue score`")
    if not rows:
        raise DataError(str(path), None, None, "no scores")
    return {r["sample_id"]: {k: r[k] for k in ("score", "normalized", "norm")} for r in rows}, meta


def _valuator(meta: dict, root, engine, limits=None):
    """The model-less Valuator over the features a scores table records (a store-less one when it
    records no model, features, valuation set or store: the sorting strategies still run)."""
    from ..models.loading import ModelFingerprint
    from ..store.feature_store import FeatureStore
    from ..valuation.features import FeatureConfig
    from ..valuator import Valuator

    if not meta.get("model") or not meta.get("feature_config") or "val_ids" not in meta or not root:
        return Valuator(None, FeatureConfig(), limits=limits)
    return Valuator.from_store(FeatureStore(root), ModelFingerprint.from_dict(meta["model"]),
                               FeatureConfig.from_dict(meta["feature_config"]), engine=engine, limits=limits)


def ranking_from_scores(train: Sequence[Sample], scores_path: str | Path, strategy: str, *,
                        store: str | Path | None = None, limit: int | None = None, engine=None,
                        limits=None) -> Ranking:
    """Order ``train`` (the scored training file's samples) by ``strategy`` from a scores table
    (:meth:`forvalue.Valuator.rank_scores`): the sorting strategies from its columns, the pairwise ones
    from the features in the store the table records (or ``store``), read here or one Ray task per
    shard (``engine``, :class:`forvalue.engines.EngineConfig`), after the consistency checks at ``limits``
    (:class:`forvalue.curation.consistency.CheckLimits`)."""
    check_strategy(strategy)
    file = str(scores_path)
    scores, meta = read_scores_table(scores_path)
    missing = [s for s in train if s.sample_id not in scores]
    if missing:
        s = missing[0]
        raise DataError(file, None, "sample_id",
                        f"{len(missing)} of {len(train)} training samples have no score, e.g. {s.source} row {s.row} "
                        f"(sample_id {s.sample_id}); score this training file with `forvalue score`")
    col = {k: [scores[s.sample_id][k] for s in train] for k in ("score", "normalized", "norm")}
    arr = {k: None if None in v else np.array(v, dtype=np.float64) for k, v in col.items()}
    if strategy == "cosine-mean" and arr["normalized"] is None:
        raise DataError(file, None, "normalized", "missing: strategy cosine-mean needs the normalized column of "
                                                   "`forvalue score --method sparse`")
    v = _valuator(meta, store or meta.get("store"), engine, limits)
    if strategy in PAIRWISE_STRATEGIES and v.store is None:
        hint = (f"strategy {strategy} orders by pairwise cosine and needs the stored features: score with "
                "`forvalue score --store DIR` to a .parquet file (it records the store), or choose --strategy "
                "raw-mean or cosine-mean")
        what = "no feature store recorded" if meta.get("model") and meta.get("feature_config") and "val_ids" in meta \
            else "no record of the model, features and valuation set"
        raise DataError(file, None, None, f"{what}; {hint}")
    try:   # streamed shard by shard: any store size
        with v.session():
            return v.rank_scores([s.sample_id for s in train], meta.get("val_ids", []), strategy, scores=arr["score"],
                                 normalized=arr["normalized"], norms=arr["norm"], limit=limit,
                                 no_store="the scores table records no feature store (score with --store to a "
                                          ".parquet file)")
    except KeyError as e:
        raise DataError(file, None, None, f"features missing from the store {v.store.root}: {e.args[0]}") from None


__all__ = ["table_rows", "subset_rows", "read_scores_table", "ranking_from_scores"]
