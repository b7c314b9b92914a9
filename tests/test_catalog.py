"""forvalue.catalog.db: the DuckDB catalog loaded from sql/*.sql (no Dagster involved)."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from forvalue.catalog import db as cat
from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, Catalog, CatalogError
from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig
from forvalue.models.loading import ModelFingerprint

ROOT = Path(__file__).resolve().parents[1]


def records(n, prefix="q"):
    return [{"id": f"{prefix}{i}", "prompt": f"{prefix} question {i}?", "response": f"answer {i}."} for i in range(n)]


@pytest.fixture
def catalog(tmp_path):
    return Catalog(tmp_path / "db" / "forvalue.duckdb", lock_timeout=10)


def test_schema_comes_from_sql_files(catalog):
    catalog.init()
    schema = (ROOT / "sql" / "schema.sql").read_text()
    views = (ROOT / "sql" / "views.sql").read_text()
    declared_tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema))
    declared_views = set(re.findall(r"CREATE OR REPLACE VIEW (\w+)", views))
    got = {(r["table_name"], r["table_type"]) for r in catalog.query(
        "SELECT table_name, table_type FROM information_schema.tables")}
    assert {t for t, kind in got if kind == "BASE TABLE"} == declared_tables
    assert {t for t, kind in got if kind == "VIEW"} == declared_views
    assert {"datasets", "samples", "valuation_sets", "models", "feature_runs", "scores", "subsets",
            "training_runs"} <= declared_tables
    assert {"subset_lineage", "latest_scores"} <= declared_views
    # every table has a primary key but the per-sample ones, whose writers keep them unique (an index
    # of 10M sample ids would not fit the catalog's memory limit at commit)
    pks = {r["table_name"] for r in catalog.query(
        "SELECT table_name FROM information_schema.table_constraints WHERE constraint_type = 'PRIMARY KEY'")}
    assert pks == declared_tables - {"samples", "scores", "subset_samples", "subset_checks", "subset_near_cut"}
    # idempotent
    catalog.init()
    Catalog(catalog.path).init()


def test_no_ddl_in_python():
    files = [*(ROOT / "forvalue" / "catalog").rglob("*.py"), *(ROOT / "forvalue_assets").rglob("*.py"),
             *(ROOT / "resources").rglob("*.py"), *(ROOT / "sensors").rglob("*.py")]
    for f in files:
        text = f.read_text()
        assert not re.search(r"\b(CREATE|ALTER|DROP)\s+(TABLE|VIEW|INDEX)\b", text, re.I), f


def test_every_named_query_binds(catalog):
    queries = cat.load_queries()
    assert {"upsert_dataset", "insert_scores", "score_problems", "subset_lineage"} <= set(queries)
    with pytest.raises(CatalogError, match="parameters"):
        with catalog.connect() as con:
            catalog.execute(con, "current_dataset")


def test_register_round_trip_and_versions(catalog, tmp_path):
    recs = records(4) + [records(1)[0] | {"id": "dup"}]  # same content as row 1, another id
    recs[2]["prompt"] = "'; DROP TABLE samples; -- \"quoted\""
    recs[3] = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
               "extra": {"nested": [1, 2], "nan": float("nan")}, "blob": b"\x00\x01", "w": float("inf")}
    loaded = samples_from_records(recs, source=str(tmp_path / "train.jsonl"))
    reg = catalog.register_set(KIND_DATASET, "train", "v1", tmp_path / "train.jsonl", loaded.samples,
                               column_mapping={"prompt": "prompt"}, dagster_run_id="run-1")
    assert (reg.n_rows, reg.n_samples, reg.n_duplicates, reg.already_registered) == (5, 4, 1, False)
    back = catalog.load_samples(KIND_DATASET, "train")
    assert [s.sample_id for s in back] == [s.sample_id for s in loaded.samples[:4]]
    for a, b in zip(back, loaded.samples):
        assert (a.prompt, a.response, a.messages, a.text, a.user_id, a.row) == \
               (b.prompt, b.response, b.messages, b.text, b.user_id, b.row)
        if "w" not in b.record:
            assert a.record == b.record
        assert a.source == str(tmp_path / "train.jsonl")
    assert back[3].record["blob"] == b"\x00\x01"
    assert back[3].record["extra"] == {"nested": [1, 2], "nan": None} and back[3].record["w"] is None  # JSON has no NaN
    some = catalog.load_samples(KIND_DATASET, "train", sample_ids=[back[2].sample_id, back[0].sample_id, "nope"])
    assert [s.sample_id for s in some] == [back[0].sample_id, back[2].sample_id]
    assert catalog.count("samples") == 4

    # a new version becomes current; the old one stays; re-registering it makes it current again
    catalog.register_set(KIND_DATASET, "train", "v2", "x.jsonl", samples_from_records(records(2)).samples)
    assert catalog.current_set(KIND_DATASET, "train")["version"] == "v2"
    assert len(catalog.sample_ids(KIND_DATASET, "train", "v1")) == 4
    time.sleep(0.01)
    again = catalog.register_set(KIND_DATASET, "train", "v1", tmp_path / "train.jsonl", loaded.samples)
    assert again.already_registered
    assert catalog.current_set(KIND_DATASET, "train")["version"] == "v1"
    assert catalog.count("datasets") == 2 and catalog.count("samples") == 6
    # valuation sets live in their own table
    assert catalog.current_set(KIND_VALUATION, "train") is None
    with pytest.raises(CatalogError, match="not registered"):
        catalog.load_samples(KIND_VALUATION, "train")


def test_bad_names_rejected(catalog):
    s = samples_from_records(records(1)).samples
    for bad in ["", "a/b", "x|y", "../up", "a b", "x" * 65, "'; drop"]:
        with pytest.raises(CatalogError, match="invalid"):
            catalog.register_set(KIND_DATASET, bad, "v", "f.jsonl", s)


def _scored(catalog, values, **kw):
    ids = [f"s{i}" for i in range(len(values))]
    return catalog.replace_scores(dataset_name="d", dataset_version="dv", valuation_set="v",
                                  valuation_version="vv", model_id="m", feature_config_id="c",
                                  sample_ids=ids, values=np.asarray(values, float), **kw)


def test_replace_scores_is_one_transaction(catalog, monkeypatch):
    first = _scored(catalog, [3.0, 1.0, 2.0])
    rows = catalog.scores("d", "v", "c", "m")
    assert [(r["sample_id"], r["rank"]) for r in rows] == [("s0", 1), ("s2", 2), ("s1", 3)]
    assert all(r["score_run_id"] == first for r in rows)

    # non-finite values are refused before anything is touched
    with pytest.raises(ValueError, match="non-finite"):
        _scored(catalog, [1.0, float("nan"), 2.0])
    # a failure after the old rows were deleted inside the transaction rolls everything back
    real = Catalog._insert_arrow

    def failing(self, con, name, *a, **k):
        if name == "insert_scores":
            assert con.execute("SELECT count(*) FROM scores").fetchone()[0] == 0  # deleted, uncommitted
            raise RuntimeError("disk full")
        return real(self, con, name, *a, **k)

    monkeypatch.setattr(Catalog, "_insert_arrow", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        _scored(catalog, [5.0, 6.0, 7.0])
    monkeypatch.setattr(Catalog, "_insert_arrow", real)
    after = catalog.scores("d", "v", "c", "m")
    assert after == rows
    assert catalog.count("score_runs") == 1

    second = _scored(catalog, [1.0, 2.0])
    assert {r["score_run_id"] for r in catalog.scores("d", "v", "c", "m")} == {second}
    assert catalog.count("scores") == 2 and catalog.count("score_runs") == 2
    assert catalog.latest_score_run("d", "v", "c")["score_run_id"] == second
    latest = catalog.query("SELECT * FROM latest_scores")
    assert {r["score_run_id"] for r in latest} == {second} and len(latest) == 2


def test_writes_beyond_the_memory_limit_fail_clearly_and_keyless_tables_stay_within_it(tmp_path):
    """300k scores under a 16 MB limit: a catalog with the first release's key index on `scores` runs
    out of memory (a clear CatalogError, the previous scores kept); today's keyless table takes them."""
    import hashlib

    ids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(300_000)]
    key = dict(dataset_name="d", dataset_version="dv", valuation_set="v", valuation_version="vv", model_id="m",
               feature_config_id="c")
    old = Catalog(tmp_path / "old.duckdb", memory_limit="16MB")
    old.init()
    with old.connect() as con:   # the first release's table: a primary key index
        con.execute("DROP TABLE scores")
        ddl = (ROOT / "sql" / "schema.sql").read_text()
        table = ddl[ddl.index("CREATE TABLE IF NOT EXISTS scores"):]
        table = table[:table.index(");") + 2]
        con.execute(table.replace("dagster_run_id     VARCHAR\n);", "dagster_run_id VARCHAR, PRIMARY KEY "
                                  "(dataset_name, valuation_set, feature_config_id, model_id, sample_id));"))
    first = old.replace_scores(**key, sample_ids=ids[:3], values=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(CatalogError, match=r"old.duckdb: the write needed more than the catalog's memory limit "
                                           r"\(16MB; FORVALUE_DUCKDB_MEMORY\), nothing was changed"):
        old.replace_scores(**key, sample_ids=ids, values=np.zeros(len(ids)))
    assert {r["score_run_id"] for r in old.scores("d", "v", "c", "m")} == {first} and old.count("scores") == 3
    new = Catalog(tmp_path / "new.duckdb", memory_limit="16MB")
    new.replace_scores(**key, sample_ids=ids, values=np.zeros(len(ids)))
    assert new.count("scores") == len(ids)
    with pytest.raises(ValueError, match="duplicate sample ids"):
        new.replace_scores(**key, sample_ids=ids[:2] * 2, values=np.zeros(4))
    assert new.count("scores") == len(ids)


def test_score_problems_finds_gaps_and_nan(catalog):
    samples = samples_from_records(records(3)).samples
    catalog.register_set(KIND_DATASET, "d", "dv", "d.jsonl", samples)
    ids = [s.sample_id for s in samples]
    catalog.replace_scores(dataset_name="d", dataset_version="dv", valuation_set="v", valuation_version="vv",
                           model_id="m", feature_config_id="c", sample_ids=ids, values=np.array([1.0, 2, 3]))
    key = dict(dataset_name="d", dataset_version="dv", valuation_set="v", feature_config_id="c", model_id="m")
    ok = catalog.score_problems(**key)
    assert ok == {"n_samples": 3, "n_scores": 3, "n_missing": 0, "n_extra": 0, "n_non_finite": 0, "n_stale": 0}
    with catalog.transaction() as con:  # corrupt the stored table the way a buggy writer could
        con.execute("UPDATE scores SET score = 'NaN'::DOUBLE WHERE sample_id = ?", [ids[0]])
        con.execute("DELETE FROM scores WHERE sample_id = ?", [ids[1]])
    bad = catalog.score_problems(**key)
    assert (bad["n_scores"], bad["n_missing"], bad["n_non_finite"]) == (2, 1, 1)


def test_lineage_view_joins_every_step(catalog, tmp_path):
    train = samples_from_records(records(4)).samples
    val = samples_from_records(records(2, "v")).samples
    catalog.register_set(KIND_DATASET, "d", "dv", "d.jsonl", train, dagster_run_id="r-reg")
    catalog.register_set(KIND_VALUATION, "v", "vv", "v.jsonl", val, dagster_run_id="r-vreg")
    fp = ModelFingerprint(name="tiny", weights_hash="ab" * 32, dtype="float32")
    catalog.record_model(fp, spec="/models/tiny")
    cfg = FeatureConfig(k=2, r=4)
    tf = catalog.record_feature_run(kind=KIND_DATASET, name="d", version="dv", model_id=fp.id, config=cfg,
                                    n_samples=4, n_computed=4, n_reused=0, n_shards_written=1,
                                    store_folder=tmp_path, dagster_run_id="r-tf")
    vf = catalog.record_feature_run(kind=KIND_VALUATION, name="v", version="vv", model_id=fp.id, config=cfg,
                                    n_samples=2, n_computed=2, n_reused=0, n_shards_written=1,
                                    store_folder=tmp_path, dagster_run_id="r-vf")
    assert catalog.latest_feature_run(KIND_DATASET, "d", "dv", cfg.id)["feature_run_id"] == tf
    assert catalog.fingerprint(fp.id) == fp
    values = np.array([0.5, -1.0, 2.0, 0.0])
    ids = [s.sample_id for s in train]
    catalog.replace_scores(dataset_name="d", dataset_version="dv", valuation_set="v", valuation_version="vv",
                           model_id=fp.id, feature_config_id=cfg.id, sample_ids=ids, values=values,
                           train_feature_run_id=tf, val_feature_run_id=vf, dagster_run_id="r-score")
    run = catalog.latest_score_run("d", "v", cfg.id)
    from forvalue.curation.selection import rank_values
    from forvalue.valuation.scoring import rank
    idx = rank_values(values, None, None, "raw-mean").indices("top_k", 2)
    ranks = rank(values)
    members = [(ids[i], int(ranks[i]), float(values[i])) for i in idx]
    jsonl, parquet = cat.export_subset(catalog, KIND_DATASET, "d", "dv", members, tmp_path / "out", "subset")
    sid = catalog.record_subset(score_run=run, mode="top_k", value=2, n_total=4, members=members,
                                jsonl_path=jsonl, parquet_path=parquet, dagster_run_id="r-subset")
    lin = catalog.subset_lineage(sid)
    assert lin["dataset_name"] == "d" and lin["dataset_version"] == "dv" and lin["dataset_path"] == "d.jsonl"
    assert lin["valuation_set"] == "v" and lin["valuation_version"] == "vv"
    assert lin["model_id"] == fp.id and lin["model_spec"] == "/models/tiny"
    assert json.loads(lin["feature_config"])["k"] == 2
    assert (lin["dataset_dagster_run_id"], lin["valuation_dagster_run_id"], lin["train_features_dagster_run_id"],
            lin["val_features_dagster_run_id"], lin["scores_dagster_run_id"], lin["subset_dagster_run_id"]) == \
           ("r-reg", "r-vreg", "r-tf", "r-vf", "r-score", "r-subset")
    # exported files: JSONL holds the original rows in file order, Parquet the ranked members
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines == [train[0].record, train[2].record]
    table = pq.read_table(parquet).to_pylist()
    assert [(r["sample_id"], r["rank"]) for r in table] == [(ids[2], 1), (ids[0], 2)]
    assert not list((tmp_path / "out").glob(".*tmp"))
    assert catalog.latest_subset("d", "v")["subset_id"] == sid
    # the same as polars frames
    frame = catalog.subset_frame(sid)
    assert frame["sample_id"].to_list() == [ids[2], ids[0]] and frame["rank"].to_list() == [1, 2]
    assert frame["prompt"].to_list() == [train[2].prompt, train[0].prompt]
    scores = catalog.scores_frame("d", "v", cfg.id, fp.id)
    assert scores["sample_id"].to_list() == [ids[2], ids[0], ids[3], ids[1]] and scores["score"].is_sorted(descending=True)
    assert catalog.query_frame("SELECT count(*) AS n FROM samples WHERE set_name = ?", ["d"])["n"].item() == 4
    # kept and dropped: a second subset of the pair records the value it ranked by and one dropped sample
    # nearest the cut; the view has every sample of the dataset version, once
    near = [(ids[3], 3, 0.0, 0.25)]
    sid2 = catalog.record_subset(score_run=run, mode="top_k", value=2, n_total=4,
                                 members=[(ids[2], 1, 2.0, 0.75), (ids[0], 2, 0.5, float("nan"))], near_cut=near,
                                 jsonl_path=jsonl, parquet_path=parquet, strategy="max-cosine")
    view = catalog.query("SELECT * FROM subset_kept_dropped WHERE subset_id = ? ORDER BY rank NULLS LAST",
                         [sid2])
    assert [(r["sample_id"], r["kept"], r["rank"], r["ranked_by"]) for r in view] == [
        (ids[2], True, 1, 0.75), (ids[0], True, 2, None), (ids[3], False, 3, 0.25), (ids[1], False, None, None)]
    assert [r["score"] for r in view] == [2.0, 0.5, 0.0, -1.0] and [r["score_rank"] for r in view] == [1, 2, 3, 4]
    assert {(r["cut_rank"], r["strategy"]) for r in view} == {(2, "max-cosine")}
    dropped = catalog.query("SELECT sample_id, rank FROM subset_kept_dropped WHERE subset_id = ? AND NOT kept", [sid])
    assert {(r["sample_id"], r["rank"]) for r in dropped} == {(ids[3], None), (ids[1], None)}   # no near-cut rows


@pytest.mark.parametrize("mode,value,n,expected", [
    ("top_k", 3, 10, 3), ("top_k", 30, 10, 10), ("top_p", 25, 8, 2), ("bottom_p", 50, 5, 2),
    ("drop_lowest_p", 10, 10, 9), ("drop_lowest_p", 100, 4, 0)])
def test_recorded_subset_size_rule(mode, value, n, expected):
    """The size the subset_size_matches_config check expects of a recorded subset: the selection's rule."""
    from forvalue.curation.selection import subset_count

    assert subset_count(n, mode, value) == expected


def test_subset_mode_validation(catalog):
    from forvalue.curation.selection import subset_count

    with pytest.raises(ValueError, match="mode"):
        subset_count(3, "top", 1)
    with pytest.raises(ValueError, match="whole number"):
        subset_count(3, "top_k", 1.5)
    with pytest.raises(ValueError, match="percentage"):
        subset_count(3, "top_p", 150)
    with pytest.raises(ValueError, match="mode must be one of"):
        catalog.record_subset(score_run={}, mode="top", value=1, n_total=3, members=[], jsonl_path="a.jsonl",
                              parquet_path="a.parquet")


def test_writer_waits_for_another_process_lock(catalog):
    catalog.init()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(catalog.path)!r})
        print("locked", flush=True)
        time.sleep(1.5)
        con.close()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        catalog.register_set(KIND_DATASET, "d", "v1", "d.jsonl", samples_from_records(records(2)).samples)
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5
    assert catalog.count("samples") == 2
    # a lock held past the timeout is reported clearly
    impatient = Catalog(catalog.path, lock_timeout=0.3)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(catalog.path)!r})
        print("locked", flush=True)
        time.sleep(2)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CatalogError, match="locked by another process"):
            impatient.fetch("current_dataset", name="d")
    finally:
        holder.kill()        # (its lock has done its part: no need to sit out its sleep)
        holder.wait(timeout=30)


def test_content_hash_and_format(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"prompt": "p", "response": "r"}\n')
    h1 = cat.content_hash(f)
    f.write_text('{"prompt": "p", "response": "r2"}\n')
    assert cat.content_hash(f) != h1 and len(h1) == 64
    assert cat.file_format(f) == "jsonl" and cat.file_format(tmp_path / "x.parquet") == "parquet"


def test_old_catalog_gets_the_new_columns(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))   # the scores and subsets tables as the first release created them
    con.execute("CREATE TABLE scores (dataset_name VARCHAR, valuation_set VARCHAR, feature_config_id VARCHAR, "
                "model_id VARCHAR, sample_id VARCHAR, score DOUBLE, rank INTEGER, dataset_version VARCHAR, "
                "valuation_version VARCHAR, score_run_id VARCHAR, code_version VARCHAR, dagster_run_id VARCHAR)")
    con.execute("INSERT INTO scores VALUES ('d', 'v', 'c', 'm', 's1', 1.5, 1, 'dv', 'vv', 'r', '0', NULL)")
    con.execute("CREATE TABLE subsets (subset_id VARCHAR PRIMARY KEY, dataset_name VARCHAR NOT NULL, "
                "dataset_version VARCHAR NOT NULL, valuation_set VARCHAR NOT NULL, valuation_version VARCHAR NOT NULL, "
                "model_id VARCHAR NOT NULL, feature_config_id VARCHAR NOT NULL, score_run_id VARCHAR NOT NULL, "
                "mode VARCHAR NOT NULL, value DOUBLE NOT NULL, n_total INTEGER NOT NULL, n_selected INTEGER NOT NULL, "
                "jsonl_path VARCHAR NOT NULL, parquet_path VARCHAR NOT NULL, code_version VARCHAR NOT NULL, "
                "dagster_run_id VARCHAR, created_at TIMESTAMP NOT NULL)")
    con.close()
    cat = Catalog(path)
    cat.init()
    (row,) = cat.query("SELECT score, normalized, norm FROM scores")
    assert row == {"score": 1.5, "normalized": None, "norm": None}
    assert "strategy" in {r["column_name"] for r in cat.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'subsets'")}
    _scored(cat, [0.3, 0.1], normalized=np.array([0.9, 0.2]), norms=np.array([2.0, 3.0]))
    rows = cat.scores("d", "v", "c", "m")
    assert [(r["score"], r["normalized"], r["norm"]) for r in rows] == [(0.3, 0.9, 2.0), (0.1, 0.2, 3.0)]


def test_concurrent_writers_to_one_catalog(tmp_path):
    """Two processes write the same catalog file at the same time: every write lands, none is lost."""
    path = tmp_path / "shared.duckdb"
    Catalog(path).init()
    script = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, sys.argv[3])
        from forvalue.catalog.db import Catalog, KIND_DATASET
        from forvalue.data.samples import samples_from_records
        from tests.conftest import make_records
        cat, who = Catalog(sys.argv[1], lock_timeout=120), sys.argv[2]
        for i in range(6):
            cat.register_set(KIND_DATASET, f"{who}{i}", "v1", "d.jsonl",
                             samples_from_records(make_records(3, i, who)).samples)
            cat.replace_scores(dataset_name=f"{who}{i}", dataset_version="v1", valuation_set="v", valuation_version="vv",
                               model_id="m", feature_config_id="c", sample_ids=[f"{who}{i}-{j}" for j in range(5)],
                               values=np.arange(5.0))
    """)
    root = str(Path(__file__).resolve().parent.parent)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), who, root], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    cat = Catalog(path)
    assert cat.count("datasets") == 12 and cat.count("scores") == 60 and cat.count("score_runs") == 12


def test_streamed_registration_matches_the_in_memory_one(catalog, tmp_path):
    from forvalue.data.samples import Columns, DataError
    from forvalue.data.stream import iter_batches

    recs = records(7) + [records(1)[0] | {"id": "dup"}]                 # same content as row 1
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    reg = catalog.register_stream(KIND_DATASET, "s", "v1", path, iter_batches(path, batch_rows=3))
    assert (reg.n_rows, reg.n_samples, reg.n_duplicates, reg.n_skipped) == (8, 7, 1, 0)
    assert len(reg.preview) == 5 and reg.preview[0].row == 1
    streamed = catalog.load_samples(KIND_DATASET, "s", "v1")
    catalog.register_set(KIND_DATASET, "m", "v1", path, samples_from_records(recs).samples)
    memory = catalog.load_samples(KIND_DATASET, "m", "v1")
    assert [(s.sample_id, s.row, s.prompt) for s in streamed] == [(s.sample_id, s.row, s.prompt) for s in memory]
    # a bad row stops it (nothing stored) or is skipped and counted
    bad = tmp_path / "b.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records(4)) + '{"prompt": "x"}\n')
    with pytest.raises(DataError, match=r"b.jsonl, row 5, field 'response'"):
        catalog.register_stream(KIND_DATASET, "b", "v1", bad, iter_batches(bad, batch_rows=2))
    assert catalog.current_set(KIND_DATASET, "b") is None
    reg = catalog.register_stream(KIND_DATASET, "b", "v1", bad, iter_batches(bad, batch_rows=2), on_error="skip")
    assert (reg.n_samples, reg.n_skipped) == (4, 1) and "row 5" in str(reg.skipped[0])
    # repeated ids are found across batches
    ids = tmp_path / "ids.jsonl"
    ids.write_text("".join(json.dumps(r | {"id": "same" if i in (1, 4) else f"x{i}"}) + "\n"
                           for i, r in enumerate(records(6))))
    with pytest.raises(DataError, match=r"ids.jsonl, row 5, field 'id': duplicate id 'same' \(first at row 2\)"):
        catalog.register_stream(KIND_DATASET, "i", "v1", ids, iter_batches(ids, batch_rows=2),
                                column_mapping={"id": "id"})
    # a file missing a column everywhere
    nocol = tmp_path / "n.jsonl"
    nocol.write_text('{"question": "q", "response": "r"}\n')
    with pytest.raises(DataError, match="field 'prompt': missing column"):
        catalog.register_stream(KIND_DATASET, "n", "v1", nocol, iter_batches(nocol))


def test_validate_streams_and_reports(tmp_path, capsys):
    from forvalue.cli import main

    path = tmp_path / "v.jsonl"
    lines = [json.dumps(r) for r in records(5)] + ["", "{broken", json.dumps(records(1)[0]), json.dumps({"prompt": "p"})]
    path.write_text("\n".join(lines) + "\n")
    assert main(["validate", "--data", str(path), "--batch-rows", "3"]) == 2
    out = capsys.readouterr().out
    assert f"{path}: 8 rows, 6 valid samples, 2 bad rows, 1 duplicates" in out
    assert f"{path}, row 7: invalid JSON" in out and f"{path}, row 9, field 'response'" in out
    good = tmp_path / "g.parquet"
    pq.write_table(__import__("pyarrow").Table.from_pylist(records(4)), good)
    assert main(["validate", "--data", str(good)]) == 0


def test_duckdb_memory_is_limited_so_large_registrations_spill(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb", memory_limit="300MB")
    with cat.connect() as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.endswith("MiB") and 280 <= float(limit.split()[0]) <= 300
    from forvalue.errors import ConfigError

    with pytest.raises(ConfigError, match="'lots' .*FORVALUE_DUCKDB_MEMORY.* not a memory size"):
        with Catalog(tmp_path / "c.duckdb", memory_limit="lots").connect():
            pass


def test_latest_views_keep_every_valuation_set_model_and_version_apart(catalog):
    """A second valuation set, a second model and a second dataset version each keep their own
    latest scores and subsets: the documented query for one pair returns that pair's scores only,
    and none hides another's."""
    def scored(valuation, model, version, values):
        ids = [f"s{i}" for i in range(len(values))]
        return catalog.replace_scores(dataset_name="d", dataset_version=version, valuation_set=valuation,
                                      valuation_version=f"{valuation}-1", model_id=model, feature_config_id="c",
                                      sample_ids=ids, values=np.asarray(values, float))

    runs = {("v1", "m1"): scored("v1", "m1", "dv1", [1.0, 2.0]), ("v2", "m1"): scored("v2", "m1", "dv1", [5.0, 6.0, 7.0]),
            ("v1", "m2"): scored("v1", "m2", "dv1", [9.0])}
    for (valuation, model), run in runs.items():
        got = catalog.query("SELECT score_run_id, count(*) AS n FROM latest_scores WHERE dataset_name = 'd' AND "
                            "valuation_set = ? AND model_id = ? GROUP BY score_run_id", [valuation, model])
        assert [r["score_run_id"] for r in got] == [run]
    assert len(catalog.query("SELECT * FROM latest_score_runs")) == 3
    # a new dataset version re-scored against v2 only: the v1 pairs keep theirs, v2's run is the new one
    newer = scored("v2", "m1", "dv2", [3.0, 4.0])
    latest = {(r["valuation_set"], r["model_id"], r["dataset_version"]): r["score_run_id"]
              for r in catalog.query("SELECT * FROM latest_score_runs")}
    assert latest[("v2", "m1", "dv2")] == newer and latest[("v1", "m1", "dv1")] == runs[("v1", "m1")]
    assert latest[("v1", "m2", "dv1")] == runs[("v1", "m2")]
    # subsets: one per scores key in latest_subsets; latest_subset() is the pair's newest
    for (valuation, model), run in [(("v1", "m1"), runs[("v1", "m1")]), (("v1", "m2"), runs[("v1", "m2")])]:
        srun = catalog.query("SELECT * FROM score_runs WHERE score_run_id = ?", [run])[0]
        catalog.record_subset(score_run=srun, mode="top_k", value=1, n_total=2, members=[("s0", 1, 1.0)],
                              jsonl_path="x.jsonl", parquet_path="x.parquet", subset_id=f"sub-{model}")
    assert {r["model_id"] for r in catalog.query("SELECT * FROM latest_subsets WHERE valuation_set = 'v1'")} == {
        "m1", "m2"}
    assert catalog.latest_subset("d", "v1")["subset_id"] == "sub-m2"


def _count_in_child(path, q):
    from forvalue.catalog.db import Catalog

    q.put(Catalog(path).query("SELECT count(*) AS n FROM datasets")[0]["n"])


def test_connections_share_one_attachment_and_release_the_file(tmp_path):
    """Overlapping connections to one file share its attachment to the process's in-memory DuckDB; the
    last one to close detaches it, so another process can write it; a forked child opens its own."""
    import multiprocessing
    import subprocess
    import sys

    from forvalue.catalog.attach import ATTACHMENTS
    from forvalue.catalog.db import Catalog

    path = tmp_path / "c.duckdb"
    a, b = Catalog(path), Catalog(str(path))
    with a.connect() as c1:
        with b.connect(read_only=True) as c2:                 # shares the read-write attachment
            assert c2.execute("SELECT current_database()").fetchone()[0] == c1.execute(
                "SELECT current_database()").fetchone()[0]
            assert len(ATTACHMENTS._held) == 1
        assert len(ATTACHMENTS._held) == 1                     # still used by c1
    assert str(path.resolve()) not in ATTACHMENTS._held        # detached: the lock is released
    code = (f"import duckdb; c = duckdb.connect({str(path)!r}); "
            "c.execute(\"INSERT INTO datasets (name, version, source_path, format, n_rows, n_samples, n_skipped, "
            "registered_at, code_version) VALUES ('x', 'v', 'p', 'jsonl', 0, 0, 0, now(), 'c')\"); c.close()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert a.query("SELECT count(*) AS n FROM datasets")[0]["n"] == 1
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_count_in_child, args=(str(path), q))
    p.start()
    p.join(60)
    assert p.exitcode == 0 and q.get(timeout=5) == 1
    with a.connect(read_only=True):                           # a write while only readers hold the file: refused
        with pytest.raises(Exception, match="read-only in this process"):
            with a.connect():
                pass
