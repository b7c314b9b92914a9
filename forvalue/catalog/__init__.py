"""The DuckDB catalog: datasets, models, feature runs, scores, subsets and fine-tuning runs, with the
lineage a governance question needs."""
