"""Curation reports (forvalue.report): the page of a catalog subset, of command output files and of
`forvalue curate --report`, with real content (lineage, counts, escaping, cap notes) and clear errors."""

import html
import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from forvalue.cli import main
from tests.conftest import make_records

SOURCES = ("alpha", "beta", "gamma")


def report_records(n: int, seed: int, prefix: str) -> list[dict]:
    """make_records with a categorical `source` column and one response that holds HTML."""
    rows = make_records(n, seed, prefix)
    for i, r in enumerate(rows):
        r["source"] = SOURCES[i % len(SOURCES)]
    if prefix == "t":
        rows[1]["response"] = "<b>& bold</b> answer"
    return rows


def build_subset(folder, model_dir, *, n: int = 24, strategy: str = "balanced", mode: str = "top_p",
                 value: float = 50, catalog=None, train_records=None, run_id: str = "run-subset-1"):
    """A subset recorded in a catalog as the platform records it: registered sets, the model, feature
    runs, scores (with normalized values), the members and the samples the checks dropped."""
    from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, Catalog, export_subset
    from forvalue.data.samples import samples_from_records
    from forvalue.models.loading import ModelConfig
    from forvalue.valuation.features import FeatureConfig
    from forvalue.valuator import Valuator

    cat = catalog or Catalog(folder / "catalog.duckdb")
    train_records = train_records or report_records(n, 0, "t")
    train = samples_from_records(train_records, source="train.jsonl").samples
    val = samples_from_records(report_records(6, 1, "v"), source="val.jsonl").samples
    version = f"dv-{len(train)}-{train[0].sample_id[:6]}"
    cat.register_set(KIND_DATASET, "d", version, "train.jsonl", train, dagster_run_id="run-register")
    cat.register_set(KIND_VALUATION, "v", "vv1", "val.jsonl", val)
    v = Valuator(ModelConfig(model=str(model_dir), device="cpu", dtype="float32"), FeatureConfig(),
                 store=folder / "features")
    cat.record_model(v.fingerprint, spec=str(model_dir))
    runs = [cat.record_feature_run(kind=k, name=nm, version=ver, model_id=v.fingerprint.id, config=v.config,
                                   n_samples=len(s), n_computed=len(s), n_reused=0, n_shards_written=1,
                                   store_folder=folder / "features")
            for k, nm, ver, s in ((KIND_DATASET, "d", version, train), (KIND_VALUATION, "v", "vv1", val))]
    sel = v.select(train, val, mode, value, strategy=strategy)
    r, ids = sel.ranking, [s.sample_id for s in train]
    cat.replace_scores(dataset_name="d", dataset_version=version, valuation_set="v", valuation_version="vv1",
                       model_id=v.fingerprint.id, feature_config_id=v.config.id, sample_ids=ids, values=r.raw,
                       normalized=r.normalized, norms=r.norm, train_feature_run_id=runs[0],
                       val_feature_run_id=runs[1], dagster_run_id="run-score")
    run = cat.latest_score_run("d", "v", v.config.id)
    members = [(ids[i], int(r.rank[i]), float(r.raw[i])) for i in sel.indices]
    jsonl, parquet = export_subset(cat, KIND_DATASET, "d", version, members, folder / "out", f"sub-{run_id}",
                                   strategy=strategy)
    sid = cat.record_subset(score_run=run, mode=mode, value=value, n_total=len(train), members=members,
                            jsonl_path=jsonl, parquet_path=parquet, dagster_run_id=run_id, strategy=strategy,
                            checks=r.info.get("checks"), dropped=r.checks.records(ids) if r.checks else [])
    return cat, sid, sel, train


@pytest.fixture(scope="module")
def subset(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("report")
    return (folder,) + build_subset(folder, tiny_model_dir)


def rows_of(page: str, table: str) -> list[str]:
    body = page.split(f'id="{table}-table"')[1].split("</tbody>")[0]
    return re.findall(r"<tr class=\"[kd]\">.*?</tr>", body, flags=re.S)


def catalog_counts(cat, sid: str) -> dict:
    sub = cat.query("SELECT * FROM subsets WHERE subset_id = ?", [sid])[0]
    kept = {r["sample_id"] for r in cat.query("SELECT sample_id FROM subset_samples WHERE subset_id = ?", [sid])}
    checks = {r["sample_id"]: r["check_name"] for r in
              cat.query("SELECT sample_id, check_name FROM subset_checks WHERE subset_id = ?", [sid])}
    return {"sub": sub, "kept": kept, "checks": checks}


def test_catalog_subset_page_shows_lineage_counts_and_composition(subset):
    from forvalue.report import subset_report

    folder, cat, sid, sel, train = subset
    c = catalog_counts(cat, sid)
    out = subset_report(cat.path, sid, folder / "page.html", explain_tokens=0)
    page = out.read_text()
    lineage = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    version = c["sub"]["dataset_version"]
    assert lineage["dataset"] == f"d @ {version[:12]}" and lineage["valuation set"] == "v @ vv1"
    assert sel.ranking.strategy == "balanced" and lineage["strategy"].startswith("balanced: round-robin")
    assert lineage["size rule"] == "top_p 50" and lineage["Dagster run"] == "run-subset-1"
    assert lineage["scores Dagster run"] == "run-score" and lineage["subset id"] == sid
    assert c["sub"]["model_id"] in html.unescape(lineage["model"])
    assert lineage["kept / total"] == f"{len(c['kept'])} / {len(train)}"
    # the tables hold exactly the catalog's members and the rest of the scored samples
    kept_ids = re.findall(r'<td class="id" title="([0-9a-f]+)"', page.split('id="dropped"')[0])
    dropped_part = page.split('id="dropped"')[1]
    dropped_ids = re.findall(r'<td class="id" title="([0-9a-f]+)"', dropped_part)
    assert set(kept_ids) == c["kept"] and len(kept_ids) == len(c["kept"]) == 12
    assert set(dropped_ids) == {s.sample_id for s in train} - c["kept"]
    ranks = [int(x) for x in re.findall(r'<tr class="k"><td class="n" data-v="(\d+)"', page)]
    assert ranks == sorted(ranks) and ranks[0] == 1
    assert f"<h2>Kept samples ({len(c['kept'])})</h2>" in page
    assert f"<h2>Dropped samples ({len(train) - 12})</h2>" in page
    # the samples a check dropped are named with their check, last in the dropped table
    assert c["checks"], "the fixture should drop at least one sample by a check"
    for s_id, check in c["checks"].items():
        row = next(r for r in rows_of(page, "dropped") if f'title="{s_id}"' in r)
        assert f'<span class="chk">{check} ' in row
    assert f'title="{list(c["checks"])[-1]}"' in rows_of(page, "dropped")[-1]
    # composition of kept vs dropped by the categorical input columns (source, group), as the catalog counts them
    by_id = {s.sample_id: s for s in train}
    for name in SOURCES:
        k = sum(by_id[i].record["source"] == name for i in c["kept"])
        d = sum(s.record["source"] == name for s in train) - k
        assert re.search(rf"<tr><td>{name}</td><td class=\"n\">{k}</td>.*?<td class=\"n\">{d}</td>", page)
    assert "<th>source</th>" in page and "<th>group</th>" in page and "<th>id</th>" not in page
    # one histogram with kept and dropped bars and no cut line (balanced does not cut the score), one of the cosine
    assert page.count('<svg class="hist"') == 2 and 'class="bar kept"' in page and 'class="bar dropped"' in page
    assert "lowest kept" in page and "No previous subset of this pair" in page


def test_page_escapes_text_once_and_loads_nothing(subset):
    from forvalue.report import subset_report

    folder, cat, sid, sel, train = subset
    plain = subset_report(cat.path, sid, folder / "plain.html", explain_tokens=0).read_text()
    assert "&lt;b&gt;&amp; bold&lt;/b&gt; answer" in plain and "<b>& bold" not in plain and "&amp;lt;" not in plain
    coloured = subset_report(cat.path, sid, folder / "tokens.html").read_text()
    assert "<b>&" not in coloured and "&amp;lt;" not in coloured and "&amp;amp;" not in coloured
    for page in (plain, coloured):
        assert "http://" not in page and "https://" not in page
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!#|data:)""", page)
        assert "Content-Security-Policy" in page and "default-src 'none'" in page
        assert page.count("<script>") == 1 and "<link" not in page and "@import" not in page


def test_tokens_are_coloured_by_contribution_and_add_up_to_the_score(subset):
    from forvalue.report import subset_report

    folder, cat, sid, sel, train = subset
    page = subset_report(cat.path, sid, folder / "tokens.html", explain_tokens=2, explain_rows=3).read_text()
    for table in ("kept", "dropped"):
        rows = rows_of(page, table)
        explained = [r for r in rows if 'class="resp"><span' in r]
        assert len(explained) == 3                  # the first 3 rows of each table only
        for r in explained:
            score = float(re.search(r'<td class="n" data-v="([^"]+)">', r.split("</td>", 1)[1]).group(1))
            values = [float(v) for v in re.findall(r'title="([+-][^ ]+) \(token \d+\)"', r)]
            assert abs(sum(values) - score) <= 2e-3 * sum(map(abs, values)) + 1e-6
            assert re.search(r'<span class="p[1-4]', r) and "adds most:" in r
            assert len(re.findall(r'class="[pn][1-4]? ?top"|class="top"', r)) <= 4   # 2 strongest each way
    assert "No token colours" not in page


def test_a_model_that_did_not_make_the_features_colours_nothing(subset, tmp_path):
    from forvalue.report import subset_report
    from tiny import build_tiny_text_model

    folder, cat, sid, sel, train = subset
    build_tiny_text_model(tmp_path / "other", seed=5)
    page = subset_report(cat.path, sid, tmp_path / "p.html", model=str(tmp_path / "other")).read_text()
    assert "No token colours: the subset&#x27;s scores come from model" in page
    assert 'class="resp"><span' not in page


def test_tables_are_capped_with_a_note(subset):
    from forvalue.report import subset_report

    folder, cat, sid, sel, train = subset
    page = subset_report(cat.path, sid, folder / "capped.html", explain_tokens=0, max_rows=6).read_text()
    kept, dropped = rows_of(page, "kept"), rows_of(page, "dropped")
    assert len(kept) == 3 and len(dropped) == 3
    assert "Showing 3 of 12 kept samples: the first 2 and the last 1 in the strategy&#x27;s order; 9 rows are not " \
           "shown." in page
    assert "Showing 3 of 12 dropped samples: the first 1 and the last 2" in page
    ranks = [int(x) for x in re.findall(r'<tr class="k"><td class="n" data-v="(\d+)"', page)]
    assert ranks == [1, 2, 12]


def test_changes_since_the_previous_subset_and_replaced_scores(tmp_path, tiny_model_dir):
    from forvalue.report import subset_report

    cat, first, _, _ = build_subset(tmp_path, tiny_model_dir, n=24)
    cat, second, _, train = build_subset(tmp_path, tiny_model_dir, catalog=cat, strategy="raw-mean", value=40,
                                         train_records=report_records(30, 0, "t"), run_id="run-subset-2")
    a, b = catalog_counts(cat, first)["kept"], catalog_counts(cat, second)["kept"]
    assert a - b and b - a
    page = subset_report(cat.path, second[:8], tmp_path / "second.html", explain_tokens=0).read_text()
    assert f"Previous subset {first[:12]}" in page
    assert f"<b>{len(b - a)} added</b>, <b>{len(a - b)} removed</b>" in page
    added = page.split("<h3>Added")[1].split("<h3>Removed")[0]
    assert set(re.findall(r'<code title="([0-9a-f]+)"', added)) == b - a
    # raw-mean cuts the score: the line is the cut-off at the lowest kept score
    lowest = min(r["score"] for r in cat.query("SELECT score FROM subset_samples WHERE subset_id = ?", [second]))
    assert f"cut-off: {lowest:.4g}</title>" in page
    # the first subset's scores were replaced by the second scoring: its page says so
    old = subset_report(cat.path, first, tmp_path / "first.html", explain_tokens=0).read_text()
    assert "are no longer stored" in old and len(rows_of(old, "kept")) == len(a) and rows_of(old, "dropped") == []


def test_report_commands(subset, tmp_path, tiny_model_dir, capsys, monkeypatch):
    folder, cat, sid, sel, train = subset
    out = tmp_path / "r.html"
    assert main(["report", "--subset", sid, "--catalog", str(cat.path), "-o", str(out), "--explain-tokens", "0"]) == 0
    assert f"-> {out}" in capsys.readouterr().out and "Kept samples (12)" in out.read_text()
    monkeypatch.setenv("FORVALUE_DB", str(cat.path))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--subset", sid[:10], "--explain-tokens", "0"]) == 0
    assert (tmp_path / f"report-{sid[:10]}.html").is_file()
    for argv, message in (
            (["--subset", "feedbeef", "--catalog", str(cat.path)], f"{cat.path}: no subset 'feedbeef'"),
            (["--subset", sid, "--catalog", str(tmp_path / "none.duckdb")], "none.duckdb: no catalog file here"),
            (["--scores", str(tmp_path / "none.parquet")], "none.parquet: file not found"),
            (["--subset", sid, "-o", str(tmp_path / "r.txt")], "r.txt: a report is an .html file")):
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert main(["report", "--scores", str(tmp_path / "bad.parquet")]) == 2
    assert "bad.parquet: unreadable Parquet file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--subset", sid, "--kept", "k.parquet"])
    assert "--kept is for --scores reports" in capsys.readouterr().err
    assert not (tmp_path / "none.duckdb").exists()      # a report never creates a catalog
    # --serve prints the 127.0.0.1 address and stops on Ctrl-C
    import threading

    from forvalue.report.server import ReportServer

    serve_forever = ReportServer.serve_forever

    def interrupted(server):    # serves in a thread while the page is fetched, then Ctrl-C
        threading.Thread(target=serve_forever, args=(server,), daemon=True).start()
        try:
            with urllib.request.urlopen(server.url, timeout=10) as r:
                assert b"Kept samples (12)" in r.read()
        finally:
            server.shutdown()
        raise KeyboardInterrupt

    monkeypatch.setattr(ReportServer, "serve_forever", lambda self: interrupted(self))
    assert main(["report", "--subset", sid, "--explain-tokens", "0", "--serve", "-o", str(out)]) == 0
    assert re.search(r"serving r.html at http://127\.0\.0\.1:\d+/r.html", capsys.readouterr().out)


def test_curate_report_and_the_report_of_output_files(tmp_path, tiny_model_dir, capsys):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in report_records(30, 0, "t")))
    val.write_text("".join(json.dumps(r) + "\n" for r in report_records(6, 1, "v")))
    common = ["--train", str(train), "--val", str(val), "--model", str(tiny_model_dir), "--store",
              str(tmp_path / "fs"), "--quiet"]
    kept, dropped, page = tmp_path / "kept.parquet", tmp_path / "dropped.jsonl", tmp_path / "curate.html"
    assert main(["curate", *common, "--top-p", "30", "--out", str(kept), "--dropped", str(dropped),
                 "--report", str(page)]) == 0
    assert f"-> {page}" in capsys.readouterr().out
    import pyarrow.parquet as pq

    kept_ids = set(pq.read_table(kept).column("sample_id").to_pylist())
    text = page.read_text()
    assert set(re.findall(r'<td class="id" title="([0-9a-f]+)"', text.split('id="dropped"')[0])) == kept_ids
    assert len(rows_of(text, "kept")) == 9 and len(rows_of(text, "dropped")) == 21
    assert 'class="resp"><span' in text and ">&lt;</span>" in text and ">&amp;</span>" in text   # one token each
    # the same subset from the output files: the scores table, the kept rows and the dropped file
    scores = tmp_path / "scores.parquet"
    assert main(["score", *common, "--out", str(scores)]) == 0
    files = tmp_path / "files.html"
    assert main(["report", "--scores", str(scores), "--kept", str(kept), "--dropped", str(dropped),
                 "-o", str(files)]) == 0
    text = files.read_text()
    assert len(rows_of(text, "kept")) == 9 and len(rows_of(text, "dropped")) == 21
    assert set(re.findall(r'<td class="id" title="([0-9a-f]+)"', text.split('id="dropped"')[0])) == kept_ids
    n_checked = sum(1 for _ in dropped.read_text().splitlines())
    assert text.count('<span class="chk">grounding') == n_checked >= 1
    assert "top_p 30" in text and "No token colours in a report from files" in text
    with pytest.raises(SystemExit):
        main(["report", "--scores", str(scores), "--explain-tokens", "2"])
    assert main(["curate", *common, "--top-p", "30", "--out", str(kept), "--report", str(tmp_path / "r.csv")]) == 2
    assert "r.csv: --report writes an .html file" in capsys.readouterr().err


def test_serve_answers_on_loopback_only(subset, tmp_path):
    from forvalue.errors import ConfigError
    from forvalue.report import serve, subset_report

    folder, cat, sid, sel, train = subset
    page = subset_report(cat.path, sid, tmp_path / "served.html", explain_tokens=0)
    (tmp_path / "secret.txt").write_text("not served")
    with pytest.raises(ConfigError, match="loopback"):
        serve(page, host="0.0.0.0")
    server = serve(page)
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/served.html")
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert r.status == 200 and r.read() == page.read_bytes()
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        base = server.url.rsplit("/", 1)[0]
        for bad in ("/secret.txt", "/../secret.txt", "/%2e%2e/etc/passwd"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(base + bad, timeout=10)
            assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
