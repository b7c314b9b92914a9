"""Extraction throughput: padding waste of length bucketing, tokens/s and the ratio to a plain
forward pass for several batch sizes, on short and ~500-token samples.

    .venv/bin/python benchmarks/extract_bench.py [--model default] [--device auto] [--batch-sizes 1,4,8,16]
                                                  [--n 64] [--json benchmarks/results/extract.json]

On a GPU the same command runs there (bf16 weights by default on CUDA; --device cuda).

1. Padding waste: padded tokens / real tokens - 1 when batches are cut from the file order and
   when they are cut after sorting by length (what extraction does), for each batch size, over
   a mixed-length set (short and long samples together).
2. Throughput: for each batch size, sparse feature extraction and a plain ``model(**inputs).logits``
   forward over the same length-bucketed batches, interleaved batch by batch (alternating which
   goes first) so that load from other processes hits both alike; best of --repeat. Reported:
   real (unpadded) tokens per second of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def padding_waste(lengths: list[int], batch_size: int, *, bucketed: bool) -> float:
    order = sorted(lengths) if bucketed else list(lengths)
    padded = sum(max(order[i:i + batch_size]) * len(order[i:i + batch_size]) for i in range(0, len(order), batch_size))
    return padded / sum(lengths) - 1


def _samples(kind: str, n: int):
    from bounded_sets import long_records
    from forvalue.benchmarks.tasks import make_task
    from forvalue.data.samples import Columns, samples_from_records

    if kind == "short":
        tr, _ = make_task("math-reason", 0, n_train_per_class=max(1, n // 10), n_val_per_class=1)
    else:
        tr, _ = long_records(0, n_train_per_class=max(1, n // 10), n_val_per_class=1)
    return samples_from_records(tr[:n], columns=Columns(text="text")).samples


def throughput(lm, samples, batch_size: int, repeat: int) -> dict:
    import torch

    from forvalue.valuation.features import FeatureConfig, collate, encode_all, extract_sparse, length_batches

    config = FeatureConfig(positions="all")
    encoded, _ = encode_all(lm, samples, config)
    tokens = sum(len(e.input_ids) for e in encoded)
    batches = length_batches(encoded, batch_size)

    def plain(batch):
        inputs = collate(batch, lm.tokenizer.pad_token_id, lm.device)
        with torch.inference_mode():
            logits = lm.model(**inputs).logits
        del logits

    def extract(batch):
        extract_sparse(lm, samples, config, encoded=batch, batch_size=batch_size)

    def sync():
        if lm.device.type == "cuda":
            torch.cuda.synchronize()

    plain(batches[0])
    extract(batches[0])
    t_plain, t_ext = [], []
    for rep in range(repeat):
        tp = te = 0.0
        for j, batch in enumerate(batches):
            for which in ((0, 1) if (j + rep) % 2 == 0 else (1, 0)):
                sync()
                t0 = time.perf_counter()
                (plain if which == 0 else extract)(batch)
                sync()
                dt = time.perf_counter() - t0
                tp, te = (tp + dt, te) if which == 0 else (tp, te + dt)
        t_plain.append(tp)
        t_ext.append(te)
    return {"batch_size": batch_size, "samples": len(samples), "tokens": tokens,
            "plain_tokens_per_s": tokens / min(t_plain), "extract_tokens_per_s": tokens / min(t_ext),
            "ratio": min(t_ext) / min(t_plain), "plain_all": t_plain, "extract_all": t_ext}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--n", type=int, default=64, help="samples of each length")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from forvalue.benchmarks.runner import machine_info
    from forvalue.valuation.features import FeatureConfig, encode_all
    from forvalue.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    sets = {kind: _samples(kind, args.n) for kind in ("short", "long")}
    out = {"meta": {"machine": machine_info(), "device": str(lm.device), "dtype": str(lm.dtype),
                    "command": " ".join(sys.argv)}, "padding": [], "throughput": []}

    enc = {k: encode_all(lm, s, FeatureConfig(positions="all"))[0] for k, s in sets.items()}
    lengths = {k: [len(e.input_ids) for e in v] for k, v in enc.items()}
    mixed = [x for pair in zip(lengths["short"], lengths["long"]) for x in pair]   # interleaved, as files are
    print(f"tokens per sample: short {sum(lengths['short']) / len(lengths['short']):.0f}, "
          f"long {sum(lengths['long']) / len(lengths['long']):.0f}")
    print("\n| batch | padding waste, file order | padding waste, length-bucketed |\n|---|---|---|")
    for b in sizes:
        row = {"batch_size": b, "file_order": padding_waste(mixed, b, bucketed=False),
               "bucketed": padding_waste(mixed, b, bucketed=True)}
        out["padding"].append(row)
        print(f"| {b} | {row['file_order']:.1%} | {row['bucketed']:.1%} |")

    print("\n| samples | batch | plain forward tokens/s | extraction tokens/s | extraction / plain time |\n|---|---|---|---|---|")
    for kind, samples in sets.items():
        for b in sizes:
            row = {"set": kind} | throughput(lm, samples, b, args.repeat)
            out["throughput"].append(row)
            print(f"| {kind} | {b} | {row['plain_tokens_per_s']:.0f} | {row['extract_tokens_per_s']:.0f} | "
                  f"{row['ratio']:.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
