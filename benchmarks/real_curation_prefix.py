"""The grounding check over the first M response tokens: does IFD separate as well as over the
whole response, and what does its response-alone pass cost?

    .venv/bin/python benchmarks/real_curation_prefix.py --data DATA --m 48 [--threads 2] [--store STORE]

DATA: the output folder of benchmarks/real_curation_data.py. Both losses are computed on the
responses cut to their first M tokens (this experiment runs the with-instruction one as a pass of
its own; in the product it would come from the extraction pass, so only the response-alone pass is
extra). Prints the pass times, the AUC of IFD against each broken kind, and what a threshold at the
valuation set's maximum drops per kind.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--m", type=int, default=48, help="response tokens kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--store", default=None, help="the feature store real_curation_bench.py filled: also rank "
                                                  "the strategies after the check")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.real_curation_bench import KINDS, auc, load
    from forvalue.baselines.filters import response_losses
    from forvalue.valuation.features import without_instruction
    from forvalue.models.loading import load_model

    bd, rec = load(Path(args.data))
    kinds = np.array([r["kind"] for r in rec["train"]])
    lm = load_model("default", device="cpu")

    def prefix(s):
        ids = lm.tokenizer(s.response, add_special_tokens=False)["input_ids"][:args.m]
        return replace(s, response=lm.tokenizer.decode(ids))

    out = {}
    for name, samples in (("train", bd.train), ("val", bd.val)):
        cut = [prefix(s) for s in samples]
        t0 = time.perf_counter()
        with_q = response_losses(lm, cut, batch_size=8)
        t1 = time.perf_counter()
        alone = response_losses(lm, [without_instruction(s) for s in cut], batch_size=8)
        out[name] = (with_q / np.maximum(alone, 1e-12), t1 - t0, time.perf_counter() - t1)
    ifd, t_with, t_alone = out["train"]
    print(f"M={args.m}: with-instruction pass {t_with:.0f}s, response-alone pass {t_alone:.0f}s "
          f"({len(bd.train)} training samples, {args.threads} threads)")
    clean = kinds == "clean"
    broken = [k for k in KINDS if k != "clean"]
    print("| check | " + " | ".join(broken) + " | all broken math |\n|---|" + "---:|" * len(KINDS))
    row = [auc(ifd[clean], ifd[kinds == k]) for k in broken]
    row.append(auc(ifd[clean], ifd[(kinds != "clean") & (kinds != "off_target")]))
    print(f"| IFD, first {args.m} tokens | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    threshold = float(np.max(out["val"][0]))
    failed = ifd > threshold
    print(f"threshold (valuation max) {threshold:.3f}; dropped per kind: "
          f"{ {k: int(failed[kinds == k].sum()) for k in KINDS} }")
    if args.store:   # the strategies after the check (forvalue.curation.consistency.rank_checked), features from the store
        from benchmarks.real_curation_bench import kept_by_kind
        from forvalue.curation.consistency import rank_checked
        from forvalue.store.feature_store import FeatureStore
        from forvalue.valuator import Valuator

        v = Valuator(lm, bd.config, store=FeatureStore(args.store), batch_size=8)
        tf, vf = v.featurize(bd.train).features, v.featurize(bd.val).features
        ones = (np.ones(len(tf)), np.ones(len(vf)))
        tf = replace(tf, losses_first=out["train"][0], losses_alone=ones[0])   # IFD as computed above
        vf = replace(vf, losses_first=out["val"][0], losses_alone=ones[1])
        k = max(1, round(0.1 * len(tf)))
        for strategy in ("balanced", "cosine-mean"):
            ranking, _ = rank_checked(tf, vf, strategy)
            print(f"{strategy} after the check, top {k}: {kept_by_kind(ranking.order, kinds, k)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
