"""What the curation keeps from a real pool: relevance (For-Value strategies) and forward-only
consistency checks, side by side, on the real-data benchmark of benchmarks/real_curation_data.py.

    .venv/bin/python benchmarks/real_curation_data.py --sources DIR --out DATA
    .venv/bin/python benchmarks/real_curation_bench.py --data DATA --json OUT.json [--threads 2]
    .venv/bin/python benchmarks/real_curation_bench.py --data DATA --overhead 200   # the grounding pass's cost

For every training sample (and valuation sample) it computes, with the default model on the CPU:

- the For-Value features (response positions, the product's feature configuration) and the order
  of every selection strategy;
- the forward-only checks: s(A|Q), the mean NLL per response token given the instruction (the pass
  the features come from), s(A), the same response after an empty instruction, and
  IFD = s(A|Q) / s(A) (Li et al. 2024; low: the instruction explains the response, i.e. the
  response is *grounded* in its instruction).

It prints:

1. how well each check separates the clean target samples from each broken kind (AUC: the
   probability that a random clean math sample looks better than a random broken one);
2. what the top 10% of every method keeps, per kind: the strategies alone, each check alone, and
   each strategy after a check whose threshold is learned from the valuation set (a sample is
   dropped when its check value is worse than the valuation set's q-quantile; the valuation set is
   clean target data, so it shows what a consistent sample looks like).

``--json`` keeps every per-sample value, so the tables can be recomputed without the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("clean", "other_response", "truncated", "wrong_answer", "near_empty", "off_target")


def auc(good: np.ndarray, bad: np.ndarray) -> float:
    """P(a random good value < a random bad value) (lower is better), ties half."""
    if not len(good) or not len(bad):
        return float("nan")
    g, b = np.asarray(good)[:, None], np.asarray(bad)[None, :]
    return float(((g < b).sum() + 0.5 * (g == b).sum()) / (g.size * b.size))


def kept_by_kind(order: np.ndarray, kinds: np.ndarray, k: int) -> dict[str, int]:
    top = kinds[order[:k]]
    return {kind: int((top == kind).sum()) for kind in KINDS}


def load(data: Path):
    from forvalue.benchmarks.runner import build_data

    rec = {n: [json.loads(x) for x in (data / f"{n}.jsonl").read_text().splitlines() if x.strip()]
           for n in ("train", "val")}
    bd = build_data("real-math", rec["train"], rec["val"], positions="response", chat_template=True)
    return bd, rec


def losses(lm, samples, batch_size):
    from forvalue.baselines.filters import response_losses, without_instruction

    t0 = time.perf_counter()
    with_q = response_losses(lm, samples, batch_size=batch_size)
    t1 = time.perf_counter()
    alone = response_losses(lm, [without_instruction(s) for s in samples], batch_size=batch_size)
    return with_q, alone, {"with_instruction_s": t1 - t0, "without_instruction_s": time.perf_counter() - t1}


def overhead(args) -> int:
    """Extraction time with and without the grounding pass (s(A)), on the first ``--overhead``
    training samples, alternated A/B/A/B in one run (shared machines: both see the same load); both
    include the answer check's span and loss (the extraction pass's own), whose tokenization cost is
    printed beside."""
    from forvalue.valuation.features import extract_sparse
    from forvalue.models.loading import load_model

    bd, _ = load(Path(args.data))
    samples = bd.train[:args.overhead]
    lm = load_model(args.model, device="cpu")
    extract_sparse(lm, samples[:8], bd.config, batch_size=args.batch_size)   # warm-up
    times = {False: [], True: []}
    for _ in range(2):
        for grounding in (False, True):
            t0 = time.perf_counter()
            extract_sparse(lm, samples, bd.config, batch_size=args.batch_size, grounding=grounding)
            times[grounding].append(time.perf_counter() - t0)
    plain, with_g = min(times[False]), min(times[True])
    print(f"| samples | extraction (s) | extraction + grounding pass (s) | ratio |\n|---:|---:|---:|---:|\n"
          f"| {len(samples)} | {plain:.1f} | {with_g:.1f} | {with_g / plain:.2f}x |")
    print(f"# every run: {json.dumps({str(k): [round(x, 1) for x in v] for k, v in times.items()})}")
    # the answer check's span: the responses tokenized with character offsets (inside both timings
    # above, in encode_all), against the plain tokenization that came before it
    from forvalue.valuation.features import answer_tokens, render

    texts = [render(s, lm.tokenizer, bd.config.chat_template)[1] for s in samples]
    t0 = time.perf_counter()
    for t in texts:
        lm.tokenizer(t, add_special_tokens=False)["input_ids"]
    t1 = time.perf_counter()
    spans = [answer_tokens(lm.tokenizer, t, False)[1] for t in texts]
    t2 = time.perf_counter()
    print(f"# responses tokenized: plain {t1 - t0:.3f}s, with the answer span {t2 - t1:.3f}s "
          f"({sum(x is not None for x in spans)} of {len(texts)} have a computed result)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="output folder of real_curation_data.py")
    ap.add_argument("--model", default="default")
    ap.add_argument("--strategies", default="balanced,round-robin,max-cosine,cosine-mean,raw-mean")
    ap.add_argument("--quantiles", default="0.9,0.95,1.0", help="valuation quantiles tried as check thresholds")
    ap.add_argument("--fraction", type=float, default=0.10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--store", default=str(ROOT / ".forvalue" / "bench" / "real-curation-features"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--overhead", type=int, default=0, metavar="N",
                    help="only measure the extraction time with and without the grounding pass on N samples")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.overhead:
        return overhead(args)
    from forvalue.models.loading import load_model
    from forvalue.store.feature_store import FeatureStore
    from forvalue.valuator import Valuator

    bd, rec = load(Path(args.data))
    kinds = np.array([r["kind"] for r in rec["train"]])
    n, k = len(bd.train), max(1, int(round(args.fraction * len(bd.train))))
    counts = {str(a): int(b) for a, b in zip(*np.unique(kinds, return_counts=True))}
    print(f"# {n} training samples {counts}, {len(bd.val)} valuation; "
          f"top {args.fraction:.0%} = {k}; torch threads {torch.get_num_threads()}", flush=True)
    lm = load_model(args.model, device="cpu")
    print(f"# model {lm.fingerprint.id}", flush=True)

    t0 = time.perf_counter()
    valuator = Valuator(lm, bd.config, store=FeatureStore(args.store), batch_size=args.batch_size)
    tf, vf = valuator.featurize(bd.train).features, valuator.featurize(bd.val).features
    feature_s = time.perf_counter() - t0
    strategies = [s for s in args.strategies.split(",") if s]
    orders = {s: valuator.rank(tf, vf, s).order for s in strategies}
    print(f"# features {feature_s:.0f}s (from the store when cached)", flush=True)

    tq, ta, t_train = losses(lm, bd.train, args.batch_size)
    vq, va, t_val = losses(lm, bd.val, args.batch_size)
    print(f"# losses: {json.dumps({k2: round(v, 1) for k2, v in t_train.items()})} (train)", flush=True)
    checks = {"ifd": (tq / np.maximum(ta, 1e-12), vq / np.maximum(va, 1e-12)), "loss": (tq, vq)}

    clean = kinds == "clean"
    print("\n## How each check separates clean target samples from each kind (AUC, 1 = perfect)\n")
    print("| check | " + " | ".join(k2 for k2 in KINDS if k2 != "clean") + " | all broken math |")
    print("|---|" + "---:|" * len(KINDS))
    aucs = {}
    for name, (tv, _) in checks.items():
        row = {k2: auc(tv[clean], tv[kinds == k2]) for k2 in KINDS if k2 != "clean"}
        row["broken_math"] = auc(tv[clean], tv[(kinds != "clean") & (kinds != "off_target")])
        aucs[name] = row
        print(f"| {name} | " + " | ".join(f"{row[k2]:.3f}" for k2 in row) + " |")

    print(f"\n## What the top {k} keeps, per kind (of {counts})\n")
    print("| method | clean share | " + " | ".join(KINDS) + " | dropped by the check |")
    print("|---|---:|" + "---:|" * (len(KINDS) + 1))
    results = []

    def report(method, order, dropped=0):
        kept = kept_by_kind(order, kinds, k)
        results.append({"method": method, "kept": kept, "clean_share": kept["clean"] / k, "dropped": dropped})
        print(f"| {method} | {kept['clean'] / k:.2f} | " + " | ".join(str(kept[k2]) for k2 in KINDS)
              + f" | {dropped} |", flush=True)

    for s, order in orders.items():
        report(s, order)
    for name, (tv, _) in checks.items():
        report(f"{name} (lowest first)", np.argsort(tv, kind="stable"))
    ids = [s.sample_id for s in bd.train]
    for name, (tv, vv) in checks.items():
        for q in (float(x) for x in args.quantiles.split(",")):
            thr = float(np.quantile(vv, q))
            keep = np.flatnonzero(tv <= thr)
            sub = tf.select([ids[i] for i in keep])
            for s in strategies:
                order = keep[valuator.rank(sub, vf, s).order]
                report(f"{s} after {name} <= val q{q:g} ({thr:.3f})", order, dropped=n - len(keep))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "n": n, "k": k, "feature_seconds": feature_s, "loss_seconds": t_train | {
                "val": t_val}, "aucs": aucs, "results": results,
            "samples": [{"id": r["id"], "kind": r["kind"], "domain": r["domain"], "loss": float(a), "loss_alone": float(b)}
                        for r, a, b in zip(rec["train"], tq, ta)],
            "val": [{"loss": float(a), "loss_alone": float(b)} for a, b in zip(vq, va)],
            "orders": {s: o.tolist() for s, o in orders.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
