"""Forward-only consistency checks: what relevance (For-Value) does not see.

For-Value finds samples like the valuation set; a pool broken inside the right domain and format
(the solution of another problem, a near-empty answer) looks like it too. A check is computed in the
same extraction run as the features, stored beside them, and thresholded on the valuation set, which
is clean target data by definition: a training sample fails when it is less consistent than a
quantile of the valuation samples (:class:`CheckLimits`: grounding at the 0.95 quantile, answer and
arithmetic at the maximum; a lower quantile is stricter).

- ``grounding``: IFD = s(A|Q) / s(A) (Li et al. 2024) over the first GROUNDING_TOKENS (48)
  response tokens: the response's loss with its instruction (the extraction pass's own
  ``SparseFeatures.losses_first``) over its loss after an empty instruction (``losses_alone``, a
  light second pass of :func:`forvalue.valuation.features.extract_sparse` with ``grounding=True``, on by
  default through ``FeatureConfig.checks``). Low: the instruction explains the response. On real
  math (docs/benchmarks.md, "Curation on real data") it separates another problem's solution from a
  matching one with AUC 1.000.
- ``answer``: the answer's likelihood where the model can judge it: the mean NLL of the tokens of the
  response's last computed result, the number after its last "=" (``SparseFeatures.losses_answer``,
  from the extraction pass itself: no extra cost). High: the model did not expect that result. A
  135M model judges arithmetic weakly (AUC 0.87 for a falsified last result on real math;
  benchmarks/answer_check_probe.py compares it with the other forward-only answer signals); NaN
  (not judged) for responses that compute nothing.
- ``arithmetic``: what the model cannot judge, checked by rule: the number of the response's
  arithmetic statements (``16 / 4 = 8``; an answer right after its expression) that do not hold
  (``arith_errors``, read from the text when the features are extracted;
  :mod:`forvalue.valuation.arithmetic`). Not a model signal: it sees a miscalculated or falsified
  result, not a wrong plan; NaN (not judged) for responses that write no arithmetic it can parse.

A failing sample is *dropped*: the strategy never picks it and it comes after every passing sample
(least failing first), so a subset of any size keeps a failing sample only after every passing one.
:class:`Checked` says, for every dropped sample, which check dropped it, its value and the limit.
Samples a check cannot judge (no instruction: plain text; NaN) pass it and are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..config import opt
from ..errors import ConfigError

CHECKS = ("grounding", "answer", "arithmetic")
NEEDS = {"grounding": ("losses_first", "losses_alone"), "answer": ("losses_answer",),   # SparseFeatures fields
         "arithmetic": ("arith_errors",)}
CHECK_INPUTS = tuple(dict.fromkeys(f for c in CHECKS for f in NEEDS[c]))   # every per-sample value the checks read
WHERE = {"grounding": "plain text has no instruction",
         "answer": "no response ends a computation with '= <number>'",
         "arithmetic": "no response writes arithmetic the check can parse"}


@dataclass(frozen=True)
class CheckLimits:
    """Where each check's limit sits: a training sample fails a check when its value is above this
    quantile of the valuation set's values (1: their maximum; lower is stricter). The defaults were
    chosen side by side on two benchmarks (benchmarks/check_limits.py, docs/benchmarks.md): the
    grounding limit at the 0.95 quantile rejects every other problem's solution on the real pool for one
    clean sample; a stricter answer limit drops 5-8% of the clean pool."""

    grounding: float = opt(0.95, "grounding check limit: a training sample fails when its IFD is above this quantile "
                                 "of the valuation set's (1: their maximum; lower is stricter)",
                           flag="--grounding-limit")
    answer: float = opt(1.0, "answer check limit: a training sample fails when its answer's loss is above this "
                             "quantile of the valuation set's (1: their maximum; lower is stricter)",
                        flag="--answer-limit")
    arithmetic: float = opt(1.0, "arithmetic check limit: a training sample fails when more of its arithmetic "
                                 "statements are false than this quantile of the valuation set's (1: their maximum)",
                            flag="--arithmetic-limit")

    def __post_init__(self):
        for name in CHECKS:
            q = getattr(self, name)
            if not 0 < q <= 1:
                raise ConfigError(f"{name} limit must be a quantile in (0, 1] (1: the valuation set's maximum), "
                                  f"got {q:g}")

    def quantile(self, check: str) -> float:
        return float(getattr(self, check))


@dataclass
class CheckResult:
    """One check over the training samples."""

    name: str
    values: np.ndarray       # [n] the check's value per training sample (NaN: not computable)
    threshold: float         # a sample fails above it
    failed: np.ndarray       # [n] bool
    quantile: float = 1.0

    @property
    def limit(self) -> str:
        q = "maximum" if self.quantile >= 1 else f"{self.quantile:g} quantile"
        return f"the valuation set's {q}"

    @property
    def shown_threshold(self) -> str:
        return f"{self.threshold:g}" if self.name == "arithmetic" else f"{self.threshold:.3f}"

    def reason(self, i: int) -> str:
        if self.name == "arithmetic":
            n = int(self.values[i])
            return (f"arithmetic: {n} statement{'s' * (n != 1)} that do{'es' * (n == 1)} not hold "
                    f"> {self.shown_threshold} ({self.limit})")
        return f"{self.name}: {self.values[i]:.3f} > {self.threshold:.3f} ({self.limit})"

    def summary(self) -> dict:
        return {"threshold": self.threshold, "quantile": self.quantile, "failed": int(self.failed.sum()),
                "not_judged": int(np.isnan(self.values).sum())}


@dataclass
class Checked:
    """Every check's result over the training samples (in their order)."""

    results: list[CheckResult]
    skipped: dict = field(default_factory=dict)    # {check: why it did not run}

    def __len__(self) -> int:
        return len(self.results[0].values) if self.results else 0

    @property
    def failed(self) -> np.ndarray:
        out = np.zeros(len(self), dtype=bool)
        for r in self.results:
            out |= r.failed
        return out

    @property
    def dropped(self) -> np.ndarray:
        """Training indices of the failing samples, least failing first (by the largest margin over a
        threshold, relative to it)."""
        idx = np.flatnonzero(self.failed)
        if not len(idx):
            return idx
        worst = np.max([np.where(r.failed[idx], (r.values[idx] - r.threshold) / max(abs(r.threshold), 1e-12), -np.inf)
                        for r in self.results], axis=0)
        return idx[np.argsort(worst, kind="stable")]

    def first_failed(self, i: int) -> CheckResult | None:
        """The check a dropped sample is reported under: the arithmetic rule's verdict (a statement
        that does not hold) before the model's, then in the order of CHECKS."""
        ordered = sorted(self.results, key=lambda r: r.name != "arithmetic")
        return next((r for r in ordered if r.failed[i]), None)

    def reasons(self) -> dict[int, str]:
        """{training index: why it was dropped} of every dropped sample."""
        return {int(i): self.first_failed(i).reason(i) for i in self.dropped}

    def records(self, sample_ids: Sequence[str], samples=None) -> list[dict]:
        """One row per dropped sample, least failing first: sample_id, check (the first that failed),
        value, threshold, reason. With the ``samples`` at hand (same order) the arithmetic check's
        reason quotes the statements that do not hold."""
        out = []
        for i in self.dropped:
            r = self.first_failed(i)
            reason = r.reason(i)
            if r.name == "arithmetic" and samples is not None:
                reason += ": " + "; ".join(false_statements(samples[i]))
            out.append({"sample_id": sample_ids[i], "check": r.name, "value": float(r.values[i]),
                        "threshold": r.threshold, "reason": reason})
        return out

    def summary(self) -> dict:
        """{check: {threshold, quantile, failed, not_judged}, or why it did not run} (JSON-ready)."""
        return {r.name: r.summary() for r in self.results} | {c: f"not applied: {why}" for c, why in self.skipped.items()}

    def describe(self) -> str:
        """One line per check, as the command line prints it."""
        n = len(self)
        return "; ".join(f"{r.name} check dropped {int(r.failed.sum())} of {n} (value > {r.shown_threshold}, "
                         f"{r.limit})" + (f", {s} not judged" if (s := int(np.isnan(r.values).sum())) else "")
                         for r in self.results)

    def reindexed(self, pos: np.ndarray) -> "Checked":
        """The same results over the samples in another order: new sample ``i`` is old ``pos[i]``."""
        return Checked([CheckResult(r.name, r.values[pos], r.threshold, r.failed[pos], r.quantile)
                        for r in self.results], dict(self.skipped))


def ifd(first: np.ndarray, alone: np.ndarray) -> np.ndarray:
    """[n] s(A|Q) / s(A) over the same first response tokens (NaN where either is missing)."""
    return np.asarray(first, np.float64) / np.maximum(np.asarray(alone, np.float64), 1e-12)


def check_values(name: str, inputs: dict) -> np.ndarray:
    """[n] a check's value per sample from its inputs (higher: less consistent; NaN: not judged)."""
    if name == "grounding":
        return ifd(inputs["losses_first"], inputs["losses_alone"])
    (field_,) = NEEDS[name]
    return np.asarray(inputs[field_], np.float64)


def inputs_of(features) -> dict[str, np.ndarray | None]:
    """The checks' per-sample inputs of features (None where they were extracted without one)."""
    return {name: getattr(features, name) for name in CHECK_INPUTS}


def false_statements(sample) -> list[str]:
    """The arithmetic statements of a sample's response that do not hold (as the check reads them)."""
    from ..valuation.features import response_text
    from ..valuation.arithmetic import statements

    return [text for text, ok in statements(response_text(sample)) if not ok]


def with_text_values(inputs: dict | None, samples) -> dict | None:
    """``inputs`` with the values a check reads from the text (``arith_errors``) computed from
    ``samples`` (in the same order) where the features lack them: features stored before the
    arithmetic check, when the samples are at hand."""
    if inputs is None or samples is None or inputs.get("arith_errors") is not None:
        return inputs
    from ..valuation.features import response_text
    from ..valuation.arithmetic import arithmetic_errors

    return dict(inputs, arith_errors=np.array([arithmetic_errors(response_text(s)) for s in samples], np.float64))


def unavailable(name: str, train: dict | None, val: dict | None) -> str | None:
    """Why check ``name`` cannot run on these inputs (None: it can)."""
    if any(d is None or d.get(i) is None for d in (train, val) for i in NEEDS[name]):
        return "the features carry no values for it (extracted with checks off, positions 'all', or stored before it was kept)"
    if np.isnan(check_values(name, val)).all():
        return f"no valuation sample has a value ({WHERE[name]})"
    return None


def threshold_check(name: str, train: dict, val: dict, quantile: float = 1.0) -> CheckResult:
    """Training samples whose value is above the valuation set's ``quantile`` fail (NaN never fails)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], not {quantile}")
    threshold = float(np.nanquantile(check_values(name, val), quantile))
    t = check_values(name, train)
    return CheckResult(name, t, threshold, np.nan_to_num(t, nan=-np.inf) > threshold, quantile)


def grounding(train: dict, val: dict, quantile: float = 1.0) -> CheckResult:
    """Training samples less grounded than the valuation set's ``quantile`` fail."""
    return threshold_check("grounding", train, val, quantile)


def run_checks(train: dict | None, val: dict | None, checks: Sequence[str] = CHECKS, *,
               quantile: float | None = None, limits: CheckLimits | None = None) -> Checked:
    """:class:`Checked` of those of ``checks`` that can run on the training samples' inputs
    (:func:`inputs_of`), with thresholds from the valuation samples': each at its ``limits`` quantile
    (default :class:`CheckLimits`), or every one at ``quantile``; ``skipped`` says why the others did
    not. ValueError when none can."""
    limits = limits or CheckLimits()
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    skipped = {c: why for c in checks if (why := unavailable(c, train, val))}
    ran = [threshold_check(c, train, val, limits.quantile(c) if quantile is None else quantile)
           for c in checks if c not in skipped]
    if not ran:
        raise ValueError("; ".join(f"{c}: {why}" for c, why in skipped.items()))
    return Checked(ran, skipped)


def checks_for(train: dict | None, val: dict | None, enabled: bool = True, *,
               limits: CheckLimits | None = None) -> tuple[Checked | None, str | None]:
    """(:class:`Checked` or None, why none ran) for a selection, at ``limits``: None when ``enabled``
    is off (``FeatureConfig.checks``) or no check has its values (a warning says why)."""
    import warnings

    if not enabled:
        return None, "off (features configured without checks)"
    try:
        checked = run_checks(train, val, limits=limits)
    except ValueError as e:
        warnings.warn(f"consistency checks not applied: {e}", RuntimeWarning, stacklevel=3)
        return None, str(e)
    for c, why in checked.skipped.items():
        warnings.warn(f"consistency check {c} not applied: {why}", RuntimeWarning, stacklevel=3)
    return checked, None


def attach_checks(ranking, checked: Checked | None, why: str | None):
    """``ranking`` with the checks that made it (``ranking.checks``; ``info["checks"]``: their
    summary, or why none ran)."""
    ranking.checks = checked
    ranking.info["checks"] = checked.summary() if checked is not None else f"not applied: {why}"
    return ranking


def rank_checked(train, val, strategy: str, checks: Sequence[str] = CHECKS, *, quantile: float | None = None,
                 limits: CheckLimits | None = None, **rank_kw):
    """The :class:`forvalue.curation.selection.Ranking` of in-memory features by ``strategy`` after the
    checks (``ranking.checks``: the :class:`Checked`); ``rank_kw`` goes to
    :func:`forvalue.curation.selection.rank_features`."""
    from .selection import rank_features

    checked = run_checks(inputs_of(train), inputs_of(val), checks, quantile=quantile, limits=limits)
    return attach_checks(rank_features(train, val, strategy, exclude=checked.dropped, **rank_kw), checked, None)


__all__ = ["CHECKS", "CHECK_INPUTS", "CheckLimits", "CheckResult", "Checked", "attach_checks", "check_values", "checks_for",
           "grounding", "ifd", "inputs_of", "rank_checked", "run_checks", "threshold_check", "unavailable",
           "false_statements", "with_text_values"]
