"""The ``poolscope`` command line.

Each subcommand lives in ``poolscope/commands/<name>.py`` with ``add_parser`` and
``run``; this module only dispatches, so adding a command touches one file and
``COMMANDS`` below. Errors users can cause are one line on stderr and exit 2
(bad arguments) or 1 (the thing asked for failed).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from poolscope.textsafe import visible
from poolscope.version import __version__

#: name -> one-line help. Order is the order of ``poolscope --help``.
COMMANDS: dict[str, str] = {
    "demo": "the embedded demo: a mini database, a pool, a workload and the TUI",
    "attach": "the TUI, live, on one or more instrumented processes",
    "ps": "list instrumented processes on this machine",
    "record": "write an application's event stream to an NDJSON file",
    "replay": "the TUI over a recording, with play/pause/step/seek",
    "export": "serve Prometheus /metrics for one or more processes",
    "advise": "pool sizing advice from a recording or a live process",
    "run": "run a command with every pool it creates instrumented (no code change)",
    "inject": "instrument a running Python process that never imported poolscope",
    "detach": "undo `poolscope inject`: remove every hook, stop streaming",
}


class UsageError(Exception):
    """Bad arguments: printed as one line, exit code 2."""


class CommandError(Exception):
    """The command could not do its job: printed as one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; with ``command``, the parser of that subcommand only.

    Subcommand modules are imported only for the command being run, so
    ``poolscope record`` never pays for importing Textual.
    """
    if command is not None:
        module = importlib.import_module(f"poolscope.commands.{command}")
        p = _Parser(prog=f"poolscope {command}", description=COMMANDS[command])
        module.add_parser(p)
        return p
    parser = _Parser(
        prog="poolscope",
        description="Live observability for the connection pools inside running Python programs.",
    )
    parser.add_argument("--version", action="version", version=f"poolscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args_list or args_list[0].startswith("-"):
            parser = build_parser()
            parser.parse_args(args_list)  # --help / --version exit here
            parser.print_usage(sys.stderr)
            return 2
        command = args_list[0]
        if command not in COMMANDS:
            raise UsageError(
                f"poolscope: unknown command {command!r} (choose from {', '.join(COMMANDS)})"
            )
        args = build_parser(command).parse_args(args_list[1:])
        args.command = command
        module = importlib.import_module(f"poolscope.commands.{command}")
        return int(module.run(args) or 0)
    except UsageError as exc:
        print(visible(f"{exc}"), file=sys.stderr)
        return 2
    except CommandError as exc:
        # Errors may quote an endpoint, a file or the stream: made visible, like all
        # text poolscope shows (poolscope.textsafe).
        print(visible(f"poolscope: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
