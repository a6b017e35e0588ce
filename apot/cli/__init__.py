"""The ``apot`` command line: one subcommand per job, JSON on stdout, one-line errors. It parses
arguments (apot.cli.parser) and calls the library (apot.cli.commands); it decides nothing."""
from __future__ import annotations

import sys

from apot.engine.stopping import Stopped
from apot.errors import UserError, os_error_message
from apot.storage.jsonfile import json_text


def main(argv: list[str] | None = None) -> int:
    from apot.cli.parser import build_parser
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except UserError as exc:
        print(f"apot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"apot {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(f"apot {args.command}: {exc}; the run's files hold its last completed epoch: "
              f"the same command resumes from there", file=sys.stderr)
        return 128 + exc.signum
    print(json_text(result, indent=None))
    return 0
