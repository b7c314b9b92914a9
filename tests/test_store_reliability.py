"""The feature store under faults: killed writers, damaged shards, concurrent writers, verify/compact."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from forvalue.cli import main
from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig
from forvalue.store.feature_store import FeatureStore
from tests.conftest import make_records

ROOT = Path(__file__).resolve().parent.parent


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stored_ids(folder: Path) -> Counter:
    """How often each sample id is stored across the folder's committed shards."""
    c = Counter()
    for m in folder.glob("shard-*.json"):
        c.update(json.loads(m.read_text())["sample_ids"])
    return c


def _folder(root: Path) -> Path:
    (folder,) = [p for p in root.glob("*/*") if p.is_dir()]
    return folder


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TRANSFORMERS_VERBOSITY="error")


KILL_DURING_WRITE = """
import os, signal, sys
import forvalue.store.shard_format as shard_format
real = shard_format.atomic_write
calls = {"n": 0}
def dying(path, write):
    calls["n"] += 1
    if calls["n"] == 3:                      # the rows file of the second shard: half of it, then kill -9
        def half(tmp):
            with open(tmp, "wb") as f:
                f.write(b"ARROW1" + b"x" * 100)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, half)
    return real(path, write)
shard_format.atomic_write = dying
from forvalue.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_shard_write_then_rerun(tiny_model_dir, tmp_path, capsys):
    data = _write(tmp_path / "d.jsonl", make_records(10))
    fs = tmp_path / "fs"
    args = ["features", "--data", str(data), "--out", str(fs), "--model", str(tiny_model_dir), "--shard-size", "4",
            "--quiet"]
    res = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, *args], env=_env(), capture_output=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == -signal.SIGKILL
    folder = _folder(fs)
    assert list(folder.glob(".*.tmp"))                      # the killed writer left a half-written file
    assert sum(_stored_ids(folder).values()) == 4           # one committed shard
    assert main(args) == 0                                  # the same command again (in this process)
    assert "6 computed, 4 already stored" in capsys.readouterr().out
    ids = _stored_ids(folder)
    assert len(ids) == 10 and set(ids.values()) == {1}        # every sample exactly once
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("*.tmp"))


def test_kill_9_at_a_random_moment_then_rerun(tiny_model_dir, tmp_path):
    N = 400   # enough that the run cannot finish in the moments before the kill, even on an idle machine
    data = _write(tmp_path / "d.jsonl", make_records(N))
    fs = tmp_path / "fs"
    args = ["features", "--data", str(data), "--out", str(fs), "--model", str(tiny_model_dir), "--shard-size", "2",
            "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "forvalue.cli", *args], env=_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(fs.glob("*/*/shard-*.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    folder = _folder(fs)
    before = sum(_stored_ids(folder).values())
    assert 0 < before < N
    # the rerun completes the store; its shards may be larger (the killed run's were small so that the
    # kill finds shards committed and others in the making; 200 shard commits would take seconds)
    rerun = list(args)
    rerun[rerun.index("--shard-size") + 1] = "64"
    assert main(rerun) == 0
    ids = _stored_ids(folder)
    unique = len({smp.sample_id for smp in samples_from_records(make_records(N)).samples})   # repeats share an id
    assert len(ids) == unique and set(ids.values()) == {1}
    assert not list(folder.glob(".*.tmp"))


def test_damaged_shard_is_moved_aside_and_recomputed(tiny_lm, tmp_path, capsys):
    store = FeatureStore(tmp_path / "fs")
    samples = samples_from_records(make_records(8)).samples
    first = store.ensure(tiny_lm, samples, shard_size=4)
    folder = store.folder(tiny_lm.fingerprint, FeatureConfig())
    victim = sorted(folder.glob("shard-*[0-9a-f].rows.arrow"))[0]
    victim.write_bytes(victim.read_bytes()[:50])               # truncated after it was committed
    again = FeatureStore(tmp_path / "fs")
    with pytest.warns(RuntimeWarning, match="damaged shard"):
        res = again.ensure(tiny_lm, samples, shard_size=4)
    assert (res.computed, res.reused) == (4, 4)
    assert len(again.damaged) == 1 and "bytes" in again.damaged[0]["reason"]
    moved = Path(again.damaged[0]["moved_to"])
    assert (moved / victim.name).exists() and "REASON" in " ".join(p.name for p in moved.iterdir())
    assert np.allclose(res.features.vectors, first.features.vectors)
    assert set(_stored_ids(folder).values()) == {1} and len(_stored_ids(folder)) == 8
    # a shard whose bytes changed but not its size: the quick check misses it, reading does not
    victim = sorted(folder.glob("shard-*[0-9a-f].rows.arrow"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-10:-6] = b"\xff\xff\xff\xff"                          # corrupt the footer length
    victim.write_bytes(bytes(raw))
    third = FeatureStore(tmp_path / "fs")
    report = third.verify()
    assert not report["ok"] and len(report["damaged"]) == 1 and "checksum" in report["damaged"][0]["reason"]
    with pytest.warns(RuntimeWarning):
        res = third.ensure(tiny_lm, samples, shard_size=4)
    assert res.computed == 4 and len(third.damaged) == 1
    assert third.verify()["ok"]
    # the CLI says what it repaired
    data = _write(tmp_path / "d.jsonl", make_records(8))
    victim = sorted(folder.glob("shard-*.samples.arrow"))[0]
    victim.unlink()
    capsys.readouterr()
    assert main(["features", "--data", str(data), "--out", str(tmp_path / "fs"), "--model", tiny_lm.source,
                 "--shard-size", "4", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "4 computed, 4 already stored" in out.out and "is missing" in out.err and "moved aside" in out.err


def test_verify_and_compact(tiny_lm, tmp_path, capsys):
    store = FeatureStore(tmp_path / "fs")
    samples = samples_from_records(make_records(7)).samples
    feats = store.ensure(tiny_lm, samples, shard_size=3).features
    store.write_shard(feats.select([s.sample_id for s in samples[:2]]), tiny_lm.fingerprint, FeatureConfig())
    (store.folder(tiny_lm.fingerprint, FeatureConfig()) / ".shard-0123456789abcdef.parquet.x.tmp").write_bytes(b"")
    report = store.verify()
    assert (report["shards"], report["samples"], report["duplicates"], report["stale_tmp"]) == (4, 7, 2, 1)
    assert main(["store", "verify", "--store", str(tmp_path / "fs")]) == 1
    assert "2 samples stored more than once" in capsys.readouterr().out
    assert main(["store", "compact", "--store", str(tmp_path / "fs"), "--shard-size", "4"]) == 0
    assert "4 shards -> 2, 7 samples, 2 duplicates removed" in capsys.readouterr().out
    assert main(["store", "verify", "--store", str(tmp_path / "fs")]) == 0
    assert capsys.readouterr().out.strip().endswith("sound")
    loaded = store.load(tiny_lm.fingerprint, FeatureConfig(), [s.sample_id for s in samples])
    assert np.allclose(loaded.vectors, feats.vectors) and np.array_equal(loaded.token_ids, feats.token_ids)
    assert main(["store", "verify", "--store", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("entry", ["absolute", "parent", "link"])
def test_a_manifest_never_reaches_outside_the_store(tiny_lm, tmp_path, capsys, entry):
    """A manifest whose file entry is an absolute path or climbs out of the folder, or a data file
    replaced by a link to an outside file: the shard is damaged, only its manifest is set aside, and
    compaction, verification and reading never move, delete or read the outside file."""
    store = FeatureStore(tmp_path / "fs")
    samples = samples_from_records(make_records(6)).samples
    store.ensure(tiny_lm, samples, shard_size=3)
    folder = _folder(tmp_path / "fs")
    manifest = sorted(folder.glob("shard-*.json"))[0]
    info = json.loads(manifest.read_text())
    outside = tmp_path / "V" / info["files"]["rows"]   # the shard's rows file: sizes, checksums and format match
    outside.parent.mkdir()
    outside.write_bytes((folder / info["files"]["rows"]).read_bytes())
    original = outside.read_bytes()
    if entry == "link":
        (folder / info["files"]["rows"]).unlink()
        (folder / info["files"]["rows"]).symlink_to(outside)
    else:
        info["files"]["rows"] = str(outside) if entry == "absolute" else os.path.relpath(outside, folder)
        manifest.write_text(json.dumps(info))
    assert main(["store", "verify", "--store", str(tmp_path / "fs")]) == 1
    assert main(["store", "compact", "--store", str(tmp_path / "fs")]) == 0
    capsys.readouterr()
    assert outside.read_bytes() == original                        # not moved, not deleted
    assert not manifest.exists() and len(list((folder / "damaged").glob("*/shard-*.json"))) == 1
    # the 3 samples of the damaged shard are computed again; the other 3 are read from the store
    res = store.ensure(tiny_lm, samples, shard_size=3)
    assert (res.computed, res.reused) == (3, 3) and outside.read_bytes() == original


def test_a_shared_store_follows_the_umask_and_a_permission_problem_is_not_damage(tiny_lm, tmp_path, monkeypatch,
                                                                                   capsys):
    """Files get the mode a plain open would (0666 less the umask), so a team's store is readable to
    the team; a file this user may not read stops with one line naming it, and nothing is set aside."""
    import stat
    from pathlib import Path

    from forvalue import io as fio
    from forvalue.errors import StoreError

    samples = samples_from_records(make_records(4)).samples
    for mask, want in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        fio._umask.cache_clear()
        try:
            store = FeatureStore(tmp_path / f"fs{mask:o}")
            store.ensure(tiny_lm, samples, shard_size=2)
        finally:
            os.umask(old)
            fio._umask.cache_clear()
        files = [p for p in _folder(tmp_path / f"fs{mask:o}").glob("shard-*")]
        assert len(files) == 6 and {stat.S_IMODE(p.stat().st_mode) for p in files} == {want}
    # a manifest, then a data file, this user may not read (simulated: the tests may run as root)
    folder = _folder(tmp_path / "fs22")
    manifest = sorted(folder.glob("shard-*.json"))[0]
    real_read = Path.read_text

    def denied(self, *a, **k):
        if self == manifest:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(StoreError, match=f"{manifest}: no permission to read it"):
        FeatureStore(tmp_path / "fs22").load(tiny_lm.fingerprint, FeatureConfig())
    assert main(["store", "verify", "--store", str(tmp_path / "fs22")]) == 2
    assert capsys.readouterr().err.count("no permission to read it") == 1
    monkeypatch.setattr(Path, "read_text", real_read)
    rows = folder / json.loads(manifest.read_text())["files"]["rows"]
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != rows and real_access(p, mode))
    with pytest.raises(StoreError, match=f"{rows}: no permission to read it"):
        FeatureStore(tmp_path / "fs22").load(tiny_lm.fingerprint, FeatureConfig())
    assert manifest.exists() and rows.exists() and not (folder / "damaged").exists()


CONCURRENT = """
import sys
from forvalue.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_concurrent_writers_compute_each_sample_once(tiny_model_dir, tmp_path):
    recs = make_records(40)
    a = _write(tmp_path / "a.jsonl", recs[:30])
    b = _write(tmp_path / "b.jsonl", recs[10:])      # 20 samples in common
    fs = tmp_path / "fs"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, "features", "--data", str(d), "--out", str(fs),
                               "--model", str(tiny_model_dir), "--shard-size", "3", "--batch-size", "1", "--quiet"],
                              env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in (a, b)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    computed = sum(int(o[0].split(" computed")[0].split()[-1]) for o in outs)
    ids = _stored_ids(_folder(fs))
    assert len(ids) == 40 and set(ids.values()) == {1}        # nothing stored twice
    assert computed == 40                                      # nothing computed twice
    assert not list(_folder(fs).glob("locks/claim-*"))


DAGSTER_FEATURE_RUN = """
import sys
from pathlib import Path
from forvalue_assets.testing import platform_for_test
from resources import FeatureStoreResource
root, model, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
# A fast machine finishes 40 tiny samples before the parent's kill lands: after its second shard the run
# stalls (the parent kills it there), so the kill always falls in the middle of the run.
import time
from forvalue.store.feature_store import FeatureStore
_write, _count = FeatureStore.write_shard, [0]
def write_shard(self, *args, **kwargs):
    out = _write(self, *args, **kwargs)
    _count[0] += 1
    if _count[0] == 2:
        time.sleep(600)
    return out
FeatureStore.write_shard = write_shard
fs = FeatureStoreResource(root=str(root / "features"), k=4, r=8, shard_size=2)
with platform_for_test(root, model=model, batch_size=1, resources={"feature_store": fs}) as p:
    p.register("train", "t1", data)
"""


def test_kill_9_of_a_dagster_feature_run_then_rerun(tiny_model_dir, tmp_path, monkeypatch):
    from forvalue_assets.testing import platform_for_test
    from resources import FeatureStoreResource

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    data = _write(tmp_path / "t1.jsonl", make_records(40))
    root = tmp_path / "platform"
    proc = subprocess.Popen([sys.executable, "-c", DAGSTER_FEATURE_RUN, str(root), str(tiny_model_dir), str(data)],
                            env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list((root / "features").glob("*/*/shard-*.json"))) < 2:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    folder = _folder(root / "features")
    assert sum(_stored_ids(folder).values()) == 4              # two shards of two, the rest never written
    fs = FeatureStoreResource(root=str(root / "features"), k=4, r=8, shard_size=2)
    with platform_for_test(root, model=str(tiny_model_dir), batch_size=1, resources={"feature_store": fs}) as p:
        res = p.register("train", "t1", data)
        assert res.success
    ids = _stored_ids(folder)
    assert len(ids) == 40 and set(ids.values()) == {1}
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("locks/claim-*"))
