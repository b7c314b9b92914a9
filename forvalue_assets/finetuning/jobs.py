"""Fine-tuning jobs (launched, never automated)."""

from dagster import AssetSelection, define_asset_job

from ..partitions import dataset_pairs
from .assets import eval_run, finetune_comparison, finetune_run

finetune_job = define_asset_job(
    "finetune_and_eval",
    selection=AssetSelection.assets(finetune_run, eval_run),
    partitions_def=dataset_pairs,
    description="Fine-tune on the latest curated subset of a pair and evaluate the result (MLflow-tracked).",
)

comparison_job = define_asset_job(
    "compare_subsets",
    selection=AssetSelection.assets(finetune_comparison),
    partitions_def=dataset_pairs,
    description="Same fine-tuning budget on For-Value top-k, random-k, bottom-k and the full set; comparison table.",
)
