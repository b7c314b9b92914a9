"""Evaluation on data the selection never saw.

A curated subset is chosen to lower its valuation set's loss, so that loss flatters it. An
evaluation set (:class:`EvalSet`) is one of, in this order:

- ``file``: an evaluation file (CLI ``--eval FILE``; the platform's ``incoming/eval/<valuation set>.*``).
  Samples that are also in the part of the valuation set the selection used are removed and counted.
- ``holdout``: the held-out part of a deterministic hash split of the valuation set (the platform's
  default when no evaluation file exists when the pair is scored: ``FORVALUE_EVAL_HOLDOUT`` percent,
  default 20). The selection scores against the other part only. A sample's part depends on its
  content id alone, so a new version of the valuation set keeps every old sample in its part.
- ``valuation``: the valuation set itself (no file, no hold-out): marked ``seen_by_selection`` and
  warned about, because its losses favour the curated subset.

No Dagster, no torch here: the platform and the CLI both call these functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

DEFAULT_HOLDOUT = 20.0      # percent of the valuation set held out when no evaluation file is given
MIN_PART = 20               # fewer samples than this in a part: its losses (or its selection) mean little
SALT = b"forvalue-eval-holdout-v1:"

SOURCES = ("file", "holdout", "valuation")


def plural(n: int, word: str = "sample") -> str:
    """``n`` and ``word``, plural unless n is 1 ("1 worker", "2 processes")."""
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def check_percent(percent: float, what: str = "eval_holdout") -> float:
    percent = float(percent)
    if not 0.0 <= percent < 100.0:
        raise ValueError(f"{what} must be a percentage in [0, 100), not {percent:g}")
    return percent


def _unit(sample_id: str) -> float:
    """A number in [0, 1) fixed by the sample's content id."""
    return int.from_bytes(hashlib.sha256(SALT + sample_id.encode()).digest()[:8], "big") / 2.0 ** 64


def held_out(sample_ids: Sequence[str], percent: float) -> set[str]:
    """The ids of the evaluation part of a hash split: those whose hash falls below ``percent``.
    With two or more samples and ``percent`` > 0 both parts hold at least one sample (the
    sample with the lowest hash is held out, the highest kept)."""
    percent = check_percent(percent)
    ids = list(dict.fromkeys(sample_ids))
    if percent == 0 or len(ids) < 2:
        return set()
    unit = {i: _unit(i) for i in ids}
    out = {i for i in ids if unit[i] < percent / 100.0}
    if not out:
        out = {min(ids, key=unit.__getitem__)}
    if len(out) == len(ids):
        out.discard(max(ids, key=unit.__getitem__))
    return out


def split(sample_ids: Sequence[str], percent: float) -> tuple[list[str], list[str]]:
    """(selection part, evaluation part) of ``sample_ids``, each in the given order."""
    out = held_out(sample_ids, percent)
    return [i for i in sample_ids if i not in out], [i for i in sample_ids if i in out]


def selection_ids(sample_ids: Sequence[str], percent: float | None) -> list[str]:
    """The part of a valuation set the selection scores against (all of it when ``percent`` is 0/None)."""
    return split(sample_ids, percent or 0.0)[0]


def selection_samples(samples: Sequence, percent: float | None) -> list:
    """The samples of a valuation set the selection scored against: those not held out by ``percent``."""
    keep = set(selection_ids([s.sample_id for s in samples], percent))
    return [s for s in samples if s.sample_id in keep]


def part_warnings(n_selection: int, n_eval: int, *, what: str = "valuation set") -> list[str]:
    """Warnings for parts too small to mean anything."""
    out = []
    if n_eval < MIN_PART:
        out.append(f"the evaluation part holds {plural(n_eval)} (fewer than {MIN_PART}): its losses are noisy; "
                   f"add an evaluation file or a larger {what}")
    if n_selection < MIN_PART:
        out.append(f"the selection part of the {what} holds {plural(n_selection)} (fewer than {MIN_PART}): the "
                   f"selection sees little of what 'valuable' means")
    return out


@dataclass
class EvalSet:
    """The samples a fine-tuned model is evaluated on, and where they come from."""

    source: str                    # file | holdout | valuation
    name: str                      # the file's path, or the valuation set's name
    version: str                   # the file's content hash, or the valuation set's version
    samples: list
    holdout: float = 0.0           # percent of the valuation set held out (source holdout)
    n_removed: int = 0             # samples of the file dropped: the selection had seen them
    n_selection: int | None = None  # valuation samples the selection used
    warnings: list[str] = field(default_factory=list)

    @property
    def seen_by_selection(self) -> bool:
        return self.source == "valuation"

    def describe(self) -> str:
        n = len(self.samples)
        if self.source == "file":
            removed = f", {plural(self.n_removed)} also in the valuation set left out" if self.n_removed else ""
            return f"evaluation file {self.name} ({plural(n)}{removed})"
        if self.source == "holdout":
            return (f"the held-out {self.holdout:g}% of valuation set {self.name} ({plural(n)}; the selection used "
                    f"the other {self.n_selection})")
        return f"valuation set {self.name} ({plural(n)}; it chose the subset, so its losses favour it)"

    def params(self) -> dict:
        """What every evaluation records (catalog columns, MLflow params, Dagster metadata)."""
        return {"eval_source": self.source, "eval_set": self.name, "eval_version": self.version,
                "eval_holdout": float(self.holdout), "n_eval": len(self.samples), "n_eval_removed": int(self.n_removed),
                "eval_seen_by_selection": self.seen_by_selection}


def from_file(samples: Sequence, *, name: str, version: str, seen_ids: Sequence[str] = ()) -> EvalSet:
    """An evaluation file minus the samples the selection saw (``seen_ids``: the valuation part it
    scored against). Raises ValueError when nothing is left."""
    seen = set(seen_ids)
    kept = [s for s in samples if s.sample_id not in seen]
    if not kept:
        raise ValueError(f"{name}: every one of its {len(samples)} samples is in the valuation set that chose the "
                         f"subset; an evaluation file must hold other samples")
    warnings = [] if len(kept) >= MIN_PART else [
        f"the evaluation file holds {plural(len(kept), 'usable sample')} (fewer than {MIN_PART}): its losses are noisy"]
    if len(kept) < len(samples):
        n = len(samples) - len(kept)
        warnings.append(f"{plural(n)} of {name} {'is' if n == 1 else 'are'} also in the valuation set that chose the "
                        f"subset: left out of the evaluation")
    return EvalSet("file", name, version, kept, n_removed=len(samples) - len(kept), n_selection=len(seen) or None,
                   warnings=warnings)


def from_valuation(samples: Sequence, *, name: str, version: str, holdout: float = 0.0) -> EvalSet:
    """The held-out part of valuation set ``samples`` when ``holdout`` > 0 (the split the scores
    used), else the whole set, marked as seen by the selection."""
    ids = [s.sample_id for s in samples]
    out = held_out(ids, holdout) if holdout else set()
    if out:
        kept = [s for s in samples if s.sample_id in out]
        n_sel = len(ids) - len(kept)
        return EvalSet("holdout", name, version, kept, holdout=float(holdout), n_selection=n_sel,
                       warnings=part_warnings(n_sel, len(kept)))
    return EvalSet("valuation", name, version, list(samples), n_selection=len(ids), warnings=[
        f"evaluated on valuation set {name}, which chose the subset: the curated subset's losses are flattered; "
        f"give an evaluation file or hold out part of the valuation set"])


__all__ = ["DEFAULT_HOLDOUT", "MIN_PART", "SOURCES", "EvalSet", "check_percent", "from_file", "from_valuation",
           "held_out", "part_warnings", "selection_ids", "selection_samples", "split"]
