"""What `forvalue curate` kept, per kind of sample: the product's own output, counted against the
training file's labels (the labels never reach the curation; ``forvalue curate`` reads prompt and
response only).

    # the DataInf-derived template set (math-reason, 40% noise of every kind), as two JSONL files
    .venv/bin/python benchmarks/curate_kinds.py export-mixed --out DIR
    # the product, default strategy and model, top 10%, the samples the checks dropped beside
    .venv/bin/forvalue curate --train DIR/train.jsonl --val DIR/val.jsonl --top-p 10 \\
        --out DIR/kept.parquet --dropped DIR/dropped.parquet --store STORE
    # kept and dropped per kind
    .venv/bin/python benchmarks/curate_kinds.py count --train DIR/train.jsonl --kept DIR/kept.parquet \\
        --dropped DIR/dropped.parquet --kind-column noise --clean none [--group-column class]

The real-data pool of benchmarks/real_curation_data.py is counted the same way (``--kind-column
kind --clean clean``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def export_mixed(out: Path, seed: int = 0) -> None:
    from forvalue.benchmarks.noise import NOISE_KINDS, make_noise_corpus

    train, val = make_noise_corpus(seed, n_train=900, n_val=100, rate=0.4, kinds=NOISE_KINDS)
    out.mkdir(parents=True, exist_ok=True)
    keep = ("id", "prompt", "response", "class", "noise")
    for name, rows in (("train", train), ("val", val)):
        with open(out / f"{name}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in keep}) + "\n")
    print(f"{len(train)} training, {len(val)} valuation samples -> {out}")


def _ids(path: Path) -> list[str]:
    import polars as pl

    return pl.read_parquet(path, columns=["id"])["id"].to_list() if path.suffix == ".parquet" else [
        json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]


def count(args) -> int:
    rows = {r["id"]: r for r in (json.loads(x) for x in Path(args.train).read_text().splitlines() if x.strip())}
    total = collections.Counter(r[args.kind_column] for r in rows.values())
    kept = [rows[i] for i in _ids(Path(args.kept))]
    dropped = [rows[i] for i in _ids(Path(args.dropped))] if args.dropped else []
    kk = collections.Counter(r[args.kind_column] for r in kept)
    dk = collections.Counter(r[args.kind_column] for r in dropped)
    print(f"kept {len(kept)} of {len(rows)}; clean share {kk[args.clean] / max(1, len(kept)):.3f}"
          + (f"; {len(set(r[args.group_column] for r in kept))} of "
             f"{len(set(r[args.group_column] for r in rows.values()))} {args.group_column} values kept"
             if args.group_column else ""))
    print("\n| kind | in the pool | kept | dropped by the checks |\n|---|---:|---:|---:|")
    for kind in sorted(total, key=lambda k: (k != args.clean, k)):
        print(f"| {kind} | {total[kind]} | {kk[kind]} | {dk[kind] if args.dropped else '-'} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export-mixed")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("count")
    c.add_argument("--train", required=True)
    c.add_argument("--kept", required=True)
    c.add_argument("--dropped", default=None)
    c.add_argument("--kind-column", default="kind")
    c.add_argument("--clean", default="clean")
    c.add_argument("--group-column", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "export-mixed":
        export_mixed(args.out, args.seed)
        return 0
    return count(args)


if __name__ == "__main__":
    raise SystemExit(main())
