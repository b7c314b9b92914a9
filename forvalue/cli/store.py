"""``forvalue store verify`` and ``forvalue store compact``: check and tidy a feature store."""

from __future__ import annotations

import json

from . import options as o


def register(sub, parents) -> None:
    store = sub.add_parser("store", help="check (verify) or tidy (compact) a feature store")
    ssub = store.add_subparsers(dest="store_command", required=True)
    p = ssub.add_parser("verify", parents=parents,
                        help="check every shard (files, sizes, checksums, readable Parquet, each sample once)",
                        description="Exit status 0 when the store is sound, 1 when something is wrong (listed). "
                                    "--repair moves damaged shards aside (their samples are computed again by the "
                                    "next feature run) and removes files killed writers left.")
    p.add_argument("--store", default=None, help="the feature store folder (default: $FORVALUE_FEATURES, else "
                                                 ".forvalue/features)")
    p.add_argument("--repair", action="store_true",
                   help="move damaged shards aside, remove leftovers (needs write access; without it the store is "
                        "only read)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_verify)
    p = ssub.add_parser("compact", parents=parents,
                        help="rewrite the shards into full shards with every sample once")
    p.add_argument("--store", default=None, help="the feature store folder (default: $FORVALUE_FEATURES, else "
                                                 ".forvalue/features)")
    p.add_argument("--shard-size", type=int, default=512, help="samples per shard")
    p.set_defaults(func=run_compact)


def _store(args):
    """The store the command names: an existing folder holding at least one model/config folder."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..store.feature_store import FeatureStore

    root = Path(args.store or o.default_store())
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: the feature store must be a folder, and this is a file")
    if not root.is_dir():
        raise ConfigError(f"{root}: no feature store here (no such folder)")
    store = FeatureStore(root)
    if not store.folders():
        raise ConfigError(f"{root}: no feature store here (no <model>/<feature config> folder with shards; a "
                          f"store is the folder given to --store or $FORVALUE_FEATURES)")
    return store


def run_verify(args) -> int:
    store = _store(args)
    report = store.verify(repair=args.repair)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    print(f"{store.root}: {report['folders']} model/config folders, {report['shards']} intact shards, "
          f"{report['samples']} samples" + (" (read-only: checked without the store's lock)"
                                           if report["read_only"] else ""))
    for f in report["found"]:
        print(f"  {f['folder']}: model {', '.join(f['models']) or '(no intact shard)'}, feature config "
              f"{f['feature_config']}, {f['samples']} samples")
    for d in report["damaged"]:
        print(f"  damaged: {d['shard']}: {d['reason']}" + (" (moved aside)" if args.repair else ""))
    for d in report["misplaced"]:
        print(f"  misplaced: {d['shard']}: {d['reason']} (move it by hand or remove it)")
    if report["duplicates"]:
        print(f"  {report['duplicates']} samples stored more than once (`forvalue store compact` removes them)")
    if report["stale_tmp"]:
        print(f"  {report['stale_tmp']} temporary files left by killed writers" +
              (" (removed)" if args.repair else ""))
    fixed = args.repair and not report["duplicates"] and not report["misplaced"]
    print("sound" if report["ok"] else "repaired" if fixed else
          "problems found" + ("" if args.repair else " (--repair to fix what it can)"))
    return 0 if report["ok"] else 1


def run_compact(args) -> int:
    from ..errors import ConfigError

    if args.shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {args.shard_size}")
    report = _store(args).compact(shard_size=args.shard_size)
    print(f"compacted {report['folders']} folders: {report['shards_before']} shards -> {report['shards_after']}, "
          f"{report['samples']} samples, {report['duplicates_removed']} duplicates removed")
    return 0
