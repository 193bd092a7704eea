"""``poolscope detach PID``: undo ``poolscope inject`` - every hook removed, poolscope's
thread and stream server stopped, the application left as it was."""

from __future__ import annotations

import argparse
import json
from typing import Any

from poolscope.cli import CommandError
from poolscope.commands.common import pid_number, positive_float


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pid", type=pid_number, metavar="PID", help="a process poolscope inject instrumented"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=15.0,
        metavar="S",
        help="give up when the target reaches no safe point within S seconds (default 15)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def detach(pid: int, timeout: float = 15.0) -> dict[str, Any]:
    from poolscope.remote import InjectError, run_request

    try:
        outcome = run_request(pid, {"action": "detach"}, timeout)
    except InjectError as exc:
        raise CommandError(f"cannot detach from pid {pid}: {exc}") from None
    result = dict(outcome.result)
    if not result.get("ok"):
        raise CommandError(f"cannot detach from pid {pid}: {result.get('error', 'failed')}")
    result.update(pid=pid, transport=outcome.transport, stopped=outcome.stopped)
    return result


def run(args: argparse.Namespace) -> int:
    result = detach(args.pid, args.timeout)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"poolscope: detached from pid {args.pid} ({result.get('pools', 0)} pool(s) "
            f"released; stopped {result['stopped']:.2f}s)"
        )
    return 0
