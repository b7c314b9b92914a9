"""The Dagster layer's shape: one-way imports (shared modules <- domains <- definitions; sensors
use domain jobs; nothing imports the definitions but the test helpers), no import cycles, no
environment read at import, and short functions."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("forvalue_assets", "resources", "sensors")
DOMAINS = ("ingest", "features", "curation", "finetuning")
# Modules that may import the definitions: the in-process test platform is above it; definitions
# itself is the top.
MAY_IMPORT_DEFINITIONS = {"forvalue_assets.testing", "forvalue_assets.definitions"}
MAX_FUNCTION_LINES = 80


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (relative imports resolved; ``from pkg import x`` counts
    as importing ``pkg.x`` when that is a module, else ``pkg``)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_imports_are_one_way_and_acyclic():
    graph = import_graph()
    assert "forvalue_assets.curation.assets" in graph and "sensors.incoming" in graph

    # no cycle (depth-first search, a module imports its package's __init__ implicitly: ignored)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack + [node, nxt])}")
            if not state.get(nxt):
                visit(nxt, stack + [node])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [])

    for module, deps in graph.items():
        if "forvalue_assets.definitions" in deps:
            assert module in MAY_IMPORT_DEFINITIONS, f"{module} imports the definitions"
        if module.startswith("resources"):
            assert not {d for d in deps if not d.startswith("resources")}, f"{module}: resources import only resources"
        for domain in DOMAINS:
            if module.startswith(f"forvalue_assets.{domain}"):
                others = {d for d in deps for o in DOMAINS if o != domain and d.startswith(f"forvalue_assets.{o}")}
                assert not others, f"{module} imports another domain: {others}"


def test_no_function_longer_than_the_limit():
    too_long = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {node.end_lineno - start + 1} lines")
    assert not too_long, too_long


SPY = r"""
import os, sys
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
import forvalue_assets.definitions, forvalue_assets.testing, forvalue_assets.serve, sensors, resources, resources.mlflow
assert not reads, reads
os.environ["FORVALUE_SUBSET_MODE"] = "top_k"
forvalue_assets.definitions.build_definitions()   # the configuration step does read it
assert any("FORVALUE_SUBSET_MODE" in r for r in reads), reads
"""


def test_nothing_reads_the_environment_at_import():
    subprocess.run([sys.executable, "-c", SPY, str(ROOT)], cwd=ROOT, check=True, timeout=180)
