"""A Ray connection for one run: a local Ray started for the run (and shut down after it), or a running
cluster joined by address.

A local Ray is started with its own temporary folder (short, under the system temp dir: Ray puts its
sockets there) which is removed after ``ray.shutdown()``. Token authentication stays on (Ray's default
since 2.5x), but the token is kept in that folder instead of ``~/.ray/auth_token``: nothing is written
under $HOME. A user who set ``RAY_AUTH_MODE`` (or ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) keeps
their settings. Ray is imported only inside these functions.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ForValueError


class EngineError(ForValueError, RuntimeError):
    """A distributed run that could not be carried out (Ray missing or unreachable, a failed run)."""


# One token per process: Ray's C++ token loader caches what it read first, so a second local Ray in
# the same process must see the same token (a fresh folder gets a copy of it).
_TOKEN = secrets.token_hex(32)
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def import_ray():
    try:
        import ray
    except ImportError:
        raise EngineError("the Ray engine needs Ray: pip install 'forvalue[ray]' "
                          "(ray[data]==2.60.0, dagster-ray==0.4.8)") from None
    return ray


@dataclass
class RaySession:
    """What :func:`ray_session` connected to."""

    address: str | None           # None: a local Ray started for this run
    started: bool                 # this session called ray.init (and calls ray.shutdown: a local Ray stops,
                                  # a joined cluster keeps running)
    temp_dir: Path | None         # the local Ray's folder, removed at the end
    startup_s: float              # seconds ray.init took
    resources: dict = field(default_factory=dict)   # ray.cluster_resources() at the start

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))


def _worker_env(local: bool) -> dict:
    """Environment the workers need. A local Ray's workers run this machine's venv: its bin first on
    PATH (subprocesses of the model code), this source tree importable (PYTHONPATH; an editable or
    normal install works without it), the model cache and thread settings passed on. A cluster's
    nodes have their own image: only the offline switches travel (paths of this machine would not
    exist there)."""
    env = {"TOKENIZERS_PARALLELISM": "false"}
    names = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
    if local:
        path = os.environ.get("PATH", "")
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + path if bin_dir not in path.split(os.pathsep) else path
        pp = os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + (os.pathsep + pp if pp else "")
        names += ["OMP_NUM_THREADS", "FORVALUE_CACHE", "HF_HOME"]
    env.update({k: os.environ[k] for k in names if os.environ.get(k)})
    return env


class _LocalAuth:
    """Token auth of a local Ray kept in its temp folder; the previous variables restored at the end."""

    def __init__(self, folder: Path):
        self.saved = {k: os.environ.get(k) for k in _AUTH_VARS}
        self.active = not any(self.saved.values())
        if self.active:
            token = folder / "auth_token"
            token.write_text(_TOKEN)
            token.chmod(0o600)
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
            _refresh()

    def restore(self) -> None:
        if not self.active:
            return
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh()


def _refresh() -> None:
    """Make this process see the auth variables now: Ray reads them into its config when it is
    imported (what Ray's own token set-up does after changing them)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):   # another Ray version: the variables are read at start-up
        pass


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds when nothing listens at ``address`` (``ray.init`` would keep retrying for minutes)."""
    import socket
    from urllib.parse import urlparse

    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"Ray address {address!r}: use HOST:PORT, ray://HOST:10001 or auto")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def start(address: str | None = None, *, num_cpus: float | None = None, num_gpus: float | None = None,
          object_store_mb: int | None = None) -> RaySession:
    """Connect to ``address`` (a running cluster: ``ray://host:10001``, ``host:6379`` or ``auto``), or
    start a local Ray for this process. An already initialised Ray (a Dagster ``RayResource``, a
    test fixture) is used as it is and left running."""
    ray = import_ray()
    if ray.is_initialized():
        return RaySession(address=address, started=False, temp_dir=None, startup_s=0.0,
                          resources=dict(ray.cluster_resources()))
    env = _worker_env(local=not address)
    t0 = time.perf_counter()
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except Exception as e:   # ConnectionError, RuntimeError, grpc errors, ...
            raise EngineError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        return RaySession(address=address, started=True, temp_dir=None, startup_s=time.perf_counter() - t0,
                          resources=dict(ray.cluster_resources()))
    if num_cpus is not None and num_cpus <= 0:
        raise ConfigError(f"num_cpus must be > 0, got {num_cpus}")
    folder = Path(tempfile.mkdtemp(prefix="fvray-", dir="/tmp" if os.path.isdir("/tmp") else None))
    auth = _LocalAuth(folder)
    kw = {"object_store_memory": object_store_mb * 2**20} if object_store_mb else {}
    try:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=str(folder),
                 runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False, **kw)
    except Exception:
        auth.restore()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    s = RaySession(address=None, started=True, temp_dir=folder, startup_s=time.perf_counter() - t0,
                   resources=dict(ray.cluster_resources()))
    s._auth = auth   # type: ignore[attr-defined]
    return s


def stop(session: RaySession) -> None:
    """Shut down a Ray this session started and remove its folder (a joined cluster is left alone:
    only this driver disconnects)."""
    ray = import_ray()
    if session.started:
        ray.shutdown()
    auth = getattr(session, "_auth", None)
    if auth is not None:
        auth.restore()
    if session.temp_dir is not None:
        shutil.rmtree(session.temp_dir, ignore_errors=True)


class ray_session:
    """``with ray_session(address) as s:`` start / connect, then stop (see :func:`start`)."""

    def __init__(self, address: str | None = None, **kw):
        self.address, self.kw, self.session = address, kw, None

    def __enter__(self) -> RaySession:
        self.session = start(self.address, **self.kw)
        return self.session

    def __exit__(self, *exc) -> None:
        if self.session is not None:
            stop(self.session)


__all__ = ["EngineError", "RaySession", "import_ray", "ray_session", "start", "stop"]
