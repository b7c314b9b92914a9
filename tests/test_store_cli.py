"""Feature store (incremental, atomic shards) and the `forvalue` command on a tiny model."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from forvalue.cli import main
from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig, extract_sparse
from forvalue.curation.selection import rank_values
from forvalue.valuation.scoring import rank
from forvalue.store.feature_store import FeatureStore
from tests.conftest import make_records


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_store_computes_only_missing(tiny_lm, tmp_path):
    store = FeatureStore(tmp_path / "fs")
    samples = samples_from_records(make_records(10)).samples
    assert len({s.sample_id for s in samples}) == 10
    first = store.ensure(tiny_lm, samples[:6], shard_size=4)
    assert (first.computed, first.reused, len(first.shards_written)) == (6, 0, 2)
    second = store.ensure(tiny_lm, samples, shard_size=4)
    assert (second.computed, second.reused) == (4, 6)
    again = store.ensure(tiny_lm, samples)
    assert (again.computed, again.shards_written) == (0, [])
    direct = extract_sparse(tiny_lm, samples)
    loaded = store.load(tiny_lm.fingerprint, FeatureConfig(), [s.sample_id for s in samples])
    for i in range(len(samples)):
        a, b = direct.select([samples[i].sample_id]), loaded.select([samples[i].sample_id])
        assert np.array_equal(a.token_ids, b.token_ids)
        assert np.allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6)
    # another feature config is a separate key: nothing reused
    other = store.ensure(tiny_lm, samples[:2], FeatureConfig(k=4))
    assert other.computed == 2
    # shard metadata travels with the data files: Arrow IPC for the default (bounded) form ...
    import pyarrow.ipc as ipc

    rows_file = next(store.folder(tiny_lm.fingerprint, FeatureConfig()).glob("shard-*[0-9a-f].rows.arrow"))
    meta = json.loads(ipc.open_file(rows_file).schema.metadata[b"forvalue"])
    assert meta["model"]["id"] == tiny_lm.fingerprint.id and meta["feature_config"]["k"] == 8
    assert (meta["feature_config"]["version"], meta["feature_config"]["store_dtype"]) == ("2", "float16")
    # ... Parquet for the first release's form (full rows in float32), whose store key is unchanged
    v1 = FeatureConfig(store_dtype="float32", energy=1.0, max_rows=None)
    store.ensure(tiny_lm, samples[:2], v1)
    meta = json.loads(pq.read_schema(next(store.folder(tiny_lm.fingerprint, v1).glob("shard-*[0-9a-f].parquet"))).metadata[b"forvalue"])
    assert meta["feature_config"]["version"] == "1" and "store_dtype" not in meta["feature_config"]
    assert FeatureConfig.from_dict(meta["feature_config"]) == v1


def test_interrupted_extraction_leaves_no_half_shard_and_rerun_completes(tiny_lm, tmp_path, monkeypatch):
    import forvalue.store.feature_store as store_mod

    store = FeatureStore(tmp_path / "fs")
    samples = samples_from_records(make_records(9)).samples
    assert len({s.sample_id for s in samples}) == 9
    import forvalue.store.shard_format as shard_format

    real_write = store_mod.FeatureStore.write_shard
    calls = {"n": 0}
    real_atomic = shard_format.atomic_write

    def flaky_atomic_write(path, write):
        calls["n"] += 1
        if calls["n"] == 3:  # the rows file of the second shard is written ...
            real_atomic(path, write)
            raise KeyboardInterrupt  # ... then the process is interrupted
        return real_atomic(path, write)

    monkeypatch.setattr(shard_format, "atomic_write", flaky_atomic_write)
    with pytest.raises(KeyboardInterrupt):
        store.ensure(tiny_lm, samples, shard_size=4)
    monkeypatch.setattr(shard_format, "atomic_write", real_atomic)
    folder = store.folder(tiny_lm.fingerprint, FeatureConfig())
    assert len(store.manifests(tiny_lm.fingerprint, FeatureConfig())) == 1
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))
    assert len(store.existing_ids(tiny_lm.fingerprint, FeatureConfig())) == 4
    rerun = store.ensure(tiny_lm, samples, shard_size=4)
    assert (rerun.computed, rerun.reused) == (5, 4)
    assert len(rerun.features) == 9 and real_write is store_mod.FeatureStore.write_shard


def test_cli_score_writes_ranked_table_with_input_columns(tiny_model_dir, tmp_path, capsys):
    train = _write(tmp_path / "train.jsonl", make_records(8, 0, "t"))
    val = _write(tmp_path / "val.jsonl", make_records(3, 1, "v"))
    out = tmp_path / "out" / "scores.parquet"
    # a store of its own: the session's shared CLI store may hold these samples' features from another
    # test's batches, one float16 step apart from the library call's below
    rc = main(["score", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir),
               "--out", str(out), "--store", str(tmp_path / "store"), "--quiet"])
    assert rc == 0
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"forvalue"])
    assert meta["model"]["name"] == "tiny-llama-0" and meta["method"] == "sparse" and meta["n_val"] == 3
    rows = table.to_pylist()
    assert len(rows) == 8 and [r["rank"] for r in rows] == list(range(1, 9))
    assert {"sample_id", "score", "rank", "id", "prompt", "response", "group"} <= set(rows[0])
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]))
    assert "scored 8 training samples" in capsys.readouterr().out
    # same numbers as the library call
    from forvalue.models.loading import load_model
    from forvalue.valuation.scoring import score
    from forvalue.data.samples import load_samples

    lm = load_model(str(tiny_model_dir), device="cpu")
    res = score(lm, load_samples(train).samples, load_samples(val).samples)
    by_id = {r["id"]: r["score"] for r in rows}
    assert np.allclose([by_id[f"t{i}"] for i in range(8)], res.values, rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "emb"])
def test_cli_score_other_methods_and_formats(tiny_model_dir, tmp_path, method):
    train = _write(tmp_path / "train.jsonl", make_records(5, 0, "t"))
    val = _write(tmp_path / "val.jsonl", make_records(2, 1, "v"))
    out = tmp_path / "scores.csv"
    assert main(["score", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir),
                 "--method", method, "--positions", "all", "--out", str(out), "--quiet"]) == 0
    assert out.read_text().count("\n") == 6


def test_cli_reports_bad_input_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    train = _write(tmp_path / "train.jsonl", make_records(3) + [{"id": "x", "prompt": "p", "response": ""}])
    val = _write(tmp_path / "val.jsonl", make_records(2, 1, "v"))
    out = tmp_path / "scores.parquet"
    rc = main(["score", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir), "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert f"{train}, row 4, field 'response': empty" in capsys.readouterr().err
    rc = main(["score", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir),
               "--out", str(out), "--on-error", "skip", "--quiet"])
    assert rc == 0 and len(pq.read_table(out)) == 3
    assert "skipped 1 rows" in capsys.readouterr().err


def test_cli_features_twice_computes_nothing_the_second_time(tiny_model_dir, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", make_records(6))
    args = ["features", "--data", str(data), "--out", str(tmp_path / "fs"), "--model", str(tiny_model_dir), "--quiet"]
    assert main(args) == 0
    assert "6 computed, 0 already stored" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 computed, 6 already stored" in capsys.readouterr().out


def test_rank_and_select():
    v = np.array([0.5, 3.0, -1.0, 2.0, 2.0])
    assert rank(v).tolist() == [4, 1, 5, 2, 3]
    by_score = rank_values(v, None, None, "raw-mean")
    assert by_score.indices("top_k", 2).tolist() == [1, 3]
    assert by_score.indices("top_p", 40).tolist() == [1, 3]
    assert by_score.indices("bottom_p", 20).tolist() == [2]
    assert sorted(by_score.indices("drop_lowest_p", 20).tolist()) == [0, 1, 3, 4]
    assert (rank(v)[by_score.order] == np.arange(1, 6)).all()
    with pytest.raises(ValueError, match="mode must be one of"):
        by_score.indices("top", 1)
    with pytest.raises(ValueError, match="percentage"):
        by_score.indices("top_p", 150)


def test_float16_overflow_stops_naming_the_sample():
    from forvalue.errors import ConfigError
    from forvalue.valuation.features import HALF_MAX, _check_half_range

    vectors = np.ones((5, 4), np.float32)
    emb = np.ones((3, 2), np.float32)
    _check_half_range(vectors, emb, ["a", "b", "c"], [2, 2, 1])          # in range: nothing happens
    vectors[3, 1] = HALF_MAX * 2                                            # a row of the second sample
    with pytest.raises(ConfigError, match=r"sample 'b'.*float32"):
        _check_half_range(vectors, emb, ["a", "b", "c"], [2, 2, 1])
    vectors[3, 1] = 1
    emb[2, 0] = -HALF_MAX * 3                                               # the third sample's emb
    with pytest.raises(ConfigError, match="sample 'c'"):
        _check_half_range(vectors, emb, ["a", "b", "c"], [2, 2, 1])
