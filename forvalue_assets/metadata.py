"""Metadata a person reads in the UI: histograms (PNG), sample tables (Markdown)."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
from dagster import MetadataValue


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
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def _cell(text, width: int = 70) -> str:
    if text is None:
        return ""
    s = " ".join(str(text).split())
    if len(s) > width:
        s = s[: width - 1] + "…"
    return s.replace("|", "\\|").replace("<", "&lt;")


def sample_text(sample) -> tuple[str, str]:
    if sample.kind == "text":
        return "", sample.text
    if sample.kind == "messages":
        return sample.messages[-2]["content"] if len(sample.messages) > 1 else "", sample.messages[-1]["content"]
    return sample.prompt, sample.response


def md_samples(rows: Sequence[tuple[int, float, object]], title: str) -> str:
    """Markdown table of (rank, score, Sample)."""
    lines = [f"**{title}**", "", "| rank | score | id | prompt | response |", "|---:|---:|---|---|---|"]
    for rank, score, s in rows:
        prompt, response = sample_text(s)
        ident = s.user_id or s.sample_id[:12]
        lines.append(f"| {rank} | {score:.4g} | {_cell(ident, 24)} | {_cell(prompt)} | {_cell(response)} |")
    return "\n".join(lines)


def md_top_bottom(ranked: Sequence[tuple[int, float, object]], n: int = 5) -> MetadataValue:
    """Top n and bottom n of a best-first list."""
    top = list(ranked[:n])
    bottom = list(ranked[-n:]) if len(ranked) > n else []
    text = md_samples(top, f"Top {len(top)}")
    if bottom:
        text += "\n\n" + md_samples(bottom, f"Bottom {len(bottom)}")
    return MetadataValue.md(text)


def md_preview(samples) -> MetadataValue:
    """Markdown table of the first samples of a registered file."""
    lines = ["| row | id | prompt | response |", "|---:|---|---|---|"]
    for s in samples:
        prompt, response = sample_text(s)
        lines.append(f"| {s.row} | {_cell(s.user_id or s.sample_id[:12], 24)} | {_cell(prompt)} | {_cell(response)} |")
    return MetadataValue.md("\n".join(lines))
