"""The front door: :class:`Valuator`, one model and feature configuration through the stages of a
curation. The command line, the Dagster assets and the benchmarks all go through it."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .data.samples import Sample
from .engines import EngineConfig
from .errors import ConfigError, DataError
from .valuation.features import FeatureConfig, SparseFeatures
from .models.loading import ModelConfig
from .curation.consistency import CheckLimits, attach_checks
from .curation.selection import DEFAULT_STRATEGY, Ranking
from .store.feature_store import DEFAULT_SHARD_SIZE, EnsureResult, FeatureStore


@dataclass
class Selection:
    """A curated subset: ``indices`` into the training samples, in the strategy's order (bottom_p:
    least valuable first), and the full :class:`forvalue.curation.selection.Ranking` behind it."""

    indices: np.ndarray
    ranking: Ranking
    mode: str
    value: float

    @property
    def strategy(self) -> str:
        return self.ranking.strategy

    def samples(self, train: Sequence[Sample]) -> list[Sample]:
        return [train[i] for i in self.indices]

    def to_polars(self, train: Sequence[Sample] | None = None):
        """The subset as a polars DataFrame, in the strategy's order: position (1 = first picked),
        index into the training samples, score, normalized, norm; with ``train``: sample_id and the
        source file and row of each sample."""
        import polars as pl

        idx = self.indices
        cols = {"position": pl.Series(np.arange(1, len(idx) + 1), dtype=pl.Int64),
                "index": pl.Series(idx, dtype=pl.Int64)}
        if train is not None:
            cols.update({"sample_id": pl.Series([train[i].sample_id for i in idx], dtype=pl.String),
                         "source": pl.Series([train[i].source for i in idx], dtype=pl.String),
                         "row": pl.Series([train[i].row for i in idx], dtype=pl.Int64)})
        r = self.ranking
        cols.update({"score": pl.Series(r.raw[idx], dtype=pl.Float64),
                     "normalized": pl.Series(r.normalized[idx], dtype=pl.Float64),
                     "norm": pl.Series(r.norm[idx], dtype=pl.Float64)})
        return pl.DataFrame(cols)

    def dropped(self, train: Sequence[Sample]):
        """The samples the consistency checks dropped, least failing first, as a polars DataFrame:
        index, sample_id, source, row, check (the first that failed), value, threshold, reason
        (empty when no check ran: ``ranking.info["checks"]`` says why)."""
        import polars as pl

        schema = {"index": pl.Int64, "sample_id": pl.String, "source": pl.String, "row": pl.Int64,
                  "check": pl.String, "value": pl.Float64, "threshold": pl.Float64, "reason": pl.String}
        checked = self.ranking.checks
        if checked is None:
            return pl.DataFrame(schema=schema)
        recs = checked.records([s.sample_id for s in train], train)
        return pl.DataFrame([{"index": int(i), "sample_id": r["sample_id"], "source": train[i].source,
                              "row": train[i].row, "check": r["check"], "value": r["value"],
                              "threshold": r["threshold"], "reason": r["reason"]}
                             for i, r in zip(checked.dropped, recs)], schema=schema)


@dataclass
class Prepared:
    """The sets a step works on, as :meth:`Valuator.prepare` left them: ``sets`` without the samples
    the model cannot take, ``skipped`` per set ((sample id, reason) of each dropped sample), and on
    Ray the actor pool's run (``run``: computed, reused, shards written, ``stats``)."""

    sets: list[list[Sample]]
    skipped: list[list[tuple[str, str]]]
    run: object | None = None


class Valuator:
    """For-Value with one model and one feature configuration.

    Stages:
      - ``featurize(samples)``: the sparse features of samples, computed once per model and
        configuration (kept and reused through ``store`` when one is given);
      - ``score(train, val)``: the For-Value of every training sample against the valuation set
        (``method`` sparse, exact, full-vocab or emb), with the normalized value and ||G||;
      - ``select(train, val, mode, value)``: a curated subset by a selection strategy (default
        ``balanced``), from features only;
      - ``explain(samples, val)``: each sample's per-token contributions, which add up to its score.

    ``Valuator.from_store(store, fingerprint, config)`` has no model: it scores (``score_features``)
    and ranks (``rank``) what a model with that fingerprint stored (``stored``).

    ``model`` is a spec (``"default"``, a folder, a ``.gguf`` file, a hub id), a
    :class:`forvalue.models.loading.ModelConfig` or an already loaded model; it is loaded on first use.

    ``engine`` (:class:`forvalue.engines.EngineConfig`) says where the work runs: here (``local``, the
    default) or on Ray (``ray``): a Ray Data actor pool computes and stores the features (this process
    loads no model for them) and the passes over the store run one Ray task per shard. Both engines
    give the same features, scores and orders; Ray needs a ``store`` every worker can reach. ``with
    v.session():`` keeps one Ray connection for several steps. ``limits``
    (:class:`forvalue.curation.consistency.CheckLimits`) set where the consistency checks' limits sit.

        v = Valuator("default", store=".forvalue/features")
        sel = v.select(train, val, "top_p", 10)
        kept = sel.samples(train)
    """

    def __init__(self, model="default", config: FeatureConfig = FeatureConfig(),
                 store: FeatureStore | str | Path | None = None, *, batch_size: int | None = None,
                 engine: EngineConfig | None = None, limits: CheckLimits | None = None):
        self.config = config
        self.limits = limits if limits is not None else CheckLimits()
        self.store = FeatureStore(store) if isinstance(store, (str, Path)) else store
        self.engine = engine if engine is not None else EngineConfig()
        if self.engine.is_ray and self.store is None:
            raise ConfigError("the Ray engine keeps the features in a feature store every worker can reach: "
                              "give a store")
        self._fingerprint = None
        self._session = None
        if model is None:                                            # stored features only
            self._lm, self.model_config = None, None
        elif hasattr(model, "model") and hasattr(model, "tokenizer"):   # a LoadedModel
            self._lm, self.model_config = model, None
        else:
            self._lm = None
            self.model_config = model if isinstance(model, ModelConfig) else ModelConfig(model=str(model))
        self.batch_size = batch_size or (self.model_config.batch_size if self.model_config else 8)

    @classmethod
    def from_store(cls, store: FeatureStore | str | Path, fingerprint, config: FeatureConfig = FeatureConfig(), *,
                   engine: EngineConfig | None = None, limits: CheckLimits | None = None):
        """A Valuator without a model, over the features a model with ``fingerprint`` stored: it
        scores, selects and ranks from :meth:`stored` features (the platform's scoring step)."""
        v = cls(None, config, store, engine=engine, limits=limits)
        v._fingerprint = fingerprint
        return v

    @contextmanager
    def session(self):
        """``with v.session():`` one engine session for the steps inside. On Ray: one connection (a
        local Ray started once, or the cluster at ``engine.ray_address``; a Ray this process already
        joined is used as it is) for the actor pool and the passes over the store. Locally nothing."""
        if not self.engine.is_ray or self._session is not None:
            yield self
            return
        from .engines.ray_session import start, stop

        self._session = start(self.engine.ray_address)
        try:
            yield self
        finally:
            session, self._session = self._session, None
            stop(session)

    @property
    def lm(self):
        """The loaded model (loaded on first use)."""
        if self._lm is None:
            if self.model_config is None:
                raise ConfigError("this Valuator reads stored features only (from_store); computing features "
                                  "needs a model")
            self._lm = self.model_config.load()
        return self._lm

    @property
    def fingerprint(self):
        return self._fingerprint if self._fingerprint is not None else self.lm.fingerprint

    def stored(self, sample_ids: Sequence[str]) -> SparseFeatures:
        """Features of ``sample_ids`` (in that order) from the store; KeyError when some are missing."""
        if self.store is None:
            raise ConfigError("no feature store")
        return self.store.load(self.fingerprint, self.config, list(sample_ids))

    def stored_source(self, sample_ids: Sequence[str] | None = None):
        """The stored features of ``sample_ids`` (or of every stored sample) as a
        :class:`forvalue.valuation.feature_source.StoreSource`: read shard by shard, never all at once."""
        from .valuation.feature_source import StoreSource

        if self.store is None:
            raise ConfigError("no feature store")
        return StoreSource(self.store, self.fingerprint, self.config, sample_ids)

    def score_stored(self, train_ids: Sequence[str], val_ids: Sequence[str]):
        """:class:`forvalue.valuation.scoring.ScoreResult` (sparse: raw, normalized, norm) of the stored
        training features against the stored valuation features, streamed shard by shard, in the
        order of ``train_ids``; KeyError when some features are missing. On the Ray engine one Ray task
        per shard (what that run did in ``info["engine"]``)."""
        import time

        from .engines.runner import part_runner
        from .valuation.scoring import ScoreResult, source_values

        t0 = time.perf_counter()
        source = self.stored_source(train_ids)
        val = self.stored(val_ids)
        with part_runner(self.engine, session=self._session) as runner:
            raw, normalized, norms = source_values(source, val, runner=runner)
        pos = _positions(source.sample_ids, train_ids)
        info = {"streamed": True, "shards": len(source.shards)} | _engine_info(runner)
        return ScoreResult(values=raw[pos], matrix=None, method="sparse", config=self.config, train_ids=list(train_ids),
                           val_ids=list(val_ids), seconds=time.perf_counter() - t0, info=info,
                           normalized=normalized[pos], norms=norms[pos])

    def checks_stored(self, train_ids: Sequence[str], val_ids: Sequence[str], samples=None):
        """(:class:`forvalue.curation.consistency.Checked` over ``train_ids`` in that order, or None; why none
        ran): the consistency checks from the per-sample values stored beside the features (the
        vectors are not read). ``samples``: (train, val) samples in the order of the ids, to read the
        text checks' values from where the store lacks them."""
        from .curation.consistency import CHECK_INPUTS, checks_for, with_text_values

        if not self.config.checks:
            return checks_for(None, None, False)
        if self.store is None:
            raise ConfigError("no feature store")
        train, val = (with_text_values(self.store.sample_values(self.fingerprint, self.config, list(ids), CHECK_INPUTS),
                                       part)
                      for ids, part in zip((train_ids, val_ids), samples or (None, None)))
        return checks_for(train, val, limits=self.limits)

    def rank_stored(self, train_ids: Sequence[str], val_ids: Sequence[str], strategy: str = DEFAULT_STRATEGY, *,
                    limit: int | None = None, checks: bool = True, samples=None) -> Ranking:
        """The order of a strategy over stored features, streamed shard by shard; positions are
        indices into ``train_ids`` (exact ties may break in store order). On the Ray engine every pass
        over the store runs one Ray task per shard (the same order; ``info["engine"]``). ``checks``:
        the consistency checks stored with the features drop failing samples first
        (``ranking.checks``; :mod:`forvalue.curation.consistency`)."""
        from .engines.runner import part_runner
        from .curation.selection import rank_features

        checked, why = self.checks_stored(train_ids, val_ids, samples) if checks else (None, "off")
        source = self.stored_source(train_ids)
        val = self.stored(val_ids)
        pos = _positions(source.sample_ids, train_ids)
        exclude = None if checked is None else pos[checked.dropped]
        with part_runner(self.engine, session=self._session) as runner:
            ranking = rank_features(source, val, strategy, limit=limit, runner=runner, exclude=exclude)
        ranking.info.update(_engine_info(runner))
        ranking = ranking.reindexed(pos)
        return attach_checks(ranking, checked, why)

    def rank_scores(self, train_ids: Sequence[str], val_ids: Sequence[str], strategy: str = DEFAULT_STRATEGY, *,
                    scores=None, normalized=None, norms=None, limit: int | None = None, checks: bool = True,
                    no_store: str = "no feature store") -> Ranking:
        """The order of a strategy over scores already computed (a scores table's, the catalog's): the
        sorting strategies (raw-mean, cosine-mean) from ``scores`` / ``normalized`` / ``norms`` (arrays in
        the order of ``train_ids``) after the consistency checks stored beside the features, the pairwise
        ones from the stored features (:meth:`rank_stored`). Without a store the checks are not applied
        (``no_store`` says why) and only the sorting strategies can run. KeyError when stored features
        are missing; ValueError for an unknown strategy or missing normalized values."""
        from .curation.selection import PAIRWISE_STRATEGIES, check_strategy, rank_values

        check_strategy(strategy)
        if strategy in PAIRWISE_STRATEGIES:
            return self.rank_stored(train_ids, val_ids, strategy, limit=limit, checks=checks)
        if strategy == "cosine-mean" and normalized is None:
            raise ValueError("strategy cosine-mean needs the normalized values of sparse scoring")
        if not checks:
            checked, why = None, "off"
        elif self.store is None or self._fingerprint is None:
            checked, why = None, no_store
        else:
            checked, why = self.checks_stored(train_ids, val_ids)
        ranking = rank_values(np.asarray(scores, dtype=np.float64), normalized, norms, strategy,
                              exclude=None if checked is None else checked.dropped)
        return attach_checks(ranking, checked, why)

    # ------------------------------------------------------------------ stages
    def featurize(self, samples: Sequence[Sample], *, shard_size: int = DEFAULT_SHARD_SIZE,
                  progress: bool = False, extra: dict | None = None, on_error: str = "raise"):
        """Sparse features of ``samples`` (in their order): from the store when it has them (new
        shards carry ``extra`` in their metadata); an :class:`forvalue.store.feature_store.EnsureResult`.
        On the Ray engine the actor pool computes and stores the missing ones and this returns its
        run (:class:`forvalue.engines.ray_features.RayFeatureResult`: computed, reused, shards_written,
        stats; the features stay in the store); ``on_error`` "skip" then drops the samples the model
        cannot take (``stats.skipped``) instead of stopping."""
        if self.engine.is_ray:
            return self._featurize_ray(samples, shard_size=shard_size, progress=progress, extra=extra,
                                       on_error=on_error)
        if self.store is not None:
            return self.store.ensure(self.lm, samples, self.config, batch_size=self.batch_size, shard_size=shard_size,
                                     progress=progress, extra=extra)
        from .valuation.features import extract_sparse

        feats = extract_sparse(self.lm, samples, self.config, batch_size=self.batch_size, progress=progress,
                               grounding=self.config.checks)
        return EnsureResult(features=feats, computed=len(feats), reused=0, shards_written=[])

    def featurize_file(self, path: str | Path, *, columns=None, shard_size: int = DEFAULT_SHARD_SIZE,
                       on_error: str = "raise", progress: bool = False, extra: dict | None = None):
        """:meth:`featurize` of a data file, streamed. On Ray the file is read batch by batch (a large
        JSONL or Parquet file inside Ray, one read task per segment) and never held whole by this
        process; the result's ``stats.skipped`` lists bad rows and samples skipped (``on_error``
        "skip"). Locally the file is read, the samples the model cannot take are dropped by the same
        rule, and an :class:`forvalue.store.feature_store.EnsureResult` is returned."""
        if self.engine.is_ray:
            from .engines.ray_features import featurize_file

            res = featurize_file(self._ray_model(), path, self.config, self.store.root, self.engine, columns=columns,
                                 shard_size=shard_size, on_error=on_error, extra=extra, progress=progress,
                                 session=self._session)
            self._fingerprint = res.fingerprint or self._fingerprint
            return res
        from .data.samples import load_samples

        data = load_samples(path, columns=columns, on_error=on_error)
        kept = self.prepare(data.samples, on_error=on_error).sets[0]
        if not kept:
            raise DataError(str(path), None, None, "no samples left after skipping")
        return self.featurize(kept, shard_size=shard_size, progress=progress, extra=extra)

    def prepare(self, *sets: Sequence[Sample], on_error: str = "raise", progress: bool = False) -> Prepared:
        """Each of ``sets`` without the samples the model cannot take (too long for it, or not
        tokenizable): ``on_error`` "raise" stops at the first with file, row and field, "skip" drops
        them (``skipped``). On Ray the actor pool also computes and stores every missing feature of all
        the sets here, in one run (this process loads no model); locally the features are computed
        when a later step needs them. A set the skips leave empty comes back empty (its reasons in
        ``skipped``): the caller says which file it was."""
        if self.engine.is_ray:
            run = self._featurize_ray([x for s in sets for x in s], progress=progress, on_error=on_error)
            bad = dict(run.stats.skipped)
            kept = [[x for x in s if x.sample_id not in bad] for s in sets]
            skipped = [[(x.sample_id, bad[x.sample_id]) for x in s if x.sample_id in bad] for s in sets]
        else:
            from .valuation.features import encode_all

            run, kept, skipped = None, [], []
            for s in sets:
                _, bad = encode_all(self.lm, s, self.config, on_error=on_error)
                ids = {id(x) for x, _ in bad}
                kept.append([x for x in s if id(x) not in ids])
                skipped.append([(x.sample_id, str(e)) for x, e in bad])
        return Prepared(sets=kept, skipped=skipped, run=run)

    def _ray_model(self) -> ModelConfig:
        if self.model_config is None:
            raise ConfigError("the Ray engine loads the model in its workers: give a model spec or ModelConfig, "
                              "not a loaded model")
        return self.model_config

    def _featurize_ray(self, samples, *, shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = False,
                       extra: dict | None = None, on_error: str = "raise"):
        from .engines.ray_features import featurize

        res = featurize(self._ray_model(), samples, self.config, self.store.root, self.engine, shard_size=shard_size,
                        on_error=on_error, extra=extra, progress=progress, session=self._session)
        self._fingerprint = res.fingerprint or self._fingerprint
        return res

    def _stored_on_ray(self, *sets: Sequence[Sample]) -> None:
        """On Ray: the features of ``sets`` are in the store (computed by the actor pool unless a
        :meth:`prepare` of this Valuator stored them)."""
        ids = {x.sample_id for s in sets for x in s}
        if self._fingerprint is None or ids - self.store.existing_ids(self._fingerprint, self.config):
            self._featurize_ray([x for s in sets for x in s])

    def score(self, train: Sequence[Sample], val: Sequence[Sample], *, method: str = "sparse",
              pairwise: bool = False, exact_vocab: str = "union", progress: bool = False):
        """:class:`forvalue.valuation.scoring.ScoreResult` of every training sample against the valuation
        set. On Ray: sparse only, from the stored features, one Ray task per shard."""
        from .valuation.scoring import score

        if self.engine.is_ray:
            if method != "sparse" or pairwise:
                raise ConfigError(f"the Ray engine scores stored sparse features; method {method!r}"
                                  f"{' with pairwise' if pairwise else ''} needs the local engine")
            with self.session():
                self._stored_on_ray(train, val)
                return self.score_stored([s.sample_id for s in train], [s.sample_id for s in val])
        return score(self.lm, train, val, method=method, config=self.config, pairwise=pairwise,
                     batch_size=self.batch_size, exact_vocab=exact_vocab, store=self.store, progress=progress)

    def score_features(self, train_features: SparseFeatures, val_features: SparseFeatures, *,
                       method: str = "sparse", pairwise: bool = False):
        """:class:`forvalue.valuation.scoring.ScoreResult` from features at hand (no model): sparse or emb."""
        from .valuation.scoring import score_features

        return score_features(train_features, val_features, method=method, config=self.config, pairwise=pairwise)

    def select(self, train: Sequence[Sample], val: Sequence[Sample], mode: str = "top_p", value: float = 10, *,
               strategy: str = DEFAULT_STRATEGY, progress: bool = False, checks: bool = True) -> Selection:
        """A curated subset: ``mode`` top_k, top_p, drop_lowest_p or bottom_p with ``value`` (k or a
        percentage) of the order of ``strategy`` (:mod:`forvalue.curation.selection`), after the consistency
        checks (:mod:`forvalue.curation.consistency`; on when the feature configuration computes them):
        samples they drop come after every other one (``selection.ranking.checks`` says why)."""
        from .curation.selection import needed_prefix

        limit = needed_prefix(len(train), mode, value)
        if self.engine.is_ray:
            with self.session():
                self._stored_on_ray(train, val)
                ranking = self.rank_stored([s.sample_id for s in train], [s.sample_id for s in val], strategy,
                                           limit=limit, checks=checks, samples=(train, val))
        else:
            tf = self.featurize(train, progress=progress).features
            vf = self.featurize(val, progress=progress).features
            ranking = self.rank(tf, vf, strategy, limit=limit, checks=checks, samples=(train, val))
        return Selection(indices=ranking.indices(mode, value), ranking=ranking, mode=mode, value=float(value))

    def rank(self, train_features: SparseFeatures, val_features: SparseFeatures,
             strategy: str = DEFAULT_STRATEGY, *, limit: int | None = None, checks: bool = True,
             samples=None) -> Ranking:
        """The order of a strategy from features already at hand (no model needed), after the
        consistency checks they carry (``checks``; ``ranking.checks``). ``samples``: the (train, val)
        samples of the features, to read the text checks' values from where the features lack them."""
        from .curation.consistency import checks_for, inputs_of, with_text_values
        from .curation.selection import rank_features

        train_in, val_in = (with_text_values(inputs_of(f), part) for f, part
                            in zip((train_features, val_features), samples or (None, None)))
        checked, why = (checks_for(train_in, val_in, self.config.checks, limits=self.limits)
                        if checks else (None, "off"))
        ranking = rank_features(train_features, val_features, strategy, limit=limit,
                                exclude=None if checked is None else checked.dropped)
        return attach_checks(ranking, checked, why)

    def explain(self, samples: Sequence[Sample], val: Sequence[Sample], *, method: str = "sparse",
                helps: int = 3):
        """:class:`forvalue.valuation.explain.Explanation` of each of ``samples`` against the valuation set."""
        from .valuation.explain import explain

        tf = self.featurize(samples).features
        vf = self.featurize(val).features
        return explain(self.lm, samples, tf, vf, self.config, method=method, batch_size=self.batch_size,
                       helps=helps, val_samples=val)


def _engine_info(runner) -> dict:
    stats = runner.stats()
    return {} if stats is None else {"engine": stats.to_dict()}


def _positions(order: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """For each of ``ids``, its position in ``order`` (the same set of ids)."""
    where = {s: i for i, s in enumerate(order)}
    return np.fromiter((where[s] for s in ids), dtype=np.int64, count=len(ids))


__all__ = ["Valuator", "Selection", "Prepared"]
