"""Feature shards on disk (Parquet), keyed by model fingerprint and feature config.

Layout: ``<root>/<model-slug>-<model hash>/<feature config id>/`` holds, per shard,
- ``shard-<id>.parquet``: one row per (sample, token): sample_id, token_id, vector (r floats);
- ``shard-<id>.samples.parquet``: one row per sample: sample_id, n_positions, n_rows, norm (||G|| of
  the stored rows, the denominator of cosine selection), emb (d floats);
- ``shard-<id>.json``: the manifest, written last. A shard exists only once its manifest does, so an
  interrupted run leaves nothing half-written that a reader could see; the rerun redoes that shard.
Both Parquet files carry the shard metadata (model fingerprint, k, r, seed, positions, code version)
in their schema metadata too.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ._version import __version__
from .features import FeatureConfig, SparseFeatures, encode_all, extract_sparse
from .io import atomic_write, atomic_write_text

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
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, fingerprint, config: FeatureConfig) -> Path:
        h = hashlib.sha256(fingerprint.id.encode()).hexdigest()[:12]
        return self.root / f"{_slug(fingerprint.name)}-{h}" / config.id

    def manifests(self, fingerprint, config: FeatureConfig) -> list[Path]:
        folder = self.folder(fingerprint, config)
        return sorted(folder.glob("shard-*.json")) if folder.exists() else []

    def shard_infos(self, fingerprint, config: FeatureConfig) -> list[dict]:
        return [json.loads(m.read_text()) for m in self.manifests(fingerprint, config)]

    def existing_ids(self, fingerprint, config: FeatureConfig) -> set[str]:
        ids: set[str] = set()
        for info in self.shard_infos(fingerprint, config):
            ids.update(info["sample_ids"])
        return ids

    # ------------------------------------------------------------------ write
    def write_shard(self, feats: SparseFeatures, fingerprint, config: FeatureConfig, extra: dict | None = None) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.folder(fingerprint, config)
        folder.mkdir(parents=True, exist_ok=True)
        shard_id = hashlib.sha256("\n".join(feats.sample_ids).encode()).hexdigest()[:16]
        meta = {
            "shard_id": shard_id,
            "model": fingerprint.to_dict(),
            "feature_config": config.to_dict(),
            "feature_config_id": config.id,
            "code_version": __version__,
            "n_samples": len(feats),
            "n_rows": feats.n_rows,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        } | (extra or {})
        schema_meta = {b"forvalue": json.dumps(meta).encode()}
        r = feats.vectors.shape[1]
        rows = pa.table({
            "sample_id": pa.array([feats.sample_ids[i] for i in feats.row_sample], pa.string()),
            "token_id": pa.array(feats.token_ids.astype(np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(feats.vectors.reshape(-1)), r),
        }).replace_schema_metadata(schema_meta)
        d = feats.emb.shape[1]
        per_sample = pa.table({
            "sample_id": pa.array(feats.sample_ids, pa.string()),
            "n_positions": pa.array(feats.n_positions.astype(np.int32)),
            "n_rows": pa.array(np.bincount(feats.row_sample, minlength=len(feats)).astype(np.int32)),
            "norm": pa.array(feats.sample_norms(), pa.float64()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(feats.emb.reshape(-1)), d),
        }).replace_schema_metadata(schema_meta)
        files = {"rows": folder / f"shard-{shard_id}.parquet", "samples": folder / f"shard-{shard_id}.samples.parquet"}
        manifest = folder / f"shard-{shard_id}.json"
        for key, table in (("rows", rows), ("samples", per_sample)):
            atomic_write(files[key], lambda tmp, table=table: pq.write_table(table, tmp))
        meta["sample_ids"] = feats.sample_ids
        meta["files"] = {k: v.name for k, v in files.items()}
        atomic_write_text(manifest, json.dumps(meta))  # the commit point
        return manifest

    # ------------------------------------------------------------------ read
    def load(self, fingerprint, config: FeatureConfig, sample_ids: Sequence[str] | None = None) -> SparseFeatures:
        """Features of ``sample_ids`` (in that order), or of every stored sample."""
        import pyarrow.parquet as pq

        want = None if sample_ids is None else set(sample_ids)
        parts = []
        for info in self.shard_infos(fingerprint, config):
            if want is not None and not want.intersection(info["sample_ids"]):
                continue
            folder = self.folder(fingerprint, config)
            rows = pq.read_table(folder / info["files"]["rows"])
            per = pq.read_table(folder / info["files"]["samples"])
            ids = per.column("sample_id").to_pylist()
            index = {s: i for i, s in enumerate(ids)}
            d = per.schema.field("emb").type.list_size
            r = rows.schema.field("vector").type.list_size
            parts.append(SparseFeatures(
                sample_ids=ids,
                row_sample=np.array([index[s] for s in rows.column("sample_id").to_pylist()], dtype=np.int64),
                token_ids=rows.column("token_id").to_numpy().astype(np.int64),
                vectors=rows.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, r),
                emb=per.column("emb").combine_chunks().flatten().to_numpy().reshape(-1, d),
                n_positions=per.column("n_positions").to_numpy().astype(np.int64),
                # ||G|| per sample; shards written before it was stored get it from their rows
                norms=per.column("norm").to_numpy() if "norm" in per.column_names else None,
            ))
        if not parts:
            if sample_ids:
                raise KeyError(f"no stored features for model {fingerprint.id} and config {config.id}")
            raise KeyError("the feature store is empty for this model and config")
        allf = SparseFeatures.concat(parts)
        if sample_ids is None:
            return allf
        return allf.select(list(sample_ids))

    # ------------------------------------------------------------------ compute what is missing
    def ensure(self, lm, samples, config: FeatureConfig = FeatureConfig(), *, batch_size: int = 8,
               shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = False, extra: dict | None = None) -> EnsureResult:
        """Features of every sample, computing only those missing for this model and config."""
        from tqdm.auto import tqdm

        have = self.existing_ids(lm.fingerprint, config)
        unique: dict[str, object] = {}
        for s in samples:
            unique.setdefault(s.sample_id, s)
        todo = [s for sid, s in unique.items() if sid not in have]
        # Validate (tokenize, length-check) everything before writing anything.
        encoded, _ = encode_all(lm, todo, config)
        written = []
        chunks = [range(i, min(len(todo), i + shard_size)) for i in range(0, len(todo), shard_size)]
        bar = tqdm(total=len(todo), desc="features", unit="sample", disable=not progress or not todo)
        for chunk in chunks:
            part = [todo[i] for i in chunk]
            enc = [encoded[i] for i in chunk]
            for j, e in enumerate(enc):
                e.index = j
            feats = extract_sparse(lm, part, config, batch_size=batch_size, encoded=enc)
            written.append(self.write_shard(feats, lm.fingerprint, config, extra))
            bar.update(len(part))
        bar.close()
        ids = [s.sample_id for s in samples]
        return EnsureResult(features=self.load(lm.fingerprint, config, ids), computed=len(todo),
                            reused=len(unique) - len(todo), shards_written=written)
