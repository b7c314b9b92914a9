"""Compatibility names: the fine-tune assets and jobs now live in domain ``finetuning``."""

from .finetuning import ASSETS as FINETUNE_ASSETS
from .finetuning import JOBS as FINETUNE_JOBS
from .finetuning import comparison_job, eval_run, finetune_comparison, finetune_job, finetune_run

__all__ = ["FINETUNE_ASSETS", "FINETUNE_JOBS", "comparison_job", "eval_run", "finetune_comparison", "finetune_job",
           "finetune_run"]
