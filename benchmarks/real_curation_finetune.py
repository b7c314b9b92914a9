"""Does the product's curated subset train a better model than k random rows? LoRA fine-tunes on
the real-data curation benchmark of benchmarks/real_curation_data.py, evaluated on GSM8K test
problems that the selection never saw.

    .venv/bin/forvalue curate --train DATA/train.jsonl --val DATA/val.jsonl --top-p 10 --out kept-p10.parquet
    .venv/bin/python benchmarks/real_curation_finetune.py --kept kept-p10.parquet --data DATA \\
        --seeds 0,1,2 --threads 2 --out ADAPTERS --json benchmarks/results/real-curation-finetune.json

Inputs: ``--data`` holds train.jsonl (the pool: 400 clean GSM8K math rows and broken or off-target
rows, field ``kind``), val.jsonl (the valuation set that chose the subset; unused here) and
eval.jsonl (100 other GSM8K test problems). ``--kept`` is the curated subset as the product writes
it (``forvalue curate --top-p 10``: a Parquet with every input column, ``id`` included); its rows are
matched to the pool on ``id``, and k = its number of rows.

Training sets, for every seed (``--seeds``):

- ``curated``: the kept rows (the same for every seed);
- ``random``: k rows of the whole pool, drawn with the seed (:func:`forvalue.training.finetune.select_subset`);
- ``full``: the whole pool (same steps, so it sees 30 x 8 = 240 draws of it);
- ``clean``: k rows of kind ``clean`` only, drawn with the seed (an oracle filter).

Each is a LoRA fine-tune with the library defaults (:class:`forvalue.training.finetune.TrainConfig`: 30
steps, batch 8, lr 1e-3, rank 8, all linear layers; the seed sets LoRA init and data order, so
the sets of one seed share both) of the bundled default model (SmolLM2-135M-Instruct) through
:func:`forvalue.finetune.finetune` (no tracking); the adapter is loaded back merged into a copy of
the base model (:func:`forvalue.training.finetune.load_finetuned`) and evaluated on eval.jsonl:

(a) eval loss: mean NLL per response token over the set (:func:`forvalue.evaluate.evaluate`, loss
    only; the library's valuation loss);
(b) answer-token accuracy, forward only (teacher forcing): the prompt rendered with the chat
    template as the library renders it (:func:`forvalue.valuation.features.encode`), the gold response; the
    answer tokens are the tokens of the text after the last ``#### `` of the gold response; per
    sample, the share of them that the argmax of the model's next-token logits predicts exactly
    given everything before it. Reported: the mean over samples (``answer_token_acc``) and the
    share of samples with every answer token right (``exact_answer``). This measure sees what
    broken samples teach (a wrong final number, another problem's answer), which the loss over
    the whole response dilutes. By default the argmax is taken from the logits that (a)'s pass
    computes anyway (a forward hook on lm_head, mapped back with the public
    ``length_batches``/``targets``: no second forward pass); ``--answer-pass separate`` runs its own
    pass, and ``--check-loss`` runs it too, recomputes the response NLL there, and warns when it or
    the accuracy differs from the hook's (the token alignment check);
(c) the base model (no fine-tune), once.

Prints every run as it finishes, the kind mix of every training set (seed 0), one Markdown table
per measure (mean ± sd, ddof=1, over seeds), and curated − random / − full / − clean in units of the
pooled sd of the two sets (sqrt((sd1² + sd2²) / 2); negative loss = curated better, positive
accuracy = curated better). ``--json`` keeps every per-run number. ``--limit-eval n`` evaluates on
the first n eval problems only; ``--steps`` and ``--fake-kept N`` (write N random pool rows as a
kept file) are for smoke tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETS = ("curated", "random", "full", "clean")
KINDS = ("clean", "other_response", "truncated", "wrong_answer", "near_empty", "off_target")
MEASURES = (("eval_loss", "eval loss (NLL / response token)", False),
            ("answer_token_acc", "answer-token accuracy (teacher forcing)", True),
            ("exact_answer", "exact-answer rate (all answer tokens right)", True))
ANSWER_MARK = "#### "


def log(*a) -> None:
    print(*a, flush=True)


# ----------------------------------------------------------------------------- data
def load_sets(data: Path, kept_path: Path):
    from forvalue.data.samples import load_samples

    train = load_samples(data / "train.jsonl").samples
    ev = load_samples(data / "eval.jsonl").samples
    kept_ids = read_kept_ids(kept_path)
    by_id = {str(s.user_id): i for i, s in enumerate(train)}
    missing = [i for i in kept_ids if i not in by_id]
    if missing:
        raise SystemExit(f"{kept_path}: {len(missing)} kept ids not in {data / 'train.jsonl'} (e.g. {missing[:3]})")
    if len(set(kept_ids)) != len(kept_ids):
        raise SystemExit(f"{kept_path}: duplicate ids")
    curated = np.array([by_id[i] for i in kept_ids], dtype=np.int64)
    return train, ev, curated


def read_kept_ids(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "id" not in table.column_names:
        raise SystemExit(f"{path}: no 'id' column (columns: {table.column_names})")
    return [str(x) for x in table.column("id").to_pylist()]


def write_fake_kept(data: Path, out: Path, n: int, seed: int = 123) -> None:
    """A kept-like Parquet of n random pool rows (smoke tests only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines() if x.strip()]
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    kept = [rows[i] | {"score": 0.0, "rank": r + 1, "strategy": "fake"} for r, i in enumerate(idx)]
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(kept), out)


def training_indices(name: str, seed: int, train, curated: np.ndarray) -> np.ndarray:
    from forvalue.training.finetune import select_subset

    n, k = len(train), len(curated)
    if name == "curated":
        return curated
    if name == "random":
        return select_subset(n, "random", k=k, seed=seed)
    if name == "full":
        return select_subset(n, "full")
    if name == "clean":
        clean = np.array([i for i, s in enumerate(train) if s.record.get("kind") == "clean"], dtype=np.int64)
        if len(clean) < k:
            raise SystemExit(f"only {len(clean)} clean rows for k={k}")
        return clean[select_subset(len(clean), "random", k=k, seed=seed)]
    raise ValueError(name)


def kind_mix(train, idx) -> dict[str, int]:
    c = Counter(train[i].record.get("kind") for i in idx)
    return {k: int(c.get(k, 0)) for k in KINDS} | {k: int(v) for k, v in c.items() if k not in KINDS}


# ----------------------------------------------------------------------------- answer tokens
def answer_layout(lm, samples):
    """Per sample: (input ids as training encodes them, response start, answer token positions,
    answer text, the Encoded)."""
    from forvalue.valuation.features import FeatureConfig, encode, render

    tok = lm.tokenizer
    cfg = FeatureConfig(positions="response", chat_template=True)
    out = []
    for i, s in enumerate(samples):
        e = encode(s, i, tok, cfg, None)
        prompt, response, templated = render(s, tok, True)
        gold = s.response
        cut = gold.rfind(ANSWER_MARK)
        if cut < 0:
            raise SystemExit(f"eval row {s.row}: no {ANSWER_MARK!r} in the response")
        answer = gold[cut + len(ANSWER_MARK):].strip()
        # where the gold response sits in the rendered response string (the template adds markers)
        at = response.rfind(gold)
        if at < 0:
            raise SystemExit(f"eval row {s.row}: the rendered response does not contain the gold response")
        a0 = at + cut + len(ANSWER_MARK)
        a0 = response.index(answer, a0)
        a1 = a0 + len(answer)
        enc = tok(response, add_special_tokens=not templated, return_offsets_mapping=True)
        r_ids = list(enc["input_ids"])
        start = e.response_start
        if e.input_ids[start:start + len(r_ids)] != r_ids:
            raise SystemExit(f"eval row {s.row}: response tokens differ from the library's encoding")
        pos = [start + j for j, (c0, c1) in enumerate(enc["offset_mapping"]) if c1 > a0 and c0 < a1]
        if not pos:
            raise SystemExit(f"eval row {s.row}: no answer tokens found")
        out.append((e.input_ids, start, pos, answer, e))
    return out


def answer_accuracy(lm, layout, batch_size: int = 8, check_loss: bool = False) -> dict:
    """Teacher-forced argmax accuracy on the answer tokens (lm_head applied at those positions only);
    with ``check_loss``, also the mean response NLL of the same pass (to check the token alignment
    against the library's eval loss)."""
    import torch

    from forvalue.valuation.features import base_model_of, lm_head_of

    model = lm.model
    body, head = base_model_of(model), lm_head_of(model)
    was = model.training
    model.eval()
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(layout)), key=lambda i: len(layout[i][0]))
    res = [None] * len(layout)
    try:
        with torch.inference_mode():
            for b0 in range(0, len(order), batch_size):
                idx = order[b0:b0 + batch_size]
                T = max(len(layout[i][0]) for i in idx)
                ids = torch.full((len(idx), T), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), T), dtype=torch.long)
                for b, i in enumerate(idx):
                    x = layout[i][0]
                    ids[b, :len(x)] = torch.tensor(x)
                    mask[b, :len(x)] = 1
                h = body(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                         use_cache=False).last_hidden_state
                for b, i in enumerate(idx):
                    x, start, pos = layout[i][:3]
                    at = torch.tensor([p - 1 for p in pos], device=h.device)   # state t-1 predicts token t
                    pred = head(h[b, at].to(head.weight.dtype)).float().argmax(-1).cpu()
                    hit = (pred == torch.tensor([x[p] for p in pos])).float()
                    s, n = 0.0, 0
                    if check_loss:
                        logits = head(h[b, start - 1:len(x) - 1].to(head.weight.dtype)).float()
                        y = torch.tensor(x[start:], device=logits.device)
                        s, n = float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")), len(x) - start
                    res[i] = (float(hit.mean()), bool(hit.all()), s, n)
    finally:
        model.train(was)
    out = {"answer_token_acc": float(np.mean([r[0] for r in res])),
           "exact_answer": float(np.mean([r[1] for r in res])),
           "answer_tokens": int(sum(len(l[2]) for l in layout)), "per_sample_acc": [r[0] for r in res]}
    if check_loss:
        out["check_loss"] = sum(r[2] for r in res) / max(sum(r[3] for r in res), 1)
    return out


def accuracy_from_logits(layout, calls: list, batch_size: int) -> dict | None:
    """Answer-token accuracy from the argmax of the logits the library's evaluate_loss computed
    (captured by a hook on lm_head): its batches are ``length_batches(encoded, batch_size)`` and each
    head call covers ``targets(batch, "response")`` in order. None when the captured calls do not
    have that layout (then a separate forward pass is used)."""
    from forvalue.valuation.features import length_batches, targets

    batches = length_batches([l[4] for l in layout], batch_size)
    if len(calls) != len(batches):
        return None
    hits = [dict() for _ in layout]
    for batch, pred in zip(batches, calls):
        tg = targets(batch, "response")
        if pred.shape[0] != len(tg.y):
            return None
        for r, (b, t, y) in enumerate(zip(tg.b, tg.t, tg.y)):
            i = batch[b].index
            if t + 1 in layout[i][2]:
                hits[i][t + 1] = int(pred[r]) == y
    if any(set(h) != set(l[2]) for h, l in zip(hits, layout)):
        return None
    acc = [float(np.mean(list(h.values()))) for h in hits]
    return {"answer_token_acc": float(np.mean(acc)), "exact_answer": float(np.mean([all(h.values()) for h in hits])),
            "answer_tokens": int(sum(len(l[2]) for l in layout)), "per_sample_acc": acc}


def evaluate_model(lm, ev, layout, check_loss: bool = False, answer_pass: str = "hook") -> dict:
    """(a) the library's eval loss; (b) answer-token accuracy from the same forward pass (argmax of
    the logits it computes, ``answer_pass="hook"``) or from a separate one (``"separate"``; also
    the fallback)."""
    from forvalue.training.evaluate import EvalConfig, evaluate
    from forvalue.valuation.features import lm_head_of

    t0 = time.perf_counter()
    ecfg = EvalConfig(accuracy=False)
    calls: list = []
    handle = None
    if answer_pass == "hook":
        handle = lm_head_of(lm.model).register_forward_hook(lambda mod, inp, out: calls.append(out.argmax(-1).cpu()))
    try:
        r = evaluate(lm, ev, ecfg)
    finally:
        if handle is not None:
            handle.remove()
    t1 = time.perf_counter()
    acc = accuracy_from_logits(layout, calls, ecfg.batch_size) if answer_pass == "hook" else None
    if answer_pass == "hook" and acc is None:
        log("NOTE: the eval loss pass did not have the expected layout; answer accuracy from a separate pass")
    if acc is None or check_loss:
        sep = answer_accuracy(lm, layout, check_loss=check_loss)
        if acc is not None and (abs(acc["answer_token_acc"] - sep["answer_token_acc"]) > 1e-9
                                or abs(acc["exact_answer"] - sep["exact_answer"]) > 1e-9):
            log(f"WARNING: answer accuracy from the loss pass {acc['answer_token_acc']:.4f}/{acc['exact_answer']:.4f} "
                f"!= separate pass {sep['answer_token_acc']:.4f}/{sep['exact_answer']:.4f}")
        acc = {**sep, **(acc or {})}
    if check_loss and abs(acc["check_loss"] - r.metrics["val_loss"]) > 2e-3 * max(1.0, r.metrics["val_loss"]):
        log(f"WARNING: recomputed response loss {acc['check_loss']:.5f} != library eval loss "
            f"{r.metrics['val_loss']:.5f} (token alignment or padding)")
    return {"eval_loss": r.metrics["val_loss"], "eval_perplexity": r.metrics["val_perplexity"],
            "eval_tokens": int(r.metrics["val_tokens"]), "n_eval": len(ev), **acc,
            "loss_seconds": t1 - t0, "answer_seconds": time.perf_counter() - t1,
            "eval_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- summaries
def mean_sd(vals):
    vals = [float(v) for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"))


def fmt(m, sd, pct):
    if m is None:
        return "-"
    if pct:
        return f"{100 * m:.1f}%" + ("" if sd is None or not math.isfinite(sd) else f" ± {100 * sd:.1f}")
    return f"{m:.4f}" + ("" if sd is None or not math.isfinite(sd) else f" ± {sd:.4f}")


def tables(rows, base, k: int) -> str:
    out = []
    for key, title, pct in MEASURES:
        out += [f"\n### {title}\n", "| training set | k | runs | mean ± sd |", "|---|---:|---:|---:|"]
        if base is not None:
            out.append(f"| base (no fine-tune) | 0 | 1 | {fmt(base[key], None, pct)} |")
        for name in SETS:
            rs = [r for r in rows if r["set"] == name]
            if rs:
                out.append(f"| {name} | {rs[0]['k']} | {len(rs)} | {fmt(*mean_sd([r[key] for r in rs]), pct)} |")
    out += ["\n### curated − other, in pooled sd (loss: negative = curated better; accuracy: positive = curated better)\n",
            "| measure | vs | curated − other | pooled sd | in pooled sd | seeds where curated better |",
            "|---|---|---:|---:|---:|---:|"]
    cur = {r["seed"]: r for r in rows if r["set"] == "curated"}
    for key, title, pct in MEASURES:
        cm, csd = mean_sd([r[key] for r in cur.values()])
        for other in ("random", "full", "clean"):
            oth = {r["seed"]: r for r in rows if r["set"] == other}
            if cm is None or not oth:
                continue
            om, osd = mean_sd([r[key] for r in oth.values()])
            d = cm - om
            pooled = math.sqrt((csd ** 2 + osd ** 2) / 2) if math.isfinite(csd) and math.isfinite(osd) else float("nan")
            z = d / pooled if pooled > 0 else float("nan")
            paired = [s for s in cur if s in oth]
            better = sum((cur[s][key] < oth[s][key]) if key == "eval_loss" else (cur[s][key] > oth[s][key])
                         for s in paired)
            scale = 100 if pct else 1
            unit, dig = (" pts", 1) if pct else ("", 4)
            out.append(f"| {key} | {other} | {scale * d:+.{dig}f}{unit} | {scale * pooled:.{dig}f}{unit} | {z:+.2f} | "
                       f"{better}/{len(paired)} |")
    return "\n".join(out)


def report(paths: list[Path]) -> int:
    """Tables from the per-run numbers of one or more --json files (runs of one set and seed counted once)."""
    base, rows, seen = None, [], set()
    for p in paths:
        d = json.loads(p.read_text())
        base = base or d.get("base")
        log(f"{p}: k {d['k']}, {len(d['runs'])} runs, eval {d['n_eval']} problems, kind mix (seed 0) {d['kind_mix_seed0']}")
        for r in d["runs"]:
            if (r["set"], r["seed"]) not in seen:
                seen.add((r["set"], r["seed"]))
                rows.append(r)
    for r in rows:
        log(f"[{r['set']} seed {r['seed']}] eval_loss {r['eval_loss']:.4f}  answer_token_acc {r['answer_token_acc']:.3f}  "
            f"exact {r['exact_answer']:.3f}  train {r['train_seconds']:.0f}s  eval {r['eval_seconds']:.0f}s  "
            f"wall {r['wall_seconds']:.0f}s")
    log(tables(rows, base, rows[0]["k"] if rows else 0))
    return 0


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kept", type=Path, help="the curated subset (Parquet with an id column)")
    ap.add_argument("--data", type=Path, required=True, help="output folder of real_curation_data.py")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sets", default=",".join(SETS), help=f"subset of {','.join(SETS)}")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the library's, 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--limit-eval", type=int, default=0, help="the first n eval problems only (0: all)")
    ap.add_argument("--no-base", action="store_true", help="skip the base model row")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path(".forvalue/bench/real-curation-adapters"), help="adapter folders")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--check-loss", action="store_true",
                    help="recompute the response NLL in the answer pass and compare it with the eval loss")
    ap.add_argument("--answer-pass", choices=("hook", "separate"), default="hook",
                    help="answer accuracy from the eval-loss pass's logits (hook) or a second forward pass")
    ap.add_argument("--fake-kept", type=int, default=0,
                    help="smoke tests: first write N random pool rows to --kept, then run")
    ap.add_argument("--report", default=None,
                    help="no training: reprint the tables from --json files of earlier (partial) runs, comma-separated")
    args = ap.parse_args(argv)
    if args.report:
        return report([Path(p) for p in args.report.split(",") if p.strip()])
    if args.kept is None:
        ap.error("--kept is required")

    import torch

    torch.set_num_threads(args.threads)
    from forvalue.training.finetune import SubsetInfo, TrainConfig, finetune, load_finetuned, load_base

    if args.fake_kept:
        write_fake_kept(args.data, args.kept, args.fake_kept)
        log(f"wrote fake kept file {args.kept} ({args.fake_kept} random pool rows)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    sets = [s for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in SETS:
            raise SystemExit(f"unknown set {s!r}")
    t_all = time.perf_counter()
    train, ev, curated = load_sets(args.data, args.kept)
    if args.limit_eval:
        ev = ev[:args.limit_eval]
    k = len(curated)
    config = TrainConfig(**({"steps": args.steps} if args.steps else {}))
    log(f"pool {len(train)} rows, kept {k} ({args.kept}), eval {len(ev)} problems, seeds {seeds}, "
        f"steps {config.steps}, batch {config.batch_size}, lr {config.learning_rate}, lora r {config.lora_r}, "
        f"threads {args.threads}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")

    log("\nkind mix of each training set (seed 0 for the seeded ones):")
    log("| set | n | " + " | ".join(KINDS) + " |")
    log("|---|---:|" + "---:|" * len(KINDS))
    mixes = {}
    for name in sets:
        idx = training_indices(name, seeds[0] if seeds else 0, train, curated)
        mixes[name] = kind_mix(train, idx)
        log(f"| {name} | {len(idx)} | " + " | ".join(str(mixes[name].get(kk, 0)) for kk in KINDS) + " |")

    t0 = time.perf_counter()
    base_lm = load_base(args.model, device=args.device)
    layout = answer_layout(base_lm, ev)
    log(f"\nmodel {base_lm.fingerprint.id} on {base_lm.device} loaded in {time.perf_counter() - t0:.1f}s; "
        f"{sum(len(l[2]) for l in layout)} answer tokens in {len(ev)} eval problems "
        f"(mean {np.mean([len(l[2]) for l in layout]):.2f})")
    for ids, _, pos, answer, _ in layout[:3]:
        log(f"  answer {answer!r} -> tokens {[base_lm.tokenizer.decode([ids[p]]) for p in pos]}")

    results = {"args": {k_: str(v) for k_, v in vars(args).items()}, "k": k, "n_pool": len(train),
               "n_eval": len(ev), "config": config.to_params(), "kind_mix_seed0": mixes, "base": None, "runs": []}

    def dump():
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))

    base = None
    if not args.no_base:
        base = evaluate_model(base_lm, ev, layout, check_loss=args.check_loss, answer_pass=args.answer_pass)
        results["base"] = base
        log(f"[base] eval_loss {base['eval_loss']:.4f}  answer_token_acc {base['answer_token_acc']:.3f}  "
            f"exact {base['exact_answer']:.3f}  eval {base['eval_seconds']:.1f}s"
            + (f"  check_loss {base['check_loss']:.4f}" if args.check_loss else ""))
        dump()

    rows = []
    for seed in seeds:
        for name in sets:
            t_run, c_run = time.perf_counter(), time.process_time()
            idx = training_indices(name, seed, train, curated)
            cfg = dataclasses.replace(config, seed=seed)
            info = SubsetInfo(strategy=name, k=len(idx), n_total=len(train), name=f"{name}-{len(idx)}",
                              source=str(args.data / "train.jsonl"))
            out_dir = args.out / f"{name}-seed{seed}"
            res = finetune(base_lm, [train[i] for i in idx], out_dir=out_dir, config=cfg, subset=info,
                           tracker=None, overwrite=True, device=args.device)
            t_eval = time.perf_counter()
            lm = load_finetuned(out_dir, base=base_lm, device=args.device)
            m = evaluate_model(lm, ev, layout, check_loss=args.check_loss, answer_pass=args.answer_pass)
            del lm
            row = {"set": name, "seed": seed, "k": len(idx), "steps": cfg.steps,
                   "train_loss_final": res.metrics.get("train_loss_final"),
                   "train_seconds": res.metrics.get("train_seconds"), "finetune_seconds": res.seconds,
                   "load_eval_seconds": time.perf_counter() - t_eval, "wall_seconds": time.perf_counter() - t_run,
                   "cpu_seconds": time.process_time() - c_run, "loadavg_1m": os.getloadavg()[0],
                   "subset_digest": res.subset_digest, "kind_mix": kind_mix(train, idx), **m}
            rows.append(row)
            results["runs"].append(row)
            log(f"[{name} seed {seed}] k {len(idx)}  eval_loss {m['eval_loss']:.4f}  "
                f"answer_token_acc {m['answer_token_acc']:.3f}  exact {m['exact_answer']:.3f}  "
                f"train_loss {row['train_loss_final']:.4f}  train {row['train_seconds']:.0f}s  "
                f"eval {m['eval_seconds']:.0f}s  wall {row['wall_seconds']:.0f}s  cpu {row['cpu_seconds']:.0f}s  "
                f"load {row['loadavg_1m']:.1f}")
            dump()

    md = tables(rows, base, k)
    log(md)
    walls = [r["wall_seconds"] for r in rows]
    log(f"\nwall: {len(rows)} fine-tune runs, {np.mean(walls) if walls else 0:.0f}s mean per run "
        f"(min {min(walls, default=0):.0f}, max {max(walls, default=0):.0f}); "
        f"total {time.perf_counter() - t_all:.0f}s")
    results["markdown"] = md
    results["total_seconds"] = time.perf_counter() - t_all
    dump()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
