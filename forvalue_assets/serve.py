"""Start the platform: ``python -m forvalue_assets.serve [--port 3000] [dg dev options]``.

Equivalent to the shell commands in docs/platform.md ("Run the platform"):
- DAGSTER_HOME defaults to ``<project>/.dagster_home`` (run history, schedules and sensor state are
  kept there across restarts); it is created on first use;
- ``$DAGSTER_HOME/dagster.yaml`` is created from ``forvalue_assets/dagster.yaml`` when missing
  (pool limit 1 for the ``model`` and ``duckdb`` pools); an existing one is left as it is;
- runs ``dg dev -w workspace.yaml -h 127.0.0.1 -p <port>`` (dagster-dg-cli) from the project root,
  so the relative defaults (.forvalue/, incoming/) land in the project. The workspace file names
  the same code location as ``[tool.dg]`` in pyproject.toml (``forvalue_assets.definitions``,
  location ``forvalue``); without dagster-dg-cli installed, ``dagster dev`` takes the same options.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from forvalue.io import atomic_copy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "dagster.yaml"


def prepare_home(home: str | Path | None = None) -> Path:
    """Create DAGSTER_HOME (default <project>/.dagster_home) with the pool settings if missing."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        atomic_copy(TEMPLATE, target)
    elif "default_limit" not in target.read_text():
        print(f"note: {target} sets no pool limit; writing assets rely on the catalog's lock wait alone "
              "(see docs/platform.md, 'Concurrency')", file=sys.stderr)
    return home


def dev_command(port: int, extra: list[str]) -> list[str]:
    """``dg dev`` of this virtualenv bound to 127.0.0.1 (``dagster dev`` when dg is missing)."""
    bin_dir = Path(sys.executable).parent
    exe = next((str(bin_dir / name) for name in ("dg", "dagster") if (bin_dir / name).exists()), "dg")
    return [exe, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port), *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    args, extra = parser.parse_known_args(argv)
    home = prepare_home()
    env = dict(os.environ, DAGSTER_HOME=str(home))
    cmd = dev_command(args.port, extra)
    print(f"DAGSTER_HOME={home}\n$ {' '.join(cmd)}\nUI: http://127.0.0.1:{args.port}", file=sys.stderr)
    os.chdir(PROJECT_ROOT)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
