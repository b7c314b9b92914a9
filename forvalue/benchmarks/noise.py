"""Noisy-data injection for the noise-detection benchmark (For-Value, Table 7).

:func:`inject_noise` corrupts exactly ``round(rate * n)`` records (chosen
with the seed). Each corrupted record gets one kind of noise, drawn uniformly
from ``kinds`` (default: deletion and insertion, 50/50):

* ``"deletion"`` - between 1 and ``max(1, n_words // 3)`` randomly chosen
  words of the field are removed (at least one word always remains);
* ``"insertion"`` - 1 to 3 irrelevant tokens drawn from ``foo``, ``bar``,
  ``baz`` are inserted at random word positions;
* ``"wrong_answer"`` - the last number of the field is replaced by a
  different number of similar size (a wrong final answer);
* ``"swap"`` - the field is replaced by the same field of another record with
  a different value (a response that belongs to another prompt);
* ``"truncation"`` - the field is cut after 20-70% of its words (a response
  cut short);
* ``"junk"`` - 1 to 3 junk spans (markup, URLs, boilerplate, symbols) are
  inserted at random word positions.

A field with fewer than two words cannot lose a word and keep one, so a
deletion or truncation drawn for it becomes an insertion; a wrong answer
drawn for a field without a number, or a swap where every record has the
same value, becomes junk. Every kind changes the field. Whitespace between
the remaining words is preserved.

:func:`make_noise_corpus` builds a clean chain-of-thought style base corpus
from the ``math-reason`` generator of :mod:`forvalue.benchmarks.tasks`
(DataInf's 10 math templates with a ``Reason: ... Answer: n`` response),
injects noise into the training responses and keeps the valuation set clean.
"""

from __future__ import annotations

import copy
import re

import numpy as np

from .tasks import MATH_TEMPLATES, make_task

__all__ = ["NOISE_TOKENS", "NOISE_KINDS", "JUNK_SPANS", "inject_noise", "make_noise_corpus"]

NOISE_TOKENS: tuple[str, ...] = ("foo", "bar", "baz")
NOISE_KINDS: tuple[str, ...] = ("deletion", "insertion", "wrong_answer", "swap", "truncation", "junk")
JUNK_SPANS: tuple[str, ...] = (
    "<div class=\"ad\">", "Click here to subscribe!", "http://spam.example/offer?id=42", "#@!%&*",
    "lorem ipsum dolor sit amet", "[citation needed]", "asdf qwer zxcv", "&nbsp;&nbsp;",
    "Posted by admin at 10:42 PM", "~~~~~~",
)

_STREAM_NOISE = 11
_STREAM_NOISE_CORPUS = 12

_TOKEN_RE = re.compile(r"\S+")


def _rng(seed: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _split_words(value: str) -> tuple[list[list[str]], str]:
    """``value`` as ``[[leading_whitespace, word], ...]`` plus trailing whitespace."""
    pairs: list[list[str]] = []
    pos = 0
    for m in _TOKEN_RE.finditer(value):
        pairs.append([value[pos:m.start()], m.group()])
        pos = m.end()
    return pairs, value[pos:]


def _join_words(pairs: list[list[str]], trailing: str) -> str:
    return "".join(ws + w for ws, w in pairs) + trailing


def _delete_words(value: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    pairs, trailing = _split_words(value)
    n = len(pairs)
    m = int(rng.integers(1, max(1, n // 3) + 1))
    m = min(m, n - 1)
    drop = set(int(i) for i in rng.choice(n, size=m, replace=False))
    removed = [pairs[i][1] for i in sorted(drop)]
    kept = [list(p) for i, p in enumerate(pairs) if i not in drop]
    if 0 in drop:  # the new first word keeps the original leading whitespace
        kept[0][0] = pairs[0][0]
    return _join_words(kept, trailing), removed


def _insert_tokens(value: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    pairs, trailing = _split_words(value)
    k = int(rng.integers(1, 4))
    inserted = []
    for _ in range(k):
        token = NOISE_TOKENS[int(rng.integers(len(NOISE_TOKENS)))]
        slot = int(rng.integers(len(pairs) + 1))
        inserted.append(token)
        if not pairs:
            pairs = [["", token]]
        elif slot == 0:
            lead = pairs[0][0]
            pairs[0][0] = " "
            pairs.insert(0, [lead, token])
        else:
            pairs.insert(slot, [" ", token])
    return _join_words(pairs, trailing), inserted


_NUMBER_RE = re.compile(r"-?\d+")


def _wrong_answer(value: str, rng: np.random.Generator) -> tuple[str, list[str]] | None:
    """The last number replaced by a different one of similar size; None without a number."""
    matches = list(_NUMBER_RE.finditer(value))
    if not matches:
        return None
    m = matches[-1]
    old = int(m.group())
    span = max(10, 2 * abs(old))
    new = old
    while new == old:
        new = int(rng.integers(0, span + 1)) * (-1 if old < 0 else 1)
    return value[:m.start()] + str(new) + value[m.end():], [m.group(), str(new)]


def _truncate(value: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    pairs, _ = _split_words(value)
    n = len(pairs)
    keep = min(n - 1, max(1, int(round(n * float(rng.uniform(0.2, 0.7))))))
    return _join_words(pairs[:keep], ""), [w for _, w in pairs[keep:]]


def _insert_junk(value: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    pairs, trailing = _split_words(value)
    inserted = []
    for _ in range(int(rng.integers(1, 4))):
        span = JUNK_SPANS[int(rng.integers(len(JUNK_SPANS)))]
        slot = int(rng.integers(len(pairs) + 1))
        inserted.append(span)
        if not pairs:
            pairs = [["", span]]
        elif slot == 0:
            lead = pairs[0][0]
            pairs[0][0] = " "
            pairs.insert(0, [lead, span])
        else:
            pairs.insert(slot, [" ", span])
    return _join_words(pairs, trailing), inserted


def _swap(records: list[dict], i: int, field: str, rng: np.random.Generator) -> tuple[str, list[str]] | None:
    """The field of another record whose value differs (None when every record has the same value)."""
    value = records[i][field]
    others = [j for j in range(len(records)) if j != i and records[j][field] != value]
    if not others:
        return None
    j = others[int(rng.integers(len(others)))]
    return records[j][field], [str(records[j].get("id", j))]


def inject_noise(
    records: list[dict], rate: float = 0.4, seed: int = 0, field: str = "response",
    kinds: tuple[str, ...] | list[str] = ("deletion", "insertion"),
) -> list[dict]:
    """Return new records with exactly ``round(rate * len(records))`` corrupted.

    The input records are not modified. Every output record gets ``noise``
    (``"none"`` or the kind applied, one of :data:`NOISE_KINDS`) and
    ``is_clean`` (False for corrupted records; otherwise the record's own
    ``is_clean``, default True). Corrupted records also get
    ``original_<field>`` (the clean value) and ``noise_tokens`` (the words
    deleted, inserted or cut; for a wrong answer the old and the new number;
    for a swap the id of the record whose value was taken).

    When ``field`` is ``"prompt"`` or ``"response"`` and the record has a
    ``text`` equal to ``prompt + separator + response``, ``text`` is rebuilt
    with the same separator; a ``text`` that does not have that form raises
    ValueError. For other fields only the field itself changes.
    """
    if not (0.0 <= float(rate) <= 1.0):
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in NOISE_KINDS]
    if bad or not kinds:
        raise ValueError(f"noise kinds must be some of {', '.join(NOISE_KINDS)}, got {list(kinds)}")
    rng = _rng(seed, _STREAM_NOISE)
    n = len(records)
    for i, rec in enumerate(records):
        if field not in rec or not isinstance(rec[field], str):
            raise ValueError(f"record {i} has no string field {field!r}")
    k = int(round(float(rate) * n))
    chosen = np.sort(rng.choice(n, size=k, replace=False)) if k else np.array([], dtype=int)
    drawn = rng.integers(0, len(kinds), size=k)
    plan = {int(i): kinds[int(kd)] for i, kd in zip(chosen, drawn)}

    out: list[dict] = []
    for i, rec in enumerate(records):
        new = copy.deepcopy(rec)
        kind = plan.get(i, "none")
        if kind != "none":
            value = rec[field]
            kind, corrupted, tokens = _corrupt(records, i, field, kind, rng)
            new[field] = corrupted
            new[f"original_{field}"] = value
            new["noise_tokens"] = tokens
            if field in ("prompt", "response") and "text" in rec:
                new["text"] = _rebuild_text(rec, field, corrupted, i)
        new["noise"] = kind
        new["is_clean"] = bool(rec.get("is_clean", True)) and kind == "none"
        out.append(new)
    return out


def _corrupt(records: list[dict], i: int, field: str, kind: str,
             rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """(kind applied, corrupted value, noise tokens) of record ``i``, with the fallbacks above."""
    value = records[i][field]
    if kind in ("deletion", "truncation") and len(_TOKEN_RE.findall(value)) < 2:
        kind = "insertion"
    if kind == "wrong_answer":
        out = _wrong_answer(value, rng)
        if out is not None:
            return kind, *out
        kind = "junk"
    if kind == "swap":
        out = _swap(records, i, field, rng)
        if out is not None:
            return kind, *out
        kind = "junk"
    fn = {"deletion": _delete_words, "insertion": _insert_tokens, "truncation": _truncate,
          "junk": _insert_junk}[kind]
    return kind, *fn(value, rng)


def _rebuild_text(rec: dict, field: str, corrupted: str, index: int) -> str:
    prompt, response, text = rec.get("prompt"), rec.get("response"), rec["text"]
    if not (
        isinstance(prompt, str)
        and isinstance(response, str)
        and len(text) >= len(prompt) + len(response)
        and text.startswith(prompt)
        and text.endswith(response)
    ):
        raise ValueError(
            f"record {index}: 'text' is not prompt + separator + response, "
            f"cannot keep it consistent after corrupting {field!r}"
        )
    sep = text[len(prompt):len(text) - len(response)]
    if field == "prompt":
        return corrupted + sep + response
    return prompt + sep + corrupted


def _balanced_counts(total: int, n_classes: int) -> list[int]:
    base, extra = divmod(total, n_classes)
    return [base + (1 if c < extra else 0) for c in range(n_classes)]


def make_noise_corpus(
    seed: int = 0, n_train: int = 500, n_val: int = 50, rate: float = 0.4,
    kinds: tuple[str, ...] | list[str] = ("deletion", "insertion"),
) -> tuple[list[dict], list[dict]]:
    """Clean ``math-reason`` corpus with noise injected into the training responses.

    ``n_train`` / ``n_val`` samples are spread as evenly as possible over the
    10 math templates (earlier templates get the remainder). Exactly
    ``round(rate * n_train)`` training responses are corrupted by
    :func:`inject_noise` (``text`` follows); the valuation set is clean.
    Records keep the generator's fields, get new ids
    (``noise-train-0000``, ``noise-val-0000``; the generator's id is kept as
    ``source_id``) plus ``noise`` / ``is_clean``.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 0:
        raise ValueError(f"n_train must be an int >= 0, got {n_train!r}")
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or n_val < 0:
        raise ValueError(f"n_val must be an int >= 0, got {n_val!r}")
    n_classes = len(MATH_TEMPLATES)
    tr_counts = _balanced_counts(int(n_train), n_classes)
    va_counts = _balanced_counts(int(n_val), n_classes)
    base_train, base_val = make_task(
        "math-reason", seed=seed,
        n_train_per_class=max(tr_counts), n_val_per_class=max(va_counts),
    )

    def take(records: list[dict], counts: list[int], split: str) -> list[dict]:
        seen = [0] * n_classes
        picked = []
        for rec in records:
            c = rec["class_id"]
            if seen[c] < counts[c]:
                seen[c] += 1
                picked.append(rec)
        width = max(4, len(str(max(len(picked) - 1, 0))))
        result = []
        for i, rec in enumerate(picked):
            new = dict(rec)
            new["source_id"] = rec["id"]
            new["id"] = f"noise-{split}-{i:0{width}d}"
            result.append(new)
        return result

    train = take(base_train, tr_counts, "train")
    val = take(base_val, va_counts, "val")
    noise_seed = int(np.random.SeedSequence([int(seed), _STREAM_NOISE_CORPUS]).generate_state(1)[0])
    train = inject_noise(train, rate=rate, seed=noise_seed, field="response", kinds=kinds)
    for rec in val:
        rec["noise"] = "none"
        rec["is_clean"] = True
    return train, val
