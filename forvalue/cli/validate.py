"""``forvalue validate``: stream a data file, count its rows, show the first bad ones.

Exit status 0 when every row is a usable sample, 2 when a row is bad, an id repeats (or a needed
column is missing everywhere, or the file has no rows), with one ``forvalue: error:`` line on stderr: the
problem ``forvalue score`` would stop at. Memory stays flat however long the file is (forvalue/data/stream.py).
"""

from __future__ import annotations

import json
import sys

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
                          "duplicates": res.n_duplicates, "repeated_ids": res.n_repeated_ids,
                          "missing_columns": res.missing_columns, "ok": res.ok,
                          "errors": [str(e) for e in sorted(res.first_errors + res.repeated_ids,
                                                            key=lambda e: e.row or 0)[:args.show]]}, indent=2))
    else:
        _report(res, args.show)
    problem = res.first_problem()
    if problem is not None:   # the one line `forvalue score` would stop with
        print(f"forvalue: error: {problem}", file=sys.stderr)
    return 0 if res.ok else 2


def _report(res, show: int) -> None:
    """The counts, the columns missing everywhere and the first ``show`` problems (bad rows, repeated ids)."""
    print(f"{res.file}: {res.n_rows} rows, {res.n_valid} valid samples, {res.n_bad} bad rows, "
          f"{res.n_duplicates} duplicates (same content as an earlier row)"
          + (f", {res.n_repeated_ids} repeated ids (score and curate refuse the file)" if res.n_repeated_ids else ""))
    for c in res.missing_columns:
        print(f"  {res.file}, field '{c}': missing column (in every row)")
    for e in sorted(res.first_errors + res.repeated_ids, key=lambda e: e.row or 0)[:show]:
        print(f"  {e}")
    more = res.n_bad + res.n_repeated_ids - min(show, len(res.first_errors) + len(res.repeated_ids))
    if more > 0:
        print(f"  ... and {more} more")
    if not res.n_rows:
        print(f"  {res.file}: no rows")
