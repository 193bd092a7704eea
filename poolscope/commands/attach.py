"""``poolscope attach [ENDPOINT ...]``: the TUI, live, on one or more processes.

Without an endpoint it attaches to every instrumented process discovered on
this machine (registry entries whose pid is alive).
"""

from __future__ import annotations

import argparse
from typing import Any

from poolscope import pgview
from poolscope.cli import CommandError
from poolscope.commands.common import add_window_arg, endpoint_arg
from poolscope.endpoint import Endpoint, EndpointError, parse_endpoint
from poolscope.textsafe import visible


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "endpoints",
        nargs="*",
        type=endpoint_arg,
        metavar="ENDPOINT",
        help=":PORT, HOST:PORT or unix:PATH (default: every discovered local process)",
    )
    p.add_argument("--token", help="token, if the application requires one")
    p.add_argument(
        "--wait",
        action="store_true",
        help="open the TUI even when nothing answers yet, and keep trying",
    )
    p.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="this process: its stream if it is instrumented, else `poolscope inject` it first",
    )
    add_window_arg(p)
    pgview.add_arguments(p)


async def _first_answer(endpoints: list[Endpoint], token: str | None) -> str | None:
    """None when at least one endpoint answers; else why the first one did not."""
    import asyncio

    from poolscope.client import ConnectError, open_stream

    async def probe(ep: Endpoint) -> str | None:
        try:
            _, writer = await open_stream(ep, token=token, timeout=2.0)
        except ConnectError as exc:
            return str(exc)
        writer.close()
        return None

    results = await asyncio.gather(*(probe(ep) for ep in endpoints))
    return None if any(r is None for r in results) else results[0]


def entry_alive(entry: dict[str, Any]) -> bool:
    """The process that wrote ``entry`` still runs: its pid is alive and was not
    reused by a process started after the entry was written."""
    import psutil

    from poolscope.tui.osinfo import pid_alive

    pid = int(entry["pid"])
    if not pid_alive(pid):
        return False
    started = entry.get("started")
    try:
        created = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return True
    return not isinstance(started, (int, float)) or created <= float(started) + 1.0


def live_entries(*, prune: bool = False) -> list[dict[str, Any]]:
    """Discovery entries of processes still alive, oldest first; ``prune`` removes
    the entries of processes that are gone (this user's own entries only)."""
    from poolscope.instrument.discovery import prune_entries, read_entries

    if prune:
        prune_entries(entry_alive)
    return [e for e in read_entries() if entry_alive(e)]


def discovered_endpoints() -> list[Endpoint]:
    out: list[Endpoint] = []
    for entry in live_entries():
        try:
            ep = parse_endpoint(str(entry["endpoint"]))
        except EndpointError:
            continue
        if ep not in out:
            out.append(ep)
    return out


def run(args: argparse.Namespace) -> int:
    endpoints: list[Endpoint] = list(args.endpoints)
    if getattr(args, "pid", None) is not None:
        from poolscope.commands.inject import endpoint_for_pid

        endpoints.append(endpoint_for_pid(args.pid))
    if not endpoints:
        from poolscope.instrument.discovery import registry_dir

        endpoints = discovered_endpoints()
        if not endpoints:
            raise CommandError(
                f"no instrumented process found (looked in {registry_dir()}); "
                "give an ENDPOINT such as :9400"
            )
    if not args.wait:
        import asyncio

        # Nothing to show is a one-line error, as for `record`; once attached, the
        # TUI reconnects to processes that go away and come back.
        why = asyncio.run(_first_answer(endpoints, args.token))
        if why is not None:
            raise CommandError(f"cannot attach: {why}; --wait to wait for it")
    from poolscope.tui.app import run_tui

    pg = None
    if args.pg:
        try:
            pg = pgview.PgView(args.pg, show_queries=args.show_queries, idle_tx=args.idle_tx)
        except pgview.PgUnavailable as exc:
            raise CommandError(str(exc)) from None
    title = visible("poolscope " + " ".join(str(e) for e in endpoints))
    return run_tui(endpoints, title=title, token=args.token, window=args.window, pg=pg)
