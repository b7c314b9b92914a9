"""Explanations in the UI: the top and bottom samples of a score or a subset with their strongest
tokens marked (forvalue.valuation.explain; shared by the curation assets)."""

from dagster import MetadataValue

from forvalue.catalog.db import KIND_VALUATION
from resources import CurationResource, FeatureStoreResource, ModelResource

from . import metadata as md


def explanation_metadata(curation: CurationResource, model: ModelResource, feature_store: FeatureStoreResource,
                         cat, model_id: str, valuation: str, valuation_version: str, ranked, n: int = 5, *,
                         holdout: float | None = None) -> dict:
    """``{"explanations": Markdown}`` for the first and last ``n`` of ``ranked`` (metadata.Shown rows,
    best first), against the part of the valuation set the scores used (``holdout``: the
    percent held out, forvalue.data.holdout), or ``{}`` when the curation resource turns explanations off."""
    if not curation.explain or not ranked:
        return {}
    from forvalue.valuator import Valuator

    lm = model.load()
    if lm.fingerprint.id != model_id:
        return {"explanations": MetadataValue.md(
            f"No explanations: the scores come from model {md.escape_md(model_id)}, the platform's model is now "
            f"{md.escape_md(lm.fingerprint.id)}; re-materialize the features with the current model.")}
    shown = list(ranked[:n]) + (list(ranked[-n:]) if len(ranked) > n else [])
    from forvalue.data.holdout import selection_samples

    val = selection_samples(cat.load_samples(KIND_VALUATION, valuation, valuation_version), holdout)
    valuator = Valuator(lm, feature_store.config(), feature_store.store(), batch_size=model.batch_size)
    why = valuator.explain([r.sample for r in shown], val)
    rows = [(r.rank, r.score, r.sample, e) for r, e in zip(shown, why)]
    text = md.md_explanations(rows[:n], f"Top {min(n, len(rows))}")
    if len(rows) > n:
        text += "\n\n" + md.md_explanations(rows[n:], f"Bottom {len(rows) - n}")
    return {"explanations": MetadataValue.md(text)}
