"""The report of a selection made in this process (``forvalue curate --report``, or a notebook): the
training samples, the strategy's :class:`forvalue.curation.selection.Ranking` and the kept indices."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..curation.selection import STRATEGIES
from ..errors import ConfigError
from ..io import atomic_write_text
from .data import Report, Row, cap_note, capped, composition, dropped_order, ranked_values, shown_text, split_budget
from .explaining import EXPLAIN_ROWS, explain_rows
from .page import render


def check_records(ranking, sample_ids: Sequence[str]) -> dict[int, dict]:
    """index -> {check, value, threshold} of every sample a consistency check failed (kept or not)."""
    checked = ranking.checks
    if checked is None:
        return {}
    out = {}
    for i in np.flatnonzero(checked.failed).tolist():
        r = checked.first_failed(i)
        out[i] = {"check": r.name, "value": float(r.values[i]), "threshold": float(r.threshold)}
    return out


def sample_row(s, i: int, kept: bool, ranking, values, rank: np.ndarray, checks: dict) -> Row:
    prompt, response = shown_text(s.prompt, s.response, s.text, s.messages)
    c = checks.get(i, {})
    value = float(values[i]) if values is not None and np.isfinite(values[i]) else None
    return Row(sample_id=s.sample_id, kept=kept, rank=int(rank[i]) or None, score=float(ranking.raw[i]), value=value,
               check=c.get("check"), check_value=c.get("value"), threshold=c.get("threshold"), prompt=prompt,
               response=response, source_row=s.row, user_id=s.user_id)


def selection_tables(samples, ranking, indices: np.ndarray, values, max_rows: int) -> dict:
    """The rows of the kept and the dropped table (capped at ``max_rows`` together) and their cap notes."""
    n = len(samples)
    kept = np.zeros(n, bool)
    kept[indices] = True
    checks = check_records(ranking, [s.sample_id for s in samples])
    failed = np.zeros(n, bool)
    failed[list(checks)] = True
    k_idx = np.asarray(indices, dtype=np.int64)
    d_idx = np.flatnonzero(~kept)
    d_idx = d_idx[dropped_order((values if values is not None else ranking.raw)[d_idx], failed[d_idx])]
    bk, bd = split_budget(max_rows, len(k_idx), len(d_idx))
    kp, _ = capped(len(k_idx), bk, 0.75)
    dp, _ = capped(len(d_idx), bd, 0.5)
    rank = ranking.rank

    def rows(idx, is_kept):
        return [sample_row(samples[i], i, is_kept, ranking, values, rank, checks) for i in idx.tolist()]

    where = "the output file of the command"
    return {"kept": kept, "kept_rows": rows(k_idx[kp], True), "dropped_rows": rows(d_idx[dp], False),
            "n_kept": len(k_idx), "n_dropped": len(d_idx),
            "kept_note": cap_note("kept samples", kp, len(k_idx), "in the strategy's order", where),
            "dropped_note": cap_note("dropped samples", dp, len(d_idx),
                                     "(nearest misses first, those a check dropped last)",
                                     "the scores table of `forvalue score` and the --dropped file")}


def selection_report(samples: Sequence, ranking, indices, out_path, *, mode: str, value: float,
                     lineage: Sequence[tuple[str, str]] = (), title: str | None = None,
                     explain: Callable | None = None, explain_tokens: int = 3, max_rows: int = 2000,
                     explain_rows_per_table: int = EXPLAIN_ROWS) -> Path:
    """Write the report of a selection in memory: ``samples`` (the training samples), the ``ranking``
    that ordered them, the kept ``indices`` (in the subset's order) and the size rule (``mode``,
    ``value``). ``lineage``: (label, value) lines for the header. ``explain(samples) -> explanations``
    colours the tokens of the first rows of each table (e.g. ``lambda s: valuator.explain(s, val)``)."""
    if max_rows < 2:
        raise ConfigError(f"max_rows must be >= 2, got {max_rows}")
    strategy = ranking.strategy
    values = ranked_values(strategy, ranking.raw, ranking.normalized, ranking.key)
    t = selection_tables(samples, ranking, np.asarray(indices, dtype=np.int64), values, max_rows)
    notes = []
    if explain is not None and explain_tokens > 0:
        why = explain_rows(explain, [t["kept_rows"], t["dropped_rows"]], {s.sample_id: s for s in samples},
                           explain_rows_per_table)
        notes += [why] if why else []
    head = [("strategy", f"{strategy}: {STRATEGIES.get(strategy, '')}"), ("size rule", f"{mode} {float(value):g}"),
            ("kept / total", f"{t['n_kept']:,} / {len(samples):,}")]
    report = Report(
        title=title or f"Curated subset: {t['n_kept']:,} of {len(samples):,} kept",
        size_rule=f"{mode} {float(value):g}",
        lineage=list(lineage) + head, strategy=strategy, mode=mode, scores=np.asarray(ranking.raw, dtype=np.float64),
        values=values, kept=t["kept"], kept_rows=t["kept_rows"], dropped_rows=t["dropped_rows"], n_kept=t["n_kept"],
        n_dropped=t["n_dropped"], composition=composition((s.record, bool(k)) for s, k in zip(samples, t["kept"])),
        notes=notes, explain_tokens=explain_tokens, kept_note=t["kept_note"], dropped_note=t["dropped_note"],
        changes_note="A selection made by a command has no previous subset to compare with (the platform's "
                     "catalog keeps them: forvalue report --subset).")
    return atomic_write_text(out_path, render(report))


__all__ = ["selection_report"]
