"""Token explanations for the first rows of a report's tables (forvalue.valuation.explain through
:meth:`forvalue.Valuator.explain`): one more forward pass over at most ``limit`` samples a table."""

from __future__ import annotations

import json
from typing import Sequence

from ..catalog.db import KIND_DATASET, KIND_VALUATION
from ..data.holdout import selection_samples
from ..errors import ForValueError
from .data import Row

EXPLAIN_ROWS = 40   # rows explained per table (the first ones shown)


def explain_rows(explain, tables: Sequence[list[Row]], samples: dict, limit: int = EXPLAIN_ROWS) -> str | None:
    """Give the first ``limit`` rows of each table (whose sample is in ``samples``: id -> Sample) their
    explanation (``explain(samples) -> explanations``, in order); a note when it could not be done."""
    chosen = list({r.sample_id: r for rows in tables for r in rows[:limit] if r.sample_id in samples}.values())
    if not chosen:
        return None
    try:
        why = explain([samples[r.sample_id] for r in chosen])
    except ForValueError as e:
        return f"No token colours: the explanations failed ({e})."
    for r, e in zip(chosen, why):
        r.explanation = e
    return None


def catalog_valuator(lineage: dict, *, model=None, features_root=None):
    """(Valuator, None) that explains a catalog subset's samples with its model, or (None, why not): the
    model passed (a loaded model or a spec), else the spec the catalog recorded, loaded with its dtype;
    it must be the model that made the features (same fingerprint)."""
    from ..models.loading import DTYPE_NAMES, ModelConfig
    from ..valuation.features import FeatureConfig
    from ..valuator import Valuator

    spec = model if model is not None else lineage.get("model_spec")
    if spec is None:
        return None, "No token colours: the catalog records no model spec for this subset's model."
    lm = spec
    if not (hasattr(spec, "model") and hasattr(spec, "tokenizer")):
        dtype = lineage.get("model_dtype") if lineage.get("model_dtype") in DTYPE_NAMES else "auto"
        try:
            lm = ModelConfig(model=str(spec), dtype=dtype).load()
        except (ForValueError, OSError) as e:
            return None, f"No token colours: the model {spec} cannot be loaded here ({e})."
    if lm.fingerprint.id != lineage.get("model_id"):
        return None, (f"No token colours: the subset's scores come from model {lineage.get('model_id')}, the model "
                      f"at hand is {lm.fingerprint.id}.")
    raw = lineage.get("feature_config")
    config = FeatureConfig.from_dict(json.loads(raw) if isinstance(raw, str) else raw) if raw else FeatureConfig()
    return Valuator(lm, config, store=features_root), None


def catalog_explanations(cat, lineage: dict, tables: Sequence[list[Row]], *, model=None, features_root=None,
                         limit: int = EXPLAIN_ROWS) -> str | None:
    """Explanations of a catalog subset's first rows against the part of its valuation set the scores
    used (the held-out part left out); a note saying why not when they cannot be made."""
    valuator, why = catalog_valuator(lineage, model=model, features_root=features_root)
    if valuator is None:
        return why
    ids = list({r.sample_id for rows in tables for r in rows[:limit]})
    samples = {s.sample_id: s for s in cat.load_samples(KIND_DATASET, lineage["dataset_name"],
                                                        lineage["dataset_version"], sample_ids=ids)}
    val = selection_samples(cat.load_samples(KIND_VALUATION, lineage["valuation_set"], lineage["valuation_version"]),
                            lineage.get("valuation_holdout"))
    return explain_rows(lambda chosen: valuator.explain(chosen, val), tables, samples, limit)


__all__ = ["EXPLAIN_ROWS", "explain_rows", "catalog_valuator", "catalog_explanations"]
