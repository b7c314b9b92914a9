"""Training: LoRA fine-tuning on a curated subset, evaluation on held-out data, and MLflow tracking."""
