"""``poolscope inject PID``: instrument a running CPython 3.10+ process that never imported
poolscope - its pools found and hooked in place, connections already checked out adopted
as holders, the stream started. See docs/attach.md (and ``poolscope.remote``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from poolscope.cli import CommandError, UsageError
from poolscope.commands.common import pid_number, positive_float
from poolscope.endpoint import Endpoint
from poolscope.textsafe import visible


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("pid", type=pid_number, metavar="PID", help="the process to instrument")
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help="where the target streams: HOST:PORT or unix:PATH (default: a free loopback port)",
    )
    p.add_argument(
        "--leak-threshold",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="a connection held longer is a suspected leak (default 30; held connections "
        "adopted at attach count from the attach)",
    )
    p.add_argument("--heartbeat", type=positive_float, metavar="S", help="probe idle connections")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=15.0,
        metavar="S",
        help="give up when the target reaches no safe point within S seconds (default 15)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def inject(
    pid: int,
    *,
    listen: str | None = None,
    leak_threshold: float | None = 30.0,
    heartbeat: float | None = None,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Inject into ``pid``; the bootstrap's result plus how it got there. CommandError
    (one line) when it cannot."""
    from poolscope.remote import InjectError, run_request

    if listen:
        from poolscope.endpoint import EndpointError, parse_endpoint

        try:
            listen = str(parse_endpoint(listen))
        except EndpointError as exc:
            raise UsageError(f"poolscope inject: bad --listen: {exc}") from None
    request = {
        "action": "attach",
        "listen": listen,
        "leak_threshold": leak_threshold,
        "heartbeat": heartbeat,
    }
    try:
        outcome = run_request(pid, request, timeout)
    except InjectError as exc:
        raise CommandError(f"cannot inject into pid {pid}: {exc}") from None
    result = dict(outcome.result)
    if not result.get("ok"):
        raise CommandError(f"cannot inject into pid {pid}: {result.get('error', 'failed')}")
    result.update(
        pid=pid, transport=outcome.transport, stopped=outcome.stopped, waited=outcome.waited
    )
    return result


def run(args: argparse.Namespace) -> int:
    result = inject(
        args.pid,
        listen=args.listen,
        leak_threshold=args.leak_threshold,
        heartbeat=args.heartbeat,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(injected_line(args.pid, result))
    return 0


def injected_line(pid: int, result: dict[str, Any]) -> str:
    """The one line an inject prints. Pool names and the endpoint come from the target:
    untrusted text, made visible like everything from the stream."""
    pools = ", ".join(str(p) for p in result.get("pools", [])) or "none found yet"
    return visible(
        f"poolscope: injected into pid {pid} ({result['transport']}; stopped "
        f"{result['stopped']:.2f}s, bootstrap {1000 * float(result.get('pause', 0)):.1f}ms"
        f"): streaming on {result['endpoint']}; pools: {pools}; "
        f"{result.get('adopted', 0)} checked-out connection(s) adopted"
    )


def endpoint_for_pid(pid: int) -> Endpoint:
    """Where process ``pid`` streams: its discovery entry if it is instrumented (by
    itself, `poolscope run` or an earlier inject), else inject it now (``attach --pid``)."""
    from poolscope.commands.attach import live_entries
    from poolscope.endpoint import EndpointError, parse_endpoint

    for entry in live_entries():
        if int(entry["pid"]) == pid:
            try:
                return parse_endpoint(str(entry["endpoint"]))
            except EndpointError:
                break
    result = inject(pid)
    print(
        visible(
            f"poolscope: injected into pid {pid} ({result['transport']}; stopped "
            f"{result['stopped']:.2f}s): streaming on {result['endpoint']}; "
            f"`poolscope detach {pid}` undoes it"
        ),
        file=sys.stderr,
    )
    return parse_endpoint(str(result["endpoint"]))
