"""Scale benchmark: re-scoring a feature store of N samples against a new valuation set.

:func:`build_store` writes a synthetic store in the real format (bounded version-2 shards: float16
rows, ``rows`` per sample with distinct token ids drawn from a Zipf law over a 49,152-token
vocabulary, as real text concentrates on frequent tokens; a float16 emb per sample). :func:`run`
then times, each step in a fresh process so that its time, CPU and peak memory are its own (forked
from one server process that imported torch and this module once: the steps share that baseline and
none pays the imports; :func:`_child`):

- ``read``: one plain read of every byte of the shard files (the bytes the re-scoring reads) into
  a buffer. Run twice (the first warms the page cache); the faster one is reported.
- ``select`` (with one or more strategies, for one or more valuation-set sizes): the first p% of a
  selection strategy's order over the store, streamed the same way, timed against the re-scoring
  with the same valuation set in the same run.
- ``rescore``: the set-mean values (raw, normalized, norm) of every stored sample against a new
  valuation set, streamed shard by shard (:func:`forvalue.valuation.scoring.source_values` over a
  :class:`forvalue.valuation.feature_source.StoreSource`).

- ``checksums`` (with ``checksum_cost``): the re-scoring again with each way reads check the shard
  files against their manifests' sha256 (forvalue/store/checksums.py): ``off`` (sizes only),
  ``stamp`` (the default: a file is hashed once per state, its writer's hash counts) and ``full``
  (every file hashed by the re-scoring process), alternated over ``rounds`` rounds; the best of each.

Reported: ``rescore_seconds``, ``read_seconds``, their ratio, ``bytes_per_sample`` (on disk) and the
peak RSS of each step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import resource
import time
from pathlib import Path

import numpy as np

VOCAB = 49152
D_HIDDEN = 576


def synthetic_fingerprint():
    from ..models.loading import ModelFingerprint

    return ModelFingerprint(name="synthetic", weights_hash="0" * 64, dtype="float16")


def synthetic_config(rows: int, r: int):
    from ..valuation.features import FeatureConfig

    return FeatureConfig(store_dtype="float16", energy=0.99, max_rows=rows, r=r)


def check_options(n: int, *, rows: int, r: int, shard_size: int, percent: float) -> None:
    """The benchmark's sizes, checked before anything is built: a ConfigError naming the option."""
    from ..errors import ConfigError

    for flag, value in (("--samples", n), ("--rows", rows), ("--r", r), ("--shard-size", shard_size)):
        if value < 1:
            raise ConfigError(f"forvalue bench scale: {flag} must be >= 1, got {value}")
    if not 0 < percent <= 100:
        raise ConfigError(f"forvalue bench scale: --subset-percent must be above 0 and at most 100, got {percent:g}")


def bytes_to_write(root: str | Path, n: int, *, rows: int, r: int, shard_size: int) -> int:
    """About how many bytes :func:`build_store` writes for ``n`` samples under ``root`` (the shards not
    there yet), a little over the real size: float16 rows of width ``r`` with their token ids, the
    float16 emb and per-sample values, and each shard's fixed overhead."""
    from ..store.feature_store import FeatureStore

    have = len(FeatureStore(root).manifests(synthetic_fingerprint(), synthetic_config(rows, r))) \
        if Path(root).is_dir() else 0
    missing = max(0, n - have * shard_size)
    return missing * (rows * (2 * r + 16) + 2 * D_HIDDEN + 150) + -(-missing // shard_size) * 16384


def _distinct_tokens(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """[n * rows] token ids, distinct within each sample, frequent tokens more likely."""
    out = np.empty((n, rows), dtype=np.int64)
    draw = rng.zipf(1.15, size=(n, rows * 3)) % VOCAB
    for i in range(n):
        u = np.unique(draw[i])
        if len(u) < rows:   # rare: top up with tokens not drawn
            extra = np.setdiff1d(np.arange(VOCAB), u)[: rows - len(u)]
            u = np.concatenate([u, extra])
        out[i] = np.sort(rng.permutation(u)[:rows])
    return out.reshape(-1)


def synthetic_features(rng: np.random.Generator, ids: list[str], rows: int, r: int, d: int = D_HIDDEN):
    from ..valuation.features import SparseFeatures

    n = len(ids)
    answer = rng.uniform(0.0, 5.0, n)
    answer[rng.random(n) < 0.3] = np.nan          # responses that compute nothing
    return SparseFeatures(sample_ids=ids, row_sample=np.repeat(np.arange(n), rows),
                          token_ids=_distinct_tokens(rng, n, rows),
                          vectors=rng.standard_normal((n * rows, r), dtype=np.float32).astype(np.float16),
                          emb=rng.standard_normal((n, d), dtype=np.float32).astype(np.float16),
                          n_positions=np.full(n, rows, dtype=np.int64),
                          # the consistency checks' per-sample values, as an extraction stores them
                          losses=rng.uniform(0.5, 3.0, n), losses_first=rng.uniform(0.5, 3.0, n),
                          losses_alone=rng.uniform(1.0, 4.0, n), losses_answer=answer)


def build_store(root: str | Path, n: int, *, rows: int = 64, r: int = 64, shard_size: int = 4096,
                seed: int = 0, log=None) -> Path:
    """A synthetic store of ``n`` samples (skipped when it is there already); returns its folder."""
    from ..store.feature_store import FeatureStore

    store = FeatureStore(root)
    fp, cfg = synthetic_fingerprint(), synthetic_config(rows, r)
    folder = store.folder(fp, cfg)
    have = len(store.manifests(fp, cfg))
    want = (n + shard_size - 1) // shard_size
    rng = np.random.default_rng(seed)
    meta = {"model": fp.to_dict(), "feature_config": cfg.to_dict(), "feature_config_id": cfg.id}
    for k in range(have, want):
        ids = [f"s{i:09d}" for i in range(k * shard_size, min(n, (k + 1) * shard_size))]
        store.write_shard_file(folder, synthetic_features(np.random.default_rng([seed, k]), ids, rows, r), meta)
        if log and (k + 1) % 25 == 0:
            log(f"built {k + 1}/{want} shards")
    del rng
    return folder


def _cpu_seconds() -> float:
    """CPU time of this process so far (user + system, every thread): less blurred than the wall time
    by other work on a shared machine."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_step(root: str, rows: int, r: int) -> dict:
    """One plain read of every byte of the store's shard files (into one reused buffer)."""
    from ..store.feature_store import FeatureStore

    store = FeatureStore(root)
    fp, cfg = synthetic_fingerprint(), synthetic_config(rows, r)
    folder = store.folder(fp, cfg)
    files = [folder / f for info in store.shard_infos(fp, cfg) for f in info["files"].values()]
    buf = bytearray(max(p.stat().st_size for p in files))
    t0 = time.perf_counter()
    nbytes = 0
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            nbytes += fh.readinto(buf)
    return {"seconds": time.perf_counter() - t0, "bytes": nbytes, "peak_rss_mb": _peak_mb()}


def _rescore_step(root: str, rows: int, r: int, n_val: int, checksums: str = "stamp") -> dict:
    import pyarrow.ipc  # noqa: F401  (imports are not charged to the re-scoring)
    import torch  # noqa: F401

    from ..valuation.feature_source import StoreSource
    from ..valuation.scoring import source_values
    from ..store.checksums import hashed
    from ..store.feature_store import FeatureStore

    val = synthetic_features(np.random.default_rng(12345), [f"v{i}" for i in range(n_val)], rows, r)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    source = StoreSource(FeatureStore(root, checksums=checksums), synthetic_fingerprint(), synthetic_config(rows, r))
    raw, normalized, norm = source_values(source, val)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu0, "samples": len(source),
            "finite": bool(np.isfinite(raw).all()),
            "checksum": float(np.sum(raw)), "peak_rss_mb": _peak_mb(), "checksums": checksums,
            "hashed_bytes": hashed()["bytes"], "check_seconds": hashed()["seconds"]}


def checksum_cost(root: str | Path, rows: int, r: int, n_val: int, *, rounds: int = 5, log=None) -> list[dict]:
    """The re-scoring with each checksum mode (off, stamp, full), alternated over ``rounds`` rounds
    (so that the page cache and the machine's other work weigh on each alike): one row per mode, its
    best and median time and median CPU time, those over the unchecked ones, the time spent in the checks
    themselves (measured inside the process: what the machine's other work does not blur) and the bytes
    the re-scoring process hashed."""
    say = log or (lambda msg: None)
    runs: dict[str, list[dict]] = {m: [] for m in ("off", "stamp", "full")}
    for k in range(rounds):
        for mode in runs:
            runs[mode].append(_child("rescore", str(root), rows, r, n_val, mode))
            say(f"re-scoring, checksums {mode} (round {k + 1}): {runs[mode][-1]['seconds']:.2f} s, cpu "
                f"{runs[mode][-1]['cpu_seconds']:.2f} s, checks "
                f"{runs[mode][-1]['check_seconds']:.3f} s, {runs[mode][-1]['hashed_bytes'] / 1e9:.2f} GB hashed")
    sums = {round(x["checksum"], 3) for v in runs.values() for x in v}
    if len(sums) != 1:
        raise AssertionError(f"the checksum modes scored differently: {sums}")
    best = {m: min(x["seconds"] for x in v) for m, v in runs.items()}
    median = {m: float(np.median([x["seconds"] for x in v])) for m, v in runs.items()}
    cpu = {m: float(np.median([x["cpu_seconds"] for x in v])) for m, v in runs.items()}
    return [{"checksums": mode, "rescore_seconds": best[mode], "median_seconds": median[mode],
             "all_seconds": [x["seconds"] for x in v], "over_unchecked": best[mode] / best["off"],
             "median_over_unchecked": median[mode] / median["off"], "cpu_seconds": cpu[mode],
             "cpu_over_unchecked": cpu[mode] / cpu["off"],
             "check_seconds": float(np.median([x["check_seconds"] for x in v])),
             "check_share": float(np.median([x["check_seconds"] / x["seconds"] for x in v])),
             "hashed_bytes": min(x["hashed_bytes"] for x in v), "peak_rss_mb": max(x["peak_rss_mb"] for x in v)}
            for mode, v in runs.items()]


def _select_step(root: str, rows: int, r: int, n_val: int, strategy: str, percent: float,
                 checks: bool = False) -> dict:
    """The first ``percent`` of a strategy's order over the store; ``checks``: after the consistency
    checks, their per-sample values read from the store's samples files (as Valuator.rank_stored)."""
    import pyarrow.ipc  # noqa: F401
    import torch  # noqa: F401

    from ..curation.consistency import CHECK_INPUTS, inputs_of, run_checks
    from ..valuation.feature_source import StoreSource
    from ..curation.selection import needed_prefix, rank_features
    from ..store.feature_store import FeatureStore

    val = synthetic_features(np.random.default_rng(12345), [f"v{i}" for i in range(n_val)], rows, r)
    t0 = time.perf_counter()
    store = FeatureStore(root)
    source = StoreSource(store, synthetic_fingerprint(), synthetic_config(rows, r))
    exclude = None
    if checks:
        values = store.sample_values(synthetic_fingerprint(), synthetic_config(rows, r), source.sample_ids, CHECK_INPUTS)
        exclude = run_checks(values, inputs_of(val)).dropped
    ranking = rank_features(source, val, strategy, limit=needed_prefix(len(source), "top_p", percent),
                            exclude=exclude)
    kept = ranking.indices("top_p", percent)
    return {"seconds": time.perf_counter() - t0, "kept": int(len(kept)), "passes": ranking.info.get("passes", 1),
            "dropped_by_checks": 0 if exclude is None else int(len(exclude)),
            "refilled_units": ranking.info.get("refilled_units", 0), "peak_rss_mb": _peak_mb(),
            "order_sha256": hashlib.sha256(np.ascontiguousarray(kept, dtype=np.int64).tobytes()).hexdigest()}


@functools.cache
def _forkserver():
    """multiprocessing's forkserver context, its server importing torch and this module once."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "pyarrow.ipc", __name__])
    return ctx


def _child(step: str, *args) -> dict:
    """``_<step>_step(*args)`` in a fresh process, forked from a server process that imported torch and
    this module once (:func:`_forkserver`, started on first use): the step's time, CPU and peak RSS
    are its own process's, and it pays no imports (a fresh interpreter paid ~1.5 CPU s of them for
    every step). The pool is closed and joined, never terminated: its worker leaves on the close,
    whereas terminate() first takes the task queue's lock and then relies on SIGTERM. A test process
    hung there: its worker waited on that lock with SIGTERM ignored (inherited), and was joined forever."""
    pool = _forkserver().Pool(1)
    try:
        return pool.apply(globals()[f"_{step}_step"], args)
    finally:
        pool.close()
        pool.join()


def run(n: int, *, root: str | Path, rows: int = 64, r: int = 64, n_val: int | list[int] = 100,
        shard_size: int = 4096, strategy: str | list[str] | None = None, percent: float = 10.0, log=None,
        checks: bool = False, checksums: bool = False) -> dict:
    """Build (or reuse) a store of ``n`` samples under ``root`` and time the read and the re-scoring
    against a valuation set of each size in ``n_val`` (and, with ``strategy``, one or more, the
    first ``percent`` of each strategy's order over the store for each valuation set, in the same
    run: ``selection``, one row per (valuation size, strategy) with its time over the re-scoring's;
    ``checks``: each strategy again after the consistency checks, row ``<strategy>+checks``;
    ``checksums``: :func:`checksum_cost` with the first valuation size, rows ``checksums``)."""
    say = log or (lambda msg: None)
    n_vals = [n_val] if isinstance(n_val, int) else list(n_val)
    strategies = [] if not strategy else [strategy] if isinstance(strategy, str) else list(strategy)
    t0 = time.perf_counter()
    folder = build_store(root, n, rows=rows, r=r, shard_size=shard_size, log=say)
    build_s = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in folder.glob("shard-*"))
    say(f"store: {n} samples, {disk / 1e9:.2f} GB in {folder} ({build_s:.0f} s to build)")
    reads = [_child("read", str(root), rows, r) for _ in range(2)]
    say("plain read: " + ", ".join(f"{x['seconds']:.2f} s" for x in reads))
    read = min(reads, key=lambda x: x["seconds"])
    rescores, selection = {}, []
    for v in n_vals:
        rescores[v] = _child("rescore", str(root), rows, r, v)
        say(f"re-scoring against {v} valuation samples: {rescores[v]['seconds']:.2f} s")
        for name, checked in ((s, c) for s in strategies for c in ((False, True) if checks else (False,))):
            sel = _child("select", str(root), rows, r, v, name, percent, checked)
            name = name + "+checks" if checked else name
            say(f"{name} top {percent:g}% with {v} valuation samples: {sel['seconds']:.2f} s "
                f"({sel['seconds'] / rescores[v]['seconds']:.2f}x the re-scoring)")
            selection.append({"strategy": name, "n_val": v, "dropped_by_checks": sel["dropped_by_checks"], "percent": percent, "select_seconds": sel["seconds"],
                              "rescore_seconds": rescores[v]["seconds"],
                              "select_over_rescore": sel["seconds"] / rescores[v]["seconds"],
                              "select_peak_rss_mb": sel["peak_rss_mb"], "select_kept": sel["kept"],
                              "select_passes": sel["passes"], "refilled_units": sel["refilled_units"],
                              "order_sha256": sel["order_sha256"]})
    rescore = rescores[n_vals[0]]
    extra = {"checksums": checksum_cost(root, rows, r, n_vals[0], log=say)} if checksums else {}
    if selection:   # the first row's fields at the top level, as before
        first = selection[0]
        extra |= {"strategy": first["strategy"], "percent": percent, "select_seconds": first["select_seconds"],
                 "select_peak_rss_mb": first["select_peak_rss_mb"], "select_kept": first["select_kept"],
                 "select_passes": first["select_passes"], "selection": selection}
    return extra | {"samples": n, "rows_per_sample": rows, "r": r, "n_val": n_vals[0], "shard_size": shard_size,
            "bytes_per_sample": disk / n, "store_bytes": disk, "build_seconds": build_s,
            "read_seconds": read["seconds"], "read_seconds_first": reads[0]["seconds"],
            "rescore_seconds": rescore["seconds"], "rescore_over_read": rescore["seconds"] / read["seconds"],
            "rescore_peak_rss_mb": rescore["peak_rss_mb"], "read_peak_rss_mb": read["peak_rss_mb"],
            "samples_per_second": n / rescore["seconds"], "rescored": rescore["samples"],
            "finite": rescore["finite"]}


__all__ = ["build_store", "synthetic_features", "run", "check_options", "bytes_to_write", "checksum_cost"]
