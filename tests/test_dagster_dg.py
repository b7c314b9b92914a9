"""Dagster's project conventions: ``dg check defs`` (dagster-dg-cli) loads the code location
configured in pyproject.toml ([tool.dg]), the same one workspace.yaml names."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dg_project_config_names_the_workspace_location():
    dg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]
    (entry,) = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    assert dg["directory_type"] == "project"
    assert dg["project"]["code_location_target_module"] == module["module_name"] == "forvalue_assets.definitions"
    assert dg["project"]["code_location_name"] == module["location_name"] == "forvalue"


def test_dg_check_defs_loads_the_code_location(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "forvalue_assets" / "dagster.yaml").read_text())
    env = dict(os.environ, DAGSTER_HOME=str(home), FORVALUE_DB=str(tmp_path / "c.duckdb"),
               FORVALUE_FEATURES=str(tmp_path / "features"), FORVALUE_INCOMING=str(tmp_path / "incoming"),
               FORVALUE_DEMO="0")
    out = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "All definitions loaded successfully" in log, log
    assert not (tmp_path / "incoming").exists()   # loading the definitions starts nothing
