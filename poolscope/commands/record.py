"""``poolscope record ENDPOINT -o FILE [--duration S]``: the raw stream to a file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from poolscope.cli import CommandError
from poolscope.client import CONNECTED, DISCONNECTED, LINES, ConnectError, StreamClient
from poolscope.commands.common import endpoint_arg, positive_float
from poolscope.endpoint import Endpoint
from poolscope.follow import StreamFollower, check_reachable


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "endpoint", type=endpoint_arg, metavar="ENDPOINT", help=":PORT, HOST:PORT or unix:PATH"
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="NDJSON file to write")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--token", help="token, if the application requires one")


async def record(endpoint: Endpoint, path: str, duration: float | None, token: str | None) -> int:
    try:
        await check_reachable(endpoint, token)
    except ConnectError as exc:
        raise CommandError(f"cannot record: {exc}") from None
    client = StreamClient(endpoint, token=token, raw=True, batches=True)
    count = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        out = open(path, "wb")  # noqa: SIM115 - closed in finally, flushed per batch
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None

    failure = ""

    # Only the connection's status goes through the follower: the lines go to the
    # file as they came, unfolded.
    stream = StreamFollower()

    async def pump() -> None:
        nonlocal count, failure
        async for ev in client.events():
            if ev["type"] == LINES:  # as they came: a replay decodes and checks them
                out.write(ev["_lines"])
                count += ev["count"]
                out.flush()
                continue
            if ev["type"] in (CONNECTED, DISCONNECTED):
                stream.follow(ev, time.time())
                if not stream.connected:
                    # The application may have exited: its last events go to disk now.
                    out.flush()
                    if stream.refused:
                        failure = f"cannot record {endpoint}: {stream.refused}"
                        stop.set()
                        return
                    print(
                        f"poolscope record: {ev['endpoint']}: {stream.last_error}; reconnecting",
                        file=sys.stderr,
                    )
                continue
            out.write(ev["_line"])
            count += 1
            if count % 256 == 0:
                out.flush()

    task = asyncio.ensure_future(pump())
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        client.close()
        out.close()
    if failure:
        raise CommandError(failure)
    print(f"poolscope record: {count} events written to {path}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(record(args.endpoint, args.output, args.duration, args.token))
