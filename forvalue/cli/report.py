"""``forvalue report``: the curation report of a subset, one self-contained HTML page (forvalue.report).

    forvalue report --subset 3f2a9c1b -o subset.html            # a subset of the platform's catalog
    forvalue report --scores scores.parquet --kept kept.parquet --dropped dropped.jsonl -o subset.html
    forvalue report --subset 3f2a9c1b --serve                   # prints http://127.0.0.1:PORT/..., Ctrl-C stops
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .options import UsageError
from .output import check_out

HTML = (".html", ".htm")


def register(sub, parents) -> None:
    p = sub.add_parser("report", parents=parents, help="a curation report: one HTML page per subset",
                       description="Write the curation report of a subset: lineage, the score distribution with kept "
                                   "and dropped marked, the composition of kept vs dropped by input column, kept and "
                                   "dropped samples in tables that sort and filter (tokens coloured by contribution), "
                                   "and what changed since the previous subset. One self-contained HTML file: it loads "
                                   "nothing from the network.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--subset", metavar="ID", help="a subset of the catalog: its id or the start of it")
    src.add_argument("--scores", metavar="FILE", help="the output of `forvalue score` (every sample's score) or the "
                                                      "kept rows of `forvalue curate` / `forvalue select`")
    p.add_argument("-o", "--out", default=None, metavar="FILE.html",
                   help="the page (default: report-<subset id>.html, or <scores file name>-report.html, here)")
    p.add_argument("--max-rows", type=int, default=2000, metavar="N",
                   help="rows the two tables show together (default %(default)s; the first and last of each, with "
                        "a note saying how many are not shown)")
    g = p.add_argument_group("catalog subsets (--subset)")
    g.add_argument("--catalog", default=None, metavar="DB",
                   help="the DuckDB catalog (default: $FORVALUE_DB, else .forvalue/forvalue.duckdb)")
    g.add_argument("--explain-tokens", type=int, default=None, metavar="N",
                   help="colour the tokens of the first rows with the subset's model and list the N strongest "
                        "(default 3; 0: no model is loaded)")
    g.add_argument("--store", default=None, metavar="DIR",
                   help="feature store holding the subset's features (default: the shown rows' features are computed)")
    f = p.add_argument_group("output files (--scores)")
    f.add_argument("--kept", default=None, metavar="FILE", help="the kept rows of curate / select, when --scores is "
                                                                "the table of `forvalue score`")
    f.add_argument("--dropped", default=None, metavar="FILE", help="the --dropped file of curate / select")
    f.add_argument("--data", default=None, metavar="FILE", help="the training file (samples no other file holds)")
    s = p.add_argument_group("serving")
    s.add_argument("--serve", action="store_true", help="serve the page on 127.0.0.1 and print its URL (Ctrl-C stops)")
    s.add_argument("--port", type=int, default=0, help="port to serve on (default: any free port)")
    p.set_defaults(func=run)


def check_args(args) -> None:
    """Options that belong to the other source, or out of range, are usage errors."""
    other = (("--kept", args.kept), ("--dropped", args.dropped), ("--data", args.data)) if args.subset else \
        (("--catalog", args.catalog), ("--store", args.store), ("--explain-tokens", args.explain_tokens is not None))
    for flag, value in other:
        if value:
            raise UsageError(f"{flag} is for {'--scores' if args.subset else '--subset'} reports")
    if args.port and not args.serve:
        raise UsageError("--port needs --serve")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.max_rows < 2:
        raise UsageError(f"--max-rows must be >= 2, got {args.max_rows}")
    if args.explain_tokens is not None and args.explain_tokens < 0:
        raise UsageError(f"--explain-tokens must be >= 0, got {args.explain_tokens}")


def out_path(args, inputs: tuple) -> Path:
    out = Path(args.out) if args.out else Path(f"report-{args.subset[:12]}.html" if args.subset
                                               else f"{Path(args.scores).stem}-report.html")
    if out.suffix.lower() not in HTML:
        raise ConfigError(f"{out}: a report is an .html file")
    return check_out(out, inputs=inputs, suffixes=None)


def run(args) -> int:
    from ..report import scores_report, subset_report

    check_args(args)
    if args.subset:
        catalog = args.catalog or os.environ.get("FORVALUE_DB") or ".forvalue/forvalue.duckdb"
        out = out_path(args, (catalog,))
        explain = 3 if args.explain_tokens is None else args.explain_tokens
        path = subset_report(catalog, args.subset, out, features_root=args.store, explain_tokens=explain,
                             max_rows=args.max_rows)
    else:
        out = out_path(args, (args.scores, args.kept, args.dropped, args.data))
        path = scores_report(args.scores, out, data_path=args.data, kept_path=args.kept, dropped_path=args.dropped,
                             max_rows=args.max_rows)
    print(f"report ({path.stat().st_size / 1024:.0f} KB) -> {path}")
    return serve_page(path, args.port) if args.serve else 0


def serve_page(path: Path, port: int) -> int:
    """Serve the page until Ctrl-C."""
    from ..report import serve

    server = serve(path, port=port)
    print(f"serving {path.name} at {server.url} (127.0.0.1 only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
