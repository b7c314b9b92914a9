"""``forvalue curate``: score and select a curated subset in one command."""

from __future__ import annotations

import numpy as np

from .._version import __version__
from ..errors import DataError
from . import options as o
from .output import check_out, write_table


def register(sub, parents) -> None:
    p = sub.add_parser("curate", parents=parents, help="score and select a curated subset in one command",
                       description="Value every training sample against the valuation set and keep a subset chosen by "
                                   "a selection strategy. Writes the kept rows with every input column plus score "
                                   "(the For-Value), normalized (cosine with the mean valuation gradient), norm, rank "
                                   "(position in the strategy's order) and strategy.")
    p.add_argument("--train", required=True, help="training data: JSONL, Parquet, CSV or HF save_to_disk folder")
    p.add_argument("--val", required=True, help="valuation data, same formats")
    p.add_argument("--out", required=True, help="the kept rows (.parquet, .jsonl or .csv)")
    p.add_argument("--explain-tokens", type=int, default=0, metavar="N",
                   help="add each kept sample's N most positive tokens (text, position, contribution) as column "
                        "top_tokens (0: none; one more forward pass over the kept samples)")
    add_dropped_option(p)
    p.add_argument("--report", default=None, metavar="FILE.html",
                   help="also write the subset's curation report: one self-contained HTML page (forvalue report; "
                        "tokens of its first rows coloured by contribution: one more forward pass over them)")
    o.add_store_option(p)
    o.add_selection_options(p)
    o.add_model_options(p)
    o.add_feature_options(p)
    o.add_column_options(p)
    o.add_engine_options(p)
    p.set_defaults(func=run_curate)


def add_dropped_option(p) -> None:
    p.add_argument("--dropped", default=None, metavar="FILE",
                   help="also write the samples the consistency checks dropped (.parquet, .jsonl or .csv): every "
                        "input column plus check, check_value, threshold, reason, score, normalized")


def write_subset(args, out, samples, ranking, mode: str, value: float, meta: dict, explain=None) -> None:
    """Write the kept rows; ``explain(kept samples) -> explanations`` adds their top tokens."""
    from .scores_table import subset_rows

    try:
        idx = ranking.indices(mode, value)
    except ValueError as e:
        raise DataError(str(args.train), None, None, str(e)) from None
    o.check_count(len(samples), mode, value, args.train)
    rows = subset_rows(samples, ranking, idx)
    if explain is not None and rows:
        for row, e in zip(rows, explain([samples[i] for i in idx])):
            row["top_tokens"] = [{"text": t.text, "position": t.position, "contribution": t.contribution}
                                 for t in e.strongest(args.explain_tokens)[0] if t.contribution > 0]
    meta = meta | {"strategy": ranking.strategy, "mode": mode, "value": value, "n_total": len(samples),
                   "n_selected": len(rows), "code_version": __version__, "checks": ranking.info.get("checks")}
    write_table(rows, out, meta)
    print(f"kept {len(rows)} of {len(samples)} training samples ({ranking.strategy}, {mode.replace('_', '-')} "
          f"{value:g}) -> {args.out}")
    checked = ranking.checks
    if checked is None:
        print(f"consistency checks {ranking.info.get('checks', 'not applied')}")
        if args.dropped:
            write_table([], args.dropped, meta)
        return
    n_kept = int(checked.failed[idx].sum())
    print(f"consistency: {checked.describe()}" + (f"; {n_kept} of them kept (the subset is larger than what "
                                                  f"passed)" if n_kept else ""))
    if args.dropped:
        write_table(dropped_rows(samples, ranking), args.dropped, meta)
        print(f"dropped samples ({int(checked.failed.sum())}) -> {args.dropped}")


def dropped_rows(samples, ranking) -> list[dict]:
    """One row per sample the checks dropped, least failing first: sample_id, check, check_value,
    threshold, reason, score, normalized, then the input columns."""
    from .scores_table import table_rows

    checked = ranking.checks
    drop = checked.dropped
    rec = checked.records([s.sample_id for s in samples], samples)
    return table_rows([samples[i] for i in drop], {
        "check": [r["check"] for r in rec], "check_value": [r["value"] for r in rec],
        "threshold": [r["threshold"] for r in rec], "reason": [r["reason"] for r in rec],
        "score": [float(x) for x in ranking.raw[drop]],
        "normalized": [float(x) if np.isfinite(x) else None for x in ranking.normalized[drop]]})


def run_curate(args) -> int:
    out = check_out(args.out, inputs=(args.train, args.val))
    if args.dropped:
        check_out(args.dropped, inputs=(args.train, args.val, args.out))
    if args.report:
        check_report_out(args.report, (args.train, args.val, args.out, args.dropped))
    mode, value = o.subset_size(args)
    o.check_size(mode, value)
    if args.explain_tokens < 0:
        from ..errors import ConfigError

        raise ConfigError(f"--explain-tokens must be >= 0, got {args.explain_tokens}")
    v = o.valuator(args, o.store_root(args))
    train, val = o.load_data(args.train, args), o.load_data(args.val, args)
    o.check_count(len(train.samples), mode, value, args.train)
    with v.session():   # on Ray: one connection for the actor pool and the strategy's passes
        prep = o.prepare(v, args, train, val)
        tr, va = prep.sets
        selection = v.select(tr, va, mode, value, strategy=args.strategy, progress=not args.quiet)
    o.report_store(v.store)
    ranking = selection.ranking
    meta = {"model": v.fingerprint.to_dict(), "method": "sparse", "feature_config": v.config.to_dict(),
            "feature_config_id": v.config.id, "train": str(args.train), "val": str(args.val), "n_val": len(va)}
    if prep.run is not None:
        meta["engine"] = {"features": prep.run.stats.to_dict(), "selection": ranking.info.get("engine")}
    write_subset(args, out, tr, ranking, mode, value, meta, _explainer(args, v, va))
    if args.report:
        write_report(args, tr, selection, meta, _explainer(args, v, va, always=True))
    line = o.engine_line(prep, ranking.info.get("engine"), "selection")
    if line:
        print(line)
    return 0


def check_report_out(path, inputs: tuple):
    """The --report file, checked before any work: an .html file we can write."""
    from pathlib import Path

    from ..errors import ConfigError

    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{path}: --report writes an .html file")
    return check_out(path, inputs=inputs, suffixes=None)


def write_report(args, samples, selection, meta: dict, explain) -> None:
    """The curation report of the subset just written (forvalue.report.selection_report)."""
    from ..report import selection_report

    model = meta.get("model") or {}
    lineage = [("training data", str(args.train)), ("valuation data", f"{args.val} ({meta.get('n_val')} samples)"),
               ("model", f"{model.get('name', '–')} ({model.get('id', '–')})"),
               ("scoring method", f"{meta.get('method')} (feature config {meta.get('feature_config_id')})"),
               ("kept rows file", str(args.out)), ("code version", __version__)]
    path = selection_report(samples, selection.ranking, selection.indices, args.report, mode=selection.mode,
                            value=selection.value, lineage=lineage, explain=explain,
                            explain_tokens=args.explain_tokens or 3)
    print(f"report ({path.stat().st_size / 1024:.0f} KB) -> {args.report}")


def _explainer(args, v, va, always: bool = False):
    """``explain(kept samples)`` for --explain-tokens (None without it, unless ``always``: the report's
    rows): one more forward pass in this process (on Ray too, with the model checked against this machine)."""
    if not args.explain_tokens and not always:
        return None
    if v.engine.is_ray:
        from ..valuator import Valuator

        v = Valuator(o.checked_configs(args)[0], v.config, store=v.store)
    return lambda kept: v.explain(kept, va)
