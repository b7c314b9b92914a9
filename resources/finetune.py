"""FinetuneResource: defaults of the fine-tune assets that a run's config may override, and the CPU
threads their runs use."""

from __future__ import annotations

from contextlib import contextmanager

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env


class FinetuneResource(ConfigurableResource):
    """Fine-tuning defaults (the run config's ``steps``, when left empty, comes from here) and the torch
    CPU threads of the fine-tune and evaluation runs."""

    steps: int = Field(default=30, ge=1, description="optimizer steps of finetune_run and finetune_comparison. "
                                               "Env: FORVALUE_FT_STEPS")
    threads: int = Field(default=1, ge=0, description="torch CPU threads of finetune_run, eval_run and "
                                                      "finetune_comparison (torch.set_num_threads for the run); 1, "
                                                      "as docs/finetune.md recommends on a shared CPU: OpenMP threads "
                                                      "spinning against other processes made a 135M model 4-7x "
                                                      "slower; 0: torch's default (one per core). "
                                                      "Env: FORVALUE_FT_THREADS")

    @classmethod
    def from_env(cls) -> "FinetuneResource":
        return read_env(cls, {"steps": "FORVALUE_FT_STEPS", "threads": "FORVALUE_FT_THREADS"})

    @contextmanager
    def cpu_threads(self):
        """torch's CPU threads set to ``threads`` for the block and restored after (0: left as they are)."""
        if not self.threads:
            yield
            return
        from forvalue.valuation.scoring import torch_threads

        with torch_threads(self.threads):
            yield
