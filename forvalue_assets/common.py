"""What every domain of the Dagster layer shares: owners, code version, pools, the automation
condition, ``AssetDefaults`` (each domain's ``@asset`` defaults), the asset keys, and the Failure /
check-result builders.

Domains refer to each other's assets by these keys (``deps=[TRAINING_DATASET]``,
``AssetSelection.assets(...)``), never by importing another domain, so the layers stay one-way:
shared modules <- domains <- definitions.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AutomationCondition,
    Failure,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

import forvalue
from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION
from forvalue.data.samples import DataError

OWNERS = ["team:data-curation"]
CODE_VERSION = forvalue.__version__
DUCKDB_POOL = "duckdb"
MODEL_POOL = "model"

# Keep derived assets current: run when an upstream partition updates, never on missing or
# in-progress inputs, and never past a failed blocking check upstream.
AUTOMATION = AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()


@dataclass(frozen=True)
class AssetDefaults:
    """What every asset of one domain shares: its group and pool, and where the whole domain agrees its
    kinds, partitions and automation condition; owners and code version are the platform's.
    ``DEFAULTS.asset(...)`` is ``@asset`` with them, so an asset states only what is special to it
    (an argument it passes wins over the default)."""

    group: str
    pool: str
    kinds: frozenset[str] = frozenset()
    partitions_def: PartitionsDefinition | None = None
    automation_condition: AutomationCondition | None = None

    def asset(self, **kwargs):
        """The ``@asset`` decorator with this domain's defaults under ``kwargs``."""
        defaults = {"group_name": self.group, "pool": self.pool, "owners": OWNERS, "code_version": CODE_VERSION,
                    "kinds": set(self.kinds) or None, "partitions_def": self.partitions_def,
                    "automation_condition": self.automation_condition}
        return asset(**{**{k: v for k, v in defaults.items() if v is not None}, **kwargs})


KIND_LABEL = {KIND_DATASET: "training dataset", KIND_VALUATION: "valuation set"}

# Partitioned asset checks are a preview feature in Dagster 1.13; they are what makes a check's
# result belong to one dataset (partition) rather than to the whole asset, so the checks use them
# and only that one notice is silenced.
warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec")

TRAINING_DATASET = AssetKey("training_dataset")
VALUATION_SET = AssetKey("valuation_set")
TRAINING_FEATURES = AssetKey("training_features")
VALUATION_FEATURES = AssetKey("valuation_features")
FORVALUE_SCORES = AssetKey("forvalue_scores")
CURATED_SUBSET = AssetKey("curated_subset")


def data_failure(e: DataError) -> Failure:
    return Failure(description=str(e), metadata={
        "file": e.file, "row": MetadataValue.int(e.row) if e.row is not None else "-",
        "field": e.field or "-", "reason": e.reason})


def catalog_failure(e: Exception) -> Failure:
    return Failure(description=str(e))


def check_failure(description: str, **metadata) -> AssetCheckResult:
    """A failed blocking check (severity ERROR)."""
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=description,
                            metadata=metadata)


def subset_report_path(jsonl_path) -> Path:
    """Where a subset's HTML curation report lies: beside its exported files, with their name."""
    return Path(jsonl_path).with_suffix(".html")
