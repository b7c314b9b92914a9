"""The wheel: every package of the tree is listed in pyproject.toml, and an installed copy finds its
SQL (sql/ ships as forvalue.sql), the demo data and the Dagster instance template."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("forvalue", "forvalue_assets", "resources", "sensors")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found | {"forvalue.sql"} == listed
    assert cfg["package-dir"] == {"forvalue.sql": "sql"}


@pytest.mark.integration
def test_installed_wheel_finds_its_sql(tmp_path):
    import shutil

    src, out = tmp_path / "src", tmp_path / "dist"   # build from a copy: nothing is written into the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", ".forvalue", "*.egg-info",
                                                              "__pycache__", ".dagster_home", "incoming", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=600, capture_output=True)
    (wheel,) = out.glob("forvalue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("schema.sql", "views.sql", "queries.sql", "finetune.sql"):
        assert f"forvalue/sql/{f}" in names
    assert "forvalue/data/demo_train.jsonl" in names and "forvalue_assets/dagster.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import forvalue.catalog.db as c, pathlib, sys; d = c.sql_dir(); "
            "assert str(d).startswith(sys.argv[1]), d; "
            "cat = c.Catalog(pathlib.Path(sys.argv[1]) / 'x.duckdb'); cat.init(); print(cat.count('datasets'))")
    res = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); exec({code!r})",
                          str(site)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"
