"""Running a parsed command: every deliberate error is a ForValueError, printed as one line and
turned into its exit code; a usage error leaves like argparse's own (SystemExit, status 2)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ForValueError
from .options import UsageError, UsageExit


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command. A :class:`ForValueError` -> one line on stderr and
    its ``exit_code`` (2); a usage error -> one line and ``SystemExit(2)``; Ctrl-C -> 130."""
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return args.func(args)
    except UsageError as e:
        print(f"forvalue: error: {e}", file=sys.stderr)
        raise UsageExit(str(e)) from None
    except ForValueError as e:
        print(f"forvalue: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("forvalue: interrupted; finished shards are kept, rerun to complete", file=sys.stderr)
        return 130
