"""Start the platform: ``python -m forvalue_assets.serve [--port 3000] [dagster dev options]``.

Equivalent to the shell commands in docs/platform.md ("Run the platform"):
- DAGSTER_HOME defaults to ``<project>/.dagster_home`` (run history, schedules and sensor state are
  kept there across restarts); it is created on first use;
- ``$DAGSTER_HOME/dagster.yaml`` is created from ``forvalue_assets/dagster.yaml`` when missing
  (pool limit 1 for the ``model`` and ``duckdb`` pools); an existing one is left as it is;
- runs ``dagster dev -w workspace.yaml -h 127.0.0.1 -p <port>`` from the project root, so the
  relative defaults (.forvalue/, incoming/) land in the project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "dagster.yaml"


def prepare_home(home: str | Path | None = None) -> Path:
    """Create DAGSTER_HOME (default <project>/.dagster_home) with the pool settings if missing."""
    home = Path(home or os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        tmp = home / ".dagster.yaml.tmp"
        shutil.copyfile(TEMPLATE, tmp)
        os.replace(tmp, target)
    elif "default_limit" not in target.read_text():
        print(f"note: {target} sets no pool limit; writing assets rely on the catalog's lock wait alone "
              "(see docs/platform.md, 'Concurrency')", file=sys.stderr)
    return home


def dev_command(port: int, extra: list[str]) -> list[str]:
    dagster = Path(sys.executable).parent / "dagster"
    exe = str(dagster) if dagster.exists() else "dagster"
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
