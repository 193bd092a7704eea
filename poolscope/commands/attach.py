"""``poolscope attach [ENDPOINT ...]``: the TUI, live, on one or more processes.

Without an endpoint it attaches to every instrumented process discovered on
this machine (registry entries whose pid is alive).
"""

from __future__ import annotations

import argparse
from typing import Any

from poolscope.cli import CommandError
from poolscope.commands.common import endpoint_arg
from poolscope.endpoint import Endpoint, EndpointError, parse_endpoint


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "endpoints",
        nargs="*",
        type=endpoint_arg,
        metavar="ENDPOINT",
        help=":PORT, HOST:PORT or unix:PATH (default: every discovered local process)",
    )
    p.add_argument("--token", help="token, if the application requires one")


def live_entries() -> list[dict[str, Any]]:
    """Discovery entries of processes still alive, oldest first."""
    from poolscope.instrument.discovery import read_entries
    from poolscope.tui.osinfo import pid_alive

    return [e for e in read_entries() if pid_alive(int(e["pid"]))]


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
    if not endpoints:
        from poolscope.instrument.discovery import registry_dir

        endpoints = discovered_endpoints()
        if not endpoints:
            raise CommandError(
                f"no instrumented process found (looked in {registry_dir()}); "
                "give an ENDPOINT such as :9400"
            )
    from poolscope.tui.app import run_tui

    title = "poolscope " + " ".join(str(e) for e in endpoints)
    run_tui(endpoints, title=title, token=args.token)
    return 0
