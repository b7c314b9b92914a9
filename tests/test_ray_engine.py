"""The Ray Data engine (forvalue/engines/): a local Ray with two actors gives the features of the
in-process engine, a worker killed mid-run still leaves every sample stored exactly once, stored scoring
by shard on Ray equals the streamed scoring, and Ray is shut down with its folder removed afterwards.

One local Ray (2 CPUs) serves the test session (``local_ray``, tests/conftest.py); the engine uses it as
it is (an initialised Ray is joined, not started), and the fixture checks that it stops cleanly and
leaves no folder or token behind.
"""

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from forvalue.data.samples import samples_from_records  # noqa: E402
from forvalue.engines import EngineConfig  # noqa: E402
from forvalue.errors import ConfigError  # noqa: E402
from forvalue.valuation.features import FeatureConfig  # noqa: E402
from forvalue.models.loading import ModelConfig  # noqa: E402
from forvalue.store.feature_store import FeatureStore  # noqa: E402
from tests.conftest import make_records  # noqa: E402

CFG = FeatureConfig(k=4, r=8)


def _model(tiny_model_dir) -> ModelConfig:
    return ModelConfig(model=str(tiny_model_dir), device="cpu", dtype="float32", batch_size=3)


def _samples(n: int, seed: int = 0):
    return samples_from_records(make_records(n, seed=seed, prefix=f"s{seed}-"), source="t.jsonl").samples


def _stored(folder: Path) -> Counter:
    c = Counter()
    for m in folder.glob("shard-*.json"):
        c.update(json.loads(m.read_text())["sample_ids"])
    return c


def _sorted_rows(f):
    order = np.lexsort((f.token_ids, f.row_sample))
    return f.row_sample[order], f.token_ids[order], f.vectors[order]


def _kill_one_writer(folder: Path, killed: list, stop: threading.Event) -> None:
    """After the first shard is committed, kill -9 the process of a live claim (an actor in the
    middle of a batch)."""
    while not stop.is_set() and not killed:
        if folder.is_dir() and any(folder.glob("shard-*.json")):
            for claim in folder.glob("locks/claim-*.json"):
                try:
                    pid = json.loads(claim.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, len(_stored(folder))))
                    return
        time.sleep(0.002)


def test_two_ray_workers_one_killed_mid_run_give_the_in_process_features_once(local_ray, tiny_model_dir, tmp_path):
    """Two actors, one of them killed -9 in the middle of a batch: Ray restarts it and retries the
    batch, every sample is stored exactly once, and the features are those of the in-process engine."""
    from forvalue.engines.ray_features import featurize

    samples = _samples(160)
    ids = list(dict.fromkeys(s.sample_id for s in samples))   # (a few records repeat: ids hash the content)
    n = len(ids)
    mc = _model(tiny_model_dir)
    lm = mc.load()
    folder = FeatureStore(tmp_path / "ray").folder(lm.fingerprint, CFG)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_writer, args=(folder, killed, stop), daemon=True)
    killer.start()
    try:
        res = featurize(mc, samples, CFG, tmp_path / "ray", EngineConfig(engine="ray", workers=2), shard_size=4)
    finally:
        stop.set()
        killer.join(5)
    assert killed, "no worker was killed"
    pid, stored_at_kill = killed[0]
    assert stored_at_kill < n                              # the kill fell in the middle of the run
    assert len(_stored(folder)) == n and set(_stored(folder).values()) == {1}   # every sample exactly once
    # the killed actor may have committed a shard before it died without reporting it: its retried
    # batch then finds those samples stored (reused), never computed or stored twice
    assert res.computed + res.reused == n and res.reused < n
    assert res.stats.workers == 2 and res.stats.retried_tasks >= 1   # the killed actor's batch ran again
    assert all(p.is_file() for p in res.shards_written)
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("locks/claim-*"))
    store = FeatureStore(tmp_path / "ray")
    assert store.verify()["ok"]
    # the features: those of the in-process engine
    unique = list({s.sample_id: s for s in samples}.values())
    local = FeatureStore(tmp_path / "local").ensure(lm, unique, CFG, batch_size=4, shard_size=8).features
    got = store.load(res.fingerprint, CFG, ids)
    assert res.fingerprint.id == lm.fingerprint.id
    assert got.n_rows == local.n_rows
    # the rows are computed in float32 within other batches (other padding) and stored in float16: a
    # value within 1e-7 of a float16 rounding boundary may land one float16 step (2^-10 relative) apart
    half_step = 2.0 ** -10 if got.vectors.dtype == np.float16 else 1e-5
    for x, y in zip(_sorted_rows(local), _sorted_rows(got)):
        np.testing.assert_allclose(y, x, rtol=half_step, atol=1e-6)
    np.testing.assert_allclose(got.sample_norms(), local.sample_norms(), rtol=1e-4)
    np.testing.assert_allclose(got.emb, local.emb, rtol=1e-5, atol=1e-6)
    assert list(got.n_positions) == list(local.n_positions)
    # the run's record of batch starts (a folder of the store) ends with the run
    assert not list((tmp_path / "ray").glob(".attempts-*"))


def test_stored_scores_by_shard_on_ray_equal_the_streamed_scores(local_ray, tiny_model_dir, tmp_path):
    from forvalue.valuator import Valuator

    lm = _model(tiny_model_dir).load()
    train, val = _samples(23), _samples(5, seed=2)
    store = FeatureStore(tmp_path / "fs")
    store.ensure(lm, train, CFG, shard_size=4)
    store.ensure(lm, val, CFG, shard_size=4)
    tid, vid = [s.sample_id for s in train][::-1], [s.sample_id for s in val]
    ref = Valuator.from_store(store, lm.fingerprint, CFG).score_stored(tid, vid)
    got = Valuator.from_store(store, lm.fingerprint, CFG, engine=EngineConfig(engine="ray", workers=2)).score_stored(
        tid, vid)
    stats = got.info["engine"]
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6)
    np.testing.assert_allclose(got.normalized, ref.normalized, rtol=1e-6)
    np.testing.assert_allclose(got.norms, ref.norms, rtol=1e-6)
    assert got.train_ids == tid and stats["batches"] == 6 and stats["engine"] == "ray"


def _synthetic_store(tmp_path, n_shards_of=16):
    """Synthetic clustered features with noise (tests.test_selection) in a bounded store of several shards."""
    from forvalue.valuation.features import SparseFeatures
    from forvalue.models.loading import ModelFingerprint
    from tests.test_selection import synthetic

    train, _, _ = synthetic([40, 25, 15, 10], noisy_share=0.3, seed=3)
    val, _, _ = synthetic(3, seed=9, prefix="v")
    store, cfg = FeatureStore(tmp_path), FeatureConfig(r=8, store_dtype="float16", max_rows=9)
    fp = ModelFingerprint(name="synthetic", weights_hash="0" * 64, dtype="float32")
    for f in (train, val):
        half = SparseFeatures(sample_ids=f.sample_ids, row_sample=f.row_sample, token_ids=f.token_ids,
                              vectors=f.vectors.astype(np.float16), emb=f.emb, n_positions=f.n_positions)
        for a in range(0, len(half), n_shards_of):
            store.write_shard(half.take(a, min(len(half), a + n_shards_of)), fp, cfg)
    return store, fp, cfg, train.sample_ids, val.sample_ids


@pytest.mark.parametrize("strategy", ["balanced", "round-robin", "max-cosine", "cosine-mean"])
def test_selection_by_shard_on_ray_gives_the_in_process_order(local_ray, tmp_path, monkeypatch, strategy):
    """Every pass of a strategy over the store (scores, candidate lists and their refills, the dense
    finish, max-cosine keys) as one Ray task per shard: the order of the in-process run, exactly."""
    import forvalue.curation.selection as sel
    from forvalue.valuator import Valuator

    store, fp, cfg, train_ids, val_ids = _synthetic_store(tmp_path)       # 90 samples in 6 shards
    wanted = train_ids[5:][::2] + train_ids[5:][1::2]                     # a subset, in another order
    monkeypatch.setattr(sel, "BLOCK_BYTES", 8 * 4 * 12)   # a small dense finish
    monkeypatch.setattr(sel, "LIST_FACTOR", 1)           # short candidate lists: several refill passes
    monkeypatch.setattr(sel, "LIST_EXTRA", 1)
    v = Valuator.from_store(store, fp, cfg)
    here = v.rank_stored(wanted, val_ids, strategy, limit=60)
    ray_ = Valuator.from_store(store, fp, cfg, engine=EngineConfig(engine="ray", workers=2)).rank_stored(
        wanted, val_ids, strategy, limit=60)
    assert np.array_equal(ray_.order, here.order)
    assert len(here.order) == (60 if strategy in ("balanced", "round-robin") else len(wanted))
    np.testing.assert_array_equal(ray_.raw, here.raw)
    np.testing.assert_array_equal(ray_.normalized, here.normalized)
    e = ray_.info["engine"]
    assert "engine" not in here.info and e["engine"] == "ray" and e["workers"] == 2
    passes = ray_.info.get("passes", 0)
    assert passes == here.info.get("passes", 0)
    # one task per shard and pass: the first pass computes the scores too (max-cosine's keys, the
    # first candidate lists), then each refill or dense pass
    assert e["batches"] == 6 * (passes if strategy in ("balanced", "round-robin") else 1)
    if strategy in ("balanced", "round-robin"):
        assert passes > 1


def test_engine_options_are_checked():
    with pytest.raises(ConfigError, match="workers"):
        EngineConfig(engine="ray", workers=0)
    with pytest.raises(ConfigError, match="engine 'spark'"):
        EngineConfig(engine="spark")
    with pytest.raises(ConfigError, match="need engine 'ray'"):
        EngineConfig(engine="local", ray_address="ray://h:10001")


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_score_on_ray_equals_the_local_engine_and_shares_its_store(local_ray, tiny_model_dir, tmp_path, capsys):
    import pyarrow.parquet as pq

    from forvalue.cli import main

    train = _jsonl(tmp_path / "train.jsonl", make_records(14, seed=3))
    val = _jsonl(tmp_path / "val.jsonl", make_records(4, seed=4))
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--top-tokens", "4", "--r", "8",
              "--quiet"]
    rc = main(["score", "--train", str(train), "--val", str(val), "--out", str(tmp_path / "ray.parquet"),
               "--store", str(tmp_path / "fs"), "--engine", "ray", "--workers", "1", *common])
    assert rc == 0
    assert "on Ray (1 worker; 18 features computed" in capsys.readouterr().out
    # the in-process engine finds every feature the Ray actors stored (same shards and manifests)
    assert main(["features", "--data", str(train), "--out", str(tmp_path / "fs"), *common]) == 0
    assert "0 computed, 14 already stored" in capsys.readouterr().out
    rc = main(["score", "--train", str(train), "--val", str(val), "--out", str(tmp_path / "local.parquet"),
               "--store", str(tmp_path / "fs-local"), *common])
    assert rc == 0
    ray_t, local_t = (pq.read_table(tmp_path / f"{n}.parquet").to_pylist() for n in ("ray", "local"))
    by_id = {r["sample_id"]: r for r in local_t}
    assert len(ray_t) == len(local_t) == 14
    for r in ray_t:
        assert r["rank"] == by_id[r["sample_id"]]["rank"]
        np.testing.assert_allclose([r["score"], r["normalized"], r["norm"]],
                                   [by_id[r["sample_id"]][k] for k in ("score", "normalized", "norm")], rtol=1e-5)
    # select and curate on Ray: the subset of the in-process engine, row for row
    capsys.readouterr()
    sel = ["select", "--scores", str(tmp_path / "ray.parquet"), "--train", str(train), "--top-k", "5"]
    assert main([*sel, "--out", str(tmp_path / "sel-ray.jsonl"), "--engine", "ray", "--workers", "2"]) == 0
    assert "ray: 2 workers" in capsys.readouterr().out
    assert main([*sel, "--out", str(tmp_path / "sel-local.jsonl")]) == 0
    # curate against a valuation set with one sample more: the Ray run computes that one only
    val2 = _jsonl(tmp_path / "val2.jsonl", make_records(4, seed=4) + make_records(1, seed=9, prefix="new"))
    cur = ["curate", "--train", str(train), "--val", str(val2), "--top-p", "30", "--store", str(tmp_path / "fs"),
           *common]
    assert main([*cur, "--out", str(tmp_path / "cur-ray.jsonl"), "--engine", "ray", "--workers", "1"]) == 0
    assert "ray: 1 worker; 1 features computed" in capsys.readouterr().out   # the rest stored by the score run
    stored = _stored(next(p for p in (tmp_path / "fs").glob("*/*") if p.is_dir()))
    assert len(stored) == 14 + 4 + 1 and set(stored.values()) == {1}
    assert main([*cur, "--out", str(tmp_path / "cur-local.jsonl")]) == 0
    for name, n in (("sel", 5), ("cur", 4)):
        ray_rows, local_rows = ([json.loads(x) for x in (tmp_path / f"{name}-{e}.jsonl").read_text().splitlines()]
                                for e in ("ray", "local"))
        assert [r["sample_id"] for r in ray_rows] == [r["sample_id"] for r in local_rows] and len(ray_rows) == n
        assert all(r["strategy"] == "balanced" for r in ray_rows)


@pytest.mark.parametrize("argv, message", [
    (["--engine", "ray", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["--ray-address", "ray://127.0.0.1:10001"], "--ray-address needs --engine ray"),
    (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be >= 0"),
    (["--engine", "spark"], "invalid choice: 'spark'"),
    (["--engine", "ray", "--method", "exact"], "--method exact needs --engine local"),
    (["--engine", "ray", "--no-store"], "drop --no-store"),
])
def test_cli_engine_options_are_checked_before_any_work(argv, message, tiny_model_dir, tmp_path, capsys):
    from forvalue.cli import main

    train = _jsonl(tmp_path / "t.jsonl", make_records(3))
    with pytest.raises(SystemExit) as e:
        main(["score", "--train", str(train), "--val", str(train), "--out", str(tmp_path / "o.parquet"),
              "--model", str(tiny_model_dir), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_cli_features_on_ray_stream_the_file_and_skip_or_stop_at_bad_rows(local_ray, tiny_model_dir, tmp_path,
                                                                          capsys):
    from forvalue.cli import main
    from forvalue.data.samples import load_samples

    data = _jsonl(tmp_path / "d.jsonl", make_records(6))      # rows 2 and 5 are 68 tokens long, the others < 60
    with data.open("a") as f:
        f.write("{not json\n")                                # row 7
    args = ["features", "--data", str(data), "--model", str(tiny_model_dir), "--device", "cpu", "--max-length", "60",
            "--engine", "ray", "--workers", "1", "--quiet"]
    # a bad row stops the run before any work, with one line naming it
    assert main([*args, "--out", str(tmp_path / "stop")]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("forvalue: error:")]
    assert "d.jsonl, row 7" in line and not list((tmp_path / "stop").glob("*/*/shard-*.json"))
    # skipped: the bad row and the two long samples are reported, the rest stored once
    assert main([*args, "--out", str(tmp_path / "fs"), "--on-error", "skip", "--shard-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert "4 samples: 4 computed, 0 already stored" in out and "ray: 1 worker (1 process)" in out
    assert "skipped 3 rows or samples" in err and "row 7" in err and "row 2, field 'response': 68 tokens" in err
    want = {s.sample_id for s in load_samples(data, on_error="skip").samples}
    (folder,) = [p for p in (tmp_path / "fs").glob("*/*") if p.is_dir()]
    ids = _stored(folder)
    assert len(ids) == 4 and set(ids) < want and set(ids.values()) == {1}


def test_cli_a_bad_sample_on_ray_stops_with_one_line_naming_it(local_ray, tiny_model_dir, tmp_path, capsys):
    from forvalue.cli import main

    data = _jsonl(tmp_path / "d.jsonl", make_records(6))      # rows 2 and 5 are 68 tokens long, the others < 60
    rc = main(["features", "--data", str(data), "--out", str(tmp_path / "fs"), "--model", str(tiny_model_dir),
               "--device", "cpu", "--max-length", "60", "--engine", "ray", "--workers", "1", "--quiet"])
    assert rc == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("forvalue: error:")]
    assert "d.jsonl, row " in line and "longer than the model context of 60 tokens" in line


def test_asking_for_more_gpus_than_the_cluster_has_stops_at_once(local_ray, tiny_model_dir, tmp_path):
    from forvalue.engines.ray_features import featurize
    from forvalue.engines.ray_session import EngineError

    t0 = time.perf_counter()
    with pytest.raises(EngineError, match="need 2 GPUs; the Ray cluster has 0"):
        featurize(_model(tiny_model_dir), _samples(4), CFG, tmp_path / "fs",
                  EngineConfig(engine="ray", workers=2, gpus_per_worker=1))
    assert time.perf_counter() - t0 < 10                   # no actor waited for a GPU


def test_actor_resources_follow_the_cluster():
    from forvalue.engines.ray_features import _plan
    from forvalue.engines.ray_session import EngineError, RaySession

    def session(cpus, gpus=0):
        return RaySession(address=None, started=True, temp_dir=None, startup_s=0, resources={"CPU": cpus, "GPU": gpus})

    assert _plan(session(2), EngineConfig(engine="ray", workers=2)) == (0.5, 0.0, 1)   # one CPU left to Ray Data
    assert _plan(session(16, 4), EngineConfig(engine="ray", workers=4)) == (1.0, 1.0, 4)  # one GPU per actor
    assert _plan(session(16, 4), EngineConfig(engine="ray", workers=4), "cpu")[1] == 0.0
    assert _plan(session(16, 4), EngineConfig(engine="ray", workers=2, gpus_per_worker=2))[1] == 2.0
    with pytest.raises(EngineError, match="need 8 GPUs; the Ray cluster has 4"):
        _plan(session(16, 4), EngineConfig(engine="ray", workers=8))


def test_an_actors_forvalue_error_comes_back_as_itself():
    from forvalue.engines.ray_features import _unwrap
    from forvalue.errors import ModelError

    # what Ray Data raises when an actor's constructor fails: only the text of the original error
    text = ("UDF failed to process a data block.\nTraceback (most recent call last):\n  File \"models.py\", line 9\n"
            "forvalue.errors.ModelError: /m: model folder not found")
    err = _unwrap(RuntimeError(text))
    assert isinstance(err, ModelError) and str(err) == "/m: model folder not found"
    assert _unwrap(RuntimeError("ray.exceptions.ActorDiedError: gone")) is None


def test_an_unreachable_ray_address_fails_in_seconds():
    import socket

    from forvalue.engines.ray_session import EngineError, _check_reachable

    with socket.socket() as s:                      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(EngineError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(EngineError, match="cannot reach"):
        _check_reachable(f"ray://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ConfigError, match="use HOST:PORT"):
        _check_reachable("nohostport")
    _check_reachable("auto")                         # resolved by Ray itself


def test_a_concurrent_writer_of_the_same_samples_never_duplicates_them(local_ray, tiny_model_dir, tmp_path):
    """A duplicated task: an in-process writer starts on the same samples once the Ray run has stored
    its first shard; the two share the work through the store's claims."""
    from forvalue.engines.ray_features import featurize

    samples = _samples(120, seed=6)
    n = len({s.sample_id for s in samples})
    mc = _model(tiny_model_dir)
    lm = mc.load()
    folder = FeatureStore(tmp_path / "fs").folder(lm.fingerprint, CFG)
    box = {}

    def local_writer():
        while not any(folder.glob("shard-*.json")) and "ray" not in box:
            time.sleep(0.005)
        box["local"] = FeatureStore(tmp_path / "fs").ensure(lm, samples, CFG, batch_size=2, shard_size=2)

    t = threading.Thread(target=local_writer)
    t.start()
    box["ray"] = featurize(mc, samples, CFG, tmp_path / "fs", EngineConfig(engine="ray", workers=1), shard_size=3)
    t.join(120)
    ray_res, local_res = box["ray"], box["local"]
    assert ray_res.computed + local_res.computed == n      # each sample computed by exactly one of them
    assert ray_res.computed > 0 and ray_res.reused + ray_res.computed == n
    ids = _stored(folder)
    assert len(ids) == n and set(ids.values()) == {1}
    assert len(local_res.features) == n and local_res.computed > 0   # both wrote


def test_the_store_benchmark_runs_and_orders_alike(local_ray, tmp_path):
    """benchmarks/ray_bench.py --parts store on a small synthetic store: every engine's order equals
    the in-process one, and each row has its ratios to the in-process run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ray_bench", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "ray_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    here, on_ray = bench.store_passes(tmp_path / "store", 600, 5, [2])
    assert (here["engine"], on_ray["engine"]) == ("in-process", "ray, 2 worker(s)")
    assert on_ray["same_order"] is True and on_ray["passes"] == here["passes"] >= 1   # Ray's order: the in-process one
    # each ratio is the in-process time over the row's (their size depends on the machine: the in-process
    # pass of 600 samples can round to 0.00 s), up to the rounding of the times and the ratio to 0.01
    for part in ("score", "select"):
        ratio, mine, base = on_ray[f"{part}_vs_in_process"], on_ray[f"{part}_s"], here[f"{part}_s"]
        assert ratio >= 0 and abs(ratio * mine - base) <= 0.006 * (1 + ratio + mine), (part, ratio, mine, base)
    # part read: both readers hand over every sample of the file
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i} " * 8}) + "\n" for i in range(3000)))
    rows = bench.read_file(data, data.stat().st_size // 4 + 1)
    assert [r["samples"] for r in rows] == [3000, 3000] and "4 segments" in rows[1]["reader"]


def _crash_once(part, start, marker_dir):
    """A pass whose worker dies (os._exit) the first time it reads the first shard."""
    flag = Path(marker_dir) / "crashed"
    if start == 0 and not flag.exists():
        flag.write_text("x")
        os._exit(1)
    return len(part)


def _fail(part, start):
    raise ValueError(f"bad shard at {start}")


def test_a_shard_task_whose_worker_dies_is_retried_and_counted(local_ray, tmp_path):
    import sys

    from ray import cloudpickle

    from forvalue.engines.ray_parts import RayPartRunner
    from forvalue.valuation.feature_source import StoreSource

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this test module
    try:
        store, fp, cfg, _, _ = _synthetic_store(tmp_path / "fs")
        source = StoreSource(store, fp, cfg)
        runner = RayPartRunner(2, local_ray)
        got = dict(runner.map(source, _crash_once, str(tmp_path)))
        assert (tmp_path / "crashed").exists()
        assert sorted(got) == [st for st, _, _ in source.plan()] and sum(got.values()) == len(source)
        st = runner.stats()
        assert st.retried_tasks == 1 and st.batches == len(got)
        # an error of the task itself is not retried: it comes back at once
        with pytest.raises(Exception, match="bad shard at"):
            list(RayPartRunner(2, local_ray).map(source, _fail))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_large_file_is_read_inside_ray_with_its_row_numbers(local_ray, tiny_model_dir, tmp_path):
    """A JSONL file cut into segments read by Ray tasks (segment_bytes small here; 64 MB by default):
    the samples stored are those of the file read by this process and a bad row is skipped and
    reported by its row number. A Parquet file is cut by row groups; a bad row in a later group stops
    the run naming it, and the groups stored before it stay valid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from forvalue.data.samples import load_samples
    from forvalue.engines.ray_features import featurize_file
    from forvalue.engines.ray_read import plan
    from forvalue.errors import DataError

    recs = make_records(40, seed=8)
    lines = [json.dumps(r) for r in recs]
    lines[23] = "{not json"                                          # row 24
    data = tmp_path / "big.jsonl"
    data.write_text("\n".join(lines) + "\n")
    fmt, segments = plan(data, 600)
    assert fmt == "jsonl" and len(segments) > 3 and sum(s.rows for s in segments) == 40
    mc, engine = _model(tiny_model_dir), EngineConfig(engine="ray", workers=1)
    res = featurize_file(mc, data, CFG, tmp_path / "fs", engine, on_error="skip", shard_size=4, segment_bytes=600)
    want = {s.sample_id for s in load_samples(data, on_error="skip").samples}
    ids = _stored(res.folder)
    assert set(ids) == want and len(ids) == 39 and set(ids.values()) == {1}
    assert [reason for sid, reason in res.stats.skipped if sid is None] == [
        f"{data.resolve()}, row 24: invalid JSON: Expecting property name enclosed in double quotes at column 2"]
    # Parquet: segments of row groups; row 30 (the fourth group) has no response
    rows = [r | {"group": str(r["group"])} for r in recs]
    rows[29] = dict(rows[29], response=None)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet", row_group_size=8)
    fmt, segments = plan(tmp_path / "big.parquet", 1)
    assert fmt == "parquet" and [s.rows for s in segments] == [8] * 5
    with pytest.raises(DataError, match=r"big.parquet, row 30, field 'response': missing value"):
        featurize_file(mc, tmp_path / "big.parquet", CFG, tmp_path / "fs3", engine, shard_size=4, segment_bytes=1)
    good = {s.sample_id for s in load_samples(tmp_path / "big.parquet", on_error="skip").samples}
    (folder,) = [p for p in (tmp_path / "fs3").glob("*/*") if p.is_dir()]
    stored = _stored(folder)
    assert set(stored) <= good and set(stored.values()) <= {1}   # what was stored before the stop: valid, once
    assert FeatureStore(tmp_path / "fs3").verify()["ok"]
