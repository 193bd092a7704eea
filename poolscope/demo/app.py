"""The demo application: two reference pools over real TCP to a MiniDB, a Poisson
workload, and scripted trouble every minute - a slow spell, a leak, an outage.

Runs headless (``poolscope demo --headless``); ``poolscope demo`` starts it as a
child process and attaches the TUI to it over the real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import poolscope.instrument as ps
from poolscope.demo.minidb import MiniDB
from poolscope.pool import Pool, PoolError, tcp
from poolscope.pool.tcp import TcpConnection

log = logging.getLogger("poolscope.demo")

#: The trouble script, in seconds from the start of each cycle.
CYCLE = 60.0
SLOW_AT, SLOW_FOR = 15.0, 10.0
LEAK_AT, LEAK_HOLD = 30.0, 25.0
OUTAGE_AT, OUTAGE_FOR = 48.0, 4.0


@dataclass
class DemoConfig:
    rate: float = 60.0  # requests per second across both pools
    duration: float | None = None
    listen: str | None = None
    leak_threshold: float = 8.0
    seed: int | None = None
    trouble: bool = True


async def _request(pool: Pool[TcpConnection], queries: int) -> None:
    conn = await pool.acquire()
    try:
        for _ in range(queries):
            await conn.request("Q", timeout=5.0)
    except (OSError, asyncio.TimeoutError):
        # A connection that failed mid-request is not given back for reuse.
        await pool.discard(conn, "lost")
        raise
    except BaseException:
        await pool.release(conn)
        raise
    await pool.release(conn)


async def _serve_one(pool: Pool[TcpConnection], queries: int) -> None:
    try:
        await _request(pool, queries)
    except (PoolError, OSError, asyncio.TimeoutError, ConnectionError):
        # Failures are what the demo is about; the pool reported them already.
        pass


async def leak_a_connection(pool: Pool[TcpConnection], hold: float) -> None:
    """A deliberate leak: take a connection and sit on it."""
    conn = await pool.acquire()  # the leak site the TUI should point at
    await asyncio.sleep(hold)
    with contextlib.suppress(Exception):
        await pool.release(conn)


async def _workload(
    pools: list[tuple[Pool[TcpConnection], float, int]], rate: float, rng: random.Random
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    weights = [w for _, w, _ in pools]
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        pool, _, max_queries = rng.choices(pools, weights=weights)[0]
        t = asyncio.ensure_future(_serve_one(pool, rng.randint(1, max_queries)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


async def _trouble(db: MiniDB, orders: Pool[TcpConnection]) -> None:
    start = time.monotonic()
    cycle = 0
    leaks: set[asyncio.Future[None]] = set()
    while True:
        base = start + cycle * CYCLE

        async def until(offset: float, base: float = base) -> None:
            await asyncio.sleep(max(0.0, base + offset - time.monotonic()))

        await until(SLOW_AT)
        log.info("demo: slow spell")
        db.slow_factor = 12.0
        await until(SLOW_AT + SLOW_FOR)
        db.slow_factor = 1.0
        await until(LEAK_AT)
        log.info("demo: leaking a connection")
        leak = asyncio.ensure_future(leak_a_connection(orders, LEAK_HOLD))
        leaks.add(leak)
        leak.add_done_callback(leaks.discard)
        await until(OUTAGE_AT)
        log.info("demo: outage")
        port = db.port
        await db.stop()
        await until(OUTAGE_AT + OUTAGE_FOR)
        db.port = port
        await db.start()
        cycle += 1


async def run_demo(cfg: DemoConfig) -> None:
    rng = random.Random(cfg.seed)
    db = MiniDB(seed=cfg.seed)
    port = await db.start()
    target = f"127.0.0.1:{port}/demo"
    orders: Pool[TcpConnection] = Pool(
        tcp.factory("127.0.0.1", port, connect_timeout=1.0),
        min_size=2,
        max_size=8,
        acquire_timeout=2.0,
        name="orders",
        target=target,
        ping=tcp.ping,
        heartbeat_interval=2.0,
        heartbeat_timeout=0.5,
    )
    reports: Pool[TcpConnection] = Pool(
        tcp.factory("127.0.0.1", port, connect_timeout=1.0),
        min_size=1,
        max_size=3,
        acquire_timeout=3.0,
        name="reports",
        target=target,
        ping=tcp.ping,
        heartbeat_interval=2.0,
        heartbeat_timeout=0.5,
    )
    listen = cfg.listen
    ps.instrument(orders, leak_threshold=cfg.leak_threshold, listen=listen)
    ps.instrument(reports, leak_threshold=cfg.leak_threshold, listen=listen)
    async with orders, reports:
        jobs = [
            asyncio.ensure_future(_workload([(orders, 0.8, 3), (reports, 0.2, 6)], cfg.rate, rng))
        ]
        if cfg.trouble:
            jobs.append(asyncio.ensure_future(_trouble(db, orders)))
        try:
            if cfg.duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(cfg.duration)
        finally:
            for j in jobs:
                j.cancel()
            await db.stop()
