"""Where the passes over a feature store run (scoring, the selection strategies): here, or on Ray."""

from __future__ import annotations

from contextlib import contextmanager

from ..valuation.feature_source import LOCAL_RUNNER
from . import EngineConfig
from .ray_parts import RayPartRunner
from .ray_session import start, stop


@contextmanager
def part_runner(engine: EngineConfig | None = None, *, num_cpus: float | None = None, session=None):
    """``with part_runner(engine) as runner:`` where the passes over a feature store run: here, part
    after part (``engine`` None or local), or one Ray task per shard: in ``session`` (a
    :class:`forvalue.engines.ray_session.RaySession` the caller holds and keeps), else a local Ray
    started for the block and shut down after it, a cluster joined by address, or the Ray already
    running in this process, which is left running. ``runner.stats()``: what the Ray runner did (None
    here)."""
    if engine is None or not engine.is_ray:
        yield LOCAL_RUNNER
        return
    own = session is None
    if own:
        session = start(engine.ray_address, num_cpus=num_cpus)
    try:
        yield RayPartRunner(engine.workers, session)
    finally:
        if own:
            stop(session)


__all__ = ["part_runner"]
