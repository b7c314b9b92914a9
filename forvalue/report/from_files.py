"""The report from the files the commands write: a ``forvalue score`` table (every sample's score), the
kept rows of ``forvalue curate`` / ``forvalue select`` (score, normalized, rank in the strategy's
order, strategy, the input columns) and their ``--dropped`` file (the check that dropped each sample).
Read through forvalue.data.reader, like every data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.reader import read_output_table
from ..data.samples import Columns, load_samples
from ..errors import ConfigError, DataError
from ..io import atomic_write_text
from .data import Report, Row, cap_note, capped, composition, dropped_order, ranked_values, shown_text, split_budget
from .page import render

META_COLUMNS = ("sample_id", "score", "normalized", "norm", "rank", "strategy", "top_tokens", "check", "check_value",
                "threshold", "reason")


def read_table(path, *, dropped: bool = False) -> tuple[str, list[dict], dict]:
    """(kind, rows, metadata) of an output file: kind ``subset`` (kept rows: a strategy column),
    ``dropped`` (a check column) or ``scores``; each row's sample_id and score checked. A ``dropped``
    file may be empty (no check dropped anything)."""
    numbers = {"score": True, "normalized": False, "rank": False, "check_value": False, "threshold": False}
    rows, meta = read_output_table(path, numbers, "`forvalue score`, `curate` or `select`")
    if not rows and not dropped:
        raise DataError(str(path), None, None, "no rows")
    kind = "dropped" if not rows or "check" in rows[0] else "subset" if "strategy" in rows[0] else "scores"
    return kind, rows, meta


def record_of(row: dict) -> dict:
    """The input columns of an output row (those renamed input_<name> for a clash get their name back)."""
    out = {k: v for k, v in row.items() if k not in META_COLUMNS}
    for k in [k for k in out if k.startswith("input_") and k[len("input_"):] in META_COLUMNS]:
        out[k[len("input_"):]] = out.pop(k)
    return out


def entry(row: dict) -> dict:
    return {"score": row["score"], "normalized": row.get("normalized"), "record": record_of(row)}


def gather(scores: tuple | None, kept: tuple | None, dropped: tuple | None, data) -> dict[str, dict]:
    """sample_id -> {score, normalized, record, kept, rank, check, check_value, threshold}, in file order."""
    out: dict[str, dict] = {}
    for row in (scores[1] if scores else []):   # without kept rows: every sample, in the scores' order
        out[row["sample_id"]] = entry(row) | ({"kept": True, "rank": row["rank"] and int(row["rank"])}
                                              if kept is None else {"kept": False})
    for row in (kept[1] if kept else []):
        e = out.setdefault(row["sample_id"], entry(row))
        e.update(kept=True, rank=None if row["rank"] is None else int(row["rank"]))
    for row in (dropped[1] if dropped else []):
        e = out.setdefault(row["sample_id"], entry(row) | {"kept": False})
        e.update(check=row.get("check"), check_value=row.get("check_value"), threshold=row.get("threshold"))
    for s in (data or []):
        e = out.setdefault(s.sample_id, {"score": None, "normalized": None, "kept": False, "record": s.record})
        e["record"] = e["record"] or s.record
    return out


def load_tables(scores_path, kept_path, dropped_path):
    """(scores, kept, dropped): each (kind, rows, meta) or None, from the files as given."""
    main = read_table(scores_path)
    if main[0] == "dropped":
        raise DataError(str(scores_path), None, "check", "this is a --dropped file: give the scores table or the kept "
                                                         "rows first, and this file as the dropped samples")
    kept = read_table(kept_path) if kept_path else None
    if main[0] == "subset":
        if kept is not None:
            raise ConfigError(f"{scores_path} holds kept rows already (the output of curate or select); give the "
                              f"scores table of `forvalue score` with {kept_path}")
        main, kept = None, main
    elif kept is not None and kept[0] != "subset":
        raise DataError(str(kept_path), None, "strategy", "missing: expected the kept rows of `forvalue curate` or "
                                                          "`forvalue select`")
    dropped = read_table(dropped_path, dropped=True) if dropped_path else None
    if dropped is not None and dropped[0] != "dropped":
        raise DataError(str(dropped_path), None, "check", "missing: expected the --dropped file of curate or select")
    return main, kept, dropped


def file_lineage(files: dict, meta: dict, strategy: str, size: str, n_kept: int, n_total: int) -> list:
    model = meta.get("model") or {}
    items = [(f"{what} file", str(path)) for what, path in files.items() if path]
    items += [("training data", str(meta.get("train", "–"))), ("valuation data", str(meta.get("val", "–"))),
              ("model", f"{model.get('name', '–')} ({model.get('id', '–')})"),
              ("scoring method", f"{meta.get('method', '–')} (feature config {meta.get('feature_config_id', '–')}, "
                                 f"{meta.get('n_val', '?')} valuation samples)"),
              ("strategy", strategy), ("size rule", size), ("kept / total", f"{n_kept:,} / {n_total:,}"),
              ("code version", str(meta.get("code_version", "–")))]
    return items


def file_rows(ids: list, got: dict, positions: np.ndarray, values, cols: Columns) -> list[Row]:
    out = []
    for i in positions.tolist():
        e, rec = got[ids[i]], got[ids[i]]["record"]
        prompt, response = shown_text(rec.get(cols.prompt), rec.get(cols.response),
                                      rec.get(cols.text) if cols.text else None, rec.get(cols.messages))
        user_id = rec.get(cols.id)
        out.append(Row(sample_id=ids[i], kept=e["kept"], rank=e.get("rank"), score=e["score"],
                       value=float(values[i]) if values is not None and np.isfinite(values[i]) else None,
                       check=e.get("check"), check_value=e.get("check_value"), threshold=e.get("threshold"),
                       prompt=prompt, response=response, user_id=None if user_id is None else str(user_id)))
    return out


def scores_report(scores_path, out_path, *, data_path=None, kept_path=None, dropped_path=None,
                  max_rows: int = 2000) -> Path:
    """Write the report page of command output files to ``out_path`` and return its path.
    ``scores_path``: the table of ``forvalue score`` (every sample's score), or the kept rows of
    ``forvalue curate`` / ``forvalue select``; ``kept_path``: those kept rows, when ``scores_path`` is
    the scores table; ``dropped_path``: their ``--dropped`` file; ``data_path``: the training file, for
    samples the other files do not hold (dropped by the cut, without a score). A scores table alone
    holds no subset: its samples are shown as one table."""
    if max_rows < 2:
        raise ConfigError(f"max_rows must be >= 2, got {max_rows}")
    scores, kept, dropped = load_tables(scores_path, kept_path, dropped_path)
    meta = (scores[2] if scores else {}) | (kept[2] if kept else {})
    cols = Columns(**{k: v for k, v in (meta.get("columns") or {}).items() if k in Columns.__dataclass_fields__})
    data = load_samples(data_path, columns=cols).samples if data_path else None
    got = gather(scores, kept, dropped, data)
    ids = list(got)
    strategy = (kept[1][0].get("strategy") if kept else None) or "raw-mean"
    score = np.array([np.nan if got[s]["score"] is None else got[s]["score"] for s in ids])
    normalized = np.array([np.nan if got[s]["normalized"] is None else got[s]["normalized"] for s in ids])
    values = ranked_values(strategy, score, normalized)
    return atomic_write_text(out_path, render(files_report(
        got, ids, score, values, strategy, meta, cols, max_rows, bool(kept),
        {"scores": scores_path if scores else None, "kept rows": kept_path or (None if scores else scores_path),
         "dropped": dropped_path, "training data": data_path})))


def files_notes(has_subset: bool, files: dict) -> list[str]:
    notes = []
    if not has_subset:
        notes.append("A scores table alone holds no subset: every sample is shown as scored, best first. Give the kept "
                     "rows of `forvalue select` / `forvalue curate` as well to see kept and dropped.")
    elif not files.get("scores") and not files.get("training data"):
        notes.append("The kept rows hold the kept samples only: the dropped table shows those a check dropped (with "
                     "--dropped), not those the cut left out. Give the scores table of `forvalue score` as well.")
    notes.append("No token colours in a report from files: the report of a catalog subset (forvalue report --subset) "
                 "or `forvalue curate --report` colours them.")
    return notes


def files_report(got: dict, ids: list, score: np.ndarray, values, strategy: str, meta: dict, cols: Columns,
                 max_rows: int, has_subset: bool, files: dict) -> Report:
    kept = np.array([got[s]["kept"] for s in ids], dtype=bool)
    rank = np.array([got[s].get("rank") or 0 for s in ids], dtype=np.float64)
    mode = meta.get("mode") if has_subset else None
    k_idx = np.flatnonzero(kept)
    key = np.where(rank[k_idx] > 0, rank[k_idx], np.inf)
    k_idx = k_idx[np.argsort(-key if mode == "bottom_p" else key, kind="stable")]
    failed = np.array([got[s].get("check") is not None for s in ids], dtype=bool)
    d_idx = np.flatnonzero(~kept)
    d_idx = d_idx[dropped_order((values if values is not None else score)[d_idx], failed[d_idx])]
    bk, bd = split_budget(max_rows, len(k_idx), len(d_idx))
    kp, _ = capped(len(k_idx), bk, 0.75)
    dp, _ = capped(len(d_idx), bd, 0.5)
    size = f"{mode} {float(meta.get('value', 0)):g}" if mode else ("no subset" if not has_subset else "–")
    title = "Scores" if not has_subset else "Curated subset"
    return Report(
        title=f"{title}: {Path(str(files.get('kept rows') or files.get('scores'))).name}", size_rule=size,
        lineage=file_lineage(files, meta, strategy, size, len(k_idx), len(ids)), strategy=strategy, mode=mode,
        scores=score, values=values, kept=kept, kept_rows=file_rows(ids, got, k_idx[kp], values, cols),
        dropped_rows=file_rows(ids, got, d_idx[dp], values, cols), n_kept=len(k_idx), n_dropped=len(d_idx),
        composition=composition((got[s]["record"], got[s]["kept"]) for s in ids), notes=files_notes(has_subset, files),
        explain_tokens=0, kept_title="Kept samples" if has_subset else "Scored samples (no subset given)",
        kept_note=cap_note("kept samples" if has_subset else "scored samples", kp, len(k_idx),
                           "in the strategy's order", "the input files"),
        dropped_note=cap_note("dropped samples", dp, len(d_idx), "(nearest misses first, those a check dropped last)",
                              "the input files"),
        changes_note="Output files hold one subset: there is no previous one to compare with (the platform's catalog "
                     "keeps them: forvalue report --subset).")


__all__ = ["scores_report", "read_table"]
