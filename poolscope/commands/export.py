"""``poolscope export ENDPOINT ... [--listen HOST:PORT]``: a headless Prometheus exporter."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from poolscope import pgview
from poolscope.cli import CommandError, UsageError
from poolscope.commands.common import endpoint_arg
from poolscope.endpoint import Endpoint
from poolscope.events import Event
from poolscope.export import Exporter, Target

DEFAULT_LISTEN = "127.0.0.1:9464"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "endpoints",
        type=endpoint_arg,
        nargs="+",
        metavar="ENDPOINT",
        help="instrumented processes to follow: :PORT, HOST:PORT or unix:PATH",
    )
    p.add_argument(
        "--listen",
        type=endpoint_arg,
        default=endpoint_arg(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"where to serve /metrics and /healthz (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--token", help="token, if the applications require one")
    pgview.add_arguments(p)


def _note(target: Target, ev: Event) -> None:
    if ev["type"] == "connected":
        print(f"poolscope export: {target.endpoint}: connected", file=sys.stderr)
    else:
        error = ev.get("error", "")
        print(
            f"poolscope export: {target.endpoint}: {error}; not exported until it is back",
            file=sys.stderr,
        )


async def export(
    endpoints: list[Endpoint],
    listen: Endpoint,
    token: str | None,
    pg: pgview.PgView | None = None,
) -> int:
    exporter = Exporter(endpoints, token=token, on_change=_note, pg=pg)
    try:
        bound = await exporter.serve(listen)
    except OSError as exc:
        raise CommandError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    exporter.start()
    print(
        f"poolscope export: serving http://{bound}/metrics for {len(endpoints)} endpoint(s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await exporter.close()
    return 0


def run(args: argparse.Namespace) -> int:
    listen: Endpoint = args.listen
    if listen.is_unix:
        raise UsageError("poolscope export: --listen must be HOST:PORT (Prometheus scrapes HTTP)")
    endpoints = list(dict.fromkeys(args.endpoints))  # the same endpoint twice counts once
    pg = None
    if args.pg:
        try:
            pg = pgview.PgView(args.pg, show_queries=False, idle_tx=args.idle_tx)
        except pgview.PgUnavailable as exc:
            raise CommandError(str(exc)) from None
    return asyncio.run(export(endpoints, listen, args.token, pg))
