"""The reference pool against asyncpg.Pool and psycopg_pool.AsyncConnectionPool on the
same real PostgreSQL (a throwaway cluster from ``tests.pgcluster``), side by side.

* **own cost per acquire+release**: one task, ``async with pool.acquire()`` in a
  tight loop with no query, so only the pool's own work is timed (plus, for asyncpg
  by default, the connection reset it runs on every release: a server round trip;
  shown also with ``reset=None``-like no-op reset for a like-for-like figure).
* **contention**: 200 tasks share 10 connections; each checkout runs the same work
  (``SELECT 1``, one round trip); reported: throughput and the p50/p99 time spent
  waiting in acquire.

The reference pool's connections are asyncpg connections (``asyncpg.connect``), so
the reference and asyncpg rows differ only in the pool. Configurations run in
interleaved rounds (the order rotates each round); the table gives medians.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from bench.common import interleaved, machine, markdown_table, summary

POOL_SIZE = 10
TASKS = 200


class _Case:
    """One pool under test: how to open it, acquire from it, run the work, close it."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], Awaitable[Any]],
        acquire: Callable[[Any], AbstractAsyncContextManager[Any]],
        work: Callable[[Any], Awaitable[Any]],
        closer: Callable[[Any], Awaitable[Any]],
    ) -> None:
        self.name = name
        self.opener = opener
        self.acquire = acquire
        self.work = work
        self.closer = closer
        self.pool: Any = None


async def _own_cost(case: _Case, n: int) -> float:
    acquire = case.acquire
    pool = case.pool
    t0 = time.perf_counter()
    for _ in range(n):
        async with acquire(pool):
            pass
    return (time.perf_counter() - t0) / n


async def _contention(case: _Case, per_task: int) -> dict[str, float]:
    acquire, work, pool = case.acquire, case.work, case.pool
    waits: list[float] = []
    clock = time.perf_counter

    async def worker() -> None:
        for _ in range(per_task):
            t = clock()
            async with acquire(pool) as conn:
                waits.append(clock() - t)
                await work(conn)

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    elapsed = clock() - t0
    waits.sort()
    return {
        "ops_per_s": len(waits) / elapsed,
        "wait_p50": waits[len(waits) // 2],
        "wait_p99": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
    }


def _cases(dsn: str) -> list[_Case]:
    import asyncpg
    import psycopg_pool

    from poolscope.pool import Pool

    async def apg_work(conn: Any) -> Any:
        return await conn.fetchval("SELECT 1")

    async def psy_work(conn: Any) -> Any:
        cur = await conn.execute("SELECT 1")
        return await cur.fetchone()

    async def noop_reset(conn: Any) -> None:
        return None

    async def open_reference() -> Any:
        pool = Pool(
            lambda: asyncpg.connect(dsn),
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            acquire_timeout=60.0,
            name="reference",
        )
        await pool.open()
        return pool

    async def open_asyncpg() -> Any:
        return await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)

    async def open_asyncpg_noreset() -> Any:
        return await asyncpg.create_pool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=noop_reset
        )

    async def open_psycopg() -> Any:
        pool = psycopg_pool.AsyncConnectionPool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, timeout=60.0
        )
        await pool.open(wait=True)
        return pool

    async def close_any(pool: Any) -> None:
        await pool.close()

    return [
        _Case("poolscope reference", open_reference, lambda p: p.acquire(), apg_work, close_any),
        _Case("asyncpg.Pool", open_asyncpg, lambda p: p.acquire(), apg_work, close_any),
        _Case(
            "asyncpg.Pool (no-op reset)",
            open_asyncpg_noreset,
            lambda p: p.acquire(),
            apg_work,
            close_any,
        ),
        _Case(
            "psycopg_pool.AsyncConnectionPool",
            open_psycopg,
            lambda p: p.connection(),
            psy_work,
            close_any,
        ),
    ]


def _measure(dsn: str, quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    n_own = 2_000 if quick else 20_000
    per_task = 10 if quick else 50
    loop = asyncio.new_event_loop()
    try:
        cases = _cases(dsn)
        for c in cases:
            c.pool = loop.run_until_complete(c.opener())
            loop.run_until_complete(_own_cost(c, 200))  # warm up
        own = interleaved(
            {c.name: (lambda c=c: loop.run_until_complete(_own_cost(c, n_own))) for c in cases},
            rounds,
        )
        cont: dict[str, list[dict[str, float]]] = {c.name: [] for c in cases}

        def contention_round(c: _Case) -> float:
            r = loop.run_until_complete(_contention(c, per_task))
            cont[c.name].append(r)
            return r["wait_p99"]

        interleaved({c.name: (lambda c=c: contention_round(c)) for c in cases}, rounds)
        for c in cases:
            loop.run_until_complete(c.closer(c.pool))
    finally:
        loop.close()
    out: dict[str, Any] = {}
    for name in own:
        rs = cont[name]
        out[name] = {
            "own_cost": summary(own[name]),
            "ops_per_s": statistics.median(r["ops_per_s"] for r in rs),
            "wait_p50": statistics.median(r["wait_p50"] for r in rs),
            "wait_p99": statistics.median(r["wait_p99"] for r in rs),
        }
    return {
        "rounds": rounds,
        "acquire_release_per_round": n_own,
        "checkouts_per_task": per_task,
        "pools": out,
    }


def run(quick: bool) -> dict[str, Any]:
    from tests.pgcluster import PgCluster

    with PgCluster() as pg:
        result = _measure(pg.dsn, quick)
    pools = result["pools"]
    ref = pools["poolscope reference"]["own_cost"]["median"]
    peers = {k: v["own_cost"]["median"] for k, v in pools.items() if k != "poolscope reference"}
    fastest_name = min(peers, key=lambda k: peers[k])
    fastest = peers[fastest_name]
    rows = []
    for name, r in pools.items():
        cost = r["own_cost"]["median"]
        rows.append(
            [
                name,
                f"{cost * 1e6:.2f} µs",
                f"{cost / ref:.2f}x",
                f"{r['ops_per_s']:,.0f}",
                f"{r['wait_p50'] * 1e3:.2f} ms",
                f"{r['wait_p99'] * 1e3:.2f} ms",
            ]
        )
    table = markdown_table(
        [
            "pool",
            "own cost per acquire+release",
            "vs reference",
            f"SELECT 1 checkouts/s ({TASKS} tasks, {POOL_SIZE} conns)",
            "wait p50",
            "wait p99",
        ],
        rows,
    )
    met = ref <= fastest
    result.update(
        {
            "machine": machine(),
            "reference_own_cost": ref,
            "fastest_peer": fastest_name,
            "fastest_peer_own_cost": fastest,
            "target_met": met,
            "markdown": table,
            "notes": (
                f"Reference pool's own cost per acquire+release: {ref * 1e6:.2f} µs vs the "
                f"fastest peer ({fastest_name}) {fastest * 1e6:.2f} µs: target "
                f"{'met' if met else 'NOT met'}. asyncpg.Pool resets each connection on "
                "release by default (a server round trip); the no-op-reset row is the "
                "like-for-like pool cost. Medians of interleaved rounds; same PostgreSQL, "
                "same SELECT 1 per checkout."
            ),
        }
    )
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2, default=str))
