"""The incoming-folder sensor and the nightly schedule, on temporary folders and instances."""

import datetime as dt
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, build_schedule_context, build_sensor_context

from forvalue.catalog.db import KIND_DATASET
from forvalue_assets.definitions import platform_schedules, platform_sensors
from forvalue_assets.partitions import pair_key
from forvalue_assets.settings import EVAL_SUBDIR, find_incoming_file
from forvalue_assets.testing import platform_for_test
from sensors.incoming import load_cursor, scan

# The sensor and the schedule as the code location builds them (sensors/ factories, given the ingest
# and curation jobs and partitions).
(incoming_files,) = [s for s in platform_sensors() if s.name == "incoming_files"]
(nightly_curation,) = platform_schedules()


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n, word="plus"):
    return [{"id": f"{word}{i}", "prompt": f"What is {i} {word} {i}?", "response": f"It is {i}{i}."} for i in range(n)]


@pytest.fixture
def env(tmp_path, monkeypatch):
    incoming = tmp_path / "incoming"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FORVALUE_INCOMING", str(incoming))
    monkeypatch.setenv("FORVALUE_SETTLE_SECONDS", "0")
    monkeypatch.setenv("FORVALUE_DEMO", "0")
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster_home")) as instance:
        yield incoming, instance


def tick(instance, cursor=None) -> SensorResult:
    result = incoming_files(build_sensor_context(instance=instance, cursor=cursor))
    # what the daemon does with the result: add the requested partitions
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_sensor_adds_partitions_requests_runs_then_nothing(env):
    incoming, instance = env
    write_jsonl(incoming / "train" / "alpha.jsonl", rows(3))
    pq.write_table(pa.Table.from_pylist(rows(2, "times")), incoming / "train" / "beta.parquet")
    write_jsonl(incoming / "valuation" / "gold.jsonl", rows(2, "minus"))
    (incoming / "train" / ".hidden.jsonl").write_text("{}\n")
    (incoming / "train" / "partial.jsonl.tmp").write_text("{")
    (incoming / "train" / "bad name!.jsonl").write_text("{}\n")
    (incoming / "train" / "notes.txt").write_text("ignored")

    first = tick(instance)
    adds = {r.partitions_def_name: sorted(r.partition_keys) for r in first.dynamic_partitions_requests}
    assert adds == {"training_datasets": ["alpha", "beta"], "valuation_sets": ["gold"]}
    reqs = {(r.job_name, r.partition_key): r for r in first.run_requests}
    assert set(reqs) == {("register_training_dataset", "alpha"), ("register_training_dataset", "beta"),
                         ("register_valuation_set", "gold")}
    alpha = reqs[("register_training_dataset", "alpha")]
    cfg = alpha.run_config["ops"]["training_dataset"]["config"]
    assert cfg["path"] == str((incoming / "train" / "alpha.jsonl").resolve())
    assert alpha.run_key.startswith(f"train/alpha/{cfg['content_hash'][:16]}/")
    assert reqs[("register_valuation_set", "gold")].run_config["ops"]["valuation_set"]["config"]["path"].endswith("gold.jsonl")
    assert instance.get_dynamic_partitions("training_datasets") == ["alpha", "beta"]

    # nothing new: nothing requested, no partitions added
    second = tick(instance, first.cursor)
    assert not second.run_requests and not second.dynamic_partitions_requests
    assert "no new or changed files" in str(second.skip_reason)
    # touched (or copied again) with the same content: still nothing
    path = incoming / "train" / "alpha.jsonl"
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    third = tick(instance, second.cursor)
    assert not third.run_requests

    # changed content: a run for that name (new content hash), no new partition
    write_jsonl(path, rows(4))
    fourth = tick(instance, third.cursor)
    assert [(r.job_name, r.partition_key) for r in fourth.run_requests] == [("register_training_dataset", "alpha")]
    assert not fourth.dynamic_partitions_requests
    assert fourth.run_requests[0].run_key != alpha.run_key

    # back to the first content: registered again (the run key differs by the change time)
    write_jsonl(path, rows(3))
    fifth = tick(instance, fourth.cursor)
    assert [r.partition_key for r in fifth.run_requests] == ["alpha"]
    assert fifth.run_requests[0].run_config == alpha.run_config
    assert fifth.run_requests[0].run_key != alpha.run_key

    # a new valuation set: its own partition and registration run only
    write_jsonl(incoming / "valuation" / "silver.jsonl", rows(2, "over"))
    sixth = tick(instance, fifth.cursor)
    assert [(r.job_name, r.partition_key) for r in sixth.run_requests] == [("register_valuation_set", "silver")]
    assert [list(r.partition_keys) for r in sixth.dynamic_partitions_requests] == [["silver"]]


def test_high_water_mark_defers_files_still_being_written(tmp_path):
    f = write_jsonl(tmp_path / "train" / "fresh.jsonl", rows(1))
    stamp = max(os.stat(f).st_mtime_ns, os.stat(f).st_ctime_ns)
    cursor = load_cursor(None)
    changes, cursor2 = scan(tmp_path, cursor, now_ns=stamp + 1_000_000_000, settle_s=5)
    assert changes == [] and cursor2["hwm"] == 0            # too fresh: next tick
    changes, cursor3 = scan(tmp_path, cursor2, now_ns=stamp + 6_000_000_000, settle_s=5)
    assert [c.name for c in changes] == ["fresh"] and cursor3["hwm"] == stamp
    changes, cursor4 = scan(tmp_path, cursor3, now_ns=stamp + 9_000_000_000, settle_s=5)
    assert changes == [] and cursor4 == cursor3
    assert load_cursor("not json") == {"hwm": 0, "seen": {}}


def test_sensor_seeds_demo_data_once(env, monkeypatch):
    incoming, instance = env
    monkeypatch.setenv("FORVALUE_DEMO", "1")
    first = tick(instance)
    assert (incoming / "train" / "demo_train.jsonl").exists() and (incoming / "valuation" / "demo_val.jsonl").exists()
    assert sorted((r.job_name, r.partition_key) for r in first.run_requests) == [
        ("register_training_dataset", "demo_train"), ("register_valuation_set", "demo_val")]
    (incoming / "train" / "demo_train.jsonl").unlink()
    second = tick(instance, first.cursor)            # the folder exists now: no re-seeding
    assert not (incoming / "train" / "demo_train.jsonl").exists() and not second.run_requests


def test_sensor_run_requests_execute_and_schedule_covers_pairs(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FORVALUE_SETTLE_SECONDS", "0")
    monkeypatch.setenv("FORVALUE_DEMO", "0")
    with platform_for_test(tmp_path, model=tiny_model_dir, persistent=True) as p:
        monkeypatch.setenv("FORVALUE_INCOMING", str(p.incoming))
        (p.incoming / "train").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows(3)), p.incoming / "train" / "t1.parquet")  # Parquet in,
        p.write_jsonl("valuation", "v1", rows(2, "minus"))                                    # JSONL too
        result = tick(p.instance)
        for req in result.run_requests:  # the run config the sensor builds is what the jobs accept
            run = p.defs.resolve_job_def(req.job_name).execute_in_process(
                run_config=req.run_config, partition_key=req.partition_key, instance=p.instance, tags=req.tags)
            assert run.success
        cat = p.catalog()
        t1 = cat.current_set(KIND_DATASET, "t1")
        assert t1["source_path"] == str((p.incoming / "train" / "t1.parquet").resolve()) and t1["format"] == "parquet"
        assert t1["version"] == [r for r in result.run_requests if r.partition_key == "t1"][0].tags["forvalue/content_hash"]

        # nightly: one curation run per pair whose features exist (t2 is registered but has none)
        p.instance.add_dynamic_partitions("training_datasets", ["t2"])
        when = dt.datetime(2026, 1, 2, 2, 0, tzinfo=dt.timezone.utc)
        reqs = nightly_curation(build_schedule_context(instance=p.instance, scheduled_execution_time=when))
        assert [r.partition_key for r in reqs] == [pair_key("t1", "v1")]
        assert reqs[0].run_key == "nightly-2026-01-02/t1|v1"
        run = p.defs.resolve_job_def("curation").execute_in_process(partition_key=reqs[0].partition_key,
                                                                    instance=p.instance, tags=reqs[0].tags)
        assert run.success and cat.latest_subset("t1", "v1")["n_total"] == 3
        exported = [json.loads(x) for x in open(cat.latest_subset("t1", "v1")["jsonl_path"])]
        assert all(set(r) == {"id", "prompt", "response"} for r in exported)


def test_one_bad_file_never_stops_the_others(env, monkeypatch, tmp_path):
    import errno

    import sensors.incoming as inc

    incoming, instance = env
    write_jsonl(incoming / "train" / "good.jsonl", rows(2))
    broken = write_jsonl(incoming / "train" / "broken.jsonl", rows(2, "minus"))
    (incoming / "train" / "bad name!.jsonl").write_text("{}\n")
    secret = write_jsonl(tmp_path / "secret.jsonl", rows(1, "secret"))
    (incoming / "train" / "outside.jsonl").symlink_to(secret)                  # a link that leaves incoming/
    write_jsonl(incoming / "valuation" / "v.jsonl", rows(1, "over"))
    (incoming / "train" / "inside.jsonl").symlink_to(incoming / "valuation" / "v.jsonl")   # stays inside: fine
    real = inc.content_hash

    def flaky(path):
        if Path(path).name == "broken.jsonl":
            raise OSError(errno.EIO, "Input/output error")
        return real(path)

    monkeypatch.setattr(inc, "content_hash", flaky)
    first = tick(instance)
    reqs = {r.partition_key: r for r in first.run_requests}
    assert set(reqs) == {"good", "broken", "inside", "v"}                       # the tick went on
    assert "/unreadable/" in reqs["broken"].run_key                             # its run fails and names it
    cfg = reqs["broken"].run_config["ops"]["training_dataset"]["config"]
    assert cfg["path"] == str(broken.resolve()) and cfg["content_hash"] == ""
    rejected = json.loads(first.cursor)["rejected"]
    assert set(map(lambda p: Path(p).name, rejected)) == {"broken.jsonl", "bad name!.jsonl", "outside.jsonl"}
    assert "not followed" in rejected[str(incoming / "train" / "outside.jsonl")]
    (obs,) = [e for e in first.asset_events if e.asset_key.to_user_string() == "training_dataset"]
    table = obs.metadata["rejected_files"]
    assert {r.data["file"] for r in table.records} == set(rejected) and obs.metadata["rejected_count"].value == 3
    # the file can be read again: registered on the next tick, though its change time is old
    monkeypatch.setattr(inc, "content_hash", real)
    second = tick(instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["broken"]
    assert "/unreadable/" not in second.run_requests[0].run_key
    assert "broken.jsonl" not in " ".join(json.loads(second.cursor).get("rejected", {}))
    assert [e.asset_key.to_user_string() for e in second.asset_events] == ["training_dataset"]
    third = tick(instance, second.cursor)                                        # nothing changed: no events
    assert not third.run_requests and not third.asset_events
    # links that leave incoming/ are registered only when the setting allows it
    monkeypatch.setenv("FORVALUE_INCOMING_FOLLOW_LINKS", "1")
    os.utime(incoming / "train" / "outside.jsonl", follow_symlinks=False)
    fourth = tick(instance, None)
    assert "outside" in {r.partition_key for r in fourth.run_requests}


# ----------------------------------------------------------------------------- link rules
@pytest.fixture
def platform(tmp_path, monkeypatch):
    """The platform on temporary folders, the incoming folder its own; registration runs never load the
    model (only the registration asset of a job is executed)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FORVALUE_SETTLE_SECONDS", "0")
    monkeypatch.setenv("FORVALUE_DEMO", "0")
    with platform_for_test(tmp_path / "platform", model=str(tmp_path / "no-model")) as p:
        monkeypatch.setenv("FORVALUE_INCOMING", str(p.incoming))
        yield p


def register(p, req):
    """Execute the registration asset of a sensor's run request, as the daemon would launch it."""
    asset = "training_dataset" if req.job_name == "register_training_dataset" else "valuation_set"
    return p.defs.resolve_job_def(req.job_name).execute_in_process(
        run_config=req.run_config, partition_key=req.partition_key, instance=p.instance, tags=req.tags,
        raise_on_error=False, asset_selection=[AssetKey(asset)])


def failure_of(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.event_specific_data.error)


def test_linked_watched_folder_outside_is_refused_unless_allowed(platform, monkeypatch, tmp_path):
    p = platform
    outside = tmp_path / "elsewhere"
    write_jsonl(outside / "secret.jsonl", rows(2, "secret"))
    write_jsonl(p.incoming / "valuation" / "v.jsonl", rows(1, "over"))
    (p.incoming / "train").symlink_to(outside, target_is_directory=True)          # incoming/train -> outside
    (p.incoming / EVAL_SUBDIR).symlink_to(outside, target_is_directory=True)
    write_jsonl(outside / "v.jsonl", rows(1, "secret"))
    first = tick(p.instance)
    assert [r.partition_key for r in first.run_requests] == ["v"]                # valuation/ still works
    rejected = json.loads(first.cursor)["rejected"]
    reason = rejected[str(p.incoming / "train")]
    assert "outside the incoming folder" in reason and "FORVALUE_INCOMING_FOLLOW_LINKS=1" in reason
    assert set(rejected) == {str(p.incoming / "train")}                           # its files are not even listed
    (obs,) = [e for e in first.asset_events if e.asset_key.to_user_string() == "training_dataset"]
    assert [r.data["file"] for r in obs.metadata["rejected_files"].records] == [str(p.incoming / "train")]
    second = tick(p.instance, first.cursor)                     # nothing to do: the skip reason says why
    assert not second.run_requests
    skipped = str(second.skip_reason)
    assert f"{p.incoming / 'train'}: a link to {outside.resolve()}, outside the incoming folder" in skipped
    # a registration launched by hand finds nothing there, and evaluation never reads incoming/eval
    assert find_incoming_file("train", "secret") is None and find_incoming_file(EVAL_SUBDIR, "v") is None
    p.instance.add_dynamic_partitions("training_datasets", ["secret"])
    res = p.defs.resolve_job_def("register_training_dataset").execute_in_process(
        partition_key="secret", instance=p.instance, raise_on_error=False,
        asset_selection=[AssetKey("training_dataset")])
    assert not res.success and "not read: " in failure_of(res) and "outside the incoming folder" in failure_of(res)
    cat = p.catalog()
    assert cat.current_set(KIND_DATASET, "secret") is None and cat.count("datasets") == 0

    # FORVALUE_INCOMING_FOLLOW_LINKS=1: the linked folder's files are registered
    monkeypatch.setenv("FORVALUE_INCOMING_FOLLOW_LINKS", "1")
    third = tick(p.instance, None)
    assert "rejected" not in json.loads(third.cursor)
    (req,) = [r for r in third.run_requests if r.partition_key == "secret"]
    assert register(p, req).success
    assert cat.current_set(KIND_DATASET, "secret")["source_path"] == str((outside / "secret.jsonl").resolve())
    assert find_incoming_file(EVAL_SUBDIR, "v") == p.incoming / EVAL_SUBDIR / "v.jsonl"


def test_file_swapped_for_a_link_after_the_tick_fails_its_run(platform, monkeypatch, tmp_path):
    p = platform
    path = write_jsonl(p.incoming / "train" / "alpha.jsonl", rows(3))
    (req,) = tick(p.instance).run_requests
    assert register(p, req).success
    cat = p.catalog()
    registered = cat.current_set(KIND_DATASET, "alpha")
    before = (cat.count("datasets"), cat.count("samples"))
    write_jsonl(path, rows(4))                                     # a new version: the sensor requests its run
    first = tick(p.instance)
    (req,) = first.run_requests
    secret = write_jsonl(tmp_path / "secret.jsonl", rows(5, "secret"))
    path.unlink()
    path.symlink_to(secret)                                        # ... and the file is swapped before the run
    res = register(p, req)
    assert not res.success
    message = failure_of(res)
    assert str(path) in message and f"a link to {secret}, outside the incoming folder" in message
    assert "nothing registered" in message
    assert cat.current_set(KIND_DATASET, "alpha") == registered
    assert (cat.count("datasets"), cat.count("samples")) == before
    # links followed: the content is still not what the sensor saw
    monkeypatch.setenv("FORVALUE_INCOMING_FOLLOW_LINKS", "1")
    res = register(p, req)
    assert not res.success
    message = failure_of(res)
    assert str(path) in message and "is not what the sensor saw" in message
    assert req.run_config["ops"]["training_dataset"]["config"]["content_hash"][:12] in message
    assert cat.current_set(KIND_DATASET, "alpha") == registered
    assert (cat.count("datasets"), cat.count("samples")) == before
    # a plain change after the tick fails the same way; the next tick registers the new content
    monkeypatch.delenv("FORVALUE_INCOMING_FOLLOW_LINKS")
    path.unlink()
    write_jsonl(path, rows(6))
    assert "is not what the sensor saw" in failure_of(register(p, req))
    (again,) = tick(p.instance, first.cursor).run_requests
    assert register(p, again).success and cat.current_set(KIND_DATASET, "alpha")["n_samples"] == 6


def test_hard_link_is_refused_unless_allowed(platform, monkeypatch, tmp_path):
    p = platform
    secret = write_jsonl(tmp_path / "secret.jsonl", rows(2, "secret"))
    (p.incoming / "train").mkdir(parents=True)
    os.link(secret, p.incoming / "train" / "hard.jsonl")            # another name of a file outside incoming/
    write_jsonl(p.incoming / "train" / "plain.jsonl", rows(2))
    first = tick(p.instance)
    assert [r.partition_key for r in first.run_requests] == ["plain"]
    reason = json.loads(first.cursor)["rejected"][str(p.incoming / "train" / "hard.jsonl")]
    assert "2 hard links" in reason and "FORVALUE_INCOMING_FOLLOW_LINKS=1 allows it" in reason
    # the run repeats the check: a file given a second name after the tick is refused too
    (req,) = first.run_requests
    os.link(p.incoming / "train" / "plain.jsonl", tmp_path / "plain-elsewhere.jsonl")
    res = register(p, req)
    assert not res.success
    assert "hard links" in failure_of(res) and str(p.incoming / "train" / "plain.jsonl") in failure_of(res)
    assert p.catalog().count("datasets") == 0
    # allowed by the setting: registered
    monkeypatch.setenv("FORVALUE_INCOMING_FOLLOW_LINKS", "1")
    second = tick(p.instance, None)
    assert {r.partition_key for r in second.run_requests} == {"hard", "plain"}
    for req in second.run_requests:
        assert register(p, req).success
    assert p.catalog().current_set(KIND_DATASET, "hard")["n_samples"] == 2
