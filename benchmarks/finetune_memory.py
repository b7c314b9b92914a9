"""Peak memory of a LoRA fine-tune on real math samples (one fine-tune per process).

    .venv/bin/python benchmarks/finetune_memory.py --data /work/sources/gsm8k_train.jsonl --n 90 --steps 5 \
        --batch-size 8 --eval 20 --threads 2 [--json out.json]

Reads the first ``--n`` rows of a GSM8K-style JSONL file (``question`` / ``answer``; or ``prompt`` /
``response``) as training samples and the next ``--eval`` rows as the evaluation set, fine-tunes the
platform's default model (SmolLM2-135M-Instruct, LoRA, fp32 on a CPU) for ``--steps`` steps of
``--batch-size`` with the final evaluation (loss only), without MLflow, and prints the process's peak
resident memory (``ru_maxrss``), the wall time and the final training loss. Run it from another
checkout (``PYTHONPATH=...``) to compare two versions of the code: only the public API of
``forvalue.training.finetune`` is used. ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment makes
glibc give large freed blocks back to the system at once (the peak then counts what was in use, not
what the allocator kept).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _records(path: Path, start: int, n: int) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < start:
                continue
            if len(out) == n:
                break
            r = json.loads(line)
            out.append({"prompt": r.get("question", r.get("prompt")), "response": r.get("answer", r.get("response"))})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n", type=int, default=90)
    p.add_argument("--eval", type=int, default=20, help="evaluation samples (the rows after the training ones)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="default")
    p.add_argument("--no-gradient-checkpointing", action="store_true",
                   help="keep every layer's activations (TrainConfig.gradient_checkpointing=False; newer code only)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    import forvalue
    from forvalue.data.samples import samples_from_records
    from forvalue.training.evaluate import EvalConfig
    from forvalue.training.finetune import TrainConfig, finetune

    torch.set_num_threads(args.threads)
    train = samples_from_records(_records(args.data, 0, args.n), source=str(args.data)).samples
    val = samples_from_records(_records(args.data, args.n, args.eval), source=str(args.data)).samples
    extra = {"gradient_checkpointing": False} if args.no_gradient_checkpointing else {}
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="ft-memory-") as tmp:
        res = finetune(args.model, train, out_dir=Path(tmp) / "adapter", val=val or None,
                       config=TrainConfig(steps=args.steps, batch_size=args.batch_size, **extra),
                       eval_config=EvalConfig(accuracy=False), device="cpu")
    out = {"code": str(Path(forvalue.__file__).resolve().parent.parent), "n_train": len(train), "n_eval": len(val),
           "steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "gradient_checkpointing": not args.no_gradient_checkpointing,
           "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
           "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
           "train_seconds": res.metrics["train_seconds"], "train_loss_final": res.metrics["train_loss_final"],
           "val_loss": res.metrics.get("val_loss"),
           "run_peak_rss_mb": res.metrics.get("peak_rss_mb")}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
