"""The incoming-folder sensor.

Data teams drop files into ``incoming/train/<name>.jsonl|.parquet`` (training datasets) and
``incoming/valuation/<name>.jsonl|.parquet`` (valuation sets); the file stem is the registered
name. Each tick the sensor

- looks only at files changed since its high-water mark (the newest change time it has handled;
  a file at the mark is looked at again, for file systems with coarse timestamps), leaving files
  changed in the last FORVALUE_SETTLE_SECONDS for the next tick (they may still be being written);
- hashes them; a file whose content hash differs from the last one seen for that name (a new name,
  or a changed file) gets a dynamic partition (new names) and a run of its registration job
  (register + features). Run keys are built from the content hash, so a retried tick never
  launches a second run for the same content;
- leaves everything downstream to the automation sensor: new training features score against every
  valuation set, and new valuation features re-score every training dataset from stored training
  features (none recomputed).

Files are read under the link rules of ``sensors/links.py``: a link leading outside the incoming folder
(a file, or incoming/train or incoming/valuation themselves) and a file with several hard links are
refused unless FORVALUE_INCOMING_FOLLOW_LINKS=1; the registration run repeats those checks on the file
it reads and fails when its content is not the content hash the sensor saw (run config
``content_hash``, run tag ``forvalue/content_hash``). Refused files are listed in the tick log, the
skip reason and a table on the target asset, never registered.

The cursor is JSON: {"hwm": <ns>, "seen": {"train/<name>": <sha256>, ...}}. Deleted files are
ignored (registered versions stay in the catalog). Write files elsewhere and move them in, or let
the settle time cover the write; hidden files and *.tmp / *.part files are ignored.
On its first tick, when the incoming folder does not exist, the sensor creates it with the bundled
demo data (FORVALUE_DEMO=0 turns that off).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    MetadataValue,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    TableColumn,
    TableRecord,
    TableSchema,
    sensor,
)

from forvalue.catalog.db import NAME_RE, content_hash
from forvalue.io import atomic_copy

from .links import folder_refusal, link_refusal
from .settings import (
    CONTENT_HASH_TAG,
    DEFAULT_SENSOR_INTERVAL,
    INCOMING_SUFFIXES,
    SOURCE_TAG,
    TRAIN_SUBDIR,
    VALUATION_SUBDIR,
    follow_links,
    incoming_root,
    seed_demo,
    settle_seconds,
)


@dataclass(frozen=True)
class IncomingTarget:
    """What the files of one incoming subfolder become: a partition of ``partitions`` named by the
    file stem, and a run of ``job`` whose asset ``asset`` takes the file's ``path`` and
    ``content_hash`` as its config."""
    job: Any    # a JobDefinition, or what define_asset_job returns
    partitions: DynamicPartitionsDefinition
    asset: str


@dataclass
class Change:
    subdir: str
    name: str
    path: Path
    stamp: int
    digest: str | None    # None: the file could not be read (its registration run fails and names it)

    @property
    def key(self) -> str:
        return f"{self.subdir}/{self.name}"


def _stamp(path: Path) -> int:
    st = os.stat(path)
    # ctime too: a file moved or copied in with an old mtime still counts as new.
    return max(st.st_mtime_ns, st.st_ctime_ns)


def load_cursor(raw: str | None) -> dict:
    if not raw:
        return {"hwm": 0, "seen": {}}
    try:
        cur = json.loads(raw)
        out = {"hwm": int(cur.get("hwm", 0)), "seen": dict(cur.get("seen", {}))}
        for key in ("rejected", "retry"):
            if cur.get(key):
                out[key] = dict(cur[key])
        return out
    except (ValueError, TypeError, AttributeError):
        return {"hwm": 0, "seen": {}}


def _candidates(root: Path, hwm: int, cutoff: int, retry: dict, follow_links: bool,
                rejected: dict) -> list[tuple[int, str, Path]]:
    """(change time, subdir, path) of the files to look at; files that cannot be used go to
    ``rejected`` (path -> reason) instead of stopping the tick, and so does a watched sub-folder
    that is a link leading outside the incoming folder (its files are not even listed)."""
    out = []
    for subdir in (TRAIN_SUBDIR, VALUATION_SUBDIR):
        folder = root / subdir
        if not folder.is_dir():
            continue
        why = folder_refusal(folder, root, follow_links)
        if why is not None:
            rejected[str(folder)] = why
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") or p.suffix.lower() in (".tmp", ".part"):
                continue
            if p.suffix.lower() not in INCOMING_SUFFIXES:
                continue
            try:
                why = link_refusal(p, root, follow_links)
                if why is not None:
                    rejected[str(p)] = why
                    continue
                if not p.is_file():
                    continue
                stamp = _stamp(p)
            except FileNotFoundError:  # removed while scanning, or a link to nothing
                continue
            except OSError as e:
                rejected[str(p)] = f"unreadable: {e.strerror or e}"
                continue
            if (stamp < hwm and str(p) not in retry) or stamp > cutoff:
                continue
            out.append((stamp, subdir, p))
    return out


def scan(root: Path, cursor: dict, *, now_ns: int | None = None, settle_s: float = 2.0,
         log=None, follow_links: bool = False) -> tuple[list[Change], dict]:
    """New or changed files under ``root`` since ``cursor``: (changes, next cursor). One file's
    problem never stops the others: it is listed in the cursor's ``rejected`` (path -> reason), and a
    file that cannot be read becomes a change without a content hash (its registration run fails and
    names it) that is looked at again on every tick until it can be read."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    cutoff = now_ns - int(settle_s * 1e9)
    hwm = int(cursor.get("hwm", 0))
    seen = dict(cursor.get("seen", {}))
    retry = dict(cursor.get("retry", {}))
    rejected: dict[str, str] = {}
    new_hwm = hwm
    latest: dict[str, Change] = {}
    for stamp, subdir, p in sorted(_candidates(root, hwm, cutoff, retry, follow_links, rejected)):
        new_hwm = max(new_hwm, stamp)
        name = p.stem
        if not NAME_RE.match(name):
            rejected[str(p)] = f"file name {name!r} is not a valid dataset name (letters, digits, '_', '.', '-')"
            continue
        try:
            digest = content_hash(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            rejected[str(p)] = f"unreadable: {e.strerror or e}"
            retry[str(p)] = stamp
            digest = None
        else:
            retry.pop(str(p), None)
        change = Change(subdir, name, p, stamp, digest)
        if change.key in latest and log:
            log.warning(f"{p} and {latest[change.key].path} both name {change.key}; the newer one is registered")
        latest[change.key] = change
    changes = []
    for key, ch in latest.items():
        if ch.digest is not None and seen.get(key) == ch.digest:
            continue  # touched or re-copied, same content
        if ch.digest is not None:
            seen[key] = ch.digest
        changes.append(ch)
    if log:
        for path, reason in rejected.items():
            if cursor.get("rejected", {}).get(path) != reason:
                log.warning(f"{path}: {reason}")
    out = {"hwm": new_hwm, "seen": seen}
    out.update({k: v for k, v in (("rejected", rejected), ("retry", retry)) if v})
    return changes, out


def seed_demo_files(root: Path) -> list[Path]:
    """Create ``root`` with the bundled demo training data and valuation set."""
    from forvalue.demo import demo_paths

    train, val = demo_paths()
    out = []
    for src, subdir in ((train, TRAIN_SUBDIR), (val, VALUATION_SUBDIR)):
        dst = root / subdir / Path(src).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(src, dst)
        out.append(dst)
    return out


def evaluate(context: SensorEvaluationContext, targets: Mapping[str, IncomingTarget],
             root: Path | None = None) -> SensorResult:
    """One tick: seed the demo data into a missing folder, then register what changed (``targets``:
    subfolder -> its target)."""
    root = root or incoming_root()
    if not root.exists():
        if seed_demo():
            seeded = seed_demo_files(root)
            context.log.info(f"created {root} with the bundled demo data: {', '.join(str(p) for p in seeded)}")
        else:
            return SensorResult(skip_reason=f"{root} does not exist", cursor=context.cursor)
    for subdir in (TRAIN_SUBDIR, VALUATION_SUBDIR):
        if not (root / subdir).is_symlink():   # a link (even to nothing) is judged by scan, not replaced
            (root / subdir).mkdir(parents=True, exist_ok=True)
    previous = load_cursor(context.cursor)
    changes, cursor = scan(root, previous, settle_s=settle_seconds(), log=context.log,
                           follow_links=follow_links())
    run_requests, adds = [], {TRAIN_SUBDIR: [], VALUATION_SUBDIR: []}
    for ch in changes:
        target = targets[ch.subdir]
        new_name = not context.instance.has_dynamic_partition(target.partitions.name, ch.name)
        if new_name and ch.name not in adds[ch.subdir]:
            adds[ch.subdir].append(ch.name)
        digest = ch.digest or ""
        run_requests.append(RunRequest(
            run_key=f"{ch.key}/{digest[:16] or 'unreadable'}/{ch.stamp}",
            job_name=target.job.name,
            partition_key=ch.name,
            run_config={"ops": {target.asset: {"config": {"path": str(ch.path.resolve()), "content_hash": digest}}}},
            tags={SOURCE_TAG: str(ch.path), CONTENT_HASH_TAG: digest or "unreadable"},
        ))
        context.log.info(f"{ch.path}: content {digest[:12] or '(unreadable)'} -> {target.job.name}[{ch.name}]")
    partition_requests = [targets[sub].partitions.build_add_request(names) for sub, names in adds.items() if names]
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=rejected_observations(root, previous.get("rejected", {}), cursor.get("rejected", {}), targets),
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if run_requests else skip_reason(root, cursor.get("rejected", {})),
    )


def skip_reason(root: Path, rejected: Mapping[str, str], show: int = 3) -> str:
    """Why a tick requested nothing: no new or changed files, and the files (or watched sub-folders)
    that cannot be registered, the first ``show`` of them with their reasons."""
    out = f"no new or changed files in {root}"
    if rejected:
        items = sorted(rejected.items())
        out += f"; {len(items)} cannot be registered: " + "; ".join(f"{p}: {r}" for p, r in items[:show])
        if len(items) > show:
            out += f"; and {len(items) - show} more (the tick log and the assets' rejected_files tables list them)"
    return out


def rejected_observations(root: Path, before: dict, now: dict,
                          targets: Mapping[str, IncomingTarget]) -> list[AssetObservation]:
    """When the set of files the sensor cannot use changes: an observation on the target asset of
    their subfolder (``training_dataset`` / ``valuation_set``) with a table of those files (or of the
    subfolder itself, when it is refused as a whole) and why (the asset's page in the UI shows it)."""
    if before == now:
        return []
    out = []
    for subdir, target in targets.items():
        folder = str(root / subdir)
        mine = sorted((p, r) for p, r in now.items() if folder in (p, str(Path(p).parent)))
        was = sorted((p, r) for p, r in before.items() if folder in (p, str(Path(p).parent)))
        if mine == was:
            continue
        table = MetadataValue.table(
            records=[TableRecord({"file": p, "reason": r}) for p, r in mine],
            schema=TableSchema(columns=[TableColumn("file", "string"), TableColumn("reason", "string")]))
        out.append(AssetObservation(
            asset_key=AssetKey(target.asset),
            description=(f"{len(mine)} file(s) in {folder} cannot be registered" if mine else
                         f"every file in {folder} can be registered again"),
            metadata={"rejected_files": table, "rejected_count": MetadataValue.int(len(mine)),
                      "incoming_folder": MetadataValue.path(folder)}))
    return out


def incoming_sensor(training: IncomingTarget, valuation: IncomingTarget,
                    interval: int = DEFAULT_SENSOR_INTERVAL) -> SensorDefinition:
    """The ``incoming_files`` sensor: files in incoming/train/ go to ``training``, files in
    incoming/valuation/ to ``valuation``; it ticks every ``interval`` seconds (``build_definitions``
    passes FORVALUE_SENSOR_INTERVAL). The folder, demo seeding, settle time and link following are
    read from the environment at each tick (FORVALUE_INCOMING, FORVALUE_DEMO, FORVALUE_SETTLE_SECONDS,
    FORVALUE_INCOMING_FOLLOW_LINKS)."""
    targets = {TRAIN_SUBDIR: training, VALUATION_SUBDIR: valuation}

    @sensor(
        name="incoming_files",
        jobs=[training.job, valuation.job],
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers new or changed files in incoming/train/ and incoming/valuation/ (JSONL or Parquet; "
                    "the file stem is the name): adds the dynamic partition and runs registration + features. "
                    "High-water-mark cursor; run keys from content hashes.",
    )
    def incoming_files(context: SensorEvaluationContext) -> SensorResult:
        return evaluate(context, targets)

    return incoming_files
