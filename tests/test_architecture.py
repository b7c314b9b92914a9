"""The house rules: one-way imports, a library without Dagster, short functions, one atomic-write helper."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("forvalue", "forvalue_assets", "resources", "sensors")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of this project that ``name`` imports anywhere in its file (lazy imports included).
    ``from package import submodule`` depends on the submodule."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            subs = [f"{mod}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in mods] + ([mod] if any(t not in mods for t in subs) else [])
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                out.add(t)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert _cycles(graph) == []


def test_library_never_imports_dagster():
    for p in (ROOT / "forvalue").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(dagster|forvalue_assets|resources|sensors)\b", p.read_text(), re.M), p


def test_no_function_longer_than_80_lines():
    long = []
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 80:
                        long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_one_atomic_write_helper():
    """Files are renamed into place only in forvalue/io.py; everything else calls it."""
    offenders = []
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if p == ROOT / "forvalue" / "io.py":
                continue
            text = p.read_text()
            if re.search(r"os\.replace\(|\.replace\((tmp|dst|path)\)|mkstemp\(", text):
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
