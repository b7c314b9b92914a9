"""``forvalue explain``: why a sample is valuable, token by token.

    forvalue explain --train train.jsonl --val val.jsonl --sample-id demo-train-0031 [--json why.json]

Each sample's For-Value is a sum over its scored tokens; the command prints the response with its
strongest tokens marked, the most positive and most negative tokens, and the valuation samples it
helps most. ``--json`` writes ``{"samples": [{"sample_id", "score", "tokens": [{"text", "position",
"contribution"}], "helps_most": [...]}]}`` (tokens strongest first).
"""

from __future__ import annotations

import json
import sys

from ..errors import DataError
from ..io import atomic_write_text
from . import options as o

METHODS = ("sparse", "exact", "full-vocab", "emb")


def register(sub, parents) -> None:
    p = sub.add_parser("explain", parents=parents, help="why a sample is valuable: per-token contributions",
                       description="Per-token contributions to each sample's For-Value (they add up to the score), "
                                   "the response with its strongest tokens marked, and the valuation samples it "
                                   "helps most.")
    p.add_argument("--train", required=True, help="the training data the samples come from")
    p.add_argument("--val", required=True, help="the valuation data")
    p.add_argument("--sample-id", action="append", required=True, dest="sample_ids", metavar="ID",
                   help="a sample_id (as in `forvalue score` output) or the value of the id column; repeat for more")
    p.add_argument("--method", choices=METHODS, default="sparse")
    p.add_argument("--top", type=int, default=5, help="strongest tokens shown each way (default %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the explanations as JSON")
    o.add_store_option(p)
    o.add_model_options(p)
    o.add_feature_options(p)
    o.add_column_options(p)
    p.set_defaults(func=run)


def find(samples, wanted: list[str], file: str) -> list:
    """The samples named by sample_id or by the id column, in the order asked."""
    by_sid = {s.sample_id: s for s in samples}
    by_uid = {str(s.user_id): s for s in samples if s.user_id is not None}
    out = []
    for w in wanted:
        s = by_sid.get(w) or by_uid.get(w)
        if s is None:
            raise DataError(file, None, "sample_id", f"no sample with id {w!r} (a sample_id or a value of the id column)")
        out.append(s)
    return out


def run(args) -> int:
    from ..store.feature_store import FeatureStore
    from ..valuator import Valuator
    from .output import check_out

    if args.top < 0:
        from ..errors import ConfigError

        raise ConfigError(f"--top must be >= 0, got {args.top}")
    out = check_out(args.json, inputs=(args.train, args.val)) if args.json else None
    if out is not None and out.suffix.lower() != ".json":
        from ..errors import ConfigError

        raise ConfigError(f"{out}: --json writes a .json file")
    mcfg, fcfg = o.checked_configs(args)
    root = o.store_root(args)
    train = o.load_data(args.train, args)
    val = o.load_data(args.val, args)
    chosen = find(train.samples, args.sample_ids, args.train)
    v = Valuator(mcfg, fcfg, store=FeatureStore(root) if root else None)
    why = v.explain(chosen, val.samples, method=args.method)
    if out is not None:
        payload = {"samples": [_record(e, s) for e, s in zip(why, chosen)], "method": args.method,
                   "model": v.lm.fingerprint.to_dict(), "feature_config": v.config.to_dict()}
        atomic_write_text(out, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"explained {len(why)} samples ({args.method}) -> {out}")
    else:
        color = sys.stdout.isatty()
        for e, s in zip(why, chosen):
            print(render(e, s, val.samples, top=args.top, color=color))
    return 0


def _record(e, s) -> dict:
    d = e.to_dict()
    d.update({"row": s.row, "id": s.user_id})
    return d


def marked_text(e, top: int, *, color: bool = False) -> str:
    """The scored text, its ``top`` most positive tokens marked [+...] and most negative [-...]."""
    pos, neg = e.strongest(top)
    plus, minus = {t.position for t in pos if t.contribution > 0}, {t.position for t in neg}
    parts = []
    for t in e.tokens:
        if t.position in plus:
            parts.append(f"\x1b[32m{t.text}\x1b[0m" if color else f"[+{t.text}]")
        elif t.position in minus:
            parts.append(f"\x1b[31m{t.text}\x1b[0m" if color else f"[-{t.text}]")
        else:
            parts.append(t.text)
    return "".join(parts)


def render(e, sample, val_samples, *, top: int = 5, color: bool = False) -> str:
    """The terminal view of one explanation."""
    where = f"{sample.source} row {sample.row}" + (f", id {sample.user_id}" if sample.user_id is not None else "")
    pos, neg = e.strongest(top)
    val_by_id = {s.sample_id: s for s in val_samples}

    def toks(ts):
        return ", ".join(f"{t.text!r} {t.contribution:+.4g} (position {t.position})" for t in ts) or "-"

    def helps(sid):
        s = val_by_id.get(sid)
        return f"row {s.row}" + (f" (id {s.user_id})" if s is not None and s.user_id is not None else "") \
            if s is not None else sid[:12]

    lines = [f"sample {e.sample_id[:12]} ({where}): For-Value {e.score:+.6g}",
             f"  text: {marked_text(e, top, color=color).replace(chr(10), chr(92) + 'n')}",
             f"  most positive: {toks([t for t in pos if t.contribution > 0])}",
             f"  most negative: {toks(neg)}",
             "  helps most: " + ("; ".join(f"valuation {helps(sid)} {v:+.4g}" for sid, v in e.helps_most) or "-"),
             ""]
    return "\n".join(lines)
