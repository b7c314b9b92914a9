"""CurationResource: the default subset that ``curated_subset`` keeps (automation and the nightly
schedule use it; a run's config overrides any field)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ._env import env_bool, env_float, env_var_or


class CurationResource(ConfigurableResource):
    """Subset defaults: ``mode`` and ``value`` size the subset, ``strategy`` orders the samples."""

    mode: str = Field(default="drop_lowest_p", description="top_k, top_p, bottom_p or drop_lowest_p. "
                                                           "Env: FORVALUE_SUBSET_MODE")
    value: float = Field(default=10.0, description="k for top_k; a percentage 0-100 otherwise. "
                                                   "Env: FORVALUE_SUBSET_VALUE")
    strategy: str = Field(default="balanced", description="balanced, round-robin, max-cosine, cosine-mean or "
                                                          "raw-mean. Env: FORVALUE_SUBSET_STRATEGY")
    eval_holdout: float = Field(default=20.0, description="percent of a valuation set held out for evaluation when "
                                                          "no evaluation file incoming/eval/<valuation set>.* exists "
                                                          "when the pair is scored: the selection scores against the "
                                                          "rest, fine-tune evaluations use the held-out part "
                                                          "(forvalue.data.holdout); 0: none. Env: FORVALUE_EVAL_HOLDOUT")
    explain: bool = Field(default=True, description="show the top and bottom samples with their strongest tokens "
                                                    "marked (loads the model in the scoring and curation runs for "
                                                    "10 samples). Env: FORVALUE_EXPLAIN")

    @classmethod
    def from_env(cls) -> "CurationResource":
        """Mode and strategy as ``EnvVar`` when set (resolved at run time); the value is parsed now,
        so a value that is not a number stops the code location with the variable's name."""
        return cls(mode=env_var_or("FORVALUE_SUBSET_MODE", "drop_lowest_p"),
                   value=env_float("FORVALUE_SUBSET_VALUE", 10.0),
                   strategy=env_var_or("FORVALUE_SUBSET_STRATEGY", "balanced"),
                   eval_holdout=env_float("FORVALUE_EVAL_HOLDOUT", 20.0),
                   explain=env_bool("FORVALUE_EXPLAIN", True))
