"""The report of a subset recorded in the DuckDB catalog: its lineage, the scores it was cut from, its
members and the samples the checks dropped, the composition by input column, and the change since the
previous subset of the pair. Every query is a named query of sql/queries.sql; the samples' content
is read for the rows shown only, so a subset of any size makes a page of bounded size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..catalog.db import Catalog
from ..curation.selection import STRATEGIES
from ..errors import CatalogError, ConfigError
from ..io import atomic_write_text
from .data import (MAX_VALUES, Changes, Report, Row, cap_note, capped, categories, dropped_order, ranked_values,
                   shown_text, split_budget)
from .explaining import EXPLAIN_ROWS, catalog_explanations
from .page import render

CHANGED_ROWS = 50


def open_catalog(path) -> Catalog:
    """The catalog at ``path``, which must exist (reading never creates one)."""
    p = Path(path)
    if not p.is_file():
        raise CatalogError(f"{p}: no catalog file here (the platform's is .forvalue/forvalue.duckdb, or $FORVALUE_DB)")
    return Catalog(p)


def find_subset(cat: Catalog, subset_id: str) -> dict:
    """The lineage row of a subset, by its id or an unambiguous start of it."""
    lineage = cat.subset_lineage(subset_id)
    if lineage is not None:
        return lineage
    found = cat.fetch("subsets_with_prefix", prefix=subset_id) if len(subset_id) >= 4 else []
    if len(found) == 1:
        return cat.subset_lineage(found[0]["subset_id"])
    if found:
        raise CatalogError(f"{cat.path}: subset id {subset_id!r} is ambiguous: "
                           + ", ".join(r["subset_id"] for r in found))
    raise CatalogError(f"{cat.path}: no subset {subset_id!r} (its subsets: SELECT subset_id, dataset_name, "
                       f"valuation_set, created_at FROM subsets)")


def checks_text(checks) -> str:
    """The subset's consistency checks on one line: what each dropped at which limit, or why none ran."""
    value = json.loads(checks) if isinstance(checks, str) else checks
    if value is None:
        return "not recorded"
    if not isinstance(value, dict):
        return str(value)
    parts = []
    for name, c in value.items():
        parts.append(f"{name}: dropped {c.get('failed', 0)}, value > {c.get('threshold', 0):.4g}" if isinstance(c, dict)
                     else f"{name}: {c}")
    return "; ".join(parts)


def lineage_items(lin: dict, sub: dict) -> list[tuple[str, str]]:
    holdout = float(lin.get("valuation_holdout") or 0)
    return [
        ("dataset", f"{lin['dataset_name']} @ {str(lin['dataset_version'])[:12]}"),
        ("dataset file", str(lin.get("dataset_path") or "–")),
        ("valuation set", f"{lin['valuation_set']} @ {str(lin['valuation_version'])[:12]}"
                          + (f" ({holdout:g}% held out for evaluation)" if holdout else "")),
        ("valuation file", str(lin.get("valuation_path") or "–")),
        ("model", f"{lin.get('model_name') or '–'} ({lin['model_id']})"),
        ("model spec", str(lin.get("model_spec") or "–")),
        ("scoring method", f"{lin['score_method']} (feature config {lin['feature_config_id']}, "
                           f"{lin.get('n_valuation') or '?'} valuation samples)"),
        ("strategy", f"{lin['strategy']}: {STRATEGIES.get(lin['strategy'], '')}"),
        ("size rule", f"{lin['mode']} {float(lin['value']):g}"),
        ("kept / total", f"{lin['n_selected']:,} / {lin['n_total']:,}"),
        ("consistency checks", checks_text(sub.get("checks"))),
        ("subset id", lin["subset_id"]),
        ("Dagster run", str(lin.get("subset_dagster_run_id") or "– (made outside Dagster)")),
        ("scores Dagster run", str(lin.get("scores_dagster_run_id") or "–")),
        ("created", str(lin["subset_created_at"])),
        ("code version", str(lin["code_version"])),
        ("subset files", f"{lin['jsonl_path']}, {lin['parquet_path']}"),
        ("score run", str(lin["score_run_id"])),
    ]


def frame_rows(frame, idx: np.ndarray, values: np.ndarray | None) -> list[Row]:
    """Rows of the ``report_scored`` frame at ``idx`` (content filled later)."""
    out = []
    for i in idx.tolist():
        r = frame.row(i, named=True)
        value = float(values[i]) if values is not None and np.isfinite(values[i]) else None
        out.append(Row(sample_id=r["sample_id"], kept=bool(r["kept"]), rank=r["rank"], score=r["score"], value=value,
                       check=r["check_name"], check_value=r["check_value"], threshold=r["threshold"]))
    return out


def fill_content(cat: Catalog, lin: dict, rows: list[Row]) -> None:
    """Each row's prompt, response, file row and id, from the stored samples."""
    if not rows:
        return
    got = {r["sample_id"]: r for r in cat.fetch("report_samples", sample_ids=[r.sample_id for r in rows],
                                                 set_name=lin["dataset_name"], set_version=lin["dataset_version"])}
    for row in rows:
        s = got.get(row.sample_id)
        if s is not None:
            row.prompt, row.response = shown_text(s["prompt"], s["response"], s["text"], s["messages"])
            row.source_row, row.user_id = s["row_number"], s["user_id"]


def table_positions(frame, values: np.ndarray | None, mode: str, max_rows: int) -> dict:
    """Which rows of the frame the tables show, in their order: the kept by rank (bottom_p: the least
    valuable first), the dropped nearest miss first and those a check dropped last; head and tail of
    each when they do not fit ``max_rows`` together."""
    kept = frame["kept"].to_numpy()
    rank = frame["rank"].fill_null(0).to_numpy()
    k_idx = np.flatnonzero(kept)
    k_idx = k_idx[np.argsort(-rank[k_idx] if mode == "bottom_p" else rank[k_idx], kind="stable")]
    d_idx = np.flatnonzero(~kept)
    v = values if values is not None else frame["score"].fill_null(np.nan).to_numpy()
    d_idx = d_idx[dropped_order(v[d_idx], frame["check_name"].is_not_null().to_numpy()[d_idx])]
    bk, bd = split_budget(max_rows, len(k_idx), len(d_idx))
    kp, _ = capped(len(k_idx), bk, 0.75)
    dp, _ = capped(len(d_idx), bd, 0.5)
    return {"kept": k_idx[kp], "dropped": d_idx[dp], "kept_pos": kp, "dropped_pos": dp,
            "n_kept": len(k_idx), "n_dropped": len(d_idx)}


def composition_of(cat: Catalog, lin: dict, scored_only: bool) -> dict:
    """The composition of kept vs dropped by categorical record field, counted in DuckDB: the candidate
    fields from the first records, then their values over every record (read at their JSON paths)."""
    where = {"set_name": lin["dataset_name"], "set_version": lin["dataset_version"]}
    keys = [r["key"] for r in cat.fetch("report_record_keys", **where, max_values=MAX_VALUES)
            if '"' not in r["key"] and "\\" not in r["key"]]
    if not keys:
        return {}
    rows = cat.fetch("report_composition", **where, subset_id=lin["subset_id"], score_run_id=lin["score_run_id"],
                     scored_only=scored_only, max_values=MAX_VALUES, keys=keys, paths=[f'$."{k}"' for k in keys])
    columns: dict[str, list] = {}
    held: dict[str, int] = {}
    for r in rows:
        columns.setdefault(r["key"], []).append((r["value"], int(r["n_kept"]), int(r["n_dropped"])))
        held[r["key"]] = int(r["n_held"])
    return categories(columns, held)


def changed_rows(cat: Catalog, a: str, b: str, set_name: str, set_version: str) -> tuple[int, list[Row]]:
    got = cat.fetch("subset_difference", subset_id=a, other_id=b, set_name=set_name, set_version=set_version,
                    limit=CHANGED_ROWS)
    rows = [Row(sample_id=r["sample_id"], kept=True, rank=r["rank"], score=r["score"],
                response=shown_text(r["prompt"], r["response"], r["text"], r["messages"])[1]) for r in got]
    return (int(got[0]["n"]) if got else 0), rows


def changes_since(cat: Catalog, lin: dict, sub: dict) -> Changes | None:
    """Added and removed since the pair's previous subset (None: this is its first)."""
    prev = cat.fetch_one("previous_subset", dataset_name=lin["dataset_name"], valuation_set=lin["valuation_set"],
                         subset_id=lin["subset_id"], created_at=sub["created_at"])
    if prev is None:
        return None
    n_added, added = changed_rows(cat, lin["subset_id"], prev["subset_id"], lin["dataset_name"], lin["dataset_version"])
    n_removed, removed = changed_rows(cat, prev["subset_id"], lin["subset_id"], prev["dataset_name"],
                                      prev["dataset_version"])
    previous = {k: prev[k] for k in ("subset_id", "created_at", "strategy", "mode", "value", "n_selected")}
    previous["strategy"] = previous["strategy"] or "raw-mean"
    return Changes(previous=previous, n_added=n_added, n_removed=n_removed, added=added, removed=removed)


def catalog_report(path, subset_id: str, *, features_root=None, explain_tokens: int = 3, max_rows: int = 2000,
                   model=None, explain_rows: int = EXPLAIN_ROWS) -> Report:
    """The :class:`Report` of a catalog subset (see :func:`subset_report`)."""
    cat = open_catalog(path)
    lin = find_subset(cat, subset_id)
    sub = cat.fetch_one("get_subset", subset_id=lin["subset_id"])
    frame = cat.frame("report_scored", subset_id=lin["subset_id"], score_run_id=lin["score_run_id"])
    scored = bool(frame["scored"].any()) if len(frame) else False
    values = ranked_values(lin["strategy"], frame["score"].to_numpy(), frame["normalized"].fill_null(np.nan).to_numpy())
    at = table_positions(frame, values, lin["mode"], max_rows)
    kept_rows, dropped_rows = frame_rows(frame, at["kept"], values), frame_rows(frame, at["dropped"], values)
    fill_content(cat, lin, kept_rows + dropped_rows)
    notes = []
    if not scored:
        notes.append(f"The scores of score run {lin['score_run_id'][:12]} are no longer stored (the pair was scored "
                     f"again since): the samples the cut dropped and the cosine values are unknown here.")
    if values is None and lin["strategy"] != "raw-mean":
        notes.append(f"The value {lin['strategy']} ranks by is not stored in the catalog: the rank is its order.")
    if explain_tokens > 0:
        why = catalog_explanations(cat, lin, [kept_rows, dropped_rows], model=model, features_root=features_root,
                                   limit=explain_rows)
        notes += [why] if why else []
    n_dropped = at["n_dropped"] if scored else int(lin["n_total"]) - int(lin["n_selected"])
    every = f"the subset's Parquet file {lin['parquet_path']} (or its rows of the catalog's subset_samples table)"
    return Report(
        title=f"{lin['dataset_name']} × {lin['valuation_set']}: curated subset {lin['subset_id'][:12]}",
        size_rule=f"{lin['mode']} {float(lin['value']):g}", lineage=lineage_items(lin, sub),
        strategy=lin["strategy"], mode=lin["mode"], scores=frame["score"].fill_null(np.nan).to_numpy(),
        values=values, kept=frame["kept"].to_numpy(), kept_rows=kept_rows, dropped_rows=dropped_rows,
        n_kept=at["n_kept"], n_dropped=n_dropped, composition=composition_of(cat, lin, scored),
        changes=changes_since(cat, lin, sub), notes=notes, explain_tokens=explain_tokens,
        kept_note=cap_note("kept samples", at["kept_pos"], at["n_kept"], "in the strategy's order", every),
        dropped_note=cap_note("dropped samples", at["dropped_pos"], at["n_dropped"],
                              "(nearest misses first, those a check dropped last)",
                              "the catalog's scores of this score run less the subset's samples (subset_checks: "
                              "the samples a check dropped)") if scored else
        "The samples the cut dropped are not known: their scores were replaced.")


def subset_report(catalog_path, subset_id: str, out_path, *, features_root=None, explain_tokens: int = 3,
                  max_rows: int = 2000, model=None, explain_rows: int = EXPLAIN_ROWS) -> Path:
    """Write the curation report of the catalog subset ``subset_id`` (or an unambiguous start of it) to
    ``out_path`` (one self-contained HTML file, written atomically) and return its path.
    ``explain_tokens`` > 0 colours the tokens of the first ``explain_rows`` rows of each table with the
    subset's model (``model``: a loaded model or a spec; default the spec the catalog recorded), reading
    stored features from ``features_root`` when given, and lists the ``explain_tokens`` strongest;
    0 makes no explanation. The tables show at most ``max_rows`` rows together, with a note saying how
    many are not shown."""
    if max_rows < 2:
        raise ConfigError(f"max_rows must be >= 2, got {max_rows}")
    report = catalog_report(catalog_path, subset_id, features_root=features_root, explain_tokens=explain_tokens,
                            max_rows=max_rows, model=model, explain_rows=explain_rows)
    return atomic_write_text(out_path, render(report))


__all__ = ["subset_report", "catalog_report", "open_catalog", "find_subset"]
