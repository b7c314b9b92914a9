"""Checksums on read: a shard whose bytes are not the ones its manifest records is never scored.

A same-size bit flip in a committed shard file (rows or samples, with its mtime put back) is found
by the read that would use it: the shard is moved aside (REASON.txt: checksum mismatch) and
recomputed when a model is at hand, and a read that cannot recompute stops with one line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from forvalue.cli import main
from forvalue.data.samples import samples_from_records
from forvalue.errors import StoreError
from forvalue.store import checksums
from forvalue.store.feature_store import FeatureStore
from forvalue.valuation.features import FeatureConfig
from tests.conftest import make_records

ROOT = Path(__file__).resolve().parent.parent


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _folder(root: Path) -> Path:
    (folder,) = [p for p in root.glob("*/*") if p.is_dir()]
    return folder


def _flip(path: Path, *, keep_mtime: bool = True) -> None:
    """Flip one bit in the middle of ``path``: same size, and (``keep_mtime``) the same mtime."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    with open(path, "r+b") as f:
        f.write(raw)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` but those under ``skip`` (the store)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.parents}


def _scores(path: Path) -> dict[str, float]:
    return {r["sample_id"]: r["score"] for r in pq.read_table(path).to_pylist()}


@pytest.fixture
def scored(tiny_model_dir, tmp_path, capsys):
    """A store of 3 shards of 4 samples, and the scores of the clean store."""
    train = _write(tmp_path / "train.jsonl", make_records(12))
    val = _write(tmp_path / "val.jsonl", make_records(4, seed=1, prefix="v"))
    fs = tmp_path / "fs"
    assert main(["features", "--data", str(train), "--out", str(fs), "--model", str(tiny_model_dir),
                 "--shard-size", "4", "--quiet"]) == 0
    args = ["score", "--train", str(train), "--val", str(val), "--model", str(tiny_model_dir), "--store", str(fs),
            "--quiet"]
    assert main(args + ["--out", str(tmp_path / "clean.parquet")]) == 0
    capsys.readouterr()
    return {"fs": fs, "train": train, "args": args, "clean": _scores(tmp_path / "clean.parquet")}


@pytest.mark.parametrize("kind", ["rows", "samples"])
def test_a_bit_flip_is_set_aside_and_recomputed(scored, tmp_path, capsys, kind):
    fs, folder = scored["fs"], _folder(scored["fs"])
    manifest = sorted(folder.glob("shard-*.json"))[1]
    victim = folder / json.loads(manifest.read_text())["files"][kind]
    _flip(victim)
    assert main(["store", "verify", "--store", str(fs)]) == 1           # the deep check sees it
    capsys.readouterr()
    before = _snapshot(tmp_path, fs)
    assert main(scored["args"] + ["--out", str(tmp_path / "again.parquet")]) == 0
    err = capsys.readouterr().err
    assert f"{manifest.name}: damaged ({victim.name}: checksum mismatch)" in err and "computed again" in err
    assert err.count("checksum mismatch") == 1, err                      # said once
    assert _scores(tmp_path / "again.parquet") == scored["clean"]        # exactly the clean store's scores
    (moved,) = (folder / "damaged").iterdir()
    assert (moved / "REASON.txt").read_text().strip() == f"{victim.name}: checksum mismatch"
    assert (moved / victim.name).exists() and (moved / manifest.name).exists()
    assert manifest.exists() and victim.exists()                         # computed again, committed again
    assert _snapshot(tmp_path, fs) == before | {"again.parquet": _snapshot(tmp_path, fs)["again.parquet"]}
    assert main(["store", "verify", "--store", str(fs)]) == 0


@pytest.mark.parametrize("kind,strategy", [("samples", "raw-mean"), ("rows", "balanced")])
def test_select_from_a_flipped_store_stops_with_one_line(scored, tmp_path, capsys, kind, strategy):
    """A model-less select cannot recompute: it stops (exit 2) with one line naming the shard, writes
    nothing, and the shard is set aside for the next feature run."""
    assert main(scored["args"] + ["--out", str(tmp_path / "scores.parquet")]) == 0
    folder = _folder(scored["fs"])
    manifest = sorted(folder.glob("shard-*.json"))[0]
    victim = folder / json.loads(manifest.read_text())["files"][kind]
    _flip(victim)
    capsys.readouterr()
    out = tmp_path / "kept.jsonl"
    rc = main(["select", "--scores", str(tmp_path / "scores.parquet"), "--train", str(scored["train"]),
               "--out", str(out), "--top-p", "50", "--strategy", strategy])
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("forvalue: warning: ")]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"forvalue: error: {manifest}: damaged shard moved aside ({victim.name}: checksum "
                             f"mismatch)")
    assert not out.exists() and not manifest.exists()
    (moved,) = (folder / "damaged").iterdir()
    assert (moved / "REASON.txt").read_text().strip() == f"{victim.name}: checksum mismatch"


def test_the_process_cache_and_the_stamps_see_a_changed_file(tiny_lm, tmp_path, monkeypatch):
    """A file is hashed once per state: this process does not hash it again, a later process trusts
    the stamp of the state it hashed; a write (size, mtime or only ctime changed) is hashed again."""
    samples = samples_from_records(make_records(8)).samples
    store = FeatureStore(tmp_path / "fs", checksums="full")
    store.ensure(tiny_lm, samples, shard_size=4)
    fp, cfg = tiny_lm.fingerprint, FeatureConfig()
    folder = _folder(tmp_path / "fs")
    monkeypatch.setattr(checksums, "_VERIFIED", {})                     # as a new process
    n0 = checksums.hashed()["files"]
    store.load(fp, cfg)
    assert checksums.hashed()["files"] == n0 + 4                         # full: each file hashed once ...
    store.load(fp, cfg)
    assert checksums.hashed()["files"] == n0 + 4                         # ... per process
    monkeypatch.setattr(checksums, "_VERIFIED", {})
    stamped = FeatureStore(tmp_path / "fs")
    stamped.load(fp, cfg)
    assert checksums.hashed()["files"] == n0 + 4                         # stamp: the states hashed before
    # changed after it was verified: a bit flip with its mtime put back, then one that changes it
    for keep_mtime in (True, False):
        info = json.loads(sorted(folder.glob("shard-*.json"))[0].read_text())
        victim = folder / info["files"]["rows"]
        _flip(victim, keep_mtime=keep_mtime)
        with pytest.raises(StoreError, match=f"{victim.name}: checksum mismatch"):
            stamped.load(fp, cfg)
        stamped.ensure(tiny_lm, samples, shard_size=4)                   # computed again
        assert stamped.load(fp, cfg, [s.sample_id for s in samples]).sample_ids == [s.sample_id for s in samples]
    # a truncated-and-regrown file (other size) is caught before any hash
    info = json.loads(sorted(folder.glob("shard-*.json"))[0].read_text())
    victim = folder / info["files"]["samples"]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.warns(RuntimeWarning, match="bytes, the manifest records"):
        assert len(stamped.load(fp, cfg)) == 4


def test_a_copied_store_is_hashed_then_stamped(tiny_lm, tmp_path):
    """A store copied elsewhere (new inodes) is hashed by its first reader, which stamps it; the next
    process hashes nothing (a process each, as the CLI runs)."""
    samples = samples_from_records(make_records(8)).samples
    FeatureStore(tmp_path / "fs").ensure(tiny_lm, samples, shard_size=4)
    shutil.copytree(tmp_path / "fs", tmp_path / "copy")
    code = ("import sys; from forvalue.store.feature_store import FeatureStore; from forvalue.store.checksums import "
            "hashed; s = FeatureStore(sys.argv[1]); [s.read_shard(m.parent, __import__('json').loads(m.read_text())) "
            "for m in sorted(__import__('pathlib').Path(sys.argv[1]).glob('*/*/shard-*.json'))]; "
            "print(hashed()['files'])")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "copy")], env=env, capture_output=True,
                           text=True, timeout=120) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["4", "0"], [r.stderr for r in runs]


def test_a_parquet_shard_is_checked_too(tiny_lm, tmp_path):
    """The first (Parquet) format: a flipped byte in either file is a checksum mismatch, not a score."""
    feats = FeatureStore(tmp_path / "fs").ensure(tiny_lm, samples_from_records(make_records(4)).samples).features
    for kind in ("rows", "samples"):
        folder = tmp_path / f"v1-{kind}"
        manifest = FeatureStore.write_shard_file(folder, feats, {"feature_config": {"version": 1}})
        info = json.loads(manifest.read_text())
        assert info["files"]["rows"].endswith(".parquet")
        store = FeatureStore(tmp_path / "v1")
        back = store.read_shard(folder, info)
        assert np.array_equal(back.vectors, feats.vectors)
        _flip(folder / info["files"][kind])
        with pytest.raises(StoreError, match=f"{info['files'][kind]}: checksum mismatch"):
            FeatureStore(tmp_path / "v1", checksums="full").read_shard(folder, info)
        assert not manifest.exists() and len(list((folder / "damaged").iterdir())) == 1


def test_the_scale_bench_times_each_checksum_mode(tmp_path):
    """`forvalue bench scale --checksums`: the writer's stamps mean the default hashes nothing in a
    fresh process, `full` hashes every byte of the shard files, and all modes score alike."""
    from forvalue.benchmarks.scale import build_store, checksum_cost

    folder = build_store(tmp_path / "store", 300, rows=8, r=8, shard_size=100)
    rows = {row["checksums"]: row for row in checksum_cost(tmp_path / "store", 8, 8, 5, rounds=1)}
    assert sorted(rows) == ["full", "off", "stamp"]
    assert rows["off"]["hashed_bytes"] == rows["stamp"]["hashed_bytes"] == 0
    assert rows["full"]["hashed_bytes"] == sum(p.stat().st_size for p in folder.glob("shard-*.arrow"))
    # no timing comparison here (machines are shared): `off` checks nothing, the others report a time
    assert rows["off"]["check_seconds"] == 0 and rows["full"]["check_seconds"] >= 0 <= rows["stamp"]["check_seconds"]


def test_stamps_never_lead_outside_the_store(tiny_lm, tmp_path, monkeypatch):
    """A stamps folder replaced by a link to an outside folder that holds a forged stamp (the flipped
    file's state with the manifest's checksum): the link is not followed, the flip is found, and the
    outside folder is neither read nor written."""
    samples = samples_from_records(make_records(4)).samples
    store = FeatureStore(tmp_path / "fs")
    store.ensure(tiny_lm, samples, shard_size=4)
    folder = _folder(tmp_path / "fs")
    info = json.loads(sorted(folder.glob("shard-*.json"))[0].read_text())
    victim = folder / info["files"]["rows"]
    _flip(victim)
    outside = tmp_path / "outside"
    shutil.move(folder / checksums.VERIFIED, outside)
    (folder / checksums.VERIFIED).symlink_to(outside)
    forged = {"identity": list(checksums.identity(victim, victim.stat())[1:]),
              "sha256": info["checksums"]["rows"]["sha256"]}
    (outside / f"{victim.name}.json").write_text(json.dumps(forged))
    before = _snapshot(outside, tmp_path / "none")
    monkeypatch.setattr(checksums, "_VERIFIED", {})                     # as a new process
    with pytest.raises(StoreError, match=f"{victim.name}: checksum mismatch"):
        FeatureStore(tmp_path / "fs").load(tiny_lm.fingerprint, FeatureConfig())
    store.ensure(tiny_lm, samples, shard_size=4)                         # recomputed, nothing stamped outside
    assert _snapshot(outside, tmp_path / "none") == before
