"""Feature shards on disk (Parquet), keyed by model fingerprint and feature config.

Layout: ``<root>/<model-slug>-<model hash>/<feature config id>/`` holds, per shard, a rows file (one
row per (sample, token): the sample, token_id, vector of r floats), a samples file (one row per
sample: sample_id, n_positions, n_rows, norm = ||G||, the denominator of cosine selection, emb of d
floats) (forvalue/store/shard_format.py: Parquet in the first format, memory-mapped Arrow in the bounded
one), and
- ``shard-<id>.json``: the manifest, written last, with the size and sha256 of both files. A shard
  exists only once its manifest does, so an interrupted run leaves nothing half-written that a
  reader could see; the rerun redoes that shard.
Both Parquet files carry the shard metadata (model fingerprint, k, r, seed, positions, code version)
in their schema metadata too.

Safety (docs/reliability.md):
- Every file is written under a temporary name and renamed (forvalue/io.py). A temporary file left by
  a killed writer is removed by the next writer (it belongs to no live claim).
- A shard whose files are missing, of the wrong size, unreadable or not the bytes its manifest's
  sha256 records is moved aside to ``damaged/`` (with a note of why) the moment it is read; its
  samples are then missing, so the next :meth:`FeatureStore.ensure` computes them again. Every read
  checks the checksums (forvalue/store/checksums.py: a file is hashed once per state, its writer's
  hash counts); :meth:`verify` hashes every file again, whatever is recorded.
- Concurrent writers (processes on this machine) claim the samples of each shard before computing
  it: under the folder's lock a writer takes only samples that are neither stored nor claimed by a
  live writer, so no sample is computed twice or stored twice. A claim is held by an OS file lock,
  so a killed writer's claim frees itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._version import __version__
from ..errors import DamagedShardWarning, StoreError
from ..valuation.features import (BOUNDED_VERSION, PER_SAMPLE_LOSSES, FeatureConfig, SparseFeatures, encode_all,
                                  extract_sparse)
from ..io import atomic_write_text
from .checksums import MODES, ChecksumMismatch, digest, forget
from .shard_format import read_files, read_sample_values, write_files
from .safety import (LOCKS, FolderLock, claimed_tmp as _claimed_tmp, damaged_shard, live_claims, no_permission,
                     quarantine, remove_stale_tmp, take_claim)

DEFAULT_SHARD_SIZE = 512


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60] or "model"


@dataclass
class EnsureResult:
    features: SparseFeatures
    computed: int        # samples whose features were computed now
    reused: int          # samples found in the store
    shards_written: list[Path]


class FeatureStore:
    """``checksums``: how reads check a data file against its manifest's sha256: "stamp" (hashed once
    per state of the file, by this process or any before it), "full" (hashed by each process on its
    first read) or "off" (sizes only: for benchmarks of what the check costs)."""

    def __init__(self, root: str | Path, *, lock_timeout: float = 600.0, checksums: str = "stamp"):
        if checksums not in MODES:
            raise ValueError(f"checksums must be one of {', '.join(MODES)}, got {checksums!r}")
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.checksums = checksums
        self.damaged: list[dict] = []   # shards this object moved aside: {"shard", "reason", "moved_to", "samples"}

    def folder(self, fingerprint, config: FeatureConfig) -> Path:
        h = hashlib.sha256(fingerprint.id.encode()).hexdigest()[:12]
        return self.root / f"{_slug(fingerprint.name)}-{h}" / config.id

    def manifests(self, fingerprint, config: FeatureConfig) -> list[Path]:
        return self._manifests(self.folder(fingerprint, config))

    @staticmethod
    def _manifests(folder: Path) -> list[Path]:
        return sorted(folder.glob("shard-*.json")) if folder.exists() else []

    def shard_infos(self, fingerprint, config: FeatureConfig) -> list[dict]:
        """Manifests of the intact shards; a damaged shard (unreadable manifest, missing file, wrong
        size) is moved aside now and left out. A shard of another model or feature configuration
        (a folder copied by hand) stops with a clear error: its numbers would not compare."""
        infos = self._infos(self.folder(fingerprint, config))
        for info in infos:
            got_cfg = info.get("feature_config_id", config.id)
            got_model = (info.get("model") or {}).get("id", fingerprint.id)
            if got_cfg != config.id or got_model != fingerprint.id:
                raise StoreError(f"{self.folder(fingerprint, config)}: shard {info.get('shard_id')} holds features of "
                                 f"model {got_model} / feature config {got_cfg} (format version "
                                 f"{(info.get('feature_config') or {}).get('version', '?')}), not of model "
                                 f"{fingerprint.id} / config {config.id}; it does not belong in this folder")
        return infos

    def _infos(self, folder: Path, *, deep: bool = False) -> list[dict]:
        out = []
        for m in self._manifests(folder):
            info, problem = damaged_shard(folder, m, deep=deep)
            if problem:
                self._set_aside(folder, m, info, problem)
            elif info is not None:   # (None: the manifest went away meanwhile, e.g. compaction)
                out.append(info)
        return out

    def _set_aside(self, folder: Path, manifest: Path, info: dict | None, reason: str, *, warn: bool = True) -> None:
        moved = quarantine(folder, manifest, info, reason)
        n = len(info.get("sample_ids", [])) if isinstance(info, dict) else 0
        self.damaged.append({"shard": manifest.name, "reason": reason, "moved_to": str(moved), "samples": n})
        if warn:
            warnings.warn(f"{manifest}: damaged shard ({reason}); moved aside to {moved}; its {n} samples are "
                          f"computed again by the next feature run", DamagedShardWarning, stacklevel=3)

    def _unreadable(self, folder: Path, info: dict, e: Exception) -> StoreError:
        """Move a shard whose data file failed to read or to check aside; the error to raise (one line
        naming the shard: the caller says it, so no warning besides)."""
        manifest = folder / f"shard-{info['shard_id']}.json"
        reason = str(e) if isinstance(e, ChecksumMismatch) else f"unreadable data file: {e}"
        self._set_aside(folder, manifest, info, reason, warn=False)
        return StoreError(f"{manifest}: damaged shard moved aside ({reason}); its {len(info['sample_ids'])} samples "
                          f"are computed again by the next feature run (`forvalue features` or the features asset)")

    def existing_ids(self, fingerprint, config: FeatureConfig) -> set[str]:
        ids: set[str] = set()
        for info in self.shard_infos(fingerprint, config):
            ids.update(info["sample_ids"])
        return ids

    # ------------------------------------------------------------------ write
    def write_shard(self, feats: SparseFeatures, fingerprint, config: FeatureConfig, extra: dict | None = None) -> Path:
        meta = {
            "model": fingerprint.to_dict(),
            "feature_config": config.to_dict(),
            "feature_config_id": config.id,
        } | (extra or {})
        return self.write_shard_file(self.folder(fingerprint, config), feats, meta)

    @staticmethod
    def write_shard_file(folder: Path, feats: SparseFeatures, meta: dict) -> Path:
        """Write one shard: its two data files (forvalue/store/shard_format.py: Parquet for the first
        format, memory-mapped Arrow for the bounded one), then the manifest (the commit point)."""
        folder.mkdir(parents=True, exist_ok=True)
        shard_id = hashlib.sha256("\n".join(feats.sample_ids).encode()).hexdigest()[:16]
        meta = {k: v for k, v in meta.items() if k not in ("sample_ids", "files", "checksums")} | {
            "shard_id": shard_id, "code_version": __version__, "n_samples": len(feats), "n_rows": feats.n_rows,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        arrow = (meta.get("feature_config") or {}).get("version") == BOUNDED_VERSION
        files = write_files(folder, shard_id, feats, {b"forvalue": json.dumps(meta).encode()}, arrow=arrow)
        manifest = folder / f"shard-{shard_id}.json"
        meta["sample_ids"] = feats.sample_ids
        meta["files"] = {k: v.name for k, v in files.items()}
        meta["checksums"] = {k: digest(v) for k, v in files.items()}   # recorded as verified, too
        atomic_write_text(manifest, json.dumps(meta))  # the commit point
        return manifest

    # ------------------------------------------------------------------ read
    def load(self, fingerprint, config: FeatureConfig, sample_ids: Sequence[str] | None = None) -> SparseFeatures:
        """Features of ``sample_ids`` (in that order), or of every stored sample."""
        want = None if sample_ids is None else set(sample_ids)
        parts = []
        folder = self.folder(fingerprint, config)
        for info in self.shard_infos(fingerprint, config):
            if want is not None and not want.intersection(info["sample_ids"]):
                continue
            parts.append(self.read_shard(folder, info))
        if not parts:
            if sample_ids:
                raise KeyError(f"no stored features for model {fingerprint.id} and config {config.id}")
            raise KeyError("the feature store is empty for this model and config")
        allf = SparseFeatures.concat(parts)
        if sample_ids is None:
            return allf
        return allf.select(list(sample_ids))

    def iter_features(self, fingerprint, config: FeatureConfig, *, sample_ids: Sequence[str] | None = None):
        """The stored features shard by shard (each sample once, in shard order; only ``sample_ids``
        when given): a store larger than memory is read one shard at a time."""
        folder = self.folder(fingerprint, config)
        want = None if sample_ids is None else set(sample_ids)
        seen: set[str] = set()
        for info in self.shard_infos(fingerprint, config):
            ids = [s for s in info["sample_ids"] if s not in seen and (want is None or s in want)]
            if not ids:
                continue
            feats = self.read_shard(folder, info)
            if len(ids) != len(feats):
                feats = feats.select(ids)
            seen.update(ids)
            yield feats

    def sample_values(self, fingerprint, config: FeatureConfig, sample_ids: Sequence[str],
                      fields: Sequence[str] = PER_SAMPLE_LOSSES) -> dict[str, np.ndarray | None]:
        """{field: [n] values of ``sample_ids`` (in that order)} of per-sample ``fields`` of
        :class:`SparseFeatures` (the losses the consistency checks read), from the shards' samples
        files only (the vectors are not read). A field some shard lacks (stored before it was kept)
        is None; KeyError when a sample is not stored."""
        folder = self.folder(fingerprint, config)
        pos = {s: i for i, s in enumerate(sample_ids)}
        out = {f: np.full(len(sample_ids), np.nan) for f in fields}
        for info in self.shard_infos(fingerprint, config):
            if not pos.keys() & set(info["sample_ids"]):
                continue
            try:
                ids, values = read_sample_values(folder, info["files"], fields, info.get("checksums"),
                                                 self.checksums)
            except PermissionError as e:
                raise no_permission(Path(e.filename or folder), e) from None
            except Exception as e:   # a damaged file, as read_shard
                raise self._unreadable(folder, info, e) from None
            where = np.array([pos.get(s, -1) for s in ids], dtype=np.int64)
            hit = where >= 0
            for f in fields:
                if out[f] is None:
                    continue
                if values[f] is None:
                    out[f] = None
                else:
                    out[f][where[hit]] = values[f][hit]
            for s in np.asarray(ids, dtype=object)[hit]:
                pos.pop(s)
        if pos:
            raise KeyError(f"{len(pos)} samples have no stored features for model {fingerprint.id} and config "
                           f"{config.id}, e.g. {next(iter(pos))}")
        return out

    def read_shard(self, folder: Path, info: dict) -> SparseFeatures:
        """One shard's features, its files checked against the manifest's checksums first; a file that
        cannot be read or differs moves the shard aside (StoreError)."""
        try:
            return read_files(folder, info["files"], info.get("checksums"), self.checksums)
        except PermissionError as e:
            raise no_permission(Path(e.filename or folder), e) from None
        except Exception as e:   # pyarrow raises several types for a damaged file
            raise self._unreadable(folder, info, e) from None

    # ------------------------------------------------------------------ maintenance
    def folders(self) -> list[Path]:
        """Every (model, feature config) folder of the store."""
        return sorted(p for p in self.root.glob("*/*") if p.is_dir() and (any(p.glob("shard-*.json"))
                                                                          or (p / LOCKS).exists()))

    def verify(self, *, repair: bool = False) -> dict:
        """Check every shard of the store (files present, sizes and sha256 checksums, Parquet footers,
        each sample stored once, each shard in the folder of its own model and feature config) and
        leftovers of killed writers; ``found`` lists the model/config folders. Reads only: a store this
        user may not write is checked without its lock (``read_only``). ``repair`` (which needs write
        access) moves damaged shards aside and removes leftovers (their samples are computed again by
        the next feature run); a misplaced shard is only reported."""
        import contextlib

        from .safety import LOCKS

        report = {"folders": 0, "shards": 0, "samples": 0, "duplicates": 0, "damaged": [], "stale_tmp": 0,
                  "misplaced": [], "found": [], "read_only": False, "repaired": repair}

        def claims_read_only(folder: Path) -> dict:   # the claims on file, each taken as a live writer's
            out = {}
            for f in (folder / LOCKS).glob("claim-*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    c = json.loads(f.read_text())
                    out[c["shard_id"]] = set(c["sample_ids"])
            return out

        for folder in self.folders():
            report["folders"] += 1
            with contextlib.ExitStack() as held:
                try:
                    held.enter_context(FolderLock(folder, self.lock_timeout))
                    claims = live_claims(folder)
                except OSError as e:   # no write access (permissions, a read-only file system)
                    if repair:
                        raise StoreError(f"{folder}: --repair needs write access to the store ({e.strerror or e});"
                                         f" `forvalue store verify` without --repair checks it read-only") from None
                    report["read_only"], claims = True, claims_read_only(folder)
                tmp = [p for p in folder.glob(".*.tmp") if not _claimed_tmp(p, claims)]
                report["stale_tmp"] += len(tmp)
                if repair:
                    remove_stale_tmp(folder, claims)
                seen: dict[str, int] = {}
                models: set = set()
                for m in self._manifests(folder):
                    info, problem = damaged_shard(folder, m, deep=True)
                    if problem:
                        report["damaged"].append({"shard": str(m), "reason": problem})
                        if repair:
                            self._set_aside(folder, m, info, problem)
                        continue
                    if info is None:
                        continue
                    report["shards"] += 1
                    model, cfg_id = info.get("model") or {}, info.get("feature_config_id", folder.name)
                    models.add(model.get("id", "?"))
                    digest = hashlib.sha256(model.get("id", "").encode()).hexdigest()[:12]
                    home = f"{_slug(model.get('name', ''))}-{digest}"
                    if model.get("id") and (folder.parent.name, folder.name) != (home, cfg_id):
                        report["misplaced"].append({"shard": str(m), "reason": (
                            f"holds features of model {model['id']} / feature config {cfg_id}, whose folder is "
                            f"{home}/{cfg_id}, not {folder.parent.name}/{folder.name}: reading refuses it")})
                    for sid in info["sample_ids"]:
                        seen[sid] = seen.get(sid, 0) + 1
                report["samples"] += len(seen)
                report["duplicates"] += sum(n - 1 for n in seen.values())
                report["found"].append({"folder": str(folder), "models": sorted(models), "feature_config": folder.name,
                                        "samples": len(seen)})
        report["ok"] = not (report["damaged"] or report["stale_tmp"] or report["duplicates"] or report["misplaced"])
        return report

    def compact(self, *, shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
        """Rewrite each folder's shards into full shards with every sample once (damaged shards are
        moved aside first). New shards are committed before the old ones are removed, so a crash in
        between leaves duplicates that the next compaction removes, never a lost sample."""
        report = {"folders": 0, "shards_before": 0, "shards_after": 0, "samples": 0, "duplicates_removed": 0}
        for folder in self.folders():
            with FolderLock(folder, self.lock_timeout):
                if live_claims(folder):
                    raise StoreError(f"{folder}: a feature run is writing here; compact when it has finished")
                remove_stale_tmp(folder, {})
                infos = self._infos(folder, deep=True)
                if not infos:
                    continue
                parts = [self.read_shard(folder, info) for info in infos]
                allf = SparseFeatures.concat(parts)
                ids = list(dict.fromkeys(allf.sample_ids))
                report["folders"] += 1
                report["shards_before"] += len(infos)
                report["duplicates_removed"] += len(allf) - len(ids)
                report["samples"] += len(ids)
                unique = allf.select(ids)
                new = {self.write_shard_file(folder, unique.select(ids[i:i + shard_size]), infos[0]).name
                       for i in range(0, len(ids), shard_size)}
                report["shards_after"] += len(new)
                for info in infos:   # the old shards: manifest first, then its files
                    name = f"shard-{info['shard_id']}.json"
                    if name in new:
                        continue
                    (folder / name).unlink(missing_ok=True)
                    for f in info["files"].values():
                        (folder / f).unlink(missing_ok=True)
                    forget(folder, info["files"].values())
        return report

    # ------------------------------------------------------------------ compute what is missing
    def ensure(self, lm, samples, config: FeatureConfig = FeatureConfig(), *, batch_size: int = 8,
               shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = False, extra: dict | None = None) -> EnsureResult:
        """Features of every sample, computing only those missing for this model and config. Safe
        with other writers of the same store: samples being computed elsewhere are waited for."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        fp = lm.fingerprint
        folder = self.folder(fp, config)
        folder.mkdir(parents=True, exist_ok=True)
        unique: dict[str, object] = {}
        for s in samples:
            unique.setdefault(s.sample_id, s)
        ids = [s.sample_id for s in samples]
        for attempt in range(2):   # a shard found damaged while loading is computed again once
            have = self.existing_ids(fp, config)
            todo = [s for sid, s in unique.items() if sid not in have]
            # Validate (tokenize, length-check) everything before writing anything.
            encoded, _ = encode_all(lm, todo, config)
            computed, written = self.compute_claimed(lm, folder, todo, encoded, config, batch_size, shard_size, progress,
                                              extra)
            try:
                feats = self.load(fp, config, ids)
            except StoreError as e:   # a shard found damaged while reading (moved aside): computed again
                if attempt:
                    raise
                warnings.warn(str(e), DamagedShardWarning, stacklevel=2)
                continue
            return EnsureResult(features=feats, computed=computed, reused=len(unique) - computed,
                                shards_written=written)
        raise AssertionError("unreachable")

    def compute_claimed(self, lm, folder: Path, todo: list, encoded: list, config: FeatureConfig, batch_size: int,
                 shard_size: int, progress: bool, extra: dict | None) -> tuple[int, list[Path]]:
        """Compute the features of ``todo`` shard by shard, each under a claim; samples another
        writer holds are waited for. Returns (samples computed here, shards written)."""
        from tqdm.auto import tqdm

        position = {s.sample_id: i for i, s in enumerate(todo)}
        pending = [s.sample_id for s in todo]
        computed, written = 0, []
        bar = tqdm(total=len(todo), desc="features", unit="sample", disable=not progress or not todo)
        deadline = time.monotonic() + self.lock_timeout
        while pending:
            with FolderLock(folder, self.lock_timeout):
                claims = live_claims(folder)
                remove_stale_tmp(folder, claims)
                stored = {sid for info in self._infos(folder) for sid in info["sample_ids"]}
                held = set().union(*claims.values()) if claims else set()
                pending = [sid for sid in pending if sid not in stored]
                chunk = [sid for sid in pending if sid not in held][:shard_size]
                claim = take_claim(folder, chunk) if chunk else None
            if claim is None:
                if pending:   # all left are being computed by another writer: wait for its shards
                    if time.monotonic() > deadline:
                        raise StoreError(f"{folder}: {len(pending)} samples are still claimed by another writer "
                                         f"after {self.lock_timeout:.0f} s")
                    time.sleep(0.2)
                continue
            try:
                part = [todo[position[sid]] for sid in chunk]
                enc = [encoded[position[sid]] for sid in chunk]
                for j, e in enumerate(enc):
                    e.index = j
                feats = extract_sparse(lm, part, config, batch_size=batch_size, encoded=enc, grounding=config.checks)
                written.append(self.write_shard(feats, lm.fingerprint, config, extra))
            finally:
                claim.release()
            computed += len(chunk)
            bar.update(len(chunk))
            pending = [sid for sid in pending if sid not in set(chunk)]
            deadline = time.monotonic() + self.lock_timeout
        bar.close()
        return computed, written
