"""What ``poolscope record`` pays per event: lines written as they came, or decoded.

One process, one asyncio loop: a server on loopback sends a hello and then N lines of
a real recording (``tests/data/who_session.ndjson``'s acquires and releases) as fast
as the socket takes them; a ``StreamClient`` reads them all, in the two ways there are:

* ``batches=True`` - what ``record`` does since session 5: after the hello, socket
  reads cut at the last newline, written to a file undecoded;
* ``raw=True`` alone - what it did before, and what every live view still does:
  each line decoded (``events.decode``) and sanitized (``textsafe.safe_event``), then
  its original bytes written.

CPU is the whole process's (``time.process_time``: the server's sends are in it, the
same for both), per event, median of interleaved rounds. The observer runs on the
same cores as the application it watches, so this is CPU the application loses.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._rounds import ROOT

N_QUICK, N_FULL = 50_000, 200_000
ROUNDS_QUICK, ROUNDS_FULL = 3, 7


def _payload(n: int) -> tuple[bytes, bytes]:
    lines = (Path(ROOT) / "tests" / "data" / "who_session.ndjson").read_bytes().splitlines(True)
    hello = lines[0]
    acquire = next(x for x in lines if b'"type":"acquire"' in x)
    release = next(x for x in lines if b'"type":"release"' in x)
    return hello, (acquire + release) * (n // 2)


async def _one(batches: bool, hello: bytes, body: bytes, n: int, out: Path) -> float:
    from poolscope.client import LINES, StreamClient
    from poolscope.endpoint import Endpoint

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hello)
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    client = StreamClient(Endpoint("127.0.0.1", port), reconnect=False, raw=True, batches=batches)
    seen = 0
    c0 = time.process_time()
    with out.open("wb") as f:
        async for ev in client.events():
            if ev["type"] == LINES:
                f.write(ev["_lines"])
                seen += ev["count"]
            elif "_line" in ev:
                f.write(ev["_line"])
                seen += ev["type"] != "hello"
    cpu = time.process_time() - c0
    server.close()
    await server.wait_closed()
    if seen != n:
        raise AssertionError(f"read {seen} events of {n}")
    return cpu / n


def run(quick: bool) -> dict[str, Any]:
    n = N_QUICK if quick else N_FULL
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    hello, body = _payload(n)
    n = body.count(b"\n")
    per: dict[str, list[float]] = {"batches": [], "decoded": []}
    with tempfile.TemporaryDirectory(prefix="poolscope-record-cost-") as d:
        out = Path(d) / "out.ndjson"
        for r in range(rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for batches in order:
                cpu = asyncio.run(_one(batches, hello, body, n, out))
                per["batches" if batches else "decoded"].append(cpu)
    med = {k: statistics.median(v) * 1e6 for k, v in per.items()}
    rng = {k: (min(v) * 1e6, max(v) * 1e6) for k, v in per.items()}
    md = "\n".join(
        [
            f"{n:,} events over loopback, {rounds} interleaved rounds; process CPU per event, "
            "median (min to max):",
            "",
            "| how the recorder reads | us per event |",
            "|---|---|",
            f"| lines as they came, after the hello (`batches=True`: `poolscope record`) "
            f"| {med['batches']:.2f} ({rng['batches'][0]:.2f} to {rng['batches'][1]:.2f}) |",
            f"| every line decoded and sanitized (`raw=True`: record before, live views now) "
            f"| {med['decoded']:.2f} ({rng['decoded'][0]:.2f} to {rng['decoded'][1]:.2f}) |",
            "",
            f"Ratio: {med['decoded'] / med['batches']:.1f}x. Run: "
            "`python -m bench --only record_cost`.",
        ]
    )
    return {
        "title": "poolscope record: CPU per event, lines as they came against decoded",
        "us_per_event": med,
        "markdown": md,
        "notes": (
            "asgi_wrk measures the same in place: the attached recorder's CPU per request "
            "of the ASGI app it watches (21.8 us before this change, 3.5 us after)."
        ),
    }
