"""The asyncpg adapter against a real PostgreSQL (the ``pg_dsn`` session cluster)."""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
import time
from typing import Any

import asyncpg
import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, terminate_backends, until

pytestmark = pytest.mark.timeout(60)


async def make_pool(dsn: str, name: str, *, min_size: int = 1, max_size: int = 2, **kw: Any) -> Any:
    raw = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    return ps.instrument(raw, name=name, listen=False, **kw)


async def test_counts_types_and_passthrough(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = await make_pool(pg_dsn, "ap", max_size=3)
    try:
        assert isinstance(pool, asyncpg.Pool)
        n = 0
        for i in range(5):
            async with pool.acquire() as con:
                assert isinstance(con, asyncpg.pool.PoolConnectionProxy)
                assert await con.fetchval("SELECT $1::int", i) == i
            n += 1
        for _ in range(4):
            con = await pool.acquire()
            await pool.release(con)
            n += 1
        assert await pool.fetchval("SELECT 41 + 1") == 42
        assert (await pool.fetchrow("SELECT 1 AS a"))["a"] == 1
        assert len(await pool.fetch("SELECT generate_series(1, 3)")) == 3
        assert await pool.execute("SELECT 1") == "SELECT 1"
        n += 4
        await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.01)") for _ in range(6)))
        n += 6
        # Pass-through: attributes and methods of the real pool.
        assert pool.get_max_size() == 3 and pool._maxsize == 3
        await until(lambda: len(of(events, "release")) >= n, what="releases")
        assert len(of(events, "acquire")) == n
        assert len(of(events, "release")) == n
        p = fresh_runtime.model.pools["ap"]
        assert p.acquires == n and p.releases == n
        # The first connection was opened before instrument(): adopted, not seen opening.
        assert len(of(events, "connect")) == pool.get_size() - 1
        assert all(e["conn"].startswith("c") for e in of(events, "acquire"))
    finally:
        await pool.close()
    closes = await until(lambda: of(events, "close"), what="closes")
    assert {e["reason"] for e in closes} == {"closed"}


async def test_contention_wait_covers_the_blockers_hold(
    fresh_runtime: Runtime, pg_dsn: str
) -> None:
    events = capture(fresh_runtime)
    pool = await make_pool(pg_dsn, "contend", max_size=1)
    try:
        got = asyncio.Event()
        marks: dict[str, float] = {}

        async def blocker() -> None:
            async with pool.acquire():
                got.set()
                await asyncio.sleep(0.3)
                marks["released"] = time.perf_counter()

        async def waiter() -> float:
            await got.wait()
            marks["started"] = time.perf_counter()
            async with pool.acquire():
                return time.perf_counter()

        b = asyncio.create_task(blocker(), name="blocker")
        w = asyncio.create_task(waiter(), name="waiter")
        await until(lambda: "started" in marks)
        await asyncio.sleep(0.1)
        assert pool._ps_state.waiting == 1  # the proxy counts the blocked acquirer
        await asyncio.gather(b, w)
        acquires = await until(lambda: len(of(events, "acquire")) >= 2 and of(events, "acquire"))
        waited = next(e for e in acquires if e["task"] == "waiter")["wait"]
        blocked_for = marks["released"] - marks["started"]
        assert waited >= blocked_for - 0.005, (waited, blocked_for)
        assert waited >= 0.25
    finally:
        await pool.close()


async def test_timeouts_counted_exactly(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = await make_pool(pg_dsn, "to", max_size=1)
    try:
        held = await pool.acquire()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await pool.acquire(timeout=0.05)
        await pool.release(held)
        await until(lambda: len(of(events, "release")) == 1)
        await asyncio.sleep(0.1)
        timeouts = of(events, "timeout")
        assert len(timeouts) == 3
        assert all(t["wait"] >= 0.045 for t in timeouts)
        assert fresh_runtime.model.pools["to"].timeouts == 3
        assert pool._ps_state.waiting == 0
        # Cancellation of a blocked acquirer behaves as without poolscope.
        held = await pool.acquire()
        task = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.release(held)
        assert await pool.fetchval("SELECT 2") == 2
        assert pool._ps_state.waiting == 0
    finally:
        await pool.close()


async def leaky(pool: Any) -> Any:
    return await pool.acquire()  # LEAK-SITE


async def test_leak_site_unleak_and_proven(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    pool = await make_pool(pg_dsn, "leaky", max_size=3, leak_threshold=0.3)
    src = pathlib.Path(__file__).read_text(encoding="utf-8").splitlines()
    line = next(i for i, t in enumerate(src, 1) if t.strip().endswith("# LEAK-SITE"))
    try:
        con = await asyncio.create_task(leaky(pool), name="leaker")
        leak = (await until(lambda: of(events, "leak"), what="leak"))[0]
        assert leak["stack"][0]["file"] == __file__
        assert leak["stack"][0]["line"] == line
        assert leak["stack"][0]["func"] == "leaky"
        assert leak["task"] == "leaker"
        assert leak["held"] >= 0.3
        await pool.release(con)
        unleak = (await until(lambda: of(events, "unleak"), what="unleak"))[0]
        assert unleak["conn"] == leak["conn"]
        # Abandoned: nothing but asyncpg references it any more.
        await asyncio.create_task(leaky(pool), name="abandoner")
        gc.collect()
        proven = await until(
            lambda: [e for e in of(events, "leak") if e.get("proven")], what="proven leak"
        )
        assert proven[0]["stack"][0]["line"] == line
        assert proven[0]["task"] == "abandoner"
        m = fresh_runtime.model
        assert any(lk.proven for lk in m.leaks.values())
    finally:
        pool.terminate()


async def test_terminated_backends_lost_heartbeat_and_recovery(
    fresh_runtime: Runtime, pg_dsn: str
) -> None:
    events = capture(fresh_runtime)
    beat = 0.3
    pool = await make_pool(pg_dsn, "hb", min_size=2, max_size=3, heartbeat=beat)
    try:
        await until(lambda: any(e.get("ok") for e in of(events, "heartbeat")), what="ok probe")
        size = pool.get_size()
        assert size == 2
        t0 = time.monotonic()
        killed = terminate_backends(pg_dsn)
        assert killed >= 2
        await until(
            lambda: len([e for e in of(events, "close") if e["reason"] == "lost"]) >= 2,
            timeout=beat + 2.0,
            what="lost closes",
        )
        failed = await until(
            lambda: [e for e in of(events, "heartbeat") if e.get("ok") is False],
            timeout=beat + 2.0,
            what="heartbeat failures",
        )
        assert time.monotonic() - t0 <= beat + 2.0 + 1.0
        assert len(failed) >= 2
        # Recovery: asyncpg restores its floor, probes pass, queries work.
        n_ok = len([e for e in of(events, "heartbeat") if e.get("ok")])
        await until(
            lambda: len([e for e in of(events, "heartbeat") if e.get("ok")]) > n_ok,
            timeout=3 * beat + 2,
            what="probe after recovery",
        )
        assert await pool.fetchval("SELECT 7") == 7
        # At rest, the gauges equal the pool's own API.
        await asyncio.sleep(0.2)
        n_state = len(of(events, "state"))
        await until(lambda: len(of(events, "state")) > n_state, what="fresh state")
        p = fresh_runtime.model.pools["hb"]
        # Two snapshots a moment apart (a heartbeat may hold a connection in one):
        # they agree at a state poll when nothing moves.
        await until(
            lambda: (
                (p.size, p.idle, p.in_use, p.waiting)
                == (
                    pool.get_size(),
                    pool.get_idle_size(),
                    pool.get_size() - pool.get_idle_size(),
                    0,
                )
            ),
            what="gauges equal to the pool's own API",
        )
        assert (p.max, p.min) == (3, 2)
    finally:
        await pool.close()


async def test_heartbeat_probes_its_own_connection_when_nothing_is_idle(
    fresh_runtime: Runtime, pg_dsn: str
) -> None:
    """Nothing idle: the heartbeat opens a connection of its own and closes it at once,
    at most once per interval (counted as heartbeats with ``probe: connect``)."""
    events = capture(fresh_runtime)
    pool = await make_pool(pg_dsn, "busy", max_size=1, heartbeat=0.25)
    try:
        con = await pool.acquire()
        try:
            await until(lambda: [e for e in of(events, "heartbeat") if e.get("probe")])
            t0 = time.monotonic()
            await asyncio.sleep(1.0)
            span = time.monotonic() - t0
            own = [e for e in of(events, "heartbeat") if e.get("probe") == "connect"]
            assert all(e["ok"] is True and e["conn"] == "" for e in own), own
            assert len(own) <= span / 0.25 + 2  # at most once per interval
            assert not [e for e in of(events, "heartbeat") if e.get("skipped")]
            assert not [e for e in of(events, "heartbeat") if e.get("conn")]
            assert pool.get_size() == 1  # outside the pool: it never grew
            assert not of(events, "connect")  # not one of the pool's connections
        finally:
            await pool.release(con)
        await until(lambda: [e for e in of(events, "heartbeat") if e.get("conn") and e["ok"]])
    finally:
        await pool.close()


async def test_target_is_redacted_and_create_pool(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    user_at = pg_dsn.split("//", 1)[1].split("@", 1)
    secret_dsn = f"postgresql://{user_at[0]}:hunter2secret@{user_at[1]}"
    from poolscope.instrument.asyncpg import create_pool

    pool = await create_pool(secret_dsn, name="secret", min_size=1, max_size=1, listen=False)
    try:
        assert isinstance(pool, asyncpg.Pool)
        assert await pool.fetchval("SELECT 1") == 1
        host_port_db = user_at[1]
        await until(lambda: of(events, "release"))
        target = of(events, "pool", "secret")[0]["target"]
        assert target == host_port_db
        text = json.dumps(events, default=str) + json.dumps(
            fresh_runtime.model.to_dict(), default=str
        )
        assert "hunter2secret" not in text
        assert "@" not in target and "hunter2" not in target
    finally:
        await pool.close()


async def hold_with(pool: Any, held: asyncio.Event, go: asyncio.Event) -> None:
    async with pool.acquire():  # WITH-SITE
        held.set()
        await go.wait()


@pytest.mark.parametrize("leak_threshold", [None, 30.0])
async def test_async_with_site_is_the_application_line(
    fresh_runtime: Runtime, pg_dsn: str, leak_threshold: float | None
) -> None:
    """The holders view names the ``async with pool.acquire()`` line, with leak
    detection off (one frame taken at a stated depth) and on (a stack)."""
    pool = await make_pool(pg_dsn, "with", leak_threshold=leak_threshold)
    src = pathlib.Path(__file__).read_text(encoding="utf-8").splitlines()
    line = next(i for i, t in enumerate(src, 1) if t.strip().endswith("# WITH-SITE"))
    held, go = asyncio.Event(), asyncio.Event()
    try:
        task = asyncio.create_task(hold_with(pool, held, go), name="holder")
        await held.wait()
        m = fresh_runtime.model
        holders = await until(lambda: m.holders("with"), what="holder")
        stack = m.site_stack(holders[0].site)
        assert (stack[0]["file"], stack[0]["line"]) == (__file__, line)
        assert stack[0]["func"] == "hold_with" and holders[0].task == "holder"
        go.set()
        await task
    finally:
        pool.terminate()


async def test_close_reasons_idle_timeout_versus_lost(fresh_runtime: Runtime, pg_dsn: str) -> None:
    """asyncpg's inactivity timer closes as ``idle_timeout``; a backend killed by the
    server is ``lost`` - never ``idle_timeout`` (it had not been idle that long)."""
    events = capture(fresh_runtime)
    raw = await asyncpg.create_pool(
        pg_dsn, min_size=0, max_size=1, max_inactive_connection_lifetime=0.3
    )
    pool = ps.instrument(raw, name="idle", listen=False)
    try:
        assert await pool.fetchval("SELECT 1") == 1
        closes = await until(lambda: of(events, "close", "idle"), what="inactivity close")
        assert closes[0]["reason"] == "idle_timeout"
        assert await pool.fetchval("SELECT 1") == 1  # reconnects
        await asyncio.to_thread(terminate_backends, pg_dsn)
        lost = await until(
            lambda: [e for e in of(events, "close", "idle")[1:]], what="close after terminate"
        )
        assert lost[0]["reason"] == "lost"
    finally:
        pool.terminate()
