"""Domain ``ingest``: registration of training datasets and valuation sets, and the registration
jobs (register + features) the incoming-folder sensor launches."""

from .assets import DEFAULTS, RegisterConfig, training_dataset, valuation_set
from .jobs import register_training_job, register_valuation_job

ASSETS = [training_dataset, valuation_set]
CHECKS: list = []
JOBS = [register_training_job, register_valuation_job]

__all__ = ["ASSETS", "CHECKS", "DEFAULTS", "JOBS", "RegisterConfig", "register_training_job", "register_valuation_job",
           "training_dataset", "valuation_set"]
