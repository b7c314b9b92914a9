"""Core engine benchmark: extraction overhead, peak memory, scoring throughput.

    .venv/bin/python benchmarks/core_bench.py [--model default] [--n 1000] [--device auto]

Prints, measured in this one run:
1. overhead = time of sparse feature extraction / time of a plain ``model(input_ids).logits``
   forward over the same batches (interleaved, best of --repeat);
2. peak memory of extraction over --n samples (peak RSS above the loaded model on CPU, peak
   allocated on CUDA), and, for growing batch x sequence, the extraction's peak next to the size of
   the batch x sequence x vocabulary logits a plain forward holds (which extraction never does);
3. scoring throughput against a valuation set: training rows per second (set mean and pairwise).
Runs on CUDA when present with the same command.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# ----------------------------------------------------------------------------- memory probes
class Peak:
    """Peak memory above a baseline: CUDA allocator stats, or Linux VmHWM reset via clear_refs."""

    def __init__(self, device):
        self.device = device

    def _rss(self, key="VmRSS"):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self):
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = self._rss()

    def stop(self) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return self._rss("VmHWM") - self.base


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_forward(lm, batches):
    import torch

    from forvalue.valuation.features import collate

    for batch in batches:
        inputs = collate(batch, lm.tokenizer.pad_token_id, lm.device)
        with torch.inference_mode():
            logits = lm.model(**inputs).logits
        del logits
    _sync(lm.device)


def probe(args) -> int:
    """Peak memory of one (mode, batch, seq) cell in this fresh process; prints bytes."""
    import torch

    from forvalue.valuation.features import Encoded, FeatureConfig, base_model_of, extract_sparse, collate
    from forvalue.models.loading import load_model

    mode, B, T = args.probe.split(",")
    B, T = int(B), int(T)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    ids = [(7 * i) % 5000 + 100 for i in range(T)]
    encs = [Encoded(index=i, input_ids=list(ids), response_start=1) for i in range(B)]
    plain_forward(lm, [encs[:1]])  # touch every weight page first (safetensors are memory-mapped)
    peak = Peak(lm.device)
    peak.start()
    if mode == "plain":
        plain_forward(lm, [encs])
    elif mode == "body":
        with torch.inference_mode():
            base_model_of(lm.model)(**collate(encs, lm.tokenizer.pad_token_id, lm.device), use_cache=False)
        _sync(lm.device)
    else:
        from forvalue.data.samples import Sample

        extract_sparse(lm, [Sample(sample_id=f"s{i}", text="x") for i in range(B)], FeatureConfig(positions="all"),
                       encoded=encs, batch_size=B)
        _sync(lm.device)
    print(peak.stop())
    return 0


def main() -> int:
    import numpy as np
    import torch

    from forvalue.benchmarks.tasks import make_task
    from forvalue.data.samples import Columns, samples_from_records
    from forvalue.valuation.features import FeatureConfig, encode_all, extract_sparse, length_batches
    from forvalue.models.loading import load_model
    from forvalue.valuation.scoring import sparse_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--n", type=int, default=1000, help="samples for the memory and throughput runs")
    ap.add_argument("--overhead-n", type=int, default=200, help="samples for the overhead timing")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--only", choices=["overhead", "memory", "grid", "scoring"], action="append",
                    help="run only these parts (repeatable); default all")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one memory cell
    args = ap.parse_args()
    if args.probe:
        return probe(args)

    torch.manual_seed(0)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    dev = lm.device
    V = lm.model.config.get_text_config().vocab_size if hasattr(lm.model.config, "get_text_config") else lm.model.config.vocab_size
    per_class = max(1, -(-args.n // 10))
    train, val = make_task("math-reason", seed=0, n_train_per_class=per_class - per_class // 10,
                           n_val_per_class=max(1, per_class // 10))
    records = (train + val)[: args.n]
    samples = samples_from_records(records, columns=Columns(text="text")).samples
    config = FeatureConfig(positions="all")
    encoded, _ = encode_all(lm, samples, config)
    lengths = [len(e.input_ids) for e in encoded]
    env = {
        "model": lm.fingerprint.id, "device": str(dev), "dtype": str(lm.dtype).replace("torch.", ""),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "samples": len(samples), "tokens_mean": float(np.mean(lengths)), "tokens_max": int(max(lengths)),
        "batch_size": args.batch_size, "k": config.k, "r": config.r,
    }
    print("# Core benchmark")
    print(json.dumps(env))
    results: dict = {"env": env}

    parts = set(args.only or ["overhead", "memory", "grid", "scoring"])
    if "overhead" in parts:
        # 1. overhead ---------------------------------------------------------------------------
        sub = encoded[: args.overhead_n]
        sub_samples = samples[: args.overhead_n]
        for j, e in enumerate(sub):
            e.index = j
        batches = length_batches(sub, args.batch_size)
        plain_forward(lm, batches[:2])  # warm-up
        extract_sparse(lm, sub_samples, config, encoded=batches[0], batch_size=args.batch_size)
        # Interleave batch by batch (alternating which goes first) so that load from other processes
        # hits both sides alike; sum per side, best of --repeat.
        t_plain, t_ext = [], []
        for rep in range(args.repeat):
            tp = te = 0.0
            for j, batch in enumerate(batches):
                for which in ((0, 1) if (j + rep) % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    if which == 0:
                        plain_forward(lm, [batch])
                    else:
                        extract_sparse(lm, sub_samples, config, encoded=batch, batch_size=args.batch_size)
                        _sync(dev)
                    dt = time.perf_counter() - t0
                    if which == 0:
                        tp += dt
                    else:
                        te += dt
            t_plain.append(tp)
            t_ext.append(te)
        overhead = min(t_ext) / min(t_plain)
        results["overhead"] = {"samples": len(sub), "plain_s": min(t_plain), "extract_s": min(t_ext), "ratio": overhead,
                               "plain_all": t_plain, "extract_all": t_ext}
        print("\n## 1. Extraction overhead (same batches, interleaved, best of %d)" % args.repeat)
        print("| samples | plain forward s | extraction s | ratio |")
        print("|---|---|---|---|")
        print(f"| {len(sub)} | {min(t_plain):.2f} | {min(t_ext):.2f} | **{overhead:.3f}** |")

    if parts & {"memory", "scoring"}:
        # 2. memory (the features are reused by 3.) ---------------------------------------------
        for j, e in enumerate(encoded):
            e.index = j
        peak = Peak(dev)
        peak.start()
        t0 = time.perf_counter()
        feats = extract_sparse(lm, samples, config, encoded=encoded, batch_size=args.batch_size)
        t_all = time.perf_counter() - t0
        mem_all = peak.stop()
        results["memory_n"] = {"samples": len(samples), "peak_bytes": mem_all, "seconds": t_all,
                               "rows": feats.n_rows, "rows_per_sample": feats.n_rows / len(samples)}
        print(f"\n## 2. Peak memory of extraction on {len(samples)} samples")
        print(f"peak above the loaded model: {mem_all / 2**20:.0f} MiB; {t_all:.1f} s "
              f"({len(samples) / t_all:.1f} samples/s); {feats.n_rows / len(samples):.0f} sparse rows per sample")

    if "grid" in parts:
        print("\nGrowth with batch x sequence (vocabulary V = %d; each cell a fresh process):" % V)
        print("| batch | seq | B*T*V fp32 logits (MiB) | plain `model().logits` peak (MiB) | body forward only (MiB) | extraction peak (MiB) | extraction - body (MiB) |")
        print("|---|---|---|---|---|---|---|")
        grid = []
        for B, T in ((1, 128), (8, 128), (8, 512), (32, 512)):
            cell = {"batch": B, "seq": T, "logits_mib": B * T * V * 4 / 2**20}
            for mode in ("plain", "body", "extract"):
                cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--dtype", args.dtype,
                       "--probe", f"{mode},{B},{T}"]
                # Big blocks via mmap, returned on free: peak RSS then tracks live tensors, not what
                # glibc's heap kept from an earlier phase of the same process.
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
                cell[mode + "_mib"] = float(out.strip().splitlines()[-1]) / 2**20
            cell["head_mib"] = cell["extract_mib"] - cell["body_mib"]
            grid.append(cell)
            print(f"| {B} | {T} | {cell['logits_mib']:.0f} | {cell['plain_mib']:.0f} | {cell['body_mib']:.0f} "
                  f"| {cell['extract_mib']:.0f} | {cell['head_mib']:.0f} |")
        results["memory_grid"] = grid

    if "scoring" in parts:
        # 3. scoring throughput -----------------------------------------------------------------
        n_val = min(100, max(1, len(samples) // 10))
        tr_ids, va_ids = feats.sample_ids[n_val:], feats.sample_ids[:n_val]
        tr, va = feats.select(tr_ids), feats.select(va_ids)
        out = {}
        for pairwise in (False, True):
            sparse_scores(tr, va, pairwise=pairwise)  # warm-up
            t0 = time.perf_counter()
            reps = 0
            while time.perf_counter() - t0 < 2.0 or reps < 3:
                sparse_scores(tr, va, pairwise=pairwise)
                reps += 1
            dt = (time.perf_counter() - t0) / reps
            out["pairwise" if pairwise else "set_mean"] = {"seconds": dt, "rows_per_s": tr.n_rows / dt}
        results["scoring"] = {"train_rows": tr.n_rows, "train_samples": len(tr), "val_samples": len(va)} | out
        print(f"\n## 3. Scoring throughput ({len(tr)} training samples, {tr.n_rows} rows, against {len(va)} valuation samples)")
        print("| mode | seconds | training rows / s |")
        print("|---|---|---|")
        for key in ("set_mean", "pairwise"):
            print(f"| {key} | {out[key]['seconds']:.4f} | {out[key]['rows_per_s']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
