"""Which valuation samples the selection uses and which samples evaluate its subsets (shared by the
curation and fine-tuning domains; the rules live in forvalue/data/holdout.py).

- Scoring a pair: when ``<incoming>/eval/<valuation set>.*`` exists, the whole valuation set selects;
  otherwise the curation resource's ``eval_holdout`` percent of it is held out by a hash split and
  the selection scores against the rest. The score run records the percent (``valuation_holdout``).
- Evaluating a fine-tune of a subset: the evaluation file when it exists (minus any sample the
  selection saw), else the held-out part the subset's score run recorded, else (hold-out 0) the
  valuation set itself, with a warning.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Failure, MetadataValue

from forvalue.catalog.db import KIND_VALUATION, CatalogError
from forvalue.data.samples import DataError

from .common import catalog_failure, data_failure
from .settings import EVAL_SUBDIR, find_incoming_file


def eval_file(valuation: str) -> Path | None:
    """The evaluation file dropped for ``valuation`` (the newest ``<incoming>/eval/<valuation>.*``)."""
    return find_incoming_file(EVAL_SUBDIR, valuation)


def scoring_holdout(curation, valuation: str) -> float:
    """The percent of ``valuation`` to hold out when scoring now: 0 when an evaluation file exists."""
    from forvalue.data.holdout import check_percent

    if eval_file(valuation) is not None:
        return 0.0
    try:
        return check_percent(curation.eval_holdout, "the curation resource's eval_holdout (FORVALUE_EVAL_HOLDOUT)")
    except ValueError as e:
        raise Failure(description=str(e)) from e


def selection_val_ids(cat, run: dict) -> list[str]:
    """The valuation samples a score run scored against (its selection part)."""
    from forvalue.data.holdout import selection_ids

    ids = cat.sample_ids(KIND_VALUATION, run["valuation_set"], run["valuation_version"])
    return selection_ids(ids, run.get("valuation_holdout"))


def evaluation_set(cat, subset_id: str, log=None):
    """The :class:`forvalue.data.holdout.EvalSet` that evaluates fine-tunes of subset ``subset_id``;
    its warnings go to ``log`` (a Dagster logger)."""
    from forvalue.catalog.db import columns_of, content_hash
    from forvalue.data.samples import load_samples
    from forvalue.data.holdout import from_file, from_valuation, selection_ids

    lin = cat.subset_lineage(subset_id)
    if lin is None:
        raise Failure(description=f"subset {subset_id} is not in the catalog")
    valuation, version, holdout = lin["valuation_set"], lin["valuation_version"], lin["valuation_holdout"] or 0.0
    try:
        val = cat.load_samples(KIND_VALUATION, valuation, version)
    except CatalogError as e:
        raise catalog_failure(e) from e
    path = eval_file(valuation)
    if path is None:
        ev = from_valuation(val, name=valuation, version=version, holdout=holdout)
    else:   # read with the valuation set's column mapping
        from forvalue.catalog.db import from_json

        info = cat.current_set(KIND_VALUATION, valuation, version=version) or {}
        try:
            samples = load_samples(path, columns=columns_of(from_json(info.get("column_mapping")))).samples
            seen = selection_ids([s.sample_id for s in val], holdout)
            ev = from_file(samples, name=str(path.resolve()), version=content_hash(path), seen_ids=seen)
        except DataError as e:
            raise data_failure(e) from e
        except (OSError, ValueError) as e:
            raise Failure(description=f"evaluation file {path}: {e}") from e
    for w in ev.warnings if log is not None else ():
        log.warning(w)
    return ev


def evaluation_metadata(ev) -> dict:
    """Asset metadata of an evaluation set: where it comes from, its size, its warnings."""
    meta = {"evaluation_set": MetadataValue.text(ev.describe()),
            "eval_source": MetadataValue.text(ev.source),
            "eval_seen_by_selection": MetadataValue.bool(ev.seen_by_selection),
            "n_eval": MetadataValue.int(len(ev.samples))}
    if ev.warnings:
        meta["eval_warnings"] = MetadataValue.text("; ".join(ev.warnings))
    return meta
