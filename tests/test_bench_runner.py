"""Benchmark runners and the `bench` command, end to end on a tiny model."""

import json

import numpy as np
import pytest
import torch

from forvalue.baselines import LoraSettings
from forvalue.cli.bench import main as bench_main
from forvalue.benchmarks.runner import (ALL_METHODS, markdown_table, parse_methods, run_influence, run_mislabeled,
                                        run_noise, speedups, task_data)
from forvalue.benchmarks.tasks import make_task
from forvalue.valuation.features import encode_all
from forvalue.models.loading import from_objects
from tiny import build_tiny_text_model

KEYS = {"method", "auc_mean", "auc_std", "recall_mean", "recall_std", "seconds"}
LORA = LoraSettings(epochs=2, batch_size=4, lr=1e-3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster than two and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    model, tok = build_tiny_text_model(seed=0)
    return from_objects(model, tok, name="tiny")


def _check_rows(rows, methods):
    assert [r["method"] for r in rows] == list(methods)
    for r in rows:
        assert KEYS <= set(r)
        for k in ("auc_mean", "recall_mean"):
            assert np.isfinite(r[k]) and 0.0 <= r[k] <= 1.0
        assert r["auc_std"] >= 0 and r["recall_std"] >= 0 and r["seconds"] > 0


def test_influence_end_to_end_all_methods(tiny_lm):
    methods = list(ALL_METHODS)
    details = {}
    rows = run_influence("math", model=tiny_lm, methods=methods, n_train_per_class=2, n_val_per_class=1,
                         lora=LORA, details=details)
    _check_rows(rows, methods)
    by = {r["method"]: r for r in rows}
    # Something real: even a random tiny model's For-Value gradients carry the class (template) signal.
    assert by["exact"]["auc_mean"] > 0.6 and by["sparse"]["auc_mean"] > 0.6
    # exact and full agree when the vocabulary is small enough to contain every compared token...
    # (full = whole vocabulary, exact = tokens of the texts) -> same ranking direction, strongly correlated
    a, b = details["matrices"]["exact"].ravel(), details["matrices"]["full-vocab"].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert details["matrices"]["datainf"].shape == (10, 20)
    assert details["info"]["datainf"]["finetune_seconds"] > 0
    # the shared fine-tuning + gradients are charged to each gradient method
    for m in ("hessian-free", "datainf", "hyperinf"):
        assert by[m]["seconds"] >= details["info"][m]["shared_seconds"]
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| Method | AUC | Recall | Wall s")
    assert len(table.splitlines()) == 2 + len(methods)
    assert set(speedups(rows)) == {"hessian-free", "datainf", "hyperinf"}


def test_influence_positions_response_scores_only_the_response(tiny_lm):
    data_all = task_data("sentence", positions="all", n_train_per_class=1, n_val_per_class=1)
    data_resp = task_data("sentence", positions="response", n_train_per_class=1, n_val_per_class=1)
    assert data_all.train[0].kind == "text" and data_resp.train[0].kind == "prompt_response"
    (e_all,), _ = encode_all(tiny_lm, data_all.train[:1], data_all.config)
    (e_resp,), _ = encode_all(tiny_lm, data_resp.train[:1], data_resp.config)
    n_all = np.subtract(*e_all.target_range("all")[::-1])
    n_resp = np.subtract(*e_resp.target_range("response")[::-1])
    assert 0 < n_resp < n_all
    rows = run_influence("sentence", model=tiny_lm, methods="sparse,hessian-free", positions="response",
                         n_train_per_class=1, n_val_per_class=1, lora=LORA)
    _check_rows(rows, ["sparse", "hessian-free"])


def test_influence_from_user_records(tiny_lm):
    tr, va = make_task("math", 1, n_train_per_class=2, n_val_per_class=1)
    for rec in tr + va:
        rec["topic"] = f"t{rec['class_id']}"
    rows = run_influence(train_records=tr, val_records=va, label_column="topic", text_column="text",
                         model=tiny_lm, methods="emb,datainf", lora=LORA)
    _check_rows(rows, ["emb", "datainf"])
    with pytest.raises(ValueError, match="no label"):
        run_influence(train_records=tr, val_records=va, label_column="missing", text_column="text",
                      model=tiny_lm, methods="emb")


def test_detection_runners(tiny_lm):
    rows = run_mislabeled(model=tiny_lm, methods="sparse,hessian-free", n_train=16, n_val=6, lora=LORA)
    _check_rows(rows, ["sparse", "hessian-free"])
    for r in rows:
        assert 0.0 <= r["detection_rate"] <= 1.0 and 0.0 <= r["clean_auc"] <= 1.0
    rows = run_noise(model=tiny_lm, methods="exact,datainf", n_train=20, n_val=10, lora=LORA)
    _check_rows(rows, ["exact", "datainf"])
    assert "Clean in top 10%" in markdown_table(rows)


def test_parse_methods():
    assert parse_methods("sparse, TracIn,datainf") == ["sparse", "hessian-free", "datainf"]
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("sparse,lissa")


def test_cli_writes_json(tmp_path, capsys):
    folder = tmp_path / "tiny"
    build_tiny_text_model(folder, seed=0)
    out = tmp_path / "r.json"
    rc = bench_main(["influence", "--task", "sentence", "--model", str(folder), "--n-train-per-class", "1",
                     "--n-val-per-class", "1", "--methods", "sparse,emb,hessian-free", "--train-epochs", "1",
                     "--lora-batch-size", "4", "--json", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| sparse |" in printed and "| hessian-free |" in printed
    payload = json.loads(out.read_text())
    assert [r["method"] for r in payload["results"]] == ["sparse", "emb", "hessian-free"]
    for r in payload["results"]:
        assert KEYS <= set(r)
    assert payload["meta"]["task"] == "sentence" and payload["meta"]["positions"] == "all"
    # user files with a label column
    tr, va = make_task("math", 0, n_train_per_class=1, n_val_per_class=1)
    from forvalue.benchmarks.tasks import write_jsonl

    write_jsonl(tr, tmp_path / "tr.jsonl")
    write_jsonl(va, tmp_path / "va.jsonl")
    rc = bench_main(["influence", "--train", str(tmp_path / "tr.jsonl"), "--val", str(tmp_path / "va.jsonl"),
                     "--label-column", "class", "--text-column", "text", "--model", str(folder),
                     "--methods", "sparse", "--json", str(out), "--quiet"])
    assert rc == 0 and json.loads(out.read_text())["results"][0]["method"] == "sparse"


def test_scale_bench_times_several_strategies_and_valuation_sizes_in_one_run(tmp_path, capsys):
    """`forvalue bench scale` with two strategies and two valuation-set sizes: one table row each,
    timed against the re-scoring with the same valuation set, and the kept order identified by its
    hash (the same store and valuation set give the same order on a second run)."""
    out = tmp_path / "scale.json"
    argv = ["scale", "--samples", "600", "--store", str(tmp_path / "store"), "--rows", "8", "--r", "8",
            "--shard-size", "200", "--n-val", "5,9", "--strategy", "balanced,max-cosine", "--subset-percent", "10",
            "--json", str(out), "--quiet"]
    assert bench_main(argv) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| 600 | ")]
    assert len(rows) == 5   # the re-scoring row and 2 x 2 selection rows
    res = json.loads(out.read_text())["results"][0]
    sel = res["selection"]
    assert [(r["n_val"], r["strategy"]) for r in sel] == [(5, "balanced"), (5, "max-cosine"), (9, "balanced"),
                                                          (9, "max-cosine")]
    assert all(r["select_kept"] == 60 and r["select_over_rescore"] > 0 for r in sel)
    assert len({r["order_sha256"] for r in sel}) == 4     # four different selections
    # --checks: each strategy again after the consistency checks, on the store's per-sample values
    assert bench_main(["scale", "--samples", "600", "--store", str(tmp_path / "store"), "--rows", "8", "--r", "8",
                       "--shard-size", "200", "--n-val", "9", "--strategy", "balanced", "--checks", "--json", str(out),
                       "--quiet"]) == 0
    plain, checked = json.loads(out.read_text())["results"][0]["selection"]
    assert (plain["strategy"], checked["strategy"]) == ("balanced", "balanced+checks")
    assert plain["dropped_by_checks"] == 0 < checked["dropped_by_checks"] < 600 and checked["select_kept"] == 60
    assert checked["order_sha256"] != plain["order_sha256"]
    with pytest.raises(SystemExit):
        bench_main(["scale", "--samples", "10", "--strategy", "best"])
