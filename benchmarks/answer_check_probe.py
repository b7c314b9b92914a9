"""Answer-likelihood checks side by side: can a forward pass of the default model (SmolLM2-135M-Instruct)
tell a clean GSM8K solution from one whose final number is wrong?

This is the comparison of "answer likelihood" signals for the issue "correctness-aware curation". The
grounding check IFD (forvalue/curation/consistency.py) catches another problem's solution but not a wrong final
number, since the rest of the solution still fits the question. The candidates here look at how much
probability the model gives to the written answer. They are all computed from one forward pass per sample,
the same pass as forvalue's valuation loss (``forvalue.training.evaluate.evaluate_loss``). The sample is rendered
with the chat template, scored at ``positions="response"``, and the hidden state at t-1 predicts token t.
So every per-token NLL here is one term of that loss.

Data: the real-data benchmark of benchmarks/real_curation_data.py (``--data DIR``, with train.jsonl and
val.jsonl, rows with id, prompt, response, kind, domain). It uses the 600 math training samples (400
``clean``, 50 each of ``wrong_answer``, ``other_response``, ``truncated``, ``near_empty``) and the 50
clean valuation samples.

Per sample it computes signals where higher means more suspicious. A signal is NaN where it is undefined,
for example when the response has no number after "=". The signals:

- generic: mean / max / top-3 NLL of the response's content tokens, max NLL including ``<|im_end|>``,
  max of NLL minus entropy, worst 3-token window, max NLL in the last 20 % of the tokens;
- digits and numbers: max digit-token NLL, summed digit NLL of a number (max over numbers, and the last
  number before the ``#### N`` answer line), with and without the token after the number;
- results (a number right after "="): max and last result, summed, mean per digit token, first digit,
  rank and margin of the actual token against the argmax, last result minus the sample's other results;
- the ``#### N`` line (GSM8K format).

There is also a non-model reference, a calculator. A regex finds ``a op b = c`` lines and evaluates them.
``arith_last_false`` flags a response whose last checkable line is false, and ``arith_n_false`` counts
the false lines. A response with no checkable line is 0 (never flagged).

The table gives the AUC for each broken kind. The AUC is P(a random clean training sample scores lower
than a random sample of the kind) + 1/2 P(tie), and NaN counts as the lowest value (never flagged). The
table also gives the drop counts at two thresholds learned from the valuation set, its max and its
0.9-quantile. A sample is dropped when it is above the threshold.

    # forward pass (CPU, float32; ~0.7-1 s per sample on 1 thread, 650 samples) + signals + table
    .venv/bin/python benchmarks/answer_check_probe.py --data DATA --tokens TOKENS.json --json OUT.json \\
        [--threads 1] [--batch 8]
    # signals + table again from the saved per-token data, no model
    .venv/bin/python benchmarks/answer_check_probe.py --recompute --tokens TOKENS.json --json OUT.json
    # smoke test: 2 samples per (split, kind); --reference asserts the NLLs equal an earlier cache's
    .venv/bin/python benchmarks/answer_check_probe.py --data DATA --limit 2 --tokens /tmp/t.json \\
        --reference TOKENS.json

``--tokens`` is the per-token cache: for each sample its token ids and strings, character offsets in the
rendered response, NLL, the rank of the actual token, the argmax token and its log-prob, and entropy. The
forward pass writes it and ``--recompute`` reads it. When the cache does not store the response text, the
text comes from ``--data`` or is decoded from the cached ids with the default model's tokenizer, which
round-trips exactly. benchmarks/results/answer-check-probe.{json,md} are the ``--recompute`` output of
the full run (650 samples, batch 8, 1 thread).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("wrong_answer", "other_response", "truncated", "near_empty")
NAN = float("nan")

# (name, what it needs, description for the table); higher = more suspicious
SIGNALS = [
    ("mean_nll", "generic", ""),
    ("max_nll", "generic", "content tokens"),
    ("max_nll_with_end", "generic", r"incl. `<\|im_end\|>`"),
    ("top3_mean", "generic", ""),
    ("max_minus_mean", "generic", ""),
    ("max_excess", "generic", "max of NLL − entropy"),
    ("max_window3", "generic", "worst 3-token span"),
    ("max_nll_last20pct", "generic (answer at the end)", "max NLL in last 20 % of tokens"),
    ("max_digit_nll", "digits", ""),
    ("max_number_sum", "numbers", "summed digit NLL of a number, max over numbers"),
    ("max_number_sum_next", "numbers", "+ NLL of the token after the number"),
    ("last_number_sum", "numbers + answer line", "last number before `####`"),
    ("last_number_sum_next", "numbers + answer line", ""),
    ("max_result_sum", '"="', 'numbers after "="'),
    ("max_result_sum_next", '"="', ""),
    ("max_result_first", '"="', "first digit only"),
    ("max_result_margin", '"="', "log p top1 − log p actual, first digit"),
    ("max_result_rank", '"="', ""),
    ("n_result_not_argmax", '"="', ""),
    ("last_result_sum", '"="', 'last "=" result, summed digit NLL'),
    ("last_result_mean", '"="', "same, mean per digit token"),
    ("last_result_sum_next", '"="', ""),
    ("last_result_first", '"="', ""),
    ("last_result_rank", '"="', "first digit"),
    ("last_result_maxrank", '"="', "worst digit rank"),
    ("last_result_margin", '"="', ""),
    ("last_result_minus_others", '"="', "vs the sample's other results"),
    ("final_sum", "GSM8K format", "`#### N` digits"),
    ("final_first", "GSM8K format", ""),
    ("arith_last_false", "calculator (no model)", "last checkable `a op b = c` line false"),
    ("arith_n_false", "calculator (no model)", "false `a op b = c` lines"),
]


# ----------------------------------------------------------------------------- data
def per_split_kind(items, limit: int | None):
    """The first ``limit`` items of every (split, kind), in order (all when limit is None)."""
    if not limit:
        return list(items)
    seen: dict[tuple, int] = {}
    keep = []
    for x in items:
        k = (x["split"], x["kind"])
        if seen.get(k, 0) < limit:
            keep.append(x)
            seen[k] = seen.get(k, 0) + 1
    return keep


def load_records(data: Path, limit: int | None) -> list[dict]:
    """The math training samples, then the valuation samples, each with its split."""
    def read(name):
        with open(data / name) as f:
            return [json.loads(line) for line in f if line.strip()]

    recs = [dict(r, split="train") for r in read("train.jsonl") if r["domain"] == "math"]
    recs += [dict(r, split="val") for r in read("val.jsonl")]
    return per_split_kind(recs, limit)


# ----------------------------------------------------------------------------- forward pass
def pad_batch(batch, pad_id: int) -> dict:
    """Right-padded input_ids and attention_mask of a batch of text samples (forvalue.valuation.features.Encoded)."""
    from forvalue.valuation.features import pad_ids

    ids, mask = pad_ids(batch, pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def forward(recs: list[dict], batch_size: int, threads: int):
    """One forward pass per sample (length-bucketed batches): per-token data over the response tokens."""
    import torch

    from forvalue.data.samples import samples_from_records
    from forvalue.valuation.features import (FeatureConfig, base_model_of, encode_all, length_batches, lm_head_of, render,
                                             targets)
    from forvalue.models.loading import load_model

    torch.set_num_threads(threads)
    lm = load_model("default", device="cpu", dtype="float32")
    tok = lm.tokenizer
    samples = samples_from_records([{"id": r["id"], "prompt": r["prompt"], "response": r["response"]}
                                    for r in recs]).samples
    encoded, skipped = encode_all(lm, samples, FeatureConfig(positions="response", chat_template=True))
    assert not skipped and len(encoded) == len(recs)
    offsets, texts = [], []
    for r, s, e in zip(recs, samples, encoded):
        _, resp_str, templated = render(s, tok, True)
        assert templated, r["id"]
        enc = tok(resp_str, add_special_tokens=False, return_offsets_mapping=True)
        assert list(enc["input_ids"]) == e.input_ids[e.response_start:], r["id"]
        assert resp_str.startswith(r["response"]), r["id"]       # the response text, then <|im_end|>\n
        offsets.append([list(o) for o in enc["offset_mapping"]])
        texts.append(r["response"])
    model = lm.model.eval()
    base, head = base_model_of(model), lm_head_of(model)
    per_tok: list = [None] * len(encoded)
    t_fwd = 0.0
    batches = length_batches(encoded, batch_size)
    with torch.inference_mode():
        for bi, batch in enumerate(batches):
            t0 = time.perf_counter()
            tg = targets(batch, "response")
            h = base(**pad_batch(batch, tok.pad_token_id), use_cache=False).last_hidden_state
            b_idx, t_idx, y = tg.tensors(h.device)
            logp = torch.log_softmax(head(h[b_idx, t_idx]).float(), -1)
            lp_y = logp.gather(1, y[:, None])[:, 0]
            top = logp.max(-1)
            rank = (logp > lp_y[:, None]).sum(-1)            # 0: the actual token is the argmax
            ent = -(logp.exp() * logp).sum(-1)
            t_fwd += time.perf_counter() - t0
            pos = 0
            for b, e in enumerate(batch):
                sl = slice(pos, pos + tg.counts[b])
                pos += tg.counts[b]
                ids = y[sl].tolist()
                top_ids = top.indices[sl].tolist()
                assert len(ids) == len(offsets[e.index]), recs[e.index]["id"]
                per_tok[e.index] = dict(ids=ids, tokens=[tok.decode([i]) for i in ids], offsets=offsets[e.index],
                                        nll=(-lp_y[sl]).tolist(), rank=rank[sl].tolist(), top1=top_ids,
                                        top1_str=[tok.decode([i]) for i in top_ids], top1_lp=top.values[sl].tolist(),
                                        ent=ent[sl].tolist())
            if bi % 10 == 0 or bi == len(batches) - 1:
                print(f"batch {bi + 1}/{len(batches)} forward {t_fwd:.1f}s", flush=True)
    for r, d, text in zip(recs, per_tok, texts):
        d.update(id=r["id"], split=r["split"], kind=r["kind"], response=text)
    meta = dict(model=lm.fingerprint.id, forward_seconds=t_fwd, seconds_per_sample=t_fwd / len(recs), n=len(recs),
                batch_size=batch_size, threads=threads, device="cpu", dtype="float32",
                torch=torch.__version__)
    print(f"forward total {t_fwd:.1f}s, {t_fwd / len(recs):.3f}s/sample", flush=True)
    return per_tok, meta


def check_reference(per_tok: list[dict], path: Path, atol: float = 1e-4) -> None:
    """Assert the tokens and NLLs equal those of an earlier cache for every sample in both."""
    ref = {(d["split"], d["id"]): d for d in json.load(open(path))["tokens"]}
    common = [d for d in per_tok if (d["split"], d["id"]) in ref]
    assert common, f"no sample of this run is in {path}"
    worst = 0.0
    for d in common:
        r = ref[(d["split"], d["id"])]
        assert d["ids"] == r["ids"] and d["offsets"] == r["offsets"], f"tokens differ for {d['id']}"
        diff = float(np.max(np.abs(np.array(d["nll"]) - np.array(r["nll"]))))
        assert diff <= atol, f"NLL of {d['id']} differs from {path} by {diff:.2e}"
        worst = max(worst, diff)
    print(f"reference {path}: {len(common)} samples, same token ids and offsets, "
          f"max |NLL difference| {worst:.2e} (<= {atol:g})", flush=True)


def response_texts(per_tok: list[dict], recs: list[dict] | None) -> list[str]:
    """Response text of every cached sample: stored in the cache, else from --data, else decoded from the
    cached ids with the default model's tokenizer (the rendered response is the text, then the chat
    template's end-of-turn suffix)."""
    if all("response" in d for d in per_tok):
        return [d["response"] for d in per_tok]
    if recs is not None:
        return [r["response"] for r in recs]
    from transformers import AutoTokenizer

    from forvalue.data.samples import Sample
    from forvalue.valuation.features import render
    from forvalue.models.loading import ensure_default_model

    tok = AutoTokenizer.from_pretrained(str(ensure_default_model()))
    _, rendered, templated = render(Sample(sample_id="x", prompt="Q", response="RESPONSE"), tok, True)
    assert templated and rendered.startswith("RESPONSE")
    suffix = rendered[len("RESPONSE"):]
    out = []
    for d in per_tok:
        s = tok.decode(d["ids"], clean_up_tokenization_spaces=False)
        assert s.endswith(suffix), d["id"]
        text = s[: len(s) - len(suffix)]
        end_tok = next(i for i, (x, y) in enumerate(d["offsets"]) if y > len(text))
        assert d["offsets"][end_tok][0] == len(text), d["id"]       # the suffix starts on a token boundary
        out.append(text)
    return out


# ----------------------------------------------------------------------------- signals
NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")


def signals(text: str, d: dict) -> dict:
    """Per-sample signals from the per-token data, higher = more suspicious; NaN where undefined."""
    offs, toks = d["offsets"], d["tokens"]
    nll = np.array(d["nll"])
    rank = np.array(d["rank"])
    ent = np.array(d["ent"])
    marg = np.array(d["top1_lp"]) + nll          # log p(top1) - log p(actual) >= 0
    content = [i for i, (x, y) in enumerate(offs) if y <= len(text) and y > x]
    out = {}
    cn = nll[content]
    # ---- fully generic (no notion of numbers)
    out["mean_nll"] = float(np.mean(cn))
    out["max_nll"] = float(np.max(cn))
    out["max_nll_with_end"] = float(np.max(nll))
    out["top3_mean"] = float(np.mean(np.sort(cn)[::-1][:3]))
    out["max_minus_mean"] = out["max_nll"] - out["mean_nll"]
    out["max_excess"] = float(np.max((nll - ent)[content]))            # surprise beyond the model's own entropy
    w = np.convolve(cn, np.ones(3), "valid") if len(cn) >= 3 else np.array([cn.sum()])
    out["max_window3"] = float(w.max())                                 # worst 3-token span
    tail = cn[int(len(cn) * 0.8):]
    out["max_nll_last20pct"] = float(tail.max()) if len(tail) else NAN
    # ---- needs "digits"
    dig = [i for i in content if any(c.isdigit() for c in toks[i])]
    out["max_digit_nll"] = float(np.max(nll[dig])) if dig else NAN
    nums = []
    for m in NUM.finditer(text):
        ti = [i for i, (x, y) in enumerate(offs)
              if x < m.end() and y > m.start() and y > x and any(c.isdigit() for c in toks[i])]
        if not ti:
            continue
        nxt = ti[-1] + 1
        pre = text[:m.start()]
        s = float(nll[ti].sum())
        nums.append(dict(str=m.group(), sum=s, mean=s / len(ti), first=float(nll[ti[0]]),
                         sum_next=s + (float(nll[nxt]) if nxt < len(nll) else 0.0),
                         rank=int(rank[ti[0]]), margin=float(marg[ti[0]]), maxrank=int(rank[ti].max()),
                         res=re.search(r"=\s*[$€£]?\s*$", pre) is not None,            # needs the meaning of "="
                         final=re.search(r"####\s*[$]?\s*-?$", pre) is not None))       # GSM8K-specific
    body = [n for n in nums if not n["final"]]
    res = [n for n in body if n["res"]]
    fin = [n for n in nums if n["final"]]
    out["n_numbers"] = len(nums)
    out["n_results"] = len(res)
    # numbers anywhere
    out["max_number_sum"] = max((n["sum"] for n in body), default=NAN)
    out["max_number_sum_next"] = max((n["sum_next"] for n in body), default=NAN)
    # the last number before the final-answer line
    out["last_number_sum"] = body[-1]["sum"] if body else NAN
    out["last_number_sum_next"] = body[-1]["sum_next"] if body else NAN
    # results of a computation (a number right after "=")
    out["max_result_sum"] = max((n["sum"] for n in res), default=NAN)
    out["max_result_sum_next"] = max((n["sum_next"] for n in res), default=NAN)
    out["max_result_first"] = max((n["first"] for n in res), default=NAN)
    out["max_result_margin"] = max((n["margin"] for n in res), default=NAN)
    out["max_result_rank"] = max((n["rank"] for n in res), default=NAN)
    out["n_result_not_argmax"] = sum(n["maxrank"] > 0 for n in res) if res else NAN
    last = res[-1] if res else None
    out["last_result_sum"] = last["sum"] if last else NAN
    out["last_result_mean"] = last["mean"] if last else NAN
    out["last_result_sum_next"] = last["sum_next"] if last else NAN
    out["last_result_first"] = last["first"] if last else NAN
    out["last_result_rank"] = last["rank"] if last else NAN
    out["last_result_maxrank"] = last["maxrank"] if last else NAN
    out["last_result_margin"] = last["margin"] if last else NAN
    others = [n["sum"] for n in res[:-1]]
    out["last_result_minus_others"] = (last["sum"] - float(np.mean(others))) if last and others else NAN
    # the "#### N" line (GSM8K-specific)
    out["final_sum"] = fin[-1]["sum"] if fin else NAN
    out["final_first"] = fin[-1]["first"] if fin else NAN
    out["last_result_str"] = last["str"] if last else None
    out["final_str"] = fin[-1]["str"] if fin else None
    return out


# ----------------------------------------------------------------------------- calculator (no model)
EXPR = re.compile(r"((?:\$?\d[\d,]*(?:\.\d+)?\s*[-+*/x×]\s*)+\$?\d[\d,]*(?:\.\d+)?)\s*=\s*\$?(\d[\d,]*(?:\.\d+)?)")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _calc(node):
    """Value of a parsed arithmetic expression: numbers and + - * / only (Python precedence)."""
    if isinstance(node, ast.Expression):
        return _calc(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_calc(node.left), _calc(node.right))
    raise ValueError("not arithmetic")


def arithmetic(text: str) -> dict:
    """Check every ``a op b = c`` line with a calculator (a result within 1 % counts as right)."""
    n_checked = n_false = 0
    last_false = False
    for m in EXPR.finditer(text):
        e = m.group(1).replace("$", "").replace(",", "").replace("x", "*").replace("×", "*")
        try:
            val = _calc(ast.parse(e, mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError):   # e.g. "05" is no Python number
            continue
        got = float(m.group(2).replace(",", ""))
        ok = abs(val - got) <= 0.01 * max(1, abs(val))
        n_checked += 1
        n_false += not ok
        last_false = not ok
    return dict(arith_checked=n_checked, arith_n_false=float(n_false), arith_last_false=float(last_false))


# ----------------------------------------------------------------------------- table
def auc(c: np.ndarray, w: np.ndarray) -> float:
    """P(clean < other) + 0.5 P(tie); NaN (signal undefined) counts as the lowest value (never flagged)."""
    if not len(c) or not len(w):
        return NAN
    c = np.where(np.isnan(c), -np.inf, c)
    w = np.where(np.isnan(w), -np.inf, w)
    return float((c[:, None] < w[None, :]).mean() + 0.5 * (c[:, None] == w[None, :]).mean())


def values(rows: list[dict], split: str, kind: str, name: str) -> np.ndarray:
    return np.array([NAN if r[name] is None else r[name] for r in rows if r["split"] == split and r["kind"] == kind],
                    float)


def summarize(rows: list[dict]) -> dict:
    table = []
    for name, needs, desc in SIGNALS:
        c, v, w = (values(rows, split, kind, name)
                   for split, kind in (("train", "clean"), ("val", "clean"), ("train", "wrong_answer")))
        vv = v[~np.isnan(v)]
        entry = dict(signal=name, needs=needs, description=desc,
                     auc={k: auc(c, values(rows, "train", k, name)) for k in KINDS},
                     nan=dict(clean=int(np.isnan(c).sum()), wrong=int(np.isnan(w).sum()), val=int(np.isnan(v).sum())))
        for label, thr in (("val_max", vv.max() if len(vv) else NAN),
                           ("val_q0.9", float(np.quantile(vv, 0.9)) if len(vv) else NAN)):
            entry[label] = dict(threshold=float(thr), clean_dropped=int(np.sum(c > thr)),
                                wrong_dropped=int(np.sum(w > thr)))
        table.append(entry)
    counts = {k: int(sum(r["split"] == "train" and r["kind"] == k for r in rows)) for k in ("clean",) + KINDS}
    counts["val"] = int(sum(r["split"] == "val" for r in rows))
    side = {}
    for split, kind in (("train", "clean"), ("val", "clean"), ("train", "wrong_answer")):
        m = values(rows, split, kind, "last_result_maxrank")
        m = m[~np.isnan(m)]
        side[f"{kind}/{split}"] = dict(
            n_with_result=len(m), last_result_all_digits_argmax=float(np.mean(m == 0)) if len(m) else NAN,
            n=int(sum(r["split"] == split and r["kind"] == kind for r in rows)),
            arith_checkable=int(sum(r["arith_checked"] > 0 for r in rows if r["split"] == split and r["kind"] == kind)))
    return dict(counts=counts, table=table, side=side)


def fmt(x: float, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(summary: dict, meta: dict) -> str:
    n = summary["counts"]
    nc, nw, nv = n["clean"], n["wrong_answer"], n["val"]
    lines = [f"# Answer-likelihood checks: clean vs wrong final answer ({meta.get('model')})", "",
             f"{nc} clean / {nw} wrong_answer / {n['other_response']} other_response / {n['truncated']} truncated / "
             f"{n['near_empty']} near_empty training samples, {nv} valuation samples. AUC: P(clean < kind) + "
             "½P(tie), NaN = lowest (never flagged). Drops: value above the valuation set's max or "
             "0.9-quantile.", "",
             f"| signal | needs | AUC wrong | AUC other_resp | AUC trunc | AUC near_empty | thr = val max → clean/{nc}, "
             f"wrong/{nw} | thr = val q0.9 → clean/{nc}, wrong/{nw} | NaN clean/wrong/val |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary["table"]:
        name = f"{e['signal']} ({e['description']})" if e["description"] else e["signal"]
        drops = [f"{fmt(e[k]['threshold'], '.2f')} → {e[k]['clean_dropped']} / {e[k]['wrong_dropped']}"
                 for k in ("val_max", "val_q0.9")]
        a = e["auc"]
        nan = e["nan"]
        lines.append(f"| {name} | {e['needs']} | {fmt(a['wrong_answer'])} | {fmt(a['other_response'])} | "
                     f"{fmt(a['truncated'])} | {fmt(a['near_empty'])} | {drops[0]} | {drops[1]} | "
                     f"{nan['clean']}/{nan['wrong']}/{nan['val']} |")
    lines.append("")
    for key, s in summary["side"].items():
        lines.append(f"- {key}: the model's argmax reproduces every digit of the last \"=\" result (teacher-forced) in "
                     f"{fmt(s['last_result_all_digits_argmax'], '.2f')} of {s['n_with_result']} samples with one; "
                     f"the calculator finds a checkable line in {s['arith_checkable']} of {s['n']}")
    lines += ["", "meta: " + json.dumps(meta, sort_keys=True)]
    return "\n".join(lines)


def clean_json(x):
    """NaN -> null, numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="benchmark folder with train.jsonl and val.jsonl (required for the forward pass)")
    ap.add_argument("--tokens", type=Path, default=None,
                    help="per-token cache: written by the forward pass, read by --recompute")
    ap.add_argument("--json", type=Path, default=None, help="write the per-sample signals and the summary table here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the forward pass")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the forward pass")
    ap.add_argument("--limit", type=int, default=None, help="at most this many samples per (split, kind): a smoke test")
    ap.add_argument("--recompute", action="store_true", help="signals and table from --tokens, no model")
    ap.add_argument("--reference", type=Path, default=None,
                    help="forward pass: assert the token ids and NLLs equal this earlier cache's for the same samples")
    args = ap.parse_args(argv)

    recs = load_records(args.data, args.limit) if args.data else None
    if args.recompute:
        if args.tokens is None:
            ap.error("--recompute reads --tokens")
        saved = json.load(open(args.tokens))
        per_tok = per_split_kind(saved["tokens"], args.limit)
        meta = dict(saved["meta"], recomputed_from=str(args.tokens))
        if recs is not None:
            assert [(d["split"], d["id"]) for d in per_tok] == [(r["split"], r["id"]) for r in recs], \
                "the cache holds other samples than --data"
    else:
        if recs is None:
            ap.error("the forward pass needs --data (or use --recompute --tokens FILE)")
        print(f"{len(recs)} samples", flush=True)
        per_tok, meta = forward(recs, args.batch, args.threads)
        if args.reference:
            check_reference(per_tok, args.reference)
        if args.tokens:
            args.tokens.parent.mkdir(parents=True, exist_ok=True)
            with open(args.tokens, "w") as f:
                json.dump(dict(meta=meta, tokens=per_tok), f)
    texts = response_texts(per_tok, recs)
    rows = [dict(id=d["id"], split=d["split"], kind=d["kind"], n_tokens=len(d["ids"]), **signals(t, d), **arithmetic(t))
            for d, t in zip(per_tok, texts)]
    summary = summarize(rows)
    print(markdown(summary, meta))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(clean_json(dict(meta=meta, summary=summary, rows=rows)), f, indent=0)


if __name__ == "__main__":
    main()
