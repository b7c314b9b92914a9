"""Metadata a person reads in the UI: histograms (PNG), sample tables.

Sample lists are ``MetadataValue.table`` values (the UI shows their text as it is, never as
Markdown): rank, the value the strategy ranked by, the raw score (floats to 4 significant digits).
Markdown that is still built from user text (file previews, prediction tables, explanations) goes
through ``escape_md`` once, so a response with ``*`` or ``<b>`` shows those characters instead of
italics or HTML.
"""

from __future__ import annotations

import base64
import io
import math
import re
from typing import NamedTuple, Sequence

import numpy as np
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

# Characters that start Markdown (CommonMark + GFM) inline syntax or break a table cell.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
TEXT_WIDTH = 300   # characters of prompt / response kept in a table cell
KEPT_COLOUR, DROPPED_COLOUR, CUT_COLOUR = "#4477aa", "#ee7733", "#cc3311"   # colour-blind safe (Paul Tol)

class Shown(NamedTuple):
    """A sample as a table shows it: its place in the strategy's order and its values."""

    rank: int                    # position in the strategy's order (1 = first)
    value: float | None          # the value the strategy ranked by (None: not known)
    score: float                 # the raw For-Value score
    sample: object               # the Sample
    kept: bool | None = None     # in the subset (kept / dropped tables only)
    check: str | None = None     # the consistency check that dropped it


def sig(value, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None for None, NaN or inf)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.{digits}g}")


def sample_schema(ranked_by: str, *, kept: bool = False) -> TableSchema:
    """rank, [kept, dropped_by_check,] ranked_by (described as ``ranked_by``), score, id, prompt, response."""
    cols = [TableColumn("rank", "int", description="position in the strategy's order (1 = first)")]
    if kept:
        cols += [TableColumn("kept", "bool", description="in the subset"),
                 TableColumn("dropped_by_check", "string", description="the consistency check that dropped it")]
    return TableSchema(columns=cols + [
        TableColumn("ranked_by", "float", description=f"what set the order: {ranked_by} (4 significant digits)"),
        TableColumn("score", "float", description="For-Value score: mean inner product with the valuation set "
                                                  "(4 significant digits)"),
        TableColumn("id", "string", description="the sample's own id, else the start of its content id"),
        TableColumn("prompt", "string"),
        TableColumn("response", "string"),
    ])


def histogram_png(values: np.ndarray, *, title: str = "", cut: float | None = None, kept: np.ndarray | None = None,
                  bins: int = 30) -> bytes:
    """A PNG histogram of scores (matplotlib's object API, no pyplot state; each series one filled
    outline). ``kept`` (a boolean mask over ``values``) stacks the dropped samples on the kept ones in
    two colours; ``cut`` draws the subset's cut-off where it is a score."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3), dpi=90)
    ax = fig.subplots()
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    edges = np.histogram_bin_edges(values[ok], bins=min(bins, max(1, int(ok.sum()))))
    # counts first, then one filled outline per series (ax.hist drew a patch per bar: twice the time in all)
    if kept is None:
        ax.stairs(np.histogram(values[ok], bins=edges)[0], edges, fill=True, color=KEPT_COLOUR)
    else:
        kept = np.asarray(kept, dtype=bool)
        lower = np.histogram(values[ok & kept], bins=edges)[0]
        upper = lower + np.histogram(values[ok & ~kept], bins=edges)[0]      # dropped stacked on kept
        ax.stairs(lower, edges, fill=True, color=KEPT_COLOUR, label=f"kept ({int((ok & kept).sum())})")
        ax.stairs(upper, edges, baseline=lower, fill=True, color=DROPPED_COLOUR,
                  label=f"dropped ({int((ok & ~kept).sum())})")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # counts of samples
    if cut is not None:
        ax.axvline(cut, color=CUT_COLOUR, linestyle="--", linewidth=2, label=f"cut-off {cut:.4g}")
    if kept is not None or cut is not None:
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("For-Value score (higher = more valuable)")
    ax.set_ylabel("samples")
    if title:
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.17, top=0.88 if title else 0.95)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def md_image(png: bytes, alt: str = "histogram") -> MetadataValue:
    return MetadataValue.md(f"![{escape_md(alt)}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def escape_md(text) -> str:
    """``text`` as literal Markdown: HTML ``& < >`` become entities and Markdown punctuation
    (``\\ ` * _ [ ] # | ~``) is backslash-escaped, so nothing renders as emphasis, code, a link,
    a heading, HTML or a table-cell break."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _one_line(text, width: int) -> str:
    if text is None:
        return ""
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[: width - 1] + "…"


def md_cell(text, width: int = 70) -> str:
    """One Markdown table cell: whitespace collapsed, cut to ``width`` characters, escaped."""
    return escape_md(_one_line(text, width))


def sample_text(sample) -> tuple[str, str]:
    if sample.kind == "text":
        return "", sample.text
    if sample.kind == "messages":
        return sample.messages[-2]["content"] if len(sample.messages) > 1 else "", sample.messages[-1]["content"]
    return sample.prompt, sample.response


def sample_id(sample) -> str:
    return sample.user_id or sample.sample_id[:12]


def _record(row: Shown, kept: bool) -> TableRecord:
    prompt, response = sample_text(row.sample)
    data = {"rank": int(row.rank)}
    if kept:
        data |= {"kept": bool(row.kept), "dropped_by_check": row.check or ""}
    return TableRecord(data | {"ranked_by": sig(row.value), "score": sig(row.score),
                               "id": _one_line(sample_id(row.sample), 64), "prompt": _one_line(prompt, TEXT_WIDTH),
                               "response": _one_line(response, TEXT_WIDTH)})


def sample_table(rows: Sequence[Shown], ranked_by: str) -> MetadataValue:
    """A table of samples: rank, the value the order was set by (``ranked_by`` says what it is), raw
    score, id, prompt, response (text as it is, floats to 4 significant digits)."""
    return MetadataValue.table([_record(r, False) for r in rows], schema=sample_schema(ranked_by))


def kept_dropped_table(rows: Sequence[Shown], ranked_by: str) -> MetadataValue:
    """The samples on both sides of a subset's cut, in the order: as :func:`sample_table` with
    ``kept`` and the consistency check that dropped a sample."""
    return MetadataValue.table([_record(r, True) for r in rows], schema=sample_schema(ranked_by, kept=True))


def top_bottom_tables(ranked: Sequence[Shown], what: str, ranked_by: str, n: int = 5) -> dict:
    """``{"top_<what>": table, "bottom_<what>": table}``: the first n and the last n of a best-first
    list (the bottom table only when the list is longer than n)."""
    out = {f"top_{what}": sample_table(list(ranked[:n]), ranked_by)}
    if len(ranked) > n:
        out[f"bottom_{what}"] = sample_table(list(ranked[-n:]), ranked_by)
    return out


# Markdown emphasis opens and closes by the characters around its delimiters (CommonMark's flanking
# rules): ``Answer**:**`` is not bold. A word joiner (invisible, neither whitespace nor punctuation)
# inside a delimiter next to anything but a letter or digit makes it open and close wherever it is.
WORD_JOINER = "\u2060"
BOLD, STRUCK = "**", "~~"


def _shown(text: str) -> str:
    """A token's text, a whitespace-only token as visible symbols (↵ a line break, ␣ any other)."""
    if text.strip():
        return text
    return "".join("↵" if ch in "\r\n" else "␣" for ch in text)


def _spaces(text: str) -> str:
    """Escaped text on one line (a list item): every whitespace character a space."""
    return re.sub(r"\s", " ", text)


def emphasis(text: str, mark: str) -> str:
    """``text`` (user text, escaped here) between ``mark`` delimiters (BOLD or STRUCK); whitespace
    around it stays outside, a whitespace-only text shows as symbols (never an empty emphasis)."""
    shown = _shown(text)
    core = shown.strip()
    lead, trail = shown[: len(shown) - len(shown.lstrip())], shown[len(shown.rstrip()):]
    esc = _spaces(escape_md(core))
    left = "" if esc[0].isalnum() else WORD_JOINER
    right = "" if esc[-1].isalnum() else WORD_JOINER
    return f"{_spaces(lead)}{mark}{left}{esc}{right}{mark}{_spaces(trail)}"


def marked_tokens(explanation, n: int = 3) -> tuple[list, list]:
    """(the up to ``n`` tokens that add most to the score, the up to ``n`` that take most from it):
    only positive contributions add and only negative ones take, so no token is in both."""
    pos, neg = explanation.strongest(n)
    return [t for t in pos if t.contribution > 0], [t for t in neg if t.contribution < 0]


def marked_md(explanation, n: int = 3) -> str:
    """A sample's scored text as escaped Markdown on one line, its ``n`` most positive tokens in
    **bold** and its ``n`` most negative ones struck through, marked by token position (never by
    searching the text); neighbouring tokens with the same mark share one emphasis."""
    adds, takes = marked_tokens(explanation, n)
    mark_of = {t.position: BOLD for t in adds} | {t.position: STRUCK for t in takes}
    parts: list[str] = []
    run: list[str] = []
    run_mark = None
    for t in [*explanation.tokens, None]:
        mark = None if t is None else mark_of.get(t.position)
        if run and (t is None or mark != run_mark):
            text = "".join(run)
            parts.append(emphasis(text, run_mark) if run_mark else _spaces(escape_md(text)))
            run = []
        if t is not None:
            run.append(_shown(t.text) if mark else t.text)
            run_mark = mark
    return "".join(parts).strip()


def md_explanations(rows: Sequence[tuple[int, float, object, object]], title: str, n: int = 3) -> str:
    """(rank, score, Sample, Explanation) rows: each sample's text with its strongest tokens marked,
    and the same tokens listed with the same marks and their contributions (everything from the
    user escaped once)."""
    lines = [f"**{escape_md(title)}** (bold: the up to {n} tokens that add most to the score; struck: the up to "
             f"{n} that take most from it; ␣ a space, ↵ a line break)", ""]
    for rank, score, s, e in rows:
        adds, takes = marked_tokens(e, n)
        listed = ", ".join(f"{emphasis(t.text.strip() or t.text, BOLD if t in adds else STRUCK)} "
                           f"{t.contribution:+.4g}" for t in adds + takes)
        lines.append(f"- rank {rank}, score {score:.4g}, {escape_md(sample_id(s))}: {marked_md(e, n)}  ")
        lines.append(f"  {listed or 'no token adds or takes'}")
    return "\n".join(lines)


def md_preview(samples) -> MetadataValue:
    """Markdown table of the first samples of a registered file, the text escaped."""
    lines = ["| row | id | prompt | response |", "|---:|---|---|---|"]
    for s in samples:
        prompt, response = sample_text(s)
        lines.append(f"| {s.row} | {md_cell(sample_id(s), 24)} | {md_cell(prompt)} | {md_cell(response)} |")
    return MetadataValue.md("\n".join(lines))
