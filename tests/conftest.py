import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One torch (OpenMP) thread in this process and the processes it starts (CLI runs, Ray workers), unless
# the caller chose: the tests' models are tiny, and on a shared CPU a second OpenMP thread spins against
# the other processes (a tiny model's forward pass then takes 30-100x longer).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The suite runs in two pytest-xdist workers on two cores: an OpenMP thread that waits spins at full
# speed (GNU OpenMP's default) against the other worker, and polars and the tokenizers start a thread
# per core in each process. Waiting threads sleep, and each process keeps one thread per pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("POLARS_MAX_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _feature_store_in_tmp(tmp_path_factory, monkeypatch):
    """The CLI keeps features in $FORVALUE_FEATURES (default .forvalue/features in the working
    directory): tests keep them in a temporary folder instead of the checkout."""
    if "FORVALUE_FEATURES" not in os.environ:
        monkeypatch.setenv("FORVALUE_FEATURES", str(tmp_path_factory.getbasetemp() / "cli-features"))


RAY_FIXTURES = {"shared_ray", "local_ray", "no_local_ray"}
# The files whose tests use the session's local Ray: one xdist worker runs them all (see below).
RAY_FILES = ("tests/test_ray_engine.py", "tests/test_dagster_ray.py")
# The units that take longest (in this order, measured on 2 cores: 50-160 s for "ray", 5-35 s for the
# files): started first, so that the two workers end together.
LONGEST_FIRST = ("ray", "tests/test_store_reliability.py", "tests/test_governance.py",
                 "tests/test_dagster_pipeline.py", "tests/test_bench_runner.py", "tests/test_dagster_webserver.py",
                 "tests/test_store_integrity.py", "tests/test_finetune_assets.py", "tests/test_integration_default.py")


def pytest_collection_modifyitems(config, items):
    """A test that uses the session's local Ray must be in one of RAY_FILES (else two workers would
    each start a local Ray and fight over the two cores)."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) and item.nodeid.split("::")[0] not in RAY_FILES:
            raise pytest.UsageError(f"{item.nodeid} uses a local Ray: add its file to RAY_FILES in tests/conftest.py")


def pytest_xdist_make_scheduler(config, log):
    """The suite runs in two pytest-xdist workers (``-n 2``, pyproject.toml; ``-n 0``: one process).
    A test file is one unit of work, so its module fixtures are built once; the Ray files are one
    unit together (one local Ray per run); the longest units start first. (xdist's ``loadgroup``
    does not group under pytest 9: it renames items through a node attribute pytest 9 no longer
    reads, so every test became its own unit.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "ray" if path in RAY_FILES else path

        def schedule(self) -> None:
            """xdist's first distribution, with the units in LONGEST_FIRST order (then by size)."""
            if self.collection is not None or not self._check_nodes_have_same_collection():
                return super().schedule()
            self.collection = list(next(iter(self.registered_collections.values())))
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            rank = {scope: i for i, scope in enumerate(LONGEST_FIRST)}
            for scope in sorted(units, key=lambda u: (rank.get(u, len(rank)), -len(units[u]))):
                self.workqueue[scope] = units[scope]
            for node in self.nodes[len(self.workqueue):]:     # more workers than units
                self.assigned_work.pop(node, None)
                node.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

    return ByFile(config, log)


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
