"""The report's histogram as inline SVG, computed here: kept and dropped stacked in each bin, and a
vertical line at the subset's cut-off."""

from __future__ import annotations

import html

import numpy as np

BINS = 40
WIDTH, HEIGHT = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 40
KEPT_COLOR, DROPPED_COLOR, CUT_COLOR = "#2f7d4f", "#c2566b", "#1f2937"


def fmt(x: float) -> str:
    return f"{x:.4g}"


def _frame(lo: float, hi: float, top: int) -> list[str]:
    """Axes: a baseline with the value range under it and the tallest bin's count on the left."""
    base, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    return [f'<line x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" stroke="#9ca3af"/>',
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#9ca3af"/>',
            f'<text x="{LEFT}" y="{base + 16}" class="ax">{fmt(lo)}</text>',
            f'<text x="{right}" y="{base + 16}" class="ax" text-anchor="end">{fmt(hi)}</text>',
            f'<text x="{LEFT - 6}" y="{TOP + 4}" class="ax" text-anchor="end">{top}</text>',
            f'<text x="{LEFT - 6}" y="{base}" class="ax" text-anchor="end">0</text>']


def _bars(edges: np.ndarray, kept: np.ndarray, dropped: np.ndarray, scale: float) -> list[str]:
    """One stacked bar per bin (dropped under kept), each with a tooltip of its counts."""
    out = []
    step = (WIDTH - LEFT - RIGHT) / len(kept)
    base = HEIGHT - BOTTOM
    for i, (k, d) in enumerate(zip(kept.tolist(), dropped.tolist())):
        if not k and not d:
            continue
        x, w = LEFT + i * step + 0.5, max(step - 1, 1)
        tip = f"{fmt(edges[i])} to {fmt(edges[i + 1])}: {k} kept, {d} dropped"
        hd, hk = d * scale, k * scale
        out.append(f'<g><title>{tip}</title>')
        if d:
            out.append(f'<rect class="bar dropped" x="{x:.1f}" y="{base - hd:.1f}" width="{w:.1f}" height="{hd:.1f}" '
                       f'fill="{DROPPED_COLOR}"/>')
        if k:
            out.append(f'<rect class="bar kept" x="{x:.1f}" y="{base - hd - hk:.1f}" width="{w:.1f}" '
                       f'height="{hk:.1f}" fill="{KEPT_COLOR}"/>')
        out.append("</g>")
    return out


def _cut(cut: float, lo: float, hi: float, label: str) -> list[str]:
    x = LEFT + (cut - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT) if hi > lo else LEFT
    return [f'<g class="cut"><title>{html.escape(label)}: {fmt(cut)}</title>'
            f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="{CUT_COLOR}" '
            f'stroke-width="1.5" stroke-dasharray="5 3"/>'
            f'<text x="{x:.1f}" y="{TOP - 10}" class="ax" text-anchor="middle">{html.escape(label)} {fmt(cut)}'
            '</text></g>']


def _legend() -> list[str]:
    y = HEIGHT - 8
    return [f'<rect x="{LEFT}" y="{y - 9}" width="10" height="10" fill="{KEPT_COLOR}"/>',
            f'<text x="{LEFT + 14}" y="{y}" class="ax">kept</text>',
            f'<rect x="{LEFT + 56}" y="{y - 9}" width="10" height="10" fill="{DROPPED_COLOR}"/>',
            f'<text x="{LEFT + 70}" y="{y}" class="ax">dropped</text>']


def histogram_svg(values: np.ndarray, kept: np.ndarray, *, title: str, cut: float | None = None,
                  cut_label: str = "cut-off") -> str:
    """An SVG histogram of ``values`` (NaN left out) with the ``kept`` ones stacked over the dropped
    ones in each of ``BINS`` bins, and a dashed line at ``cut``."""
    values = np.asarray(values, dtype=np.float64)
    kept = np.asarray(kept, dtype=bool)
    finite = np.isfinite(values)
    values, kept = values[finite], kept[finite]
    head = (f'<svg class="hist" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">'
            f'<title>{html.escape(title)}</title>')
    if not len(values):
        return head + f'<text x="{LEFT}" y="{HEIGHT / 2}" class="ax">no values</text></svg>'
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    k, _ = np.histogram(values[kept], bins=edges)
    d, _ = np.histogram(values[~kept], bins=edges)
    top = int((k + d).max())
    scale = (HEIGHT - TOP - BOTTOM) / max(top, 1)
    parts = [head, *_frame(lo, hi, top), *_bars(edges, k, d, scale), *_legend()]
    if cut is not None and np.isfinite(cut):
        parts += _cut(float(cut), lo, hi, cut_label)
    return "".join(parts) + "</svg>"


__all__ = ["histogram_svg", "fmt", "KEPT_COLOR", "DROPPED_COLOR"]
