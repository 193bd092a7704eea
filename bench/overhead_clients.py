"""Overhead of the client adapters on a real round trip: redis-py ``PING`` against a
real redis-server, and a keep-alive ``GET`` with aiohttp and httpx against an aiohttp
web server in another process.

For each library, two clients of the same shape on the same server - one bare, one
instrumented (leak detection on, so the acquire site is captured) - driven in
alternating rounds by the same thread or loop; the ratio of the median per-request
times is the cost. Target: at most 1.03 on the round trip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS_QUICK, ROUNDS_FULL = 9, 21
OPS_QUICK, OPS_FULL = 400, 2000
TARGET = 1.03

_SERVER = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _interleave(
    bare: Callable[[int], tuple[float, float]],
    inst: Callable[[int], tuple[float, float]],
    rounds: int,
    ops: int,
) -> dict[str, float]:
    """Rounds of (wall, this thread's CPU) seconds per op, order alternating."""
    bare(ops // 4)
    inst(ops // 4)
    b_t: list[tuple[float, float]] = []
    i_t: list[tuple[float, float]] = []
    for i in range(rounds):
        # Alternate who goes first, so drift in the machine's speed hits both alike.
        order = ((bare, b_t), (inst, i_t)) if i % 2 == 0 else ((inst, i_t), (bare, b_t))
        for fn, out in order:
            out.append(fn(ops))
    return _summarise(b_t, i_t)


def _summarise(b_t: list[tuple[float, float]], i_t: list[tuple[float, float]]) -> dict[str, float]:
    b, n = statistics.median(w for w, _ in b_t), statistics.median(w for w, _ in i_t)
    bc, nc = statistics.median(c for _, c in b_t), statistics.median(c for _, c in i_t)
    return {
        "bare_us": b * 1e6,
        "instrumented_us": n * 1e6,
        "ratio": n / b,
        # The application thread's own CPU (noisy: it includes the socket syscalls).
        "app_cpu_added_us": (nc - bc) * 1e6,
    }


def _timed(n: int, op: Callable[[], Any]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        op()
    return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n


def _runtime() -> Any:
    from poolscope.instrument.runtime import Runtime

    return Runtime()


def _stop(runtime: Any) -> None:
    runtime.shutdown(0.2)
    if runtime.loop is not None:
        runtime.loop.call_soon_threadsafe(runtime.loop.stop)


def _redis(rounds: int, ops: int) -> dict[str, Any]:
    import redis

    from poolscope.instrument.adapter import Options
    from poolscope.instrument.redis import RedisAdapter
    from tests.fixtures.redis_server import RedisServer

    binary = shutil.which("redis-server")
    if binary is None:
        return {"skipped": "redis-server not installed"}
    server = RedisServer(binary, Path(tempfile.mkdtemp(prefix="bench-redis-")))
    server.start()
    runtime = _runtime()
    try:
        bare = redis.Redis.from_url(server.url)
        inst = RedisAdapter().attach(
            redis.Redis.from_url(server.url), runtime, Options("bench-redis", 30.0, None)
        )

        def rounds_of(client: Any) -> Callable[[int], tuple[float, float]]:
            return lambda n: _timed(n, client.ping)

        res = _interleave(rounds_of(bare), rounds_of(inst), rounds, ops)
        time.sleep(0.3)
        pool = runtime.model.pools.get("bench-redis")
        res["events_seen"] = pool.acquires if pool is not None else 0
        bare.close()
        inst.close()
    finally:
        _stop(runtime)
        server.stop()
    return res


async def _aiohttp(url: str, rounds: int, ops: int) -> dict[str, Any]:
    import aiohttp

    from poolscope.instrument.adapter import Options
    from poolscope.instrument.aiohttp import AiohttpAdapter

    runtime = _runtime()
    bare = aiohttp.ClientSession()
    inst = AiohttpAdapter().attach(aiohttp.ClientSession(), runtime, Options("bench", 30.0, None))
    try:

        async def one_round(session: Any, n: int) -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(n):
                async with session.get(url) as r:
                    await r.read()
            return (time.perf_counter() - t0) / n, (time.thread_time() - c0) / n

        b_t: list[tuple[float, float]] = []
        i_t: list[tuple[float, float]] = []
        await one_round(bare, ops // 4)
        await one_round(inst, ops // 4)
        for i in range(rounds):
            order = ((bare, b_t), (inst, i_t)) if i % 2 == 0 else ((inst, i_t), (bare, b_t))
            for session, out in order:
                out.append(await one_round(session, ops))
        await asyncio.sleep(0.3)
        seen = sum(p.acquires for n, p in runtime.model.pools.items() if n.startswith("bench "))
    finally:
        await bare.close()
        await inst.close()
        _stop(runtime)
    return {**_summarise(b_t, i_t), "events_seen": seen}


def _httpx(url: str, rounds: int, ops: int) -> dict[str, Any]:
    import httpx

    from poolscope.instrument.adapter import Options
    from poolscope.instrument.httpx import HttpxAdapter

    runtime = _runtime()
    bare = httpx.Client()
    inst = HttpxAdapter().attach(httpx.Client(), runtime, Options("bench", 30.0, None))
    try:

        def rounds_of(client: Any) -> Callable[[int], tuple[float, float]]:
            return lambda n: _timed(n, lambda: client.get(url))

        res = _interleave(rounds_of(bare), rounds_of(inst), rounds, ops)
        time.sleep(0.3)
        res["events_seen"] = sum(
            p.acquires for n, p in runtime.model.pools.items() if n.startswith("bench ")
        )
    finally:
        bare.close()
        inst.close()
        _stop(runtime)
    return res


def _deep(k: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` under ``k`` more frames (acquire sites have application frames above)."""
    return fn() if k == 0 else _deep(k - 1, fn)


def _hot_path(n: int) -> dict[str, float]:
    """Acquiring-thread CPU per Tracker acquired+released pair (leaks on / off), and the
    background fold per event (``Runtime._drain`` over buffered events; no thread)."""
    import threading

    from poolscope.instrument import sites
    from poolscope.instrument.recorder import PoolHandle
    from poolscope.instrument.track import Tracker

    out: dict[str, float] = {}
    runtime = _runtime()
    try:
        conn = object()
        for label, threshold in (("pair_leaks_on_ns", 30.0), ("pair_leaks_off_ns", None)):
            tr = Tracker(runtime, label, leak_threshold=threshold)

            def pairs(tr: Tracker = tr) -> float:
                acquired, released = tr.acquired, tr.released
                c0 = time.thread_time()
                for _ in range(n):
                    acquired(conn)
                    released(conn)
                return (time.thread_time() - c0) / n

            out[label] = statistics.median(_deep(10, pairs) for _ in range(5)) * 1e9
            tr.close()
    finally:
        runtime.shutdown(5.0)  # a backlog of these events to fold first
        _stop(runtime)
    quiet = _runtime()  # never started: _drain is timed on this thread alone
    handle = PoolHandle(quiet.recorder, "fold", "custom", leak_threshold=30.0)
    ident = threading.get_ident()

    def fill() -> None:
        for _ in range(n):
            handle.acquired("c1", 0.0, sites.capture(8, 1), ident)
            handle.released("c1")

    _deep(10, fill)
    events = len(quiet.recorder.buffer)
    t0 = time.perf_counter()
    while quiet.recorder.buffer:
        quiet._drain()
    out["fold_per_event_ns"] = (time.perf_counter() - t0) / events * 1e9
    return out


def run(quick: bool) -> dict[str, Any]:
    rounds, ops = (ROUNDS_QUICK, OPS_QUICK) if quick else (ROUNDS_FULL, OPS_FULL)
    load = os.getloadavg()[0]
    results: dict[str, Any] = {"redis": _redis(rounds, ops), "load_average": load}
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        url = f"http://127.0.0.1:{port}/"
        results["aiohttp"] = asyncio.run(_aiohttp(url, rounds, ops))
        results["httpx"] = _httpx(url, rounds // 2 + 1, ops // 2)
    finally:
        proc.terminate()
        proc.wait(10)
    labels = {
        "redis": "redis-py PING (sync, real redis-server)",
        "aiohttp": "aiohttp GET, keep-alive (server in another process)",
        "httpx": "httpx GET, keep-alive (sync Client)",
    }
    rows = [
        "| round trip | bare | instrumented (leaks on) | ratio | events seen |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    targets = []
    for key, label in labels.items():
        r = results[key]
        if "skipped" in r:
            rows.append(f"| {label} | skipped: {r['skipped']} | | | |")
            continue
        r["ok"] = r["ratio"] <= TARGET
        rows.append(
            f"| {label} | {r['bare_us']:.1f} µs | {r['instrumented_us']:.1f} µs "
            f"| {r['ratio']:.3f} | {r['events_seen']} |"
        )
        targets.append(
            {
                "target": f"{key} instrumented / bare <= {TARGET}",
                "result": f"{r['ratio']:.3f}",
                "verdict": "PASS" if r["ok"] else "MISS",
            }
        )
    hot = results["hot_path"] = _hot_path(20_000 if quick else 100_000)
    rows += [
        "",
        "| where the time goes (no I/O) | ns |",
        "| --- | ---: |",
        f"| hot path, acquire+release pair, leak detection on | {hot['pair_leaks_on_ns']:,.0f} |",
        f"| hot path, acquire+release pair, leak detection off | {hot['pair_leaks_off_ns']:,.0f} |",
        f"| background fold, per event (two per request) | {hot['fold_per_event_ns']:,.0f} |",
    ]
    results.update(
        rounds=rounds,
        ops_per_round=ops,
        target_ratio=TARGET,
        targets=targets,
        markdown="\n".join(rows),
        notes=(
            "Run: `python -m bench --only overhead_clients` (redis-server on PATH). "
            "Median per-request time over interleaved rounds (order alternating each "
            f"round), {rounds} rounds x {ops} requests (httpx: {rounds // 2 + 1} x "
            f"{ops // 2}). 'events seen': acquires the instrumented client's pools folded, "
            "so the instrumentation really ran. Where the time goes (second table, no I/O): "
            "the acquiring thread's hot path per acquire+release (ps.track's Tracker, which "
            "the three adapters call; leak detection on captures 8 frames of acquire site) "
            "and the fold of each event on poolscope's background thread, which holds the "
            "GIL meanwhile. Both are paid inside the round trip; against a local redis PING "
            "(tens of us) that is far more than 3%, on a slower round trip less (the verdicts "
            f"say which met it in this run; 1-minute load average at the start: {load:.1f} "
            "on this 2-core machine, where other work ran too)."
        ),
    )
    return results


if __name__ == "__main__":
    import json

    out = run("--full" not in sys.argv)
    print(out.pop("markdown"))
    print(json.dumps(out, indent=2, default=str))
