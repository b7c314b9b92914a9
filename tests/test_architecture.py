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


def _package_of(module: str, mods: dict[str, Path]) -> str:
    """The room a module lives in: a sub-package of forvalue (forvalue.store, forvalue.valuation, ...),
    a top-level module of forvalue on its own (forvalue.valuator, forvalue.errors), or one of the other
    top-level packages (forvalue_assets, resources, sensors) as a whole."""
    parts = module.split(".")
    if parts[0] != "forvalue":
        return parts[0]
    if len(parts) == 1:
        return "forvalue"
    sub = ".".join(parts[:2])
    return sub if mods[sub].name == "__init__.py" else sub


def _package_graph() -> dict[str, dict[str, list[str]]]:
    mods = _modules()
    graph: dict[str, dict[str, list[str]]] = {}
    for m, p in mods.items():
        a = _package_of(m, mods)
        graph.setdefault(a, {})
        for t in _imports(m, p, mods):
            b = _package_of(t, mods)
            if a != b and not (a == "forvalue" and m == "forvalue"):   # the public API's re-exports
                graph[a].setdefault(b, []).append(f"{m} -> {t}")
    return graph


def test_no_import_cycle_between_packages():
    """Sub-packages (and the top-level packages) depend one way: data and models at the bottom, then
    valuation, store, curation, catalog, training, engines, the front door (valuator), the CLI, and the
    Dagster layer on top."""
    graph = _package_graph()
    cycles = _cycles({a: set(bs) for a, bs in graph.items()})
    assert cycles == [], [(c, {a: {b: graph[a][b] for b in graph[a] if b in c} for a in c}) for c in cycles]


def _defined_names(paths) -> set[str]:
    """Every function, class, and assigned name or attribute in ``paths``."""
    names = set()
    for p in paths:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for leaf in ast.walk(t):
                    if isinstance(leaf, ast.Attribute):
                        names.add(leaf.attr)
                    elif isinstance(leaf, ast.Name):
                        names.add(leaf.id)
    return names


def test_no_private_name_used_across_packages():
    """A name that starts with an underscore is used only inside the package that defines it: no
    ``from other_package import _helper``, no ``obj._method()`` of another package's object. The
    benchmark scripts count as a package of their own (they call the public API only)."""
    mods = _modules()
    for p in (ROOT / "benchmarks").glob("*.py"):
        mods[f"benchmarks.{p.stem}"] = p
    rooms: dict[str, list[Path]] = {}
    for m, p in mods.items():
        rooms.setdefault(_package_of(m, mods), []).append(p)
    defined = {room: _defined_names(paths) for room, paths in rooms.items()}
    offenders = []
    for m, p in mods.items():
        room = _package_of(m, mods)
        base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and node.attr not in defined[room]:
                offenders.append(f"{m}:{node.lineno} uses .{node.attr}")
            if not isinstance(node, ast.ImportFrom):
                continue
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            if mod in mods and _package_of(mod, mods) != room:
                offenders += [f"{m} imports {mod}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []


SIZE_RULE_HOME = ROOT / "forvalue" / "curation" / "selection.py"
PERCENT_NAME = re.compile(r"^(p|pct|value|percent\w*|\w+_p|\w+_percent)$")


def _percent_sizes(tree: ast.AST) -> list[str]:
    """Subset sizes computed from a percentage: ``round``/``int``/``ceil``/``floor`` of a product and a
    division by 100 (``int(round(n * p / 100))``, ``ceil(len(x) * top_p / 100)``, ``round(p / 100 * n)``),
    or a product with a percentage-named operand floor-divided by 100 (``n * percent // 100``)."""
    def is_100(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in (100, 100.0)

    def named(node) -> str:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""

    found: dict[int, str] = {}    # one per line: the outermost expression
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in found:
            continue
        if isinstance(node, ast.Call) and named(node.func) in ("round", "int", "ceil", "floor"):
            inner = [n for a in node.args for n in ast.walk(a)]
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and is_100(n.right) for n in inner) and \
                    any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) for n in inner):
                found[node.lineno] = ast.unparse(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv) and is_100(node.right) and \
                isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Mult) and \
                any(PERCENT_NAME.match(named(n)) for n in ast.walk(node.left) if named(n)):
            found[node.lineno] = ast.unparse(node)
    return [f"{line}: {text}" for line, text in found.items()]


def test_one_size_rule():
    """Only forvalue/curation/selection.py (``subset_count``, and ``Ranking.indices`` over it) turns a
    percentage into a subset size: the library, the CLI, the Dagster layer and the benchmark scripts
    ask it, so the same size keeps the same number of samples everywhere."""
    flagged = ["k = int(round(n * p / 100))", "k = math.ceil(len(ids) * args.top_p / 100)",
               "k = round(p / 100 * n)", "k = n * percent // 100", "k = n - int(n * drop_lowest_p / 100)"]
    unrelated = ["held = unit < percent / 100.0", "interest = (A * B * C) // 100", "share = round(100 * k / n, 1)",
                 "k = int(round(0.1 * n))"]
    assert all(_percent_sizes(ast.parse(s)) for s in flagged)
    assert not any(_percent_sizes(ast.parse(s)) for s in unrelated)
    offenders = []
    for folder in (*PACKAGES, "benchmarks", "scripts"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            if p != SIZE_RULE_HOME:
                offenders += [f"{p.relative_to(ROOT)}:{hit}" for hit in _percent_sizes(ast.parse(p.read_text()))]
    assert offenders == []
    assert _percent_sizes(ast.parse(SIZE_RULE_HOME.read_text())), "the rule's home no longer matches the pattern"


def test_one_reader_of_the_environment_for_resources():
    """Every resource's ``from_env`` goes through ``resources._env.read_env`` (one parser of the
    variables, the defaults taken from the fields), never a hand-written body of env_* calls."""
    bodies = []
    for p in (ROOT / "resources").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "from_env":
                calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                bodies.append(p.name)
                assert "read_env" in calls and not calls & {"env_str", "env_int", "env_float", "env_bool",
                                                            "env_var_or"}, (p.name, sorted(calls))
    assert len(bodies) >= 7, bodies


# what reads the rows of a data file: polars, pyarrow and csv readers, JSON parsed line by line, datasets
_READS_ROWS = re.compile(r"\bpl\.(read|scan)_\w+|\bpq\.(read_table|ParquetFile|ParquetDataset|read_pandas)\b|"
                         r"\b(csv\.(reader|DictReader)|pacsv\.(read|open)_csv|pa_?json\.read_json)\b|"
                         r"\bipc\.open_(stream|file)\b|json\.loads\([^)]*\bline|\bload_from_disk\(|\bload_dataset\(")


def test_one_reader():
    """Only forvalue/data/reader.py opens JSONL, CSV, Parquet and Hugging Face data files for their
    rows; everything else reads through it (load_samples, stream.iter_batches, Ray read tasks, scores
    tables). The exceptions read files of other kinds, each named with its reason."""
    one_reader = ROOT / "forvalue" / "data" / "reader.py"
    exceptions = {
        "forvalue/store/shard_format.py": "feature-store shards: Arrow/Parquet files the store itself writes",
        "forvalue/benchmarks/tasks.py": "read_jsonl reads back the synthetic task files its write_jsonl wrote",
    }
    found: dict[str, list[str]] = {}
    for p in (ROOT / "forvalue").rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if _READS_ROWS.search(line) and p != one_reader:
                found.setdefault(str(p.relative_to(ROOT)), []).append(f"{i}: {line.strip()}")
    assert _READS_ROWS.search(one_reader.read_text())                  # the pattern still sees the reader
    assert {k: v for k, v in found.items() if k not in exceptions} == {}
    assert sorted(found) == sorted(exceptions)                          # an exception no longer needed goes
