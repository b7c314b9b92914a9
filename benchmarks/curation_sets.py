"""Curation benchmark: what each selection strategy keeps, against the baselines users pick instead.

Data (:func:`curation_set`): the math-reason corpus (10 templates, 90 training and 10 valuation
samples each by default) with 40% of the training responses corrupted by one noise kind of
:data:`forvalue.benchmarks.noise.NOISE_KINDS`, or by all of them (``mixed``), or none (``clean``);
the valuation set is always clean.

Methods (:func:`method_orders`), each ordering every training sample, best first:

- the For-Value selection strategies of :mod:`forvalue.curation.selection` (one forward pass, shared);
- the cheap filters of :mod:`forvalue.baselines.filters` (``perplexity``, ``ifd``);
- the gradient baselines (``hessian-free``, ``datainf``, ``hyperinf``) ranked by their mean value
  over the valuation set, as their papers rank.

Metrics (:func:`selection_metrics`): clean share and template coverage of the first 5% and 10%, and
the clean AUC of the whole order.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from forvalue.metrics import clean_share, coverage, order_clean_auc
from forvalue.curation.selection import STRATEGIES
from forvalue.benchmarks.noise import NOISE_KINDS, make_noise_corpus
from forvalue.benchmarks.runner import GRADIENT_METHODS, BenchData, build_data

CURATION_SETS: dict[str, tuple[str, ...]] = {"mixed": NOISE_KINDS, **{k: (k,) for k in NOISE_KINDS}, "clean": ()}
FILTER_METHODS = ("perplexity", "ifd")
FORVALUE_STRATEGIES = tuple(STRATEGIES)
CURATION_METHODS = FORVALUE_STRATEGIES + FILTER_METHODS + GRADIENT_METHODS
FRACTIONS = (0.05, 0.10)


def curation_set(name: str, *, seed: int = 0, n_train: int = 900, n_val: int = 100,
                 rate: float = 0.4) -> tuple[list[dict], list[dict]]:
    """(training records, valuation records) of one benchmark set (see the module docstring)."""
    if name not in CURATION_SETS:
        raise ValueError(f"unknown set {name!r}; choose one of {', '.join(CURATION_SETS)}")
    kinds = CURATION_SETS[name]
    if not kinds:
        return make_noise_corpus(seed, n_train=n_train, n_val=n_val, rate=0.0)
    return make_noise_corpus(seed, n_train=n_train, n_val=n_val, rate=rate, kinds=kinds)


def curation_data(name: str, train_records: list[dict], val_records: list[dict], *, positions: str = "response",
                  chat_template: bool = True) -> BenchData:
    """Prompt/response samples with the product's default feature configuration."""
    return build_data(name, train_records, val_records, positions=positions, chat_template=chat_template)


def method_orders(lm, data: BenchData, methods: Sequence[str], *, store=None, batch_size: int = 8,
                  loss_cache: dict | None = None, lora=None, log=None) -> dict[str, dict[str, Any]]:
    """{method: {"order": training indices best first, "seconds": wall time}} for every method.

    For-Value strategies share one feature extraction (through ``store`` when given; its time is
    charged to each strategy). ``loss_cache`` (sample_id -> s(A|Q)) lets sets that share samples
    share the filters' first forward pass."""
    from forvalue.baselines.filters import filter_values
    from forvalue.valuator import Valuator

    say = log or (lambda msg: None)
    bad = [m for m in methods if m not in CURATION_METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(CURATION_METHODS)}")
    out: dict[str, dict[str, Any]] = {}
    fv = [m for m in methods if m in FORVALUE_STRATEGIES]
    if fv:
        say(f"[{data.name}] For-Value features")
        t0 = time.perf_counter()
        valuator = Valuator(lm, data.config, store=store, batch_size=batch_size)
        tf = valuator.featurize(data.train).features
        vf = valuator.featurize(data.val).features
        t_feat = time.perf_counter() - t0
        for m in fv:
            t1 = time.perf_counter()
            ranking = valuator.rank(tf, vf, m)
            out[m] = {"order": ranking.order, "seconds": t_feat + time.perf_counter() - t1,
                      "feature_seconds": t_feat, "info": ranking.info}
    for m in (m for m in methods if m in FILTER_METHODS):
        say(f"[{data.name}] {m}")
        t0 = time.perf_counter()
        cache = loss_cache if loss_cache is not None else {}
        missing = [s for s in data.train if s.sample_id not in cache]
        if missing:
            from forvalue.baselines.filters import response_losses

            for s, v in zip(missing, response_losses(lm, missing, chat_template=data.config.chat_template,
                                                     batch_size=batch_size)):
                cache[s.sample_id] = float(v)
        losses = np.array([cache[s.sample_id] for s in data.train])
        values, _ = filter_values(lm, data.train, m, chat_template=data.config.chat_template,
                                  batch_size=batch_size, losses=losses)
        out[m] = {"order": np.argsort(-values, kind="stable"), "seconds": time.perf_counter() - t0}
    gm = [m for m in methods if m in GRADIENT_METHODS]
    if gm:
        from forvalue.benchmarks.runner import value_matrices

        mats = value_matrices(lm, data, gm, batch_size=batch_size, lora=lora, log=log, warmup=False)
        for m, res in mats.items():
            values = np.asarray(res["matrix"], dtype=np.float64).mean(0)
            out[m] = {"order": np.argsort(-values, kind="stable"), "seconds": res["seconds"]}
    return {m: out[m] for m in methods}


def selection_metrics(order: np.ndarray, is_clean: np.ndarray, classes: np.ndarray,
                      fractions: Sequence[float] = FRACTIONS) -> dict[str, float]:
    """Clean share and coverage of the first ``fraction`` of an order, and the order's clean AUC."""
    n = len(order)
    row: dict[str, float] = {}
    for f in fractions:
        k = max(1, int(round(f * n)))
        tag = f"{round(f * 100):g}"
        row[f"clean_{tag}"] = clean_share(order[:k], is_clean)
        row[f"coverage_{tag}"] = coverage(order[:k], classes)
    if not np.all(is_clean):
        row["clean_auc"] = order_clean_auc(order, is_clean)
    return row


def random_metrics(n: int, is_clean: np.ndarray, classes: np.ndarray, seeds: Sequence[int] = (0, 1, 2),
                   fractions: Sequence[float] = FRACTIONS) -> dict[str, float]:
    """The mean of :func:`selection_metrics` over random orders (one per seed)."""
    rows = [selection_metrics(np.random.default_rng(s).permutation(n), is_clean, classes, fractions) for s in seeds]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


__all__ = ["CURATION_SETS", "CURATION_METHODS", "FILTER_METHODS", "FORVALUE_STRATEGIES", "FRACTIONS",
           "curation_set", "curation_data", "method_orders", "selection_metrics", "random_metrics"]
