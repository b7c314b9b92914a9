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


RAY_FIXTURES = {"shared_ray", "local_ray", "no_local_ray"}


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, see pyproject.toml) a test file runs in one
    worker (its module fixtures are built once), and every test that uses the session's local Ray
    runs in the same worker: one Ray start per run, never two local Rays competing for the CPUs."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        ray = RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group("ray" if ray else item.nodeid.split("::")[0]))


class SharedRay:
    """One local Ray (2 CPUs) for the test session, started on first use by
    :func:`forvalue.engines.ray_session.start`: the engine joins it (an initialised Ray is used as it
    is, not started again). :meth:`close` stops it and checks that it leaves nothing behind; a later
    :meth:`get` starts it again."""

    def __init__(self):
        self.session = None
        home = os.environ.get("HOME")
        self.token_file = Path(home or "/nonexistent") / ".ray" / "auth_token"
        self.had_token = self.token_file.exists()

    def get(self):
        from forvalue.engines.ray_session import start

        if self.session is None:
            session = start(None, num_cpus=2)
            assert session.started and session.temp_dir.is_dir()
            assert os.environ["RAY_AUTH_MODE"] == "token"                  # auth on, token in the temp folder
            assert Path(os.environ["RAY_AUTH_TOKEN_PATH"]).parent == session.temp_dir
            self.session = session
        return self.session

    def close(self) -> None:
        import ray

        from forvalue.engines.ray_session import stop

        session, self.session = self.session, None
        if session is None:
            return
        stop(session)
        assert not ray.is_initialized()
        assert not session.temp_dir.exists()                              # Ray's folder removed
        assert "RAY_AUTH_TOKEN_PATH" not in os.environ
        assert self.token_file.exists() == self.had_token                 # nothing written under $HOME


@pytest.fixture(scope="session")
def shared_ray():
    pytest.importorskip("ray")
    ray = SharedRay()
    yield ray
    ray.close()


@pytest.fixture
def local_ray(shared_ray):
    """The session's local Ray (a RaySession), started on first use and stopped at the end of the session."""
    return shared_ray.get()


@pytest.fixture
def no_local_ray(shared_ray):
    """No Ray running in this process (the session's is stopped; the next test that needs it starts it)."""
    shared_ray.close()


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
