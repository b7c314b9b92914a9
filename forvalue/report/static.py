"""The report's style sheet and script, inlined into every page (no network, no library): the tables
sort when a header is clicked and filter as one types."""

# The page may load nothing: no script, style, image, font or frame from anywhere but itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

CSS = """
:root{--kept:#2f7d4f;--dropped:#c2566b;--ink:#1f2937;--mute:#6b7280;--line:#e5e7eb;--bg:#f9fafb}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);margin:0;background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:0 0 6px}
.sub{color:var(--mute);margin:0 0 14px;font-size:15px}
.sub b.k{color:var(--kept)}.sub b.d{color:var(--dropped)}
dl.lineage{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:3px 14px;margin:0;
 background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 14px}
dl.lineage dt{color:var(--mute)}
dl.lineage dd{margin:0;word-break:break-all;font-family:ui-monospace,monospace;font-size:12.5px}
.notes{background:#fffbeb;border:1px solid #fcd34d;border-radius:6px;padding:8px 14px;margin:12px 0}
.notes p{margin:2px 0}
.plots{display:flex;flex-wrap:wrap;gap:18px}
.plot{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.plot p{margin:2px 0 0;color:var(--mute);font-size:12.5px;max-width:560px}
svg .ax{font-size:11px;fill:#4b5563}
.comp{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.comp table{background:#fff;border:1px solid var(--line);border-radius:6px;border-collapse:collapse;font-size:12.5px}
.comp td,.comp th{padding:2px 8px;text-align:left}.comp td.n{text-align:right;font-variant-numeric:tabular-nums}
.share{display:inline-block;height:9px;vertical-align:middle;border-radius:2px}
.share.k{background:var(--kept)}.share.d{background:var(--dropped)}
.tools{display:flex;gap:12px;align-items:center;margin:6px 0}
.tools input{padding:5px 8px;border:1px solid #d1d5db;border-radius:5px;width:320px;font:inherit}
.count{color:var(--mute);font-size:12.5px}
.cap{background:#eef2ff;border:1px solid #c7d2fe;border-radius:6px;padding:6px 12px;margin:6px 0;font-size:13px}
table.samples{width:100%;border-collapse:collapse;background:#fff;border:1px solid var(--line);font-size:13px}
table.samples th{position:sticky;top:0;background:#f3f4f6;text-align:left;padding:6px 8px;cursor:pointer;
 white-space:nowrap;user-select:none;border-bottom:1px solid #d1d5db}
table.samples th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
table.samples th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
table.samples td{padding:5px 8px;border-top:1px solid var(--line);vertical-align:top}
table.samples td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.samples td.id{font-family:ui-monospace,monospace;font-size:12px;white-space:nowrap}
table.samples tr.k td:first-child{box-shadow:inset 3px 0 var(--kept)}
table.samples tr.d td:first-child{box-shadow:inset 3px 0 var(--dropped)}
.prompt{color:var(--mute);font-size:12px;white-space:pre-wrap;margin-bottom:3px}
.resp{white-space:pre-wrap;word-break:break-word}
.chk{color:#9a3412;font-size:12px}
.resp span[title]{border-radius:2px}
.p1{background:rgba(47,125,79,.16)}.p2{background:rgba(47,125,79,.32)}.p3{background:rgba(47,125,79,.5)}
.p4{background:rgba(47,125,79,.72);color:#fff}
.n1{background:rgba(194,86,107,.16)}.n2{background:rgba(194,86,107,.32)}.n3{background:rgba(194,86,107,.5)}
.n4{background:rgba(194,86,107,.72);color:#fff}
.resp span.top{text-decoration:underline 2px var(--ink);text-underline-offset:3px}
.why{color:var(--mute);font-size:12px;margin-top:3px}
.changes{display:flex;gap:18px;flex-wrap:wrap}.changes>div{flex:1;min-width:320px}
.changes ul{margin:4px 0;padding-left:18px;font-size:12.5px}
.changes li{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:600px}
.key{font-size:12.5px;color:var(--mute)}
footer{margin-top:36px;color:var(--mute);font-size:12px}
"""

JS = """
(function () {
  function key(td, num) {
    var v = td.getAttribute('data-v');
    if (v === null) v = td.textContent;
    if (num) { var f = parseFloat(v); return isNaN(f) ? -Infinity : f; }
    return v.toLowerCase();
  }
  function sortBy(table, th, i) {
    var num = th.getAttribute('data-type') === 'num';
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[i], num), y = key(b.cells[i], num);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }
  document.querySelectorAll('table.samples').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.title = 'sort by ' + th.textContent;
      th.addEventListener('click', function () { sortBy(table, th, i); });
    });
  });
  document.querySelectorAll('input.filter').forEach(function (input) {
    var table = document.getElementById(input.getAttribute('data-table'));
    var count = document.getElementById(input.getAttribute('data-count'));
    input.addEventListener('input', function () {
      var q = input.value.trim().toLowerCase(), shown = 0, rows = table.tBodies[0].rows;
      Array.prototype.forEach.call(rows, function (r) {
        if (r._text === undefined) r._text = r.textContent.toLowerCase();
        var hit = !q || r._text.indexOf(q) >= 0;
        r.hidden = !hit;
        if (hit) shown++;
      });
      count.textContent = shown + ' of ' + rows.length + ' rows';
    });
  });
})();
"""

__all__ = ["CSP", "CSS", "JS"]
