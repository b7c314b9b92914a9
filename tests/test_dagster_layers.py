"""The Dagster layer's shape, beyond the house rules of tests/test_architecture.py (no import cycle,
short functions) and the asset specs pinned by tests/test_dagster_definitions.py and the snapshot:
one-way imports inside the layer (shared modules <- domains <- definitions), every domain's
definitions reach the code location, the domain defaults hold, the sensors and the schedule target
the domains' jobs, and importing any module of the layer reads no environment variable and loads
neither torch nor transformers."""

import importlib
import subprocess
import sys
from pathlib import Path

from dagster import AssetChecksDefinition, AssetsDefinition, AutomationCondition, Definitions, define_asset_job

from forvalue_assets import curation, features, finetuning, ingest
from forvalue_assets.common import CODE_VERSION, OWNERS, AssetDefaults
from forvalue_assets.definitions import build_definitions, platform_schedules, platform_sensors
from tests.test_architecture import _imports, _modules

ROOT = Path(__file__).resolve().parents[1]
LAYER = ("forvalue_assets", "resources", "sensors")
DOMAINS = {"ingest": ingest, "features": features, "curation": curation, "finetuning": finetuning}
# Modules that may import the definitions: the in-process test platform is above it.
MAY_IMPORT_DEFINITIONS = {"forvalue_assets.testing"}
# Assets that state a group other than their domain's default (docs/platform.md's table).
OWN_GROUP = {"forvalue_scores": "scoring"}
ASSET_JOB = type(define_asset_job("probe"))     # what define_asset_job returns


def layer_graph() -> dict[str, set[str]]:
    """Module -> the modules of the project it imports, for the modules of the Dagster layer."""
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items() if m.split(".")[0] in LAYER}


def test_imports_are_one_way_inside_the_layer():
    graph = layer_graph()
    assert "forvalue_assets.curation.assets" in graph and "sensors.incoming" in graph
    wrong = []
    for module, deps in graph.items():
        if "forvalue_assets.definitions" in deps and module not in MAY_IMPORT_DEFINITIONS:
            wrong.append(f"{module} imports the definitions")
        if module.startswith("resources"):
            wrong += [f"{module} imports {d}" for d in deps
                      if d.split(".")[0] in LAYER and not d.startswith("resources")]
        for domain in DOMAINS:
            if module.startswith(f"forvalue_assets.{domain}"):
                wrong += [f"{module} imports {d}" for d in deps for other in DOMAINS
                          if other != domain and d.startswith(f"forvalue_assets.{other}")]
    assert wrong == []


def test_every_domain_definition_reaches_the_code_location():
    """An asset, check or job a domain defines but leaves out of its ASSETS / CHECKS / JOBS would be
    missing from the code location without any error."""
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    job_names = {j.name for j in defs.resolve_all_job_defs()}
    for name, domain in DOMAINS.items():
        for module_name in ("assets", "checks", "jobs"):
            if not (ROOT / "forvalue_assets" / name / f"{module_name}.py").exists():
                continue
            for value in vars(importlib.import_module(f"forvalue_assets.{name}.{module_name}")).values():
                if isinstance(value, AssetChecksDefinition):
                    assert value in domain.CHECKS, (name, value.check_keys)
                elif isinstance(value, AssetsDefinition):
                    assert value in domain.ASSETS, (name, value.key)
                elif isinstance(value, ASSET_JOB):
                    assert value in domain.JOBS, (name, value.name)
        assert {a.key for a in domain.ASSETS} <= graph.get_all_asset_keys(), name
        assert {k for c in domain.CHECKS for k in c.check_keys} <= graph.asset_check_keys, name
        assert {j.name for j in domain.JOBS} <= job_names, name
    assert sum(len(d.ASSETS) for d in DOMAINS.values()) == len(graph.get_all_asset_keys())


def test_each_domain_asset_carries_its_domain_defaults():
    graph = build_definitions().resolve_asset_graph()
    for name, domain in DOMAINS.items():
        d = domain.DEFAULTS
        for a in domain.ASSETS:
            node = graph.get(a.key)
            label = a.key.to_user_string()
            assert node.group_name == OWN_GROUP.get(label, d.group), (name, label)
            assert node.pools == {d.pool} and node.owners == OWNERS and node.code_version == CODE_VERSION, label
            if d.partitions_def is not None:
                assert node.partitions_def == d.partitions_def, label
            assert (node.automation_condition is None) == (d.automation_condition is None), label


def test_asset_defaults_apply_and_an_asset_overrides_them():
    eager = AutomationCondition.eager()
    defaults = AssetDefaults(group="g", pool="p", kinds=frozenset({"duckdb"}), automation_condition=eager)

    @defaults.asset()
    def plain():
        return None

    @defaults.asset(group_name="other", kinds={"json"}, automation_condition=None)
    def special():
        return None

    @AssetDefaults(group="g", pool="p").asset()
    def bare():
        return None

    graph = Definitions(assets=[plain, special, bare]).resolve_asset_graph()
    plain_, special_, bare_ = (graph.get(a.key) for a in (plain, special, bare))
    assert (plain_.group_name, plain_.pools, plain_.kinds) == ("g", {"p"}, {"duckdb"})
    assert plain_.automation_condition == eager
    assert plain_.owners == OWNERS and plain_.code_version == CODE_VERSION
    assert (special_.group_name, special_.pools, special_.kinds) == ("other", {"p"}, {"json"})
    assert special_.automation_condition is None
    assert (bare_.kinds, bare_.partitions_def, bare_.automation_condition) == (set(), None, None)


def test_sensors_and_schedule_target_the_domains_jobs():
    sensors = {s.name: s for s in platform_sensors(interval=7)}
    incoming = sensors["incoming_files"]
    assert {t.job_name for t in incoming.targets} == {j.name for j in ingest.JOBS}
    assert {s.minimum_interval_seconds for s in sensors.values()} == {7}
    (nightly,) = platform_schedules()
    assert nightly.job_name == curation.curation_job.name


IMPORT_SPY = r"""
import importlib, os, sys
ROOTS = tuple(os.path.join(sys.argv[1], p) + os.sep for p in ("forvalue_assets", "resources", "sensors"))
SKIP = (os.__file__, "_collections_abc", "<frozen")
reads = []

class Spy(type(os.environ)):
    def _note(self, key):
        f = sys._getframe(2)
        while f is not None and any(s in f.f_code.co_filename for s in SKIP):
            f = f.f_back
        if f is not None and f.f_code.co_filename.startswith(ROOTS):
            reads.append(f"{f.f_code.co_filename}:{f.f_lineno} reads {key}")

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def __iter__(self):
        self._note("(all)")
        return super().__iter__()

os.environ.__class__ = Spy
for name in sys.argv[2:]:
    importlib.import_module(name)
assert not reads, reads
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
assert not heavy, heavy
os.environ["FORVALUE_SUBSET_MODE"] = "top_k"
sys.modules["forvalue_assets.definitions"].build_definitions()   # the configuration step does read it
assert any("FORVALUE_SUBSET_MODE" in r for r in reads), reads
"""


def test_importing_the_layer_reads_no_environment_and_loads_no_torch():
    """Every module of the layer, not only what the code location loads (testing, serve, ...)."""
    modules = sorted(layer_graph())
    assert "forvalue_assets.serve" in modules and "sensors.settings" in modules
    subprocess.run([sys.executable, "-c", IMPORT_SPY, str(ROOT), *modules], cwd=ROOT, check=True, timeout=180)
