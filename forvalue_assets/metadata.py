"""Metadata a person reads in the UI: histograms (PNG), sample tables.

Sample lists are ``MetadataValue.table`` values (the UI shows their text as it is, never as
Markdown). Markdown that is still built from user text (file previews, prediction tables, the
legacy ``top_and_bottom`` of ``forvalue_scores``) goes through ``escape_md``, so a response with
``*`` or ``<b>`` shows those characters instead of italics or HTML.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Sequence

import numpy as np
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

# Characters that start Markdown (CommonMark + GFM) inline syntax or break a table cell.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
TEXT_WIDTH = 300   # characters of prompt / response kept in a table cell

SAMPLE_SCHEMA = TableSchema(columns=[
    TableColumn("rank", "int", description="position in the order (1 = most valuable)"),
    TableColumn("score", "float", description="For-Value score (mean inner product with the valuation set)"),
    TableColumn("id", "string", description="the sample's own id, else the start of its content id"),
    TableColumn("prompt", "string"),
    TableColumn("response", "string"),
])


def histogram_png(values: np.ndarray, *, title: str = "", cut: float | None = None, bins: int = 30) -> bytes:
    """A PNG histogram of scores (matplotlib's object API, no pyplot state); ``cut`` draws the
    subset threshold."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), dpi=90)
    ax = fig.subplots()
    values = np.asarray(values, dtype=np.float64)
    ax.hist(values[np.isfinite(values)], bins=min(bins, max(1, len(values))), color="#4477aa", edgecolor="white")
    if cut is not None:
        ax.axvline(cut, color="#cc3311", linestyle="--", label="subset cut-off")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("For-Value score (higher = more valuable)")
    ax.set_ylabel("samples")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
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


def sample_table(rows: Sequence[tuple[int, float, object]]) -> MetadataValue:
    """A table of (rank, score, Sample): rank, score, id, prompt, response (text as it is)."""
    records = []
    for rank, score, s in rows:
        prompt, response = sample_text(s)
        records.append(TableRecord({"rank": int(rank), "score": float(score), "id": _one_line(sample_id(s), 64),
                                    "prompt": _one_line(prompt, TEXT_WIDTH),
                                    "response": _one_line(response, TEXT_WIDTH)}))
    return MetadataValue.table(records, schema=SAMPLE_SCHEMA)


def top_bottom_tables(ranked: Sequence[tuple[int, float, object]], what: str, n: int = 5) -> dict:
    """``{"top_<what>": table, "bottom_<what>": table}``: the first n and the last n of a best-first
    list (the bottom table only when the list is longer than n)."""
    out = {f"top_{what}": sample_table(list(ranked[:n]))}
    if len(ranked) > n:
        out[f"bottom_{what}"] = sample_table(list(ranked[-n:]))
    return out


def md_samples(rows: Sequence[tuple[int, float, object]], title: str) -> str:
    """Markdown table of (rank, score, Sample), the text escaped."""
    lines = [f"**{escape_md(title)}**", "", "| rank | score | id | prompt | response |", "|---:|---:|---|---|---|"]
    for rank, score, s in rows:
        prompt, response = sample_text(s)
        lines.append(f"| {rank} | {score:.4g} | {md_cell(sample_id(s), 24)} | {md_cell(prompt)} | {md_cell(response)} |")
    return "\n".join(lines)


def md_top_bottom(ranked: Sequence[tuple[int, float, object]], n: int = 5) -> MetadataValue:
    """Top n and bottom n of a best-first list as Markdown (``forvalue_scores``' ``top_and_bottom``,
    kept next to the ``top_samples`` / ``bottom_samples`` tables)."""
    top = list(ranked[:n])
    bottom = list(ranked[-n:]) if len(ranked) > n else []
    text = md_samples(top, f"Top {len(top)}")
    if bottom:
        text += "\n\n" + md_samples(bottom, f"Bottom {len(bottom)}")
    return MetadataValue.md(text)


def marked_md(explanation, n: int = 3) -> str:
    """A sample's scored text as escaped Markdown, its ``n`` most positive tokens in **bold** and its
    ``n`` most negative ones struck through."""
    pos, neg = explanation.strongest(n)
    plus = {t.position for t in pos if t.contribution > 0}
    minus = {t.position for t in neg}
    parts = []
    for t in explanation.tokens:
        text = escape_md(t.text).replace("\n", " ")
        core, lead = text.strip(), text[: len(text) - len(text.lstrip())]
        if t.position in plus and core:
            parts.append(f"{lead}**{core}**")
        elif t.position in minus and core:
            parts.append(f"{lead}~~{core}~~")
        else:
            parts.append(text)
    return "".join(parts).strip()


def md_explanations(rows: Sequence[tuple[int, float, object, object]], title: str, n: int = 3) -> str:
    """(rank, score, Sample, Explanation) rows: each sample's text with its strongest tokens marked,
    and those tokens with their contributions (everything from the user escaped)."""
    lines = [f"**{escape_md(title)}** (bold: the {n} tokens that add most to the score; struck: the {n} that "
             f"take most from it)", ""]
    for rank, score, s, e in rows:
        pos, neg = e.strongest(n)
        listed = ", ".join(f"`{escape_md(t.text.strip()) or '␣'}` {t.contribution:+.3g}" for t in pos + neg)
        lines.append(f"- rank {rank}, score {score:.4g}, {escape_md(sample_id(s))}: {marked_md(e, n)}  ")
        lines.append(f"  {listed}")
    return "\n".join(lines)


def md_preview(samples) -> MetadataValue:
    """Markdown table of the first samples of a registered file, the text escaped."""
    lines = ["| row | id | prompt | response |", "|---:|---|---|---|"]
    for s in samples:
        prompt, response = sample_text(s)
        lines.append(f"| {s.row} | {md_cell(sample_id(s), 24)} | {md_cell(prompt)} | {md_cell(response)} |")
    return MetadataValue.md("\n".join(lines))
