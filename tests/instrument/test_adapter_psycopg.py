"""The psycopg_pool adapter against a real PostgreSQL: ConnectionPool and AsyncConnectionPool."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import threading
import time
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, terminate_backends, wait_sync

pytestmark = pytest.mark.timeout(60)


def make(
    dsn: str, name: str, *, heartbeat: float | None = None, lt: float = 30.0, **kw: Any
) -> Any:
    pool = ConnectionPool(dsn, open=True, **kw)
    pool.wait(10)
    return ps.instrument(pool, name=name, listen=False, heartbeat=heartbeat, leak_threshold=lt)


def test_counts_timeouts_contention_gauges(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = make(pg_dsn, "pg", min_size=1, max_size=1, timeout=5)
    try:
        n = 6
        for i in range(n - 1):
            with pool.connection() as c:
                assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        c = pool.getconn()
        for _ in range(3):
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.05)
        marks: dict[str, float] = {}

        def blocker() -> None:
            time.sleep(0.3)
            marks["released"] = time.perf_counter()
            pool.putconn(c)

        marks["started"] = time.perf_counter()
        threading.Thread(target=blocker).start()
        with pool.connection():
            pass
        wait_sync(lambda: len(of(events, "release")) >= n + 1, what="releases")
        assert len(of(events, "acquire")) == n + 1 == len(of(events, "release"))
        assert len(of(events, "timeout")) == 3
        last = of(events, "acquire")[-1]
        assert last["wait"] >= marks["released"] - marks["started"] - 0.005
        assert last["task"] == "MainThread"
        n_state = len(of(events, "state"))
        wait_sync(lambda: len(of(events, "state")) > n_state + 1)
        p, s = fresh_runtime.model.pools["pg"], pool.get_stats()
        assert (p.size, p.idle, p.waiting) == (s["pool_size"], s["pool_available"], 0)
        assert p.target == pg_dsn.split("@", 1)[1]
    finally:
        pool.close()


def leaky(pool: Any) -> Any:
    return pool.getconn()  # LEAK-SITE


def test_leak_site_and_gc_proven(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = make(pg_dsn, "pg-leak", min_size=1, max_size=3, lt=0.3)
    line = next(
        i
        for i, t in enumerate(pathlib.Path(__file__).read_text().splitlines(), 1)
        if t.strip().endswith("# LEAK-SITE")
    )
    try:
        conn = leaky(pool)
        leak = wait_sync(lambda: of(events, "leak"), what="leak")[0]
        top = leak["stack"][0]
        assert (top["file"], top["line"], top["func"]) == (__file__, line, "leaky")
        pool.putconn(conn)
        del conn  # the pool hands the same object out again below
        wait_sync(lambda: of(events, "unleak"), what="unleak")
        leaky(pool)
        gc.collect()
        proven = wait_sync(lambda: [e for e in of(events, "leak") if e.get("proven")])
        assert proven[0]["stack"][0]["line"] == line
        gone = wait_sync(lambda: [e for e in of(events, "close") if e["reason"] == "gc_leak"])
        assert gone[0]["conn"] == proven[0]["conn"]
    finally:
        pool.close()


def test_terminated_backends_heartbeat_lost_recovery(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    beat = 0.3
    pool = make(pg_dsn, "pg-hb", min_size=2, max_size=2, heartbeat=beat)
    try:
        wait_sync(lambda: [e for e in of(events, "heartbeat") if e.get("ok")], what="ok probe")
        t0 = time.monotonic()
        assert terminate_backends(pg_dsn) >= 2
        wait_sync(
            lambda: len([e for e in of(events, "close") if e["reason"] == "lost"]) >= 2,
            timeout=beat + 2.0,
            what="lost closes",
        )
        assert time.monotonic() - t0 <= beat + 2.0
        assert len([e for e in of(events, "heartbeat") if e.get("ok") is False]) >= 2
        with pool.connection() as c:
            assert c.execute("SELECT 5").fetchone() == (5,)
        n_ok = len([e for e in of(events, "heartbeat") if e.get("ok")])
        wait_sync(lambda: len([e for e in of(events, "heartbeat") if e.get("ok")]) > n_ok)
        pool.wait(5)
        n_state = len(of(events, "state"))
        wait_sync(lambda: len(of(events, "state")) > n_state + 1)
        # The heartbeat's check() takes the idle connections out to probe them, so a
        # single read of get_stats() can land mid-probe (seen: model idle 2, pool 0).
        # The claim is that the model agrees with the pool between probes.
        p = fresh_runtime.model.pools["pg-hb"]

        def agree() -> bool:
            s = pool.get_stats()
            seen.append(((p.size, p.idle), (s["pool_size"], s["pool_available"])))
            return seen[-1][0] == seen[-1][1]

        seen: list[tuple[tuple[int, int], tuple[int, int]]] = []
        try:
            wait_sync(agree, timeout=3 * beat + 2.0)
        except AssertionError:
            raise AssertionError(f"model (size, idle) vs get_stats(), last: {seen[-3:]}") from None
    finally:
        pool.close()


async def test_async_pool(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    assert ps.instrument(pool, name="apg", listen=False, heartbeat=0.2) is pool
    try:

        async def one(i: int) -> int:
            async with pool.connection() as c:
                cur = await c.execute("SELECT %s::int", (i,))
                row = await cur.fetchone()
                assert row is not None
                return int(row[0])

        assert await asyncio.gather(*(one(i) for i in range(6))) == list(range(6))
        with pytest.raises(PoolTimeout):
            held = [await pool.getconn(), await pool.getconn()]
            try:
                await pool.getconn(timeout=0.05)
            finally:
                for h in held:
                    await pool.putconn(h)
        for _ in range(60):
            if [e for e in of(events, "heartbeat") if e.get("ok")] and len(
                of(events, "release")
            ) >= 8:
                break
            await asyncio.sleep(0.05)
        assert len(of(events, "acquire")) == 8 == len(of(events, "release"))
        assert len(of(events, "timeout")) == 1
        assert all(e["task"].startswith("Task-") for e in of(events, "acquire"))
        assert [e for e in of(events, "heartbeat") if e.get("ok")]
    finally:
        await pool.close()


def test_async_pool_instrumented_before_its_loop_runs(fresh_runtime: Runtime, pg_dsn: str) -> None:
    """An AsyncConnectionPool made and instrumented at import time (no loop yet) must
    not raise, and its heartbeat starts with the first getconn inside the loop."""
    events = capture(fresh_runtime)
    pool = AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    assert ps.instrument(pool, name="apg-early", listen=False, heartbeat=0.2) is pool

    async def main() -> bool:
        await pool.open(wait=True)
        try:
            async with pool.connection() as c:
                await c.execute("SELECT 1")
            for _ in range(60):
                if [e for e in of(events, "heartbeat", "apg-early") if e.get("ok")]:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await pool.close()

    assert asyncio.run(main()), "no heartbeat from a pool instrumented before its loop"
