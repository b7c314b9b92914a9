"""Domain ``finetuning``: fine-tune and evaluate on curated subsets (MLflow-tracked), the
For-Value vs random comparison, and their jobs ``finetune_and_eval`` and ``compare_subsets``."""

from .assets import DEFAULTS, eval_run, finetune_comparison, finetune_run
from .config import ComparisonConfig, EvalFields, TrainFields
from .jobs import comparison_job, finetune_job

ASSETS = [finetune_run, eval_run, finetune_comparison]
CHECKS: list = []
JOBS = [finetune_job, comparison_job]

__all__ = ["ASSETS", "CHECKS", "DEFAULTS", "ComparisonConfig", "EvalFields", "JOBS", "TrainFields", "comparison_job",
           "eval_run", "finetune_comparison", "finetune_job", "finetune_run"]
