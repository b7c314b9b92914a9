"""Where feature extraction and stored scoring run: in this process (``local``, the default) or on Ray
Data (``ray``): an actor pool, each actor holding the model once (one GPU each when the cluster has
GPUs), batches of samples streamed through ``map_batches``, every batch written as feature-store
shards (same shard + manifest format; the store's claims make a retried or duplicated task store
nothing twice). Stored scoring and the selection strategies' passes over a store run one Ray task per
shard (:func:`forvalue.engines.runner.part_runner`).

Nothing here imports Ray, torch or Dagster at import time. docs/scale-out.md: running on a Ray
cluster and on KubeRay, and sizing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import opt
from ..errors import ConfigError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineConfig:
    """Where features are computed and stored shards scored."""

    engine: str = opt("local", "where features are computed and stored features scored: local (this process) or "
                               "ray (a Ray Data actor pool, each actor holding the model once)", choices=ENGINES)
    workers: int = opt(2, "Ray actors, each with its own copy of the model (one GPU each when the cluster has GPUs)")
    ray_address: str | None = opt(None, "a running Ray cluster (ray://HOST:10001, HOST:6379 or auto); not given: a "
                                         "local Ray is started for the run and shut down after it")
    gpus_per_worker: float | None = opt(None, "GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0); "
                                              "above 1 the model is spread over the actor's GPUs with device_map=auto")

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"engine {self.engine!r}: use {' or '.join(ENGINES)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be a whole number >= 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.ray_address is not None and not str(self.ray_address).strip():
            raise ConfigError("ray_address is empty: give an address or leave it out for a local Ray")
        if self.engine == "local" and (self.ray_address or self.gpus_per_worker is not None):
            raise ConfigError("ray_address / gpus_per_worker need engine 'ray'")

    @property
    def is_ray(self) -> bool:
        return self.engine == "ray"


@dataclass
class EngineStats:
    """What a distributed run did: for the CLI's summary and the Dagster metadata."""

    engine: str = "local"
    workers: int = 1                 # actors in the pool
    processes: int = 1               # distinct worker processes that returned batches (> workers after restarts)
    batches: int = 0
    retried_tasks: int = 0           # batch attempts beyond the first (a killed worker's batches, retried)
    startup_s: float = 0.0           # Ray start / connect
    seconds: float = 0.0             # the whole run, start-up included
    rows_per_s: float = 0.0          # samples per second over the run (start-up excluded)
    skipped: list = field(default_factory=list)   # [(sample_id, reason)] with on_error="skip"

    def to_dict(self) -> dict:
        return {"engine": self.engine, "workers": self.workers, "processes": self.processes, "batches": self.batches,
                "retried_tasks": self.retried_tasks, "startup_s": round(self.startup_s, 3),
                "seconds": round(self.seconds, 3), "rows_per_s": round(self.rows_per_s, 2)}


__all__ = ["ENGINES", "EngineConfig", "EngineStats"]
