"""The platform's assets take an image dataset unchanged: registration (image paths), features,
scores and the subset on a tiny random VLM."""

import json

import numpy as np
import pytest
from dagster import AssetKey

from forvalue.benchmarks.vlm import draw
from forvalue_assets.testing import platform_for_test


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    from tiny import build_tiny_vlm

    d = tmp_path_factory.mktemp("tiny-vlm-dagster")
    build_tiny_vlm(d, seed=0)
    return d


def _records(folder, n, prefix, rng):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        subject = ["circle", "square"][i % 2]
        path = folder / f"{prefix}{i}.png"
        path.write_bytes(draw(subject, "solid", rng))
        out.append({"id": f"{prefix}{i}", "prompt": "What is the object in the image?",
                    "response": f"It is a {subject}", "image": path.name})
    return out


def test_vlm_image_dataset_through_the_platform(tmp_path, vlm_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    rng = np.random.default_rng(0)
    with platform_for_test(tmp_path, model=vlm_dir) as platform:
        t_path = platform.write_jsonl("train", "imgs", _records(platform.incoming / "train", 6, "t", rng))
        v_path = platform.write_jsonl("valuation", "imgval", _records(platform.incoming / "valuation", 2, "v", rng))
        reg = platform.register("train", "imgs", t_path, image="image")
        assert reg.success
        (ev,) = [e for e in reg.get_asset_materialization_events() if e.asset_key == AssetKey("training_features")]
        assert ev.materialization.metadata["computed"].value == 6
        assert ev.materialization.metadata["model_fingerprint"].value["kind"] == "vlm"
        assert platform.register("valuation", "imgval", v_path, image="image").success
        cur = platform.curate("imgs", "imgval")
        assert cur.success
        assert all(c.passed for c in (e for e in cur.get_asset_check_evaluations()))
        scores = platform.catalog().query("SELECT * FROM scores ORDER BY rank")
        assert len(scores) == 6 and all(np.isfinite(r["score"]) for r in scores)
        sub = platform.catalog().latest_subset("imgs", "imgval")
        rows = [json.loads(x) for x in open(sub["jsonl_path"])]
        assert len(rows) == sub["n_selected"] == 5 and all("image" in r for r in rows)
