"""`forvalue curate` and `forvalue select` on a tiny model: same strategies, same subsets, clear errors."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from forvalue.cli import main
from tests.conftest import make_records


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    return (_write(tmp_path / "train.jsonl", make_records(20, 0, "t")),
            _write(tmp_path / "val.jsonl", make_records(6, 1, "v")))


def test_curate_writes_the_kept_rows_with_every_input_column(tiny_model_dir, files, tmp_path, capsys):
    train, val = files
    out, dropped = tmp_path / "kept.parquet", tmp_path / "dropped.jsonl"
    assert main(["curate", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir),
                 "--top-p", "25", "--out", str(out), "--store", str(tmp_path / "fs"), "--quiet",
                 "--dropped", str(dropped)]) == 0
    printed = capsys.readouterr().out
    assert "kept 5 of 20 training samples (balanced, top-p 25)" in printed
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and {r["strategy"] for r in rows} == {"balanced"}
    assert {"sample_id", "score", "normalized", "norm", "id", "prompt", "response", "group"} <= set(rows[0])
    assert all(-1 <= r["normalized"] <= 1 and r["norm"] > 0 for r in rows)
    meta = json.loads(table.schema.metadata[b"forvalue"])
    assert (meta["strategy"], meta["mode"], meta["value"], meta["n_selected"]) == ("balanced", "top_p", 25.0, 5)

    # the same subset from the library
    from forvalue.data.samples import load_samples
    from forvalue.valuation.features import FeatureConfig
    from forvalue.curation.consistency import rank_checked
    from forvalue.models.loading import load_model
    from forvalue.store.feature_store import FeatureStore

    lm = load_model(str(tiny_model_dir), device="cpu")
    tr, va = load_samples(train).samples, load_samples(val).samples
    fs = FeatureStore(tmp_path / "fs")
    ranking = rank_checked(fs.load(lm.fingerprint, FeatureConfig(), [s.sample_id for s in tr]),
                           fs.load(lm.fingerprint, FeatureConfig(), [s.sample_id for s in va]), "balanced")
    idx = ranking.indices("top_p", 25)
    assert [r["sample_id"] for r in rows] == [tr[i].sample_id for i in idx]
    assert np.allclose([r["score"] for r in rows], ranking.raw[idx])
    # the consistency checks: the summary in the metadata, every dropped sample with its reason
    n_failed = int(ranking.checks.failed.sum())
    assert meta["checks"]["grounding"]["failed"] == n_failed >= 1
    assert f"consistency: grounding check dropped {n_failed} of 20" in printed
    drops = [json.loads(x) for x in dropped.read_text().splitlines()]
    assert [d["sample_id"] for d in drops] == [tr[i].sample_id for i in ranking.checks.dropped]
    assert all(d["check"] == "grounding" and d["check_value"] > d["threshold"] and d["reason"].startswith("grounding: ")
               and {"prompt", "response", "score"} <= set(d) for d in drops)
    assert not {d["sample_id"] for d in drops} & {r["sample_id"] for r in rows}

    # every strategy and size mode runs; JSONL output is valid JSON lines
    for strategy, size in (("raw-mean", ["--top-k", "3"]), ("max-cosine", ["--drop-lowest-p", "50"]),
                           ("round-robin", ["--bottom-p", "10"]), ("cosine-mean", ["--top-p", "10"])):
        out = tmp_path / f"{strategy}.jsonl"
        assert main(["curate", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir),
                     "--strategy", strategy, *size, "--out", str(out), "--store", str(tmp_path / "fs"),
                     "--quiet"]) == 0
        kept = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(kept) == {"--top-k": 3, "--drop-lowest-p": 10, "--bottom-p": 2, "--top-p": 2}[size[0]]
        assert {r["strategy"] for r in kept} == {strategy}
    raw = [json.loads(x) for x in (tmp_path / "raw-mean.jsonl").read_text().splitlines()]
    assert [r["score"] for r in raw] == sorted((r["score"] for r in raw), reverse=True)
    bottom = [json.loads(x) for x in (tmp_path / "round-robin.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in bottom] == [20, 19]


def test_select_from_scores_matches_curate_and_needs_the_store(tiny_model_dir, files, tmp_path, capsys):
    train, val = files
    model = str(tiny_model_dir)
    scores = tmp_path / "scores.parquet"
    assert main(["score", "--train", str(train), "--val", str(val), "--model", model, "--out", str(scores),
                 "--quiet"]) == 0          # features kept in the default store ($FORVALUE_FEATURES)
    rows = pq.read_table(scores).to_pylist()
    assert all("normalized" in r and "norm" in r for r in rows)
    meta = json.loads(pq.read_schema(scores).metadata[b"forvalue"])
    assert meta["store"] and len(meta["val_ids"]) == 6
    capsys.readouterr()
    for strategy in ("balanced", "raw-mean", "max-cosine"):
        sel_out, cur_out = tmp_path / f"sel-{strategy}.parquet", tmp_path / f"cur-{strategy}.parquet"
        assert main(["select", "--scores", str(scores), "--train", str(train), "--strategy", strategy,
                     "--top-k", "7", "--out", str(sel_out), "--quiet"]) == 0
        assert main(["curate", "--train", str(train), "--val", str(val), "--model", model, "--strategy", strategy,
                     "--top-k", "7", "--out", str(cur_out), "--quiet"]) == 0
        a, b = pq.read_table(sel_out).to_pylist(), pq.read_table(cur_out).to_pylist()
        assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
        assert [r["rank"] for r in a] == list(range(1, 8))
    # raw-mean from the table alone still applies the checks, from the store the table records
    dropped = tmp_path / "dropped.jsonl"
    assert main(["select", "--scores", str(scores), "--train", str(train), "--strategy", "raw-mean", "--top-k", "7",
                 "--out", str(tmp_path / "sel-raw-mean.parquet"), "--dropped", str(dropped), "--quiet"]) == 0
    raw = pq.read_table(tmp_path / "sel-raw-mean.parquet")
    failed = {json.loads(x)["sample_id"] for x in dropped.read_text().splitlines()}
    assert json.loads(raw.schema.metadata[b"forvalue"])["checks"]["grounding"]["failed"] == len(failed) >= 1
    assert [r["sample_id"] for r in raw.to_pylist()] == [r["sample_id"] for r in rows if r["sample_id"] not in failed][:7]

    # scores without a store: the sorting strategies still work, the pairwise ones say what to do
    bare = tmp_path / "bare.parquet"
    assert main(["score", "--train", str(train), "--val", str(val), "--model", model, "--out", str(bare),
                 "--no-store", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "x.parquet"
    assert main(["select", "--scores", str(bare), "--train", str(train), "--top-k", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bare}: no feature store recorded; strategy balanced orders by pairwise cosine" in err and not out.exists()
    assert main(["select", "--scores", str(bare), "--train", str(train), "--strategy", "cosine-mean", "--top-k", "3",
                 "--out", str(out)]) == 0
    assert len(pq.read_table(out)) == 3
    assert "consistency checks not applied: the scores table records no feature store" in capsys.readouterr().out
    # a JSONL scores table has no metadata
    jl = _write(tmp_path / "scores.jsonl", rows)
    assert main(["select", "--scores", str(jl), "--train", str(train), "--top-k", "3", "--out", str(out)]) == 2
    assert "no record of the model, features and valuation set" in capsys.readouterr().err
    # a training file the scores do not cover
    other = _write(tmp_path / "other.jsonl", make_records(4, 7, "o"))
    assert main(["select", "--scores", str(scores), "--train", str(other), "--top-k", "3", "--out", str(out)]) == 2
    assert "4 of 4 training samples have no score" in capsys.readouterr().err


def test_one_size_rule_in_curate_select_finetune_and_the_subset_asset(tiny_model_dir, tmp_path, capsys):
    """A size keeps the same samples in every command, and a size that keeps none of the rows (0.1%
    or 10% of 5: 0.5 rounds to 0) is refused by each, before anything is written."""
    from forvalue.curation.selection import rank_values, subset_count
    from forvalue.training.finetune import read_meta, subset_digest

    train, val = _write(tmp_path / "train.jsonl", make_records(5, 0, "t")), _write(tmp_path / "val.jsonl",
                                                                                    make_records(3, 1, "v"))
    model, scores = str(tiny_model_dir), tmp_path / "scores.parquet"
    assert main(["score", "--train", str(train), "--val", str(val), "--model", model, "--out", str(scores),
                 "--quiet"]) == 0
    values = np.array([r["score"] for r in sorted(pq.read_table(scores).to_pylist(), key=lambda r: r["sample_id"])])
    for flag, value, expected in (("--top-p", "0.1", 0), ("--top-p", "10", 0), ("--top-p", "40", 2),
                                  ("--top-k", "3", 3), ("--bottom-p", "50", 2)):
        mode = flag[2:].replace("-", "_")
        # the rule itself, and what the curated_subset asset keeps (Ranking.indices) and its check expects
        assert subset_count(5, mode, float(value)) == len(rank_values(values, None, None, "raw-mean").indices(
            mode, float(value))) == expected
        name = f"{mode}-{value}"
        capsys.readouterr()
        runs = {"curate": ["curate", "--train", str(train), "--val", str(val), "--model", model, flag, value,
                           "--out", str(tmp_path / f"curate-{name}.jsonl"), "--quiet"],
                "select": ["select", "--scores", str(scores), "--train", str(train), flag, value,
                           "--out", str(tmp_path / f"select-{name}.jsonl"), "--quiet"],
                "finetune": ["finetune", "--train", str(train), "--subset-scores", str(scores), flag, value,
                             "--out", str(tmp_path / f"ft-{name}"), "--steps", "1", "--batch-size", "2", "--no-track",
                             "--model", model, "--quiet", "--threads", "1"]}
        for command, argv in runs.items():
            rc = main(argv)
            out, err = capsys.readouterr()
            if expected == 0:
                assert rc == 2 and f"{flag} {value} keeps no sample of the 5 in {train}" in err, (command, err)
                assert not (tmp_path / argv[argv.index("--out") + 1]).exists(), command
                continue
            assert rc == 0, (command, err)
            if command == "finetune":
                assert f"on {expected} of 5 samples" in out
                selected = (tmp_path / f"select-{name}.jsonl").read_text().splitlines()
                kept = [json.loads(x)["sample_id"] for x in selected]
                assert read_meta(tmp_path / f"ft-{name}")["subset"]["digest"] == subset_digest(kept)
            else:
                assert len((tmp_path / f"{command}-{name}.jsonl").read_text().splitlines()) == expected, command
