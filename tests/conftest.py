import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One torch (OpenMP) thread in this process and the processes it starts (CLI runs, Ray workers), unless
# the caller chose: the tests' models are tiny, and on a shared CPU a second OpenMP thread spins against
# the other processes (a tiny model's forward pass then takes 30-100x longer).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _feature_store_in_tmp(tmp_path_factory, monkeypatch):
    """The CLI keeps features in $FORVALUE_FEATURES (default .forvalue/features in the working
    directory): tests keep them in a temporary folder instead of the checkout."""
    if "FORVALUE_FEATURES" not in os.environ:
        monkeypatch.setenv("FORVALUE_FEATURES", str(tmp_path_factory.getbasetemp() / "cli-features"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + char tokenizer saved as a model folder (safetensors)."""
    from tiny import build_tiny_text_model

    folder = tmp_path_factory.mktemp("tiny-model")
    build_tiny_text_model(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from forvalue.models.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_lm64():
    import torch

    from forvalue.models.loading import from_objects
    from tiny import build_tiny_text_model

    model, tok = build_tiny_text_model(None, seed=1, dtype=torch.float64)
    return from_objects(model, tok, name="tiny64")


def make_records(n: int, seed: int = 0, prefix: str = "s"):
    """Short, varied prompt/response records (arithmetic and word tasks)."""
    import random

    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "tiger", "paper", "green", "music", "light", "storm"]
    out = []
    for i in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        if i % 3 == 0:
            p, r = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        elif i % 3 == 1:
            w = rng.sample(words, 3)
            p, r = f"Reverse ({i}): {' '.join(w)}", " ".join(reversed(w))
        else:
            w = rng.choice(words)
            p, r = f"Spell {w} in capitals ({i}).", w.upper() + "!" * rng.randint(0, 3)
        out.append({"id": f"{prefix}{i}", "prompt": p, "response": r, "group": i % 3})
    return out


@pytest.fixture
def records():
    return make_records
