"""The synthetic VLM benchmarks end to end on tiny random VLMs (LLaVA-, Qwen2-VL-, Idefics3- and Mllama-style)."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from forvalue.benchmarks.vlm import make_vlm_mislabeled, make_vlm_style, run_vlm_style


@pytest.fixture(scope="module", params=["llava", "qwen2vl", "idefics3", "mllama"])
def vlm_dir(request, tmp_path_factory):
    from tiny import build_tiny_idefics3, build_tiny_mllama, build_tiny_qwen2vl, build_tiny_vlm

    d = tmp_path_factory.mktemp(f"tiny-{request.param}-bench")
    builders = {"llava": build_tiny_vlm, "qwen2vl": build_tiny_qwen2vl, "idefics3": build_tiny_idefics3,
            "mllama": build_tiny_mllama}
    builders[request.param](d, seed=0)
    return d


def test_vlm_generators_are_deterministic_and_balanced():
    a_tr, a_va = make_vlm_style(seed=3)
    b_tr, b_va = make_vlm_style(seed=3)
    c_tr, _ = make_vlm_style(seed=4)
    assert [r["image"] for r in a_tr] == [r["image"] for r in b_tr]
    assert [r["image"] for r in a_tr] != [r["image"] for r in c_tr]
    assert len(a_tr) == 6 * 3 and len(a_va) == 6 * 2
    assert np.bincount([r["class_id"] for r in a_tr]).tolist() == [3] * 6
    img = Image.open(io.BytesIO(a_tr[0]["image"]))
    assert img.size == (64, 64)
    assert a_tr[0]["response"] == "A solid drawing of a circle."
    tr, va = make_vlm_mislabeled(seed=1, n_train=40, n_val=10)
    assert sum(not r["is_clean"] for r in tr) == 20 and all(r["is_clean"] for r in va)
    for r in tr:
        assert (r["label"] == r["true_label"]) == r["is_clean"]
        assert r["response"] == f"It is a {r['label']}"


def test_vlm_style_benchmark_end_to_end(vlm_dir):
    rows = run_vlm_style(str(vlm_dir), methods=["sparse", "exact", "emb"], n_val_per_class=1, device="cpu")
    assert [r["method"] for r in rows] == ["sparse", "exact", "emb"]
    for r in rows:
        assert 0.0 <= r["auc_mean"] <= 1.0 and 0.0 <= r["recall_mean"] <= 1.0 and r["seconds"] > 0


def test_vlm_mislabeled_benchmark_cli(vlm_dir, tmp_path, capsys):
    from forvalue.cli import main

    out = tmp_path / "r.json"
    assert main(["bench", "vlm-mislabeled", "--model", str(vlm_dir), "--n-train", "12", "--n-val", "4",
                 "--methods", "sparse,emb", "--device", "cpu", "--json", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "sparse" in table and "emb" in table
    results = json.loads(out.read_text())["results"]
    assert {r["method"] for r in results} == {"sparse", "emb"}
    assert all(0 <= r["auc_mean"] <= 1 and 0 <= r["clean_auc"] <= 1 for r in results)
