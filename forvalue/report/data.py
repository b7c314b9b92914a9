"""What a curation report shows, whatever it was built from (the catalog, output files, a selection in
memory): the lineage, every scored sample's value and kept flag, the rows the tables show (capped),
the composition of kept vs dropped by categorical input column, and the change since the previous subset."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

# What each strategy orders by, as the report names it: (column, label). The round-robin strategies pick
# by turns over valuation units; the cosine with the mean is the value shown beside their rank.
RANKED_BY = {
    "raw-mean": ("score", "For-Value score"),
    "cosine-mean": ("normalized", "cosine with the mean valuation gradient"),
    "max-cosine": ("key", "best cosine with one valuation sample"),
    "balanced": ("normalized", "cosine with the mean valuation gradient"),
    "round-robin": ("normalized", "cosine with the mean valuation gradient"),
}
SORTED_BY_VALUE = ("raw-mean", "cosine-mean", "max-cosine")   # a subset of these is a cut of the value shown
PROMPT_CHARS, RESPONSE_CHARS = 240, 600     # text kept per row (the file's size stays bounded)
MAX_VALUES = 20                             # a categorical column has at most this many distinct values
SHOWN_VALUES = 12                           # values shown per column; the rest are counted as "(other)"


@dataclass
class Row:
    """One sample of a table: where it stands in the subset and what it says."""

    sample_id: str
    kept: bool
    rank: int | None = None            # position in the strategy's order (None: not recorded)
    score: float | None = None         # the raw For-Value
    value: float | None = None         # the value the strategy ranked by
    check: str | None = None           # the consistency check that dropped it
    check_value: float | None = None
    threshold: float | None = None
    prompt: str | None = None
    response: str | None = None
    source_row: int | None = None      # row in the training file
    user_id: str | None = None
    explanation: Any = None            # forvalue.valuation.explain.Explanation of the scored tokens


@dataclass
class Changes:
    """What changed since the previous subset of the same (dataset, valuation set) pair."""

    previous: dict                     # subset_id, created_at, strategy, mode, value, n_selected
    n_added: int
    n_removed: int
    added: list[Row] = field(default_factory=list)      # the first of them, by rank
    removed: list[Row] = field(default_factory=list)


@dataclass
class Report:
    """Everything the page shows. ``scores`` / ``values`` / ``kept`` cover every scored sample (the
    histograms); ``kept_rows`` / ``dropped_rows`` are the rows the tables show, ``n_kept`` /
    ``n_dropped`` how many there are in all."""

    title: str
    size_rule: str                     # "top_p 25", as the subset was asked for
    lineage: list[tuple[str, str]]
    strategy: str
    mode: str | None
    scores: np.ndarray
    values: np.ndarray | None
    kept: np.ndarray
    kept_rows: list[Row]
    dropped_rows: list[Row]
    n_kept: int
    n_dropped: int
    composition: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    changes: Changes | None = None
    notes: list[str] = field(default_factory=list)
    explain_tokens: int = 3
    kept_title: str = "Kept samples"
    kept_note: str | None = None       # the tables' cap notes: how many rows are not shown
    dropped_note: str | None = None
    changes_note: str | None = None    # why there is no comparison

    @property
    def value_label(self) -> str:
        return RANKED_BY.get(self.strategy, ("normalized", "cosine with the mean valuation gradient"))[1]

    @property
    def value_is_score(self) -> bool:
        return RANKED_BY.get(self.strategy, ("normalized",))[0] == "score"


def ranked_values(strategy: str, score, normalized, key=None) -> np.ndarray | None:
    """The values a strategy ranked by (None when they were not kept, e.g. max-cosine's key in the catalog)."""
    column = RANKED_BY.get(strategy, ("normalized",))[0]
    chosen = {"score": score, "normalized": normalized, "key": key}[column]
    if chosen is None:
        return None
    out = np.asarray(chosen, dtype=np.float64)
    return None if not len(out) or np.isnan(out).all() else out


def capped(n: int, budget: int, head_share: float) -> tuple[np.ndarray, int]:
    """Positions of the rows a table shows out of ``n`` in its order: all when they fit ``budget``,
    else its head (``head_share`` of the budget) and its tail; and how many are not shown."""
    if n <= budget:
        return np.arange(n), 0
    head = int(budget * head_share)
    return np.concatenate([np.arange(head), np.arange(n - (budget - head), n)]), n - budget


def split_budget(max_rows: int, n_kept: int, n_dropped: int) -> tuple[int, int]:
    """Rows for the kept and the dropped table out of ``max_rows``: half each, the rest to the other."""
    kept = min(n_kept, max_rows // 2)
    dropped = min(n_dropped, max_rows - kept)
    return min(n_kept, max_rows - dropped), dropped


def cap_note(what: str, shown: np.ndarray, total: int, order: str, all_rows: str) -> str | None:
    """The note over a capped table: how many rows it shows (head and tail of ``order``), how many it
    does not, and where all of them are (``all_rows``)."""
    hidden = total - len(shown)
    if hidden <= 0:
        return None
    gap = int(np.argmax(np.diff(shown) > 1)) + 1 if len(shown) > 1 and (np.diff(shown) > 1).any() else len(shown)
    head, tail = gap, len(shown) - gap
    return (f"Showing {len(shown):,} of {total:,} {what}: the first {head:,}"
            + (f" and the last {tail:,}" if tail else "")
            + f" {order}; {hidden:,} rows are not shown. All rows: {all_rows}.")


def dropped_order(value: np.ndarray, checked: np.ndarray) -> np.ndarray:
    """The order of the dropped table: the nearest misses first (highest value), the samples a check
    dropped last (the strategy never picks them)."""
    v = np.where(np.isnan(value), -np.inf, value)
    return np.lexsort((-v, checked.astype(bool)))


def clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f" … (+{len(text) - limit} characters)"


def shown_text(prompt=None, response=None, text=None, messages=None) -> tuple[str | None, str | None]:
    """(prompt, response) as a table shows them: plain text is the response; chat messages end with the
    response (the last turn), the turns before it are the prompt. Clipped."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            messages = None
    if text is not None and response is None:
        prompt, response = None, text
    elif messages and response is None:
        turns = [f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in messages]
        last = messages[-1]
        prompt = "\n".join(turns[:-1]) or None
        response = str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return clip(None if prompt is None else str(prompt), PROMPT_CHARS), \
        clip(None if response is None else str(response), RESPONSE_CHARS)


def categorical(value) -> bool:
    return isinstance(value, (str, bool, int)) and not (isinstance(value, str) and len(value) > 80)


def composition(pairs: Iterable[tuple[dict, bool]], *,
                skip: Sequence[str] = ()) -> dict[str, list[tuple[str, int, int]]]:
    """{column: [(value, n kept, n dropped)]} of the records' top-level categorical columns: strings,
    booleans and integers with at most ``MAX_VALUES`` distinct values, no more than half as many as
    the records that hold the column (an id column is no category)."""
    counts: dict[str, dict[str, list[int]]] = {}
    held: dict[str, int] = {}
    for record, kept in pairs:
        for key, value in record.items():
            if key in skip or value is None:
                continue
            held[key] = held.get(key, 0) + 1
            values = counts.setdefault(key, {})
            if values is None or not categorical(value):
                counts[key] = None
                continue
            label = json.dumps(value) if isinstance(value, bool) else str(value)
            if label not in values and len(values) >= MAX_VALUES:
                counts[key] = None
                continue
            values.setdefault(label, [0, 0])[0 if kept else 1] += 1
    return categories({k: [(v, c[0], c[1]) for v, c in vals.items()] for k, vals in counts.items() if vals},
                      held)


def categories(columns: dict[str, list[tuple[str, int, int]]], held: dict[str, int]) -> dict:
    """The columns that are categories (few values, each shared by several records), their values most
    frequent first, at most ``SHOWN_VALUES`` of them and the rest as one ``(other)`` line."""
    out = {}
    for key in sorted(columns):
        values = sorted(columns[key], key=lambda v: (-(v[1] + v[2]), v[0]))
        if len(values) > MAX_VALUES or len(values) * 2 > held.get(key, 0) or len(values) < 2:
            continue
        if len(values) > SHOWN_VALUES:
            rest = values[SHOWN_VALUES - 1:]
            values = values[:SHOWN_VALUES - 1] + [("(other)", sum(v[1] for v in rest), sum(v[2] for v in rest))]
        out[key] = values
    return out


__all__ = ["RANKED_BY", "SORTED_BY_VALUE", "Row", "Changes", "Report", "ranked_values", "capped", "split_budget",
           "cap_note", "dropped_order", "clip", "shown_text", "composition", "categories"]
