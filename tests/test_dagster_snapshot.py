"""Snapshot of the asset specs: what the Definitions declare (keys, deps and their partition
mappings, partitions, groups, kinds, pools, automation conditions, owners, code-version presence,
descriptions) and every asset check (asset, name, blocking, partitions), compared with
tests/snapshots/asset_specs.json.

A refactor must leave the snapshot as it is. To change the specs on purpose, regenerate the file
and review its diff with the change:

    FORVALUE_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q tests/test_dagster_snapshot.py
"""

import json
import os
from pathlib import Path

from forvalue_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "asset_specs.json"


def describe_condition(cond):
    """An automation condition as its label, else its class name with its operands."""
    if cond is None:
        return None
    label = cond.get_label()
    if label:
        return label
    children = getattr(cond, "children", None) or []
    inner = "(" + ", ".join(describe_condition(c) for c in children) + ")" if children else ""
    return type(cond).__name__ + inner


def describe_partitions(partitions_def):
    if partitions_def is None:
        return None
    out = {"type": type(partitions_def).__name__}
    if getattr(partitions_def, "name", None):
        out["name"] = partitions_def.name
    if hasattr(partitions_def, "partitions_defs"):
        out["dimensions"] = {d.name: describe_partitions(d.partitions_def) for d in partitions_def.partitions_defs}
    return out


def asset_specs(defs) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        parents = sorted(node.parent_keys, key=lambda k: k.to_user_string())
        assets[key.to_user_string()] = {
            "deps": [p.to_user_string() for p in parents],
            "partition_mappings": {p.to_user_string(): type(graph.get_partition_mapping(key, p)).__name__
                                   for p in parents},
            "partitions": describe_partitions(node.partitions_def),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "automation_condition": describe_condition(node.automation_condition),
            "owners": sorted(node.owners),
            "has_code_version": node.code_version is not None,
            "description": node.description,
        }
    checks = {}
    for key in graph.asset_check_keys:
        node = graph.get(key)
        checks[f"{key.asset_key.to_user_string()}:{key.name}"] = {
            "asset": key.asset_key.to_user_string(),
            "name": key.name,
            "blocking": node.blocking,
            "partitions": describe_partitions(node.partitions_def),
            "description": node.description,
        }
    return {"assets": assets, "asset_checks": checks}


def test_asset_specs_match_the_snapshot():
    current = json.dumps(asset_specs(build_definitions()), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("FORVALUE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert SNAPSHOT.exists(), f"no snapshot yet: run with FORVALUE_UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    assert json.loads(current) == json.loads(SNAPSHOT.read_text(encoding="utf-8")), (
        "the asset specs changed; if that is intended, regenerate the snapshot "
        "(FORVALUE_UPDATE_SNAPSHOTS=1 pytest tests/test_dagster_snapshot.py) and review its diff")
