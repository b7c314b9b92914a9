"""``forvalue validate``: stream a data file, count its rows, show the first bad ones.

Exit status 0 when every row is a usable sample, 2 when a row is bad (or a needed column is missing
everywhere, or the file has no rows). Memory stays flat however long the file is (forvalue/data/stream.py).
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from . import options as o


def register(sub, parents) -> None:
    p = sub.add_parser("validate", parents=parents, help="check a data file row by row (streamed), without a model",
                       description="Reads the file in batches (the reader `forvalue score` uses), checks every row as it "
                                   "would, and prints the row counts and the first bad rows with file, row and field. "
                                   "Exit status 2 when any row is bad.")
    p.add_argument("--data", required=True, help="JSONL, Parquet, CSV or a Hugging Face save_to_disk folder")
    p.add_argument("--show", type=int, default=20, help="bad rows to print (default %(default)s)")
    p.add_argument("--batch-rows", type=int, default=50_000, help="rows per batch (memory ~ this)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    o.add_column_options(p, on_error=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.stream import validate

    if args.batch_rows < 1 or args.show < 0:
        raise ConfigError("--batch-rows must be >= 1 and --show >= 0")
    res = validate(args.data, columns=o.columns(args), batch_rows=args.batch_rows, keep=args.show)
    if args.json:
        print(json.dumps({"file": res.file, "rows": res.n_rows, "valid": res.n_valid, "bad": res.n_bad,
                          "duplicates": res.n_duplicates, "missing_columns": res.missing_columns, "ok": res.ok,
                          "errors": [str(e) for e in res.first_errors]}, indent=2))
    else:
        print(f"{res.file}: {res.n_rows} rows, {res.n_valid} valid samples, {res.n_bad} bad rows, "
              f"{res.n_duplicates} duplicates (same content as an earlier row)")
        for c in res.missing_columns:
            print(f"  {res.file}, field '{c}': missing column (in every row)")
        for e in res.first_errors:
            print(f"  {e}")
        if res.n_bad > len(res.first_errors):
            print(f"  ... and {res.n_bad - len(res.first_errors)} more")
        if not res.n_rows:
            print(f"  {res.file}: no rows")
    return 0 if res.ok else 2
