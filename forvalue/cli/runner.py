"""Running a parsed command: every deliberate error is a ForValueError, printed as one line and
turned into its exit code; a usage error leaves like argparse's own (SystemExit, status 2). Warnings
raised while the command runs are shown as ``forvalue: warning: ...`` lines, each once."""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path

from ..errors import DamagedShardWarning, ForValueError
from .options import UsageError, UsageExit

_OURS = str(Path(__file__).resolve().parents[1])
_NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)   # from other packages: for their developers
_PACKAGE = re.compile(r"[/\\](?:site|dist)-packages[/\\]([A-Za-z0-9_]+)")


def warning_printer(seen: set[str]):
    """A ``warnings.showwarning`` that prints ``forvalue: warning: <message on one line>`` on stderr,
    each message once (``seen``); another package's deprecation notices are not shown, its other
    warnings name it (``forvalue: warning: torch: ...``)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        ours = str(filename).startswith(_OURS)
        if not ours and issubclass(category, _NOISE):
            return
        text = " ".join(str(message).split())
        package = None if ours else _PACKAGE.search(str(filename))
        if package is not None:
            text = f"{package.group(1)}: {text}"
        if text in seen:
            return
        seen.add(text)
        print(f"forvalue: warning: {text}", file=sys.stderr)

    return show


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command. A :class:`ForValueError` -> one line on stderr and
    its ``exit_code`` (2); a permission problem -> one line naming the file (2); a usage error -> one line and
    ``SystemExit(2)``; Ctrl-C -> 130; a warning ->
    one ``forvalue: warning:`` line (:func:`warning_printer`)."""
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with warnings.catch_warnings():
        warnings.showwarning = warning_printer(set())
        warnings.simplefilter("ignore", DamagedShardWarning)   # options.report_store says it, one line a shard
        try:
            return args.func(args)
        except UsageError as e:
            print(f"forvalue: error: {e}", file=sys.stderr)
            raise UsageExit(str(e)) from None
        except ForValueError as e:
            print(f"forvalue: error: {e}", file=sys.stderr)
            return e.exit_code
        except PermissionError as e:   # a file or folder this user may not read or write (a shared store)
            where = e.filename or "a file"
            print(f"forvalue: error: {where}: permission denied ({e.strerror or e}); ask its owner for access "
                  f"(docs/reliability.md: what a shared store needs)", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("forvalue: interrupted; finished shards are kept, rerun to complete", file=sys.stderr)
            return 130
