"""Dynamic partitions: one per registered training dataset and valuation set name."""

from dagster import DynamicPartitionsDefinition, MultiPartitionKey, MultiPartitionsDefinition

TRAIN_DIM = "training_dataset"
VAL_DIM = "valuation_set"

training_datasets = DynamicPartitionsDefinition(name="training_datasets")
valuation_sets = DynamicPartitionsDefinition(name="valuation_sets")
# Scores and subsets: one partition per (training dataset, valuation set) pair.
dataset_pairs = MultiPartitionsDefinition({TRAIN_DIM: training_datasets, VAL_DIM: valuation_sets})


def pair_key(dataset: str, valuation_set: str) -> MultiPartitionKey:
    return MultiPartitionKey({TRAIN_DIM: dataset, VAL_DIM: valuation_set})


def split_pair(partition_key: str) -> tuple[str, str]:
    keys = dataset_pairs.get_partition_key_from_str(str(partition_key)).keys_by_dimension
    return keys[TRAIN_DIM], keys[VAL_DIM]
