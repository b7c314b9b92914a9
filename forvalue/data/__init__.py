"""Data: reading training and valuation files (JSONL, CSV, Parquet; streamed), samples and their
validation, held-out splits of a valuation set, and the bundled demo files."""
