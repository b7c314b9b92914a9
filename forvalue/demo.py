"""The bundled demo: math word problems (some corrupted, some off-topic) valued against a clean
valuation set of the same kind of problems."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def demo_paths() -> tuple[Path, Path]:
    """(training JSONL, valuation JSONL) shipped with the package."""
    return DATA_DIR / "demo_train.jsonl", DATA_DIR / "demo_val.jsonl"
