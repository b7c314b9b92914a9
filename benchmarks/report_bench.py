"""The curation report of a large subset: a synthetic catalog of N training samples (scored, a previous
subset and a subset keeping 10% of them, 1% dropped by a check), then ``forvalue.report.subset_report``
of the subset, timed, and the page's size.

    .venv/bin/python benchmarks/report_bench.py [--samples 100000] [--max-rows 2000] [--response-chars 0]
                                                [--json FILE]

No model: the page is made without token colours (``explain_tokens=0``; with a model they cost one
forward pass over at most 40 rows a table, whatever N). Prints the seconds of each step, the page's
size in KB and the process's peak RSS; it asserts the page's content (rows shown, cap notes), never a
time.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCES = ("gsm8k", "mathqa", "aqua", "svamp", "web")
TEMPLATES = tuple(f"t{i}" for i in range(8))


def records(n: int, seed: int = 0, pad: int = 0) -> list[dict]:
    """N short arithmetic samples (a response of ``pad`` more characters each) with three categorical columns."""
    rng = np.random.default_rng(seed)
    tail = (" The steps, once more:" + " we add the units, then the tens, then the hundreds." * (pad // 50 + 1))[:pad]
    a, b = rng.integers(1, 1000, n), rng.integers(1, 1000, n)
    src, tpl = rng.integers(0, len(SOURCES), n), rng.integers(0, len(TEMPLATES), n)
    return [{"id": f"s{i}", "prompt": f"Question {i}: what is {a[i]} plus {b[i]}? Show the steps.",
             "response": f"We add {a[i]} and {b[i]}: {a[i]} + {b[i]} = {a[i] + b[i]}. The answer is {a[i] + b[i]}."
                         + tail,
             "source": SOURCES[src[i]], "template": TEMPLATES[tpl[i]], "label": int(src[i] % 3)} for i in range(n)]


def build(path: Path, n: int, pad: int = 0) -> tuple:
    """A catalog with N registered samples, their scores, a previous subset and the subset to report."""
    from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, Catalog
    from forvalue.data.samples import samples_from_records
    from forvalue.models.loading import ModelFingerprint
    from forvalue.valuation.features import FeatureConfig

    cat, cfg = Catalog(path), FeatureConfig()
    train = samples_from_records(records(n, pad=pad), source="train.jsonl").samples
    val = samples_from_records(records(50, seed=1), source="val.jsonl").samples
    cat.register_set(KIND_DATASET, "bench", "v1", "train.jsonl", train)
    cat.register_set(KIND_VALUATION, "val", "w1", "val.jsonl", val)
    fp = ModelFingerprint(name="bench-model", weights_hash="ab" * 32, dtype="float32")
    cat.record_model(fp, spec="(none: the benchmark has no model)")
    runs = [cat.record_feature_run(kind=k, name=nm, version=ver, model_id=fp.id, config=cfg, n_samples=m,
                                   n_computed=m, n_reused=0, n_shards_written=1, store_folder=path.parent)
            for k, nm, ver, m in ((KIND_DATASET, "bench", "v1", n), (KIND_VALUATION, "val", "w1", 50))]
    rng = np.random.default_rng(2)
    raw, cosine = rng.gamma(4.0, 50.0, n), rng.normal(0.3, 0.1, n)
    ids = [s.sample_id for s in train]
    cat.replace_scores(dataset_name="bench", dataset_version="v1", valuation_set="val", valuation_version="w1",
                       model_id=fp.id, feature_config_id=cfg.id, sample_ids=ids, values=raw, normalized=cosine,
                       norms=raw / np.maximum(cosine, 1e-3), train_feature_run_id=runs[0], val_feature_run_id=runs[1])
    run = cat.latest_score_run("bench", "val", cfg.id)
    keep = n // 10
    dropped = rng.choice(n, n // 100, replace=False)
    order = np.argsort(-(cosine - 10 * np.isin(np.arange(n), dropped)), kind="stable")
    checks = [{"sample_id": ids[i], "check": "grounding", "value": 3.0 + rng.random(), "threshold": 2.9}
              for i in dropped]
    subsets = []
    for name, noise in (("previous", 0.02), ("current", 0.0)):
        o = np.argsort(-(cosine + rng.normal(0, noise, n) - 10 * np.isin(np.arange(n), dropped)), kind="stable") \
            if noise else order
        members = [(ids[i], r + 1, float(raw[i])) for r, i in enumerate(o[:keep])]
        subsets.append(cat.record_subset(score_run=run, mode="top_p", value=10, n_total=n, members=members,
                                         jsonl_path=f"{name}.jsonl", parquet_path=f"{name}.parquet",
                                         strategy="balanced", dagster_run_id=f"bench-{name}", dropped=checks))
    return cat, subsets[-1], keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--max-rows", type=int, default=2000)
    ap.add_argument("--response-chars", type=int, default=0, help="characters added to every response (default 0: "
                                                                       "about 60 each; the page keeps 600 a row)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    from forvalue.report import subset_report

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cat, sid, keep = build(Path(tmp) / "catalog.duckdb", args.samples, args.response_chars)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        page = subset_report(cat.path, sid, Path(tmp) / "report.html", explain_tokens=0, max_rows=args.max_rows)
        report_s = time.perf_counter() - t0
        text = page.read_text()
    rows = len(re.findall(r'<tr class="[kd]">', text))
    assert rows == min(args.max_rows, args.samples), rows
    assert keep <= args.max_rows // 2 or f"Showing {args.max_rows // 2:,} of {keep:,} kept samples" in text
    assert f"Showing {args.max_rows - min(keep, args.max_rows // 2):,} of {args.samples - keep:,} dropped" in text
    assert "<th>source</th>" in text and "<th>template</th>" in text and "added</b>" in text
    out = {"samples": args.samples, "kept": keep, "max_rows": args.max_rows,
           "response_chars": args.response_chars, "build_s": round(build_s, 1),
           "report_s": round(report_s, 2), "page_kb": round(len(text.encode()) / 1024), "rows_shown": rows,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    print(json.dumps(out))
    if args.json:
        from forvalue.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
