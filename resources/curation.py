"""CurationResource: the default subset that ``curated_subset`` keeps (automation and the nightly
schedule use it; a run's config overrides any field). The subset fields are the library's
``forvalue.curation.selection.SubsetSpec`` (declared there once)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env
from ._fields import config_class, dataclass_fields

SUBSET_ENV = {"mode": "FORVALUE_SUBSET_MODE", "value": "FORVALUE_SUBSET_VALUE", "strategy": "FORVALUE_SUBSET_STRATEGY"}
LIMITS_ENV = {"grounding": "FORVALUE_GROUNDING_LIMIT", "answer": "FORVALUE_ANSWER_LIMIT",
              "arithmetic": "FORVALUE_ARITHMETIC_LIMIT"}
PLATFORM_ENV = {"eval_holdout": "FORVALUE_EVAL_HOLDOUT", "explain": "FORVALUE_EXPLAIN"}


class _Curation(ConfigurableResource):
    eval_holdout: float = Field(default=20.0, description="percent of a valuation set held out for evaluation when "
                                                          "no evaluation file incoming/eval/<valuation set>.* exists "
                                                          "when the pair is scored: the selection scores against the "
                                                          "rest, fine-tune evaluations use the held-out part "
                                                          "(forvalue.data.holdout); 0: none. Env: FORVALUE_EVAL_HOLDOUT")
    explain: bool = Field(default=True, description="show the top and bottom samples with their strongest tokens "
                                                    "marked (loads the model in the scoring and curation runs for "
                                                    "10 samples). Env: FORVALUE_EXPLAIN")

    @classmethod
    def from_env(cls):
        """Mode and strategy as ``EnvVar`` when set (resolved at run time); the value is parsed now,
        so a value that is not a number stops the code location with the variable's name."""
        return read_env(cls, {**SUBSET_ENV, **LIMITS_ENV, **PLATFORM_ENV}, run_time=("mode", "strategy"))

    def limits(self):
        """The consistency checks' limits (``forvalue.curation.consistency.CheckLimits``)."""
        from forvalue.curation.consistency import CheckLimits

        return CheckLimits(**{name: getattr(self, name) for name in LIMITS_ENV})


def subset_fields(**kw):
    """The Dagster fields of ``forvalue.curation.selection.SubsetSpec``."""
    from forvalue.curation.selection import SubsetSpec

    return dataclass_fields(SubsetSpec, **kw)


def _limit_fields():
    from forvalue.curation.consistency import CheckLimits

    return dataclass_fields(CheckLimits, env=LIMITS_ENV)


CurationResource = config_class(
    "CurationResource", _Curation,
    "Subset defaults: mode and value size the subset, strategy orders the samples (fields: "
    "forvalue.curation.selection.SubsetSpec), where the consistency checks put their limits (fields: "
    "forvalue.curation.consistency.CheckLimits), plus the evaluation hold-out and the explanations.",
    subset_fields(env=SUBSET_ENV), _limit_fields())
