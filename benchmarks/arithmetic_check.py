"""What the arithmetic check (forvalue/valuation/arithmetic.py) judges and flags, per label, with no
model: on a curation benchmark's train and valuation files, and on a file of reference solutions
(clean by intent) to count what it flags there.

    .venv/bin/python benchmarks/arithmetic_check.py --data DATA --kind-column kind
    .venv/bin/python benchmarks/arithmetic_check.py --data MIXED --kind-column noise
    .venv/bin/python benchmarks/arithmetic_check.py --reference SOURCES/gsm8k_train.jsonl --field answer

``--reference``: JSONL whose ``--field`` holds a solution; GSM8K's calculator annotations
(``<<48/2=24>>``) are removed first, as benchmarks/real_curation_data.py does. ``--show N`` prints N of
the statements it flags there.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _table(rows: list[dict], label, text) -> None:
    from forvalue.valuation.arithmetic import arithmetic_errors

    total, judged, flagged = collections.Counter(), collections.Counter(), collections.Counter()
    for r in rows:
        k, v = label(r), arithmetic_errors(text(r))
        total[k] += 1
        judged[k] += not math.isnan(v)
        flagged[k] += v > 0
    print("| label | rows | judged | flagged (a statement does not hold) |\n|---|---:|---:|---:|")
    for k in sorted(total):
        print(f"| {k} | {total[k]} | {judged[k]} | {flagged[k]} |")


def main(argv=None) -> int:
    from forvalue.valuation.arithmetic import statements

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a folder with train.jsonl and val.jsonl (a label column)")
    ap.add_argument("--kind-column", default="kind")
    ap.add_argument("--reference", type=Path, help="a JSONL file of reference solutions")
    ap.add_argument("--field", default="answer")
    ap.add_argument("--show", type=int, default=0)
    args = ap.parse_args(argv)
    if args.data:
        for name in ("train", "val"):
            print(f"\n{args.data / (name + '.jsonl')}:")
            _table(_rows(args.data / f"{name}.jsonl"), lambda r: r.get(args.kind_column, "?"), lambda r: r["response"])
    if args.reference:
        from benchmarks.real_curation_data import clean_solution

        texts = [clean_solution(r[args.field]) for r in _rows(args.reference)]
        t0 = time.perf_counter()
        found = [statements(t) for t in texts]
        seconds = time.perf_counter() - t0
        flagged = [[s for s, ok in f if not ok] for f in found]
        print(f"\n{args.reference}: {len(texts)} solutions, {sum(bool(f) for f in found)} judged "
              f"({sum(len(f) for f in found)} statements), {sum(bool(f) for f in flagged)} flagged; "
              f"{seconds / len(texts) * 1e3:.2f} ms per solution")
        for f in [f for f in flagged if f][:args.show]:
            print("  " + "; ".join(f))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
