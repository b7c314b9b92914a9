"""The report page: one self-contained HTML file (style, script and plots inline; the page loads
nothing). User text is escaped once, here, with :func:`html.escape`; a response's tokens are marked by
their position in the explanation, never by searching the text."""

from __future__ import annotations

import datetime as _dt
import html

import numpy as np

from .._version import __version__
from .data import SORTED_BY_VALUE, Changes, Report, Row
from .static import CSP, CSS, JS
from .svg import fmt, histogram_svg

MAX_TOKENS = 240        # tokens coloured per response; the rest are cut with a note
CHANGED_SHOWN = 50      # added / removed samples listed


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def num(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt(float(x))


def data_v(x) -> str:
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else repr(float(x))


# ----------------------------------------------------------------------------- tokens
def token_class(contribution: float, peak: float) -> str:
    """p1..p4 (adds) or n1..n4 (takes away) by the share of the row's strongest contribution; "" below 5%."""
    share = abs(contribution) / peak if peak > 0 else 0.0
    if share < 0.05:
        return ""
    return ("p" if contribution > 0 else "n") + str(min(4, int(share * 4) + 1))


def tokens_html(e, n_top: int) -> str:
    """The scored text token by token, each coloured by its contribution (the value in its title), the
    ``n_top`` strongest each way underlined."""
    tokens = list(e.tokens)
    if not tokens:
        return ""
    peak = max(abs(t.contribution) for t in tokens)
    pos, neg = e.strongest(n_top) if n_top else ([], [])
    top = {t.position for t in pos if t.contribution > 0} | {t.position for t in neg}
    parts = []
    for t in tokens[:MAX_TOKENS]:
        cls = token_class(t.contribution, peak) + (" top" if t.position in top else "")
        attr = f' class="{cls.strip()}"' if cls.strip() else ""
        parts.append(f'<span{attr} title="{t.contribution:+.3g} (token {t.position})">{esc(t.text)}</span>')
    if len(tokens) > MAX_TOKENS:
        parts.append(f' <i>… {len(tokens) - MAX_TOKENS} more tokens</i>')
    return "".join(parts)


def visible(text: str) -> str:
    """A token as the strongest-token list prints it: spaces and line ends shown (␣, ⏎)."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")


def strongest_html(e, n_top: int) -> str:
    pos, neg = e.strongest(n_top)

    def listed(ts):
        return ", ".join(f"“{esc(visible(t.text))}” {t.contribution:+.3g}" for t in ts) or "–"

    return (f'<div class="why">adds most: {listed([t for t in pos if t.contribution > 0])}; '
            f'takes away most: {listed(neg)}</div>')


# ----------------------------------------------------------------------------- tables
def check_html(r: Row) -> str:
    if not r.check:
        return ""
    text = f"{esc(r.check)} {num(r.check_value)} &gt; {num(r.threshold)}"
    if r.kept:
        text += " (kept: the subset is larger than what passed)"
    return f'<span class="chk">{text}</span>'


def text_html(r: Row, n_top: int) -> str:
    out = f'<div class="prompt">{esc(r.prompt)}</div>' if r.prompt else ""
    if r.explanation is not None and r.explanation.tokens:
        out += f'<div class="resp">{tokens_html(r.explanation, n_top)}</div>'
        if n_top:
            out += strongest_html(r.explanation, n_top)
    else:
        out += f'<div class="resp">{esc(r.response)}</div>'
    return out


def row_html(r: Row, with_value: bool, n_top: int) -> str:
    where = " · ".join(x for x in (f"row {r.source_row}" if r.source_row is not None else "",
                                   f"id {esc(r.user_id)}" if r.user_id is not None else "") if x)
    cells = [f'<td class="n" data-v="{"" if r.rank is None else r.rank}">{"–" if r.rank is None else r.rank}</td>',
             f'<td class="id" title="{esc(r.sample_id)}">{esc(r.sample_id[:12])}'
             + (f'<div class="key">{where}</div>' if where else "") + "</td>",
             f'<td class="n" data-v="{data_v(r.score)}">{num(r.score)}</td>']
    if with_value:
        cells.append(f'<td class="n" data-v="{data_v(r.value)}">{num(r.value)}</td>')
    cells += [f'<td data-v="{esc(r.check or "")}">{check_html(r)}</td>', f"<td>{text_html(r, n_top)}</td>"]
    return f'<tr class="{"k" if r.kept else "d"}">' + "".join(cells) + "</tr>"


def table_html(name: str, title: str, rows: list[Row], total: int, note: str | None, report: Report) -> str:
    """A section with a filter box, the cap note and a table that sorts by any column."""
    with_value = not report.value_is_score
    heads = ['<th data-type="num">rank</th>', "<th>sample</th>", '<th data-type="num">score</th>']
    if with_value:
        heads.append(f'<th data-type="num" title="{esc(report.value_label)}">{esc(short_label(report))}</th>')
    heads += ["<th>check</th>", "<th>prompt / response</th>"]
    body = "".join(row_html(r, with_value, report.explain_tokens) for r in rows)
    empty = f'<p class="count">No {title.lower()}.</p>' if not rows else ""
    return (f'<section id="{name}"><h2>{esc(title)} ({total:,})</h2>'
            + (f'<p class="cap">{esc(note)}</p>' if note else "")
            + f'<div class="tools"><input class="filter" type="search" placeholder="filter: any text, id or check" '
              f'data-table="{name}-table" data-count="{name}-count" aria-label="filter {esc(title.lower())}">'
              f'<span class="count" id="{name}-count">{len(rows)} of {len(rows)} rows</span></div>'
            + empty + f'<table class="samples" id="{name}-table"><thead><tr>{"".join(heads)}</tr></thead>'
              f"<tbody>{body}</tbody></table></section>")


def short_label(report: Report) -> str:
    return "best cosine" if report.strategy == "max-cosine" else "cosine"


# ----------------------------------------------------------------------------- plots
def cut_value(values: np.ndarray, kept: np.ndarray, mode: str | None) -> float | None:
    """Where the subset ends in ``values``: the lowest kept (bottom_p: the highest), None when
    nothing is dropped or the kept have no value."""
    v = values[kept & np.isfinite(values)]
    if not len(v) or kept.all():
        return None
    return float(v.max() if mode == "bottom_p" else v.min())


def plots_html(report: Report) -> str:
    n_k, n_d = int(report.kept.sum()), int((~report.kept).sum())
    caption = f"{n_k:,} kept (green) stacked over {n_d:,} dropped (red), {len(report.kept):,} scored; hover a bar " \
              f"for its counts."
    exact = report.strategy in SORTED_BY_VALUE
    out = []
    cut = cut_value(report.scores, report.kept, report.mode) if report.value_is_score else None
    out.append(f'<div class="plot"><h3>For-Value score</h3>'
               + histogram_svg(report.scores, report.kept, title="For-Value score, kept and dropped", cut=cut)
               + f"<p>{caption}</p></div>")
    if report.values is not None and not report.value_is_score:
        cut = cut_value(report.values, report.kept, report.mode)
        label = "cut-off" if exact else ("highest kept" if report.mode == "bottom_p" else "lowest kept")
        note = "" if exact else (f" {esc(report.strategy)} picks by turns over the valuation set, so kept and dropped "
                                 "overlap in value: the line marks the last kept, not a threshold.")
        out.append(f'<div class="plot"><h3>{esc(report.value_label)} (what {esc(report.strategy)} ranks by)</h3>'
                   + histogram_svg(report.values, report.kept, title=report.value_label, cut=cut, cut_label=label)
                   + f"<p>{caption}{note}</p></div>")
    return '<section id="distribution"><h2>Distribution</h2><div class="plots">' + "".join(out) + "</div></section>"


# ----------------------------------------------------------------------------- composition, changes
def composition_html(report: Report) -> str:
    if not report.composition:
        return ('<section id="composition"><h2>Composition</h2><p class="count">No categorical input column (a '
                'text or number column with at most 20 values shared by several samples).</p></section>')
    n_k, n_d = max(int(report.kept.sum()), 1), max(int((~report.kept).sum()), 1)
    blocks = []
    for column, values in report.composition.items():
        rows = []
        for value, k, d in values:
            pk, pd = 100 * k / n_k, 100 * d / n_d
            rows.append(f'<tr><td>{esc(value)}</td><td class="n">{k:,}</td><td><span class="share k" '
                        f'style="width:{pk * 0.8:.0f}px"></span> {pk:.0f}%</td><td class="n">{d:,}</td>'
                        f'<td><span class="share d" style="width:{pd * 0.8:.0f}px"></span> {pd:.0f}%</td></tr>')
        blocks.append(f'<table><thead><tr><th>{esc(column)}</th><th colspan="2">kept</th><th colspan="2">dropped'
                      f'</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return ('<section id="composition"><h2>Composition of kept vs dropped</h2><div class="comp">' + "".join(blocks)
            + "</div></section>")


def changed_list(rows: list[Row]) -> str:
    items = [f'<li><code title="{esc(r.sample_id)}">{esc(r.sample_id[:12])}</code> rank {r.rank if r.rank else "–"}'
             f' · score {num(r.score)} — {esc((r.response or "")[:100])}</li>' for r in rows[:CHANGED_SHOWN]]
    return "<ul>" + "".join(items) + "</ul>"


def changes_html(changes: Changes | None, note: str | None) -> str:
    head = '<section id="changes"><h2>Changes since the previous subset of this pair</h2>'
    if changes is None:
        note = note or "No previous subset of this pair to compare with."
        return head + f'<p class="count">{esc(note)}</p></section>'
    p = changes.previous
    text = (f"Previous subset {esc(str(p.get('subset_id', ''))[:12])} ({esc(p.get('created_at'))}, "
            f"{esc(p.get('strategy'))}, {esc(p.get('mode'))} {num(p.get('value'))}, {p.get('n_selected', 0):,} kept): "
            f"<b>{changes.n_added:,} added</b>, <b>{changes.n_removed:,} removed</b>.")
    more = lambda n, shown: f" (the first {len(shown)} by rank)" if n > len(shown) else ""  # noqa: E731
    return (head + f"<p>{text}</p><div class=\"changes\"><div><h3>Added{more(changes.n_added, changes.added)}</h3>"
            + changed_list(changes.added) + f"</div><div><h3>Removed{more(changes.n_removed, changes.removed)}</h3>"
            + changed_list(changes.removed) + "</div></div></section>")


# ----------------------------------------------------------------------------- page
def lineage_html(report: Report) -> str:
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in report.lineage)
    return f'<dl class="lineage">{items}</dl>'


def subtitle_html(report: Report) -> str:
    n_k, n_d = int(report.kept.sum()), int((~report.kept).sum())
    return (f'<b class="k">{report.n_kept:,} kept</b> · <b class="d">{report.n_dropped:,} dropped</b> of '
            f"{report.n_kept + report.n_dropped:,} samples · strategy {esc(report.strategy)} · "
            f"{esc(report.size_rule)}"
            + ("" if n_k + n_d == report.n_kept + report.n_dropped else f" · {n_k + n_d:,} with a score"))


def render(report: Report) -> str:
    """The whole page as one string."""
    notes = "".join(f"<p>{esc(n)}</p>" for n in report.notes)
    made = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{esc(report.title)}</h1><p class=\"sub\">{subtitle_html(report)}</p>{lineage_html(report)}"
            + (f'<div class="notes">{notes}</div>' if notes else "")
            + plots_html(report) + composition_html(report)
            + table_html("kept", report.kept_title, report.kept_rows, report.n_kept, report.kept_note, report)
            + table_html("dropped", "Dropped samples", report.dropped_rows, report.n_dropped, report.dropped_note,
                         report)
            + changes_html(report.changes, report.changes_note)
            + f"<footer>ForValue {esc(__version__)} curation report, made {made}. Token colours: green adds to "
              f"the sample's value, red takes away (hover a token for its contribution); underlined: the "
              f"strongest.</footer>"
            + f"</main><script>{JS}</script></body></html>")


__all__ = ["render", "tokens_html", "token_class", "histogram_svg", "esc"]
