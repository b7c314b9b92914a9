"""The feature engine and the Ray cluster (dagster-ray) of the platform.

- ``EngineResource``: where features are computed (``local``, in the run's process, or ``ray``, a Ray
  Data actor pool), with how many workers and GPUs per worker (fields: forvalue.engines.EngineConfig,
  less the address, which is the Ray resource's).
- ``ray``: a dagster-ray ``RayResource`` chosen by configuration (:func:`ray_resource_from_env`):
  ``ForValueLocalRay`` (a ``LocalRay``) when FORVALUE_RAY_ADDRESS is not set, ``RayClusterAddress``
  for a running cluster; in production a ``dagster_ray.kuberay.KubeRayCluster`` passed to
  ``build_definitions(resources={"ray": ...})`` (docs/scale-out.md).

The Ray resources connect only when a step uses the Ray engine (``Lifecycle(connect=False)`` and
:func:`connect`): a run on the local engine starts no Ray. A local Ray gets its own temporary folder
and auth token (forvalue.engines.ray_session), removed when the step ends. Ray is imported when a
connection is made, never at import.
"""

from __future__ import annotations

from urllib.parse import urlparse

from dagster import ConfigurableResource
from dagster_ray import Lifecycle, LocalRay, RayResource
from pydantic import Field

from ._env import env_float, env_str, read_env
from ._fields import config_class, dataclass_fields

ENGINE_ENV = {"engine": "FORVALUE_ENGINE", "workers": "FORVALUE_RAY_WORKERS",
              "gpus_per_worker": "FORVALUE_RAY_GPUS_PER_WORKER"}


class _Engine(ConfigurableResource):
    @classmethod
    def from_env(cls):
        from forvalue.errors import ConfigError

        res = read_env(cls, ENGINE_ENV)
        try:
            res.config()   # checked when the Definitions are built, not when a run starts
        except ConfigError as e:
            raise ValueError(f"FORVALUE_ENGINE / FORVALUE_RAY_WORKERS / FORVALUE_RAY_GPUS_PER_WORKER: {e}") from None
        return res

    def config(self):
        """The library's ``EngineConfig`` (the address is the Ray resource's, connected by then)."""
        from forvalue.engines import EngineConfig

        return EngineConfig(engine=self.engine, workers=self.workers,
                            gpus_per_worker=self.gpus_per_worker if self.engine == "ray" else None)


def _engine_fields():
    from forvalue.engines import EngineConfig

    return dataclass_fields(EngineConfig, exclude=("ray_address",), env=ENGINE_ENV)


EngineResource = config_class(
    "EngineResource", _Engine,
    "Where features are computed: local (the run's process) or ray (a Ray Data actor pool on the `ray` "
    "resource); fields: forvalue.engines.EngineConfig.", _engine_fields())


class _SessionContext:
    """What dagster-ray keeps as the connection: ``disconnect()`` ends the ForValue Ray session."""

    def __init__(self, session):
        self.session = session

    def disconnect(self) -> None:
        from forvalue.engines.ray_session import stop

        stop(self.session)


class _SessionConnect:
    def connect(self, context):   # replaces RayResource.connect: ForValue's session start-up
        from forvalue.engines.ray_session import start

        session = start(self.ray_address, num_cpus=self.ray_init_options.get("num_cpus"))
        self._context = _SessionContext(session)
        return self._context


class ForValueLocalRay(_SessionConnect, LocalRay):
    """dagster-ray's ``LocalRay``: a Ray on the run's machine, started for the step (its own temp
    folder and token) and shut down after it. ``ray_init_options={"num_cpus": N}`` caps its CPUs."""


class RayClusterAddress(_SessionConnect, RayResource):
    """A running Ray cluster joined by address (``ray://HOST:10001``, ``HOST:6379`` or ``auto``); the
    cluster keeps running after the step. With token auth, give the cluster's token in RAY_AUTH_TOKEN."""

    address: str = Field(description="the cluster's address: ray://HOST:10001, HOST:6379 or auto. "
                                     "Env: FORVALUE_RAY_ADDRESS")

    @property
    def host(self) -> str:
        return urlparse(self.address if "://" in self.address else f"ray://{self.address}").hostname or self.address

    @property
    def ray_address(self) -> str:   # type: ignore[override]
        return self.address

    @property
    def name(self) -> str:
        return f"Ray cluster {self.address}"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


def ray_resource_from_env() -> RayResource:
    """``RayClusterAddress`` when FORVALUE_RAY_ADDRESS is set, else ``ForValueLocalRay`` (CPUs:
    FORVALUE_RAY_CPUS, default all); both connect on first use by a Ray step."""
    address = env_str("FORVALUE_RAY_ADDRESS", "")
    # connect on first use; nothing to delete (a local Ray stops when it disconnects, a cluster is not ours)
    lazy = Lifecycle(connect=False, cleanup="never")
    if address:
        return RayClusterAddress(address=address, lifecycle=lazy)
    cpus = env_float("FORVALUE_RAY_CPUS", 0.0)
    return ForValueLocalRay(lifecycle=lazy, ray_init_options={"num_cpus": cpus} if cpus else {})


def connect(ray: RayResource, context) -> RayResource:
    """Connect the step's Ray resource now (once): the Ray engine then runs on it."""
    if not ray.connected:
        ray.connect(context)
    return ray


__all__ = ["EngineResource", "ForValueLocalRay", "RayClusterAddress", "ray_resource_from_env", "connect"]
