"""End to end: dagster-webserver serves the code location on 127.0.0.1; the asset graph, its
dependencies and checks are there through GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 150

QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    isPartitioned
    owners { __typename ... on TeamAssetOwner { team } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
}
"""

EXPECTED_DEPS = {
    "training_dataset": set(),
    "valuation_set": set(),
    "training_features": {"training_dataset"},
    "valuation_features": {"valuation_set"},
    "forvalue_scores": {"training_features", "valuation_features"},
    "curated_subset": {"forvalue_scores"},
    "finetune_run": {"curated_subset"},
    "eval_run": {"finetune_run"},
    "finetune_comparison": {"curated_subset"},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server and the code server it spawned (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # anything of the group still alive (the gRPC code server)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """dagster-webserver on 127.0.0.1 over a DAGSTER_HOME that holds one materialized chain (a training
    set and a valuation set registered, the pair curated): what a person opens after ``dg dev``."""
    from forvalue_assets.testing import platform_for_test
    from tests.conftest import make_records

    tmp_path = tmp_path_factory.mktemp("webserver")
    with platform_for_test(tmp_path, model=str(tiny_model_dir), persistent=True) as p:
        train, val = make_records(16, seed=5), make_records(4, seed=6, prefix="v")
        assert p.register("train", "t1", p.write_jsonl("train", "t1", train)).success
        assert p.register("valuation", "v1", p.write_jsonl("valuation", "v1", val)).success
        assert p.curate("t1", "v1", subset={"mode": "top_k", "value": 4}).success
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "dagster_home"), FORVALUE_DB=str(tmp_path / "forvalue.duckdb"),
               FORVALUE_FEATURES=str(tmp_path / "features"), FORVALUE_INCOMING=str(tmp_path / "incoming"),
               FORVALUE_DEMO="0")
    log = open(tmp_path / "webserver.log", "w")
    exe = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen([str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        info = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5) as r:
                    info = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert info is not None, f"no /server_info within {STARTUP_TIMEOUT} s"
        yield base, info, tmp_path
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None


def test_webserver_serves_the_asset_graph(served):
    base, info, _ = served
    assert info["dagster_webserver_version"].startswith("1.13")

    data = post_json(f"{base}/graphql", {"query": QUERY})
    assert "errors" not in data, data
    data = data["data"]
    (location,) = data["workspaceOrError"]["locationEntries"]
    assert location["name"] == "forvalue" and location["loadStatus"] == "LOADED"
    assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(nodes) == set(EXPECTED_DEPS)
    for name, deps in EXPECTED_DEPS.items():
        node = nodes[name]
        assert {"/".join(d["path"]) for d in node["dependencyKeys"]} == deps, name
        assert node["isPartitioned"] and node["groupName"] and node["kinds"], name
        assert node["owners"] == [{"__typename": "TeamAssetOwner", "team": "data-curation"}]
    checks = {name: {c["name"]: c["blocking"] for c in n["assetChecksOrError"]["checks"]}
              for name, n in nodes.items()}
    assert checks["forvalue_scores"] == {"scores_one_row_per_sample": True, "scores_are_finite": True}
    assert checks["curated_subset"] == {"subset_size_matches_config": True}
    assert checks["training_features"] == {"training_features_cover_samples": True}


def test_a_subset_materialization_page_in_chromium(served):
    """The curated subset's latest materialization in the web UI, in Chromium, as a person opens it:
    its metadata shows the kept samples and the kept / dropped table (values rounded to 4 significant
    digits), and the path of the subset's HTML report."""
    from tests.test_report_browser import ARGS, CHROMIUM, browser_or_skip

    sync_playwright = browser_or_skip()
    base, _, tmp_path = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{base}/assets/curated_subset?view=events", wait_until="networkidle", timeout=90_000)
            skip = page.get_by_role("button", name="Skip")          # Dagster's newsletter prompt
            if skip.count():
                skip.click()
            page.get_by_text("top_kept", exact=True).wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "subset-materialization.png"), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert "Partition t1|v1 materialized" in " ".join(text.split())
    for label in ("top_kept", "kept_and_dropped", "report", "consistency_checks"):
        assert page_has_label(text, label), label
    assert ".html" in text


def page_has_label(text: str, label: str) -> bool:
    return any(line.strip() == label for line in text.splitlines())
