"""The arithmetic check: does the arithmetic a response writes out hold?

A rule, not a model: it reads the response's text only, so it costs nothing next to the forward
pass, and it judges what a small model cannot (SmolLM2-135M puts a falsified last result below a
correct one with AUC 0.87 only; docs/benchmarks.md, "Curation on real data"). It checks two kinds
of statement, and only those it can parse completely:

- an equation ``<expression> = <number>`` where the expression is arithmetic only: numbers
  (``1,250``, ``$3.50``, ``20%``, ``-4``), ``+ - * / // x ×  ÷`` and parentheses, with at least one
  operator, e.g. ``16 / 4 = 8``. Chains ``4 + 4 = 8 + 2 = 10`` are read one ``=`` at a time.
- a final answer stated right after an expression: ``Left = 35 - (39 + 48). Answer: -53``, or
  ``... = 24\\n#### 24``. Only an expression directly followed by the answer marker (``Answer:``,
  ``The answer is``, ``####``) counts.

An expression cut out of a sentence (``100 photos + 50 + 130 = 280``: an operator or a symbol other
than a word boundary where the expression starts) is not judged. A stated integer passes when it is
the value rounded up or down (``10 / 3 = 4`` buses), a decimal when it is the value rounded to its
places, a percentage as either ``r`` or ``r / 100``.

:func:`arithmetic_errors` gives the number of statements that do not hold, NaN where the response
states none it can check (the sample is "not judged" and passes). Wrong reasoning with correct
arithmetic passes it: it sees a miscalculated or falsified result, not a wrong plan.
"""

from __future__ import annotations

import math
import re

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
# one token of an arithmetic expression: a number (optional $, %), an operator, a parenthesis, space
# "x" multiplies between spaces or digits only (8 x 2, 8x2; not the 2x of algebra)
# a fraction written without spaces (1/3) is one number: 25 / 1/3 = 75
_TOKEN = re.compile(rf"\s+|\$?\d+/\d+(?![\d.,/])|\$?(?:{_NUM})%?|//|[-+*/×÷()]|(?<=\s)x(?=\s)|(?<=\d)x(?=\d)")
_RESULT = re.compile(rf"\s*(-?)\s*\$?({_NUM})(%?)(?:/(\d+))?")
_ANSWER = re.compile(rf"[.,;]?\s*(?:####|(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*)\s*(-?)\s*\$?({_NUM})(%?)",
                     re.IGNORECASE)
_OPS = {"+", "-", "*", "/", "//", "x", "×", "÷"}
_MAX_EXPR = 200   # characters scanned back from an "="


def _number(text: str) -> tuple[float, bool]:
    """(value, is a percentage) of a number token."""
    pct = text.endswith("%")
    text = text.strip("$%").replace(",", "")
    if "/" in text:
        a, b = text.split("/")
        return float(a) / float(b), False
    return float(text), pct


def _tokens_before(text: str, end: int) -> tuple[list[str], str] | None:
    """(the arithmetic tokens of the longest expression ending at ``end``, the text before it up to
    ``_MAX_EXPR`` characters back, trailing space removed); None: no expression, or one that does
    not start at a word boundary."""
    start = max(0, end - _MAX_EXPR)
    segment = text[start:end]
    # tokenize from the left over the segment, keep the suffix made of tokens only
    spans = []
    i = 0
    while i < len(segment):
        m = _TOKEN.match(segment, i)
        if m:
            spans.append((m.start(), m.end(), m.group()))
            i = m.end()
        else:
            spans.append((i, i + 1, None))
            i += 1
    k = len(spans)
    while k > 0 and spans[k - 1][2] is not None:
        k -= 1
    tokens = [t for _, _, t in spans[k:] if t.strip()]
    pos = spans[k][0] if k < len(spans) else len(segment)
    if not tokens:
        return None
    if pos and not segment[pos].isspace() and (segment[pos - 1].isalnum() or segment[pos - 1] in ".,:^_"):
        return None   # attached to a word or a number (x2 + 3, 6:00 + 48, 2^3 * 2)
    before = segment[:pos].rstrip()
    if tokens[0] == "-" and before and before[-1] not in ":;,\n([{=":
        return None   # a minus after a word continues a sentence's calculation (week - 5 + 3)
    if before and not (before[-1].isalpha() or before[-1] in ".:;,\n\"'([{="):
        return None   # cut out of a longer formula
    return tokens, before


def _tokens_after(text: str, start: int) -> list[str]:
    """The arithmetic tokens right after ``start`` (up to the first other character), without a
    trailing operator."""
    tokens = []
    i = start
    while i < len(text) and i - start < _MAX_EXPR and (m := _TOKEN.match(text, i)):
        if m.group().strip():
            tokens.append(m.group())
        i = m.end()
    while tokens and tokens[-1] in _OPS | {"("}:
        tokens.pop()
    return tokens


def _parse(tokens: list[str]) -> float | None:
    """The value of an expression of tokens (None: not a complete arithmetic expression with an
    operator); percentages read as r / 100."""
    pos = 0
    saw_op = False

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def atom():
        nonlocal pos, saw_op
        t = peek()
        if t is None:
            raise ValueError
        if t == "-":
            pos += 1
            return -atom()
        if t == "(":
            pos += 1
            v = expr()
            if peek() != ")":
                raise ValueError
            pos += 1
            return v
        if t in _OPS or t == ")":
            raise ValueError
        pos += 1
        saw_op |= "/" in t
        v, pct = _number(t)
        return v / 100 if pct else v

    def term():
        nonlocal pos, saw_op
        v = atom()
        while peek() in ("*", "/", "//", "x", "×", "÷"):
            op = tokens[pos]
            pos += 1
            saw_op = True
            w = atom()
            if op in ("/", "÷", "//") and w == 0:
                raise ValueError
            v = v * w if op in ("*", "x", "×") else math.floor(v / w) if op == "//" else v / w
        return v

    def expr():
        nonlocal pos, saw_op
        v = term()
        while peek() in ("+", "-"):
            op = tokens[pos]
            pos += 1
            saw_op = True
            w = term()
            v = v + w if op == "+" else v - w
        return v

    try:
        v = expr()
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    if pos != len(tokens) or not saw_op or not math.isfinite(v):
        return None
    return v


def _holds(value: float, sign: str, number: str, pct: str, denominator: str | None = None) -> bool:
    """Whether the stated result ``sign number pct [/ denominator]`` is ``value`` up to rounding."""
    stated = float(number.replace(",", "")) * (-1 if sign else 1)
    places = len(number.split(".")[1]) if "." in number else 0
    if denominator:
        if float(denominator) == 0:
            return True
        stated /= float(denominator)
        places = 6
    candidates = [stated, stated / 100] if pct else [stated]
    for r in candidates:
        tol = 0.5 * 10 ** -places + 1e-9 * max(1.0, abs(value))
        if pct:
            tol = max(tol, 0.5 * 10 ** -(places + 2))
        if abs(value - r) <= tol:
            return True
        if not places and not denominator and math.floor(value) <= r <= math.ceil(value):
            return True   # an integer count rounded either way (10 / 3 = 4 buses)
    return False


def statements(text: str) -> list[tuple[str, bool]]:
    """Every arithmetic statement of ``text`` this check can judge: (the statement, whether it holds)."""
    out = []
    for m in re.finditer(r"(?<![=<>!])=(?![=>])", text):
        found = _tokens_before(text, m.start())
        r = _RESULT.match(text, m.end())
        if found is None or r is None:
            continue
        tokens = found[0]
        value = _parse(tokens)
        if value is None:
            continue
        stated = f"{r.group(1)}{r.group(2)}{r.group(3)}" + (f"/{r.group(4)}" if r.group(4) else "")
        ok = _holds(value, r.group(1), r.group(2), r.group(3) or ("%" if any("%" in t for t in tokens) else ""),
                    r.group(4))
        if not ok:   # a chain whose next step is an expression: 1/3 * 30 = 30 / 3 = 10
            after = _tokens_after(text, m.end())
            right = _parse(after) if after else None
            if right is not None:
                stated, ok = " ".join(after), abs(right - value) <= 0.01 * max(1.0, abs(value))
        out.append((f"{' '.join(tokens)} = {stated}", ok))
    for m in _ANSWER.finditer(text):
        found = _tokens_before(text, m.start())
        # the expression must stand on its own, after "=" or ":" (not "Districts 1 - 3. #### 1591")
        if found is None or (found[1] and found[1][-1] not in "=:"):
            continue
        tokens = found[0]
        value = _parse(tokens)
        if value is None:
            continue
        out.append((f"{' '.join(tokens)} -> answer {m.group(1)}{m.group(2)}{m.group(3)}",
                    _holds(value, m.group(1), m.group(2), m.group(3))))
    return out


def arithmetic_errors(text: str) -> float:
    """The number of arithmetic statements of ``text`` that do not hold (NaN: none it can check)."""
    found = statements(text)
    return float(sum(not ok for _, ok in found)) if found else math.nan


__all__ = ["arithmetic_errors", "statements"]
