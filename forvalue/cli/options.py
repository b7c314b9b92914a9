"""Options shared by several commands, built from the configuration dataclasses (forvalue/config.py),
and the small steps every command repeats: reading data, loading the model, keeping features."""

from __future__ import annotations

import argparse
import os
import sys

from ..data.holdout import plural
from ..config import add_options, from_args
from ..data.samples import Columns, LoadedData, load_samples
from ..errors import ConfigError, DataError
from ..valuation.features import FeatureConfig
from ..models.loading import ModelConfig


class UsageError(ConfigError):
    """A combination of options that cannot be used together (or a required one missing)."""


class UsageExit(SystemExit):
    """How a usage error leaves the command: like argparse, exit status 2 after one line on stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------- option groups
def add_model_options(p: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    add_options(p.add_argument_group("model"), ModelConfig, exclude=() if batch_size else ("batch_size",))


def model_config(args) -> ModelConfig:
    return from_args(ModelConfig, args)


def load_model(args):
    return model_config(args).load()


def add_feature_options(p: argparse.ArgumentParser) -> None:
    add_options(p.add_argument_group("features"), FeatureConfig)


def feature_config(args) -> FeatureConfig:
    return from_args(FeatureConfig, args)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine local|ray, --workers N, --ray-address ADDR, --gpus-per-worker G (forvalue.engines.EngineConfig)."""
    from ..engines import EngineConfig

    add_options(p.add_argument_group("engine (docs/scale-out.md)"), EngineConfig)


def engine_config(args):
    """The command's :class:`forvalue.engines.EngineConfig`; a bad value or combination is a usage error
    naming the option."""
    from ..engines import EngineConfig

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
    if args.engine != "ray":
        for flag, dest in (("--ray-address", "ray_address"), ("--gpus-per-worker", "gpus_per_worker")):
            if getattr(args, dest) is not None:
                raise UsageError(f"{flag} needs --engine ray")
    if args.ray_address is not None and not args.ray_address.strip():
        raise UsageError("--ray-address is empty: give HOST:PORT, ray://HOST:10001 or auto, or leave it out for a "
                         "local Ray")
    return from_args(EngineConfig, args)


def add_column_options(p: argparse.ArgumentParser, *, on_error: bool = True) -> None:
    g = p.add_argument_group("columns")
    add_options(g, Columns)
    if on_error:
        g.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="stop at the first bad row (default) or skip bad rows and report them")


def columns(args) -> Columns:
    return from_args(Columns, args)


def columns_meta(args) -> dict:
    return {k: v for k, v in vars(columns(args)).items() if v is not None}


def default_store() -> str:
    """The feature store the CLI keeps features in: $FORVALUE_FEATURES, else .forvalue/features (the
    platform's default too), so later commands re-rank without a forward pass."""
    return os.environ.get("FORVALUE_FEATURES") or ".forvalue/features"


def add_store_option(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--store", default=None,
                   help="feature store folder: reuse and keep the sparse features (default: $FORVALUE_FEATURES, "
                        "else .forvalue/features); `forvalue select` and `forvalue finetune` re-rank from it")
    g.add_argument("--no-store", action="store_true", help="keep no features (re-ranking then needs a new forward pass)")


def store_root(args) -> str | None:
    """The feature store folder of a command (checked: not a file), or None with --no-store."""
    from .output import check_folder

    root = None if args.no_store else (args.store or default_store())
    return str(check_folder(root, "feature store")) if root else None


def checked_configs(args) -> tuple:
    """(ModelConfig, FeatureConfig) of the command line, validated before any data is read: option
    ranges, device names and the device's presence on this machine."""
    mcfg, fcfg = model_config(args), feature_config(args)
    mcfg.check()
    return mcfg, fcfg


SIZE_FLAGS = (("top_k", "--top-k"), ("top_p", "--top-p"), ("drop_lowest_p", "--drop-lowest-p"),
              ("bottom_p", "--bottom-p"))


def add_selection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    size = g.add_mutually_exclusive_group(required=True)
    size.add_argument("--top-k", type=int, default=None, help="keep the first k samples of the order")
    size.add_argument("--top-p", type=float, default=None, help="keep the first p percent")
    size.add_argument("--drop-lowest-p", type=float, default=None, help="keep all but the last p percent")
    size.add_argument("--bottom-p", type=float, default=None, help="the last p percent, least valuable first (to inspect)")
    add_strategy_option(g)


def add_strategy_option(g, note: str = "") -> None:
    """--strategy: the selection strategy that orders the training samples (one option, one meaning,
    in every command), and where the consistency checks that drop broken samples first put their
    limits (--grounding-limit, --answer-limit, --arithmetic-limit: forvalue.curation.consistency.CheckLimits)."""
    from ..curation.consistency import CheckLimits
    from ..curation.selection import DEFAULT_STRATEGY, STRATEGIES

    g.add_argument("--strategy", choices=list(STRATEGIES), default=DEFAULT_STRATEGY,
                   help=f"how samples are ordered{note} (default %(default)s): " +
                        "; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()))
    add_options(g, CheckLimits)


def check_limits(args):
    """The command's :class:`forvalue.curation.consistency.CheckLimits` (defaults without the options)."""
    from ..curation.consistency import CheckLimits

    return from_args(CheckLimits, args)


def subset_size(args) -> tuple[str, float]:
    for mode, _ in SIZE_FLAGS:
        if getattr(args, mode, None) is not None:
            return mode, float(getattr(args, mode))
    raise UsageError("give one of --top-k, --top-p, --bottom-p, --drop-lowest-p")


def check_size(mode: str, value: float, flag: str | None = None) -> None:
    """A subset size (``mode``, ``value``, given as ``flag``: default the mode's own flag), checked
    before any work (a percentage in 0-100, a whole k >= 0), and refused when it keeps nothing
    whatever the data (an empty subset is never what was meant)."""
    from ..curation.selection import subset_count

    flag = flag or f"--{mode.replace('_', '-')}"
    try:
        subset_count(1, mode, value)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None
    if subset_count(10**9, mode, value) == 0:
        raise ConfigError(f"{flag} {value:g} keeps no sample; give a size that keeps at least one")


def check_count(n: int, mode: str, value: float, source, flag: str | None = None) -> None:
    """Refuse a size that keeps none of the ``n`` training samples of ``source`` (before any forward
    pass or training)."""
    from ..curation.selection import subset_count

    if subset_count(n, mode, value) == 0:
        raise ConfigError(f"{flag or '--' + mode.replace('_', '-')} {value:g} keeps no sample of the {n} in {source}; "
                          f"give a larger size (nothing was written)")


def common_parent() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    return common


# ----------------------------------------------------------------------------- steps
def load_data(path: str, args) -> LoadedData:
    """Samples of a data file with the command's column options; skipped rows are reported."""
    data = load_samples(path, columns=columns(args), on_error=getattr(args, "on_error", "raise"))
    report_skipped(path, "rows", [f"row {s.row}, field {s.field!r}: {s.reason}" for s in data.skipped])
    return data


def report_skipped(path, what: str, reasons: list[str]) -> None:
    """``<path>: skipped N <what>`` on stderr, then the first 20 reasons (nothing when none)."""
    if not reasons:
        return
    print(f"{path}: skipped {len(reasons)} {what}", file=sys.stderr)
    for reason in reasons[:20]:
        print(f"  {reason}", file=sys.stderr)
    if len(reasons) > 20:
        print(f"  ... and {len(reasons) - 20} more", file=sys.stderr)


def valuator(args, root: str | None):
    """The command's :class:`forvalue.Valuator`: its model, features, feature store (``root``) and
    engine. On Ray the device is the actors' (a driver without a GPU may run actors that have one);
    locally the options are checked against this machine before any data is read."""
    from ..store.feature_store import FeatureStore
    from ..valuator import Valuator

    engine = engine_config(args)
    if engine.is_ray and root is None:
        raise UsageError("--engine ray keeps the features in a store: drop --no-store")
    mcfg, fcfg = (model_config(args), feature_config(args)) if engine.is_ray else checked_configs(args)
    return Valuator(mcfg, fcfg, store=FeatureStore(root) if root else None, engine=engine, limits=check_limits(args))


def prepare(v, args, *data: LoadedData):
    """:meth:`forvalue.Valuator.prepare` of the command's files (on Ray their missing features are
    computed and stored here), each file's samples the model cannot take reported (--on-error skip)
    or stopping the command (raise)."""
    prep = v.prepare(*(d.samples for d in data), on_error=getattr(args, "on_error", "raise"),
                     progress=not getattr(args, "quiet", False))
    for d, skipped, kept in zip(data, prep.skipped, prep.sets):
        report_skipped(d.path, "samples the model cannot take", [reason for _, reason in skipped])
        if not kept:
            raise DataError(d.path, None, None, "no samples left after skipping")
    return prep


def engine_line(prep, ranking_info: dict | None, what: str) -> str | None:
    """The terminal line of a Ray run (None locally): the actor pool, what it computed, and the
    passes over the store (``what``: scoring or selection)."""
    if prep.run is None:
        return None
    st, e = prep.run.stats, ranking_info or {}
    line = f"ray: {plural(st.workers, 'worker')}; {prep.run.computed} features computed"
    if e:
        line += f"; {what} {e['batches']} shard tasks, {e['rows_per_s']:.0f} stored samples read/s"
    return line


def report_store(store) -> None:
    """Say what the feature store repaired during the command (damaged shards moved aside)."""
    for d in getattr(store, "damaged", []) if store is not None else []:
        print(f"forvalue: {d['shard']}: damaged ({d['reason']}); moved aside to {d['moved_to']}, its "
              f"{d['samples']} samples computed again", file=sys.stderr)


def set_threads(args) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


__all__ = ["UsageError", "UsageExit", "add_model_options", "model_config", "load_model", "add_feature_options",
           "feature_config", "add_engine_options", "engine_config", "add_column_options", "columns", "columns_meta",
           "default_store", "add_store_option", "store_root", "add_selection_options", "add_strategy_option",
           "check_limits", "subset_size", "check_size", "check_count", "common_parent", "load_data", "valuator",
           "prepare", "report_skipped", "engine_line", "report_store", "set_threads"]
