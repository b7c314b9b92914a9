"""Build the real-data curation benchmark: real math word problems, some broken the way real pools
are broken, mixed with real code and real general instructions.

    .venv/bin/python benchmarks/real_curation_data.py --sources DIR --out DIR [--seed 0]

Sources (public, fetched once into ``--sources``; each is checked against its sha256; nothing is
generated from templates):

| file | from | license |
|---|---|---|
| gsm8k_train.jsonl, gsm8k_test.jsonl | GSM8K, github.com/openai/grade-school-math, commit 3101c7d, grade_school_math/data/{train,test}.jsonl | MIT |
| HumanEval.jsonl.gz | HumanEval, github.com/openai/human-eval, commit 6d43fb9, data/HumanEval.jsonl.gz | MIT |
| seed_tasks.jsonl | the 175 human-written Self-Instruct seed tasks, github.com/tatsu-lab/stanford_alpaca, commit 761dc5b, seed_tasks.jsonl | Apache-2.0 |

Download with e.g. ``curl -L -o gsm8k_train.jsonl https://raw.githubusercontent.com/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/train.jsonl``
(the URLs are in SOURCES below).

What it writes (``--out``), every row with ``id``, ``prompt``, ``response``, ``kind``, ``domain``, ``source``:

- ``train.jsonl``: the pool. 600 GSM8K training problems (``domain`` math): 400 ``clean`` (the
  reference solution, calculator annotations ``<<...>>`` removed) and 200 broken, 50 of each kind:
  ``other_response`` (the solution of another GSM8K problem, not in the pool), ``truncated`` (the
  solution cut at 25-60% of its length, at a word boundary), ``wrong_answer`` (the final number
  changed in the last line and in the answer line, as a slip would), ``near_empty`` (a few words
  that answer nothing). Off-target: the 164 HumanEval problems (``domain`` code; the canonical
  solution) and the 175 seed tasks (``domain`` general; the first instance's output).
- ``val.jsonl``: 50 GSM8K test problems (the valuation set: what "valuable" means).
- ``eval.jsonl``: 100 other GSM8K test problems (the evaluation set: no selection ever sees it).
- ``manifest.json``: the sources' sha256, the seed, the counts, and the sha256 of each output.

Everything is deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path

SOURCES = {
    "gsm8k_train.jsonl": ("17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
                          "https://raw.githubusercontent.com/openai/grade-school-math/"
                          "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/train.jsonl"),
    "gsm8k_test.jsonl": ("3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
                         "https://raw.githubusercontent.com/openai/grade-school-math/"
                         "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/test.jsonl"),
    "HumanEval.jsonl.gz": ("b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
                           "https://raw.githubusercontent.com/openai/human-eval/"
                           "6d43fb980f9fee3c892a914eda09951f772ad10d/data/HumanEval.jsonl.gz"),
    "seed_tasks.jsonl": ("7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48",
                         "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/"
                         "761dc5bfbdeeffa89b8bff5d038781a4055f796a/seed_tasks.jsonl"),
}
N_CLEAN, N_PER_BROKEN, N_VAL, N_EVAL = 400, 50, 50, 100
BROKEN_KINDS = ("other_response", "truncated", "wrong_answer", "near_empty")
NEAR_EMPTY = ("I don't know.", "The answer is", "Let me think.", "See above.", "Yes.", "N/A", "...",
              "It depends.", "Good question!", "The answer is below.")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from forvalue.catalog.db import content_hash as sha256  # noqa: E402  (sha256 of a file's bytes)

ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")


def check_sources(folder: Path) -> None:
    for name, (digest, url) in SOURCES.items():
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing; download it: curl -L -o {path} {url}")
        got = sha256(path)
        if got != digest:
            raise SystemExit(f"{path}: sha256 {got}, expected {digest} ({url})")


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def clean_solution(answer: str) -> str:
    """A GSM8K solution without its calculator annotations (``<<48/2=24>>``)."""
    return re.sub(r"<<[^>]*>>", "", answer).strip()


def final_number(solution: str) -> str:
    m = ANSWER.search(solution)
    if not m:
        raise ValueError(f"no final answer line: {solution[-80:]!r}")
    return m.group(1)


def wrong_answer(solution: str, rng: random.Random) -> str:
    """The same solution with its final number changed where it is last computed and in the answer
    line (a slip in the last step)."""
    right = final_number(solution)
    value = float(right.replace(",", ""))
    delta = rng.choice([1, 2, 3, 5, 10, -1, -2, -3, -5, -10])
    wrong = value * 2 if rng.random() < 0.25 and value else value + delta
    text = str(int(wrong)) if float(wrong).is_integer() else f"{wrong:g}"
    if text == right.replace(",", ""):
        text = str(int(value) + 7)
    body = solution[:ANSWER.search(solution).start()]
    i = body.rfind(right)
    if i >= 0:
        body = body[:i] + text + body[i + len(right):]
    return f"{body}#### {text}"


def truncated(solution: str, rng: random.Random) -> str:
    cut = int(len(solution) * rng.uniform(0.25, 0.60))
    space = solution.rfind(" ", 0, cut)
    return solution[:space if space > 10 else cut].rstrip()


def build(sources: Path, seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    train = read_jsonl(sources / "gsm8k_train.jsonl")
    test = read_jsonl(sources / "gsm8k_test.jsonl")
    rng.shuffle(train)
    rng.shuffle(test)
    n_math = N_CLEAN + N_PER_BROKEN * len(BROKEN_KINDS)
    pool, donors = train[:n_math], train[n_math:n_math + N_PER_BROKEN]
    kinds = ["clean"] * N_CLEAN + [k for k in BROKEN_KINDS for _ in range(N_PER_BROKEN)]
    rng.shuffle(kinds)
    rows = []
    donor = iter(donors)
    for i, (item, kind) in enumerate(zip(pool, kinds)):
        solution = clean_solution(item["answer"])
        if kind == "other_response":
            response = clean_solution(next(donor)["answer"])
        elif kind == "truncated":
            response = truncated(solution, rng)
        elif kind == "wrong_answer":
            response = wrong_answer(solution, rng)
        elif kind == "near_empty":
            response = rng.choice(NEAR_EMPTY)
        else:
            response = solution
        rows.append({"id": f"gsm8k-train-{i}", "prompt": item["question"], "response": response, "kind": kind,
                     "domain": "math", "source": "gsm8k/train"})
    for item in read_jsonl(sources / "HumanEval.jsonl.gz"):
        rows.append({"id": item["task_id"].replace("/", "-").lower(),
                     "prompt": "Complete this Python function.\n\n" + item["prompt"],
                     "response": item["canonical_solution"], "kind": "off_target", "domain": "code",
                     "source": "humaneval"})
    for item in read_jsonl(sources / "seed_tasks.jsonl"):
        inst = item["instances"][0]
        prompt = item["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
        rows.append({"id": item["id"].replace("_", "-"), "prompt": prompt, "response": inst["output"],
                     "kind": "off_target", "domain": "general", "source": "self-instruct-seed"})
    rng.shuffle(rows)

    def math_rows(items, name):
        return [{"id": f"gsm8k-test-{name}-{i}", "prompt": it["question"], "response": clean_solution(it["answer"]),
                 "kind": "clean", "domain": "math", "source": "gsm8k/test"} for i, it in enumerate(items)]

    return {"train": rows, "val": math_rows(test[:N_VAL], "val"),
            "eval": math_rows(test[N_VAL:N_VAL + N_EVAL], "eval")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", required=True, help="folder with the four source files (see SOURCES)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sources, out = Path(args.sources), Path(args.out)
    check_sources(sources)
    sets = build(sources, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"seed": args.seed, "sources": {k: v[0] for k, v in SOURCES.items()}, "files": {}, "counts": {}}
    for name, rows in sets.items():
        path = out / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
        manifest["files"][path.name] = sha256(path)
        counts: dict[str, int] = {}
        for r in rows:
            key = f"{r['domain']}/{r['kind']}"
            counts[key] = counts.get(key, 0) + 1
        manifest["counts"][name] = dict(sorted(counts.items()))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
