"""The SQLAlchemy adapter against a real PostgreSQL: Engine (psycopg), AsyncEngine (asyncpg)."""

from __future__ import annotations

import gc
import pathlib
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, terminate_backends, wait_sync

pytestmark = pytest.mark.timeout(60)


def url(dsn: str, driver: str = "psycopg") -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def engine(
    dsn: str, name: str, *, heartbeat: float | None = None, lt: float = 30.0, **kw: Any
) -> Any:
    eng = sa.create_engine(url(dsn), **kw)
    return ps.instrument(eng, name=name, listen=False, heartbeat=heartbeat, leak_threshold=lt)


def test_counts_and_gauges_queuepool(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    eng = engine(pg_dsn, "sa", pool_size=2, max_overflow=1)
    try:
        n = 12
        for i in range(n):
            with eng.connect() as c:
                assert c.execute(sa.text("SELECT :x"), {"x": i}).scalar() == i
        wait_sync(lambda: len(of(events, "release")) >= n, what="releases")
        assert len(of(events, "acquire")) == n == len(of(events, "release"))
        assert fresh_runtime.model.pools["sa"].target == pg_dsn.split("@", 1)[1]
        # Gauges at rest equal the pool's own API.
        n_state = len(of(events, "state"))
        wait_sync(lambda: len(of(events, "state")) > n_state + 1)
        p = fresh_runtime.model.pools["sa"]
        pool = eng.pool
        assert (p.in_use, p.idle, p.size) == (
            pool.checkedout(),
            pool.checkedin(),
            pool.checkedin() + pool.checkedout(),
        )
        assert p.max == 3
    finally:
        eng.dispose()


def test_contention_and_timeouts(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    eng = engine(pg_dsn, "sa-c", pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        got = threading.Event()
        marks: dict[str, float] = {}

        def blocker() -> None:
            with eng.connect():
                got.set()
                time.sleep(0.3)
                marks["released"] = time.perf_counter()

        t = threading.Thread(target=blocker, name="blocker")
        t.start()
        got.wait(5)
        for _ in range(3):
            with pytest.raises(sa.exc.TimeoutError, match="QueuePool limit of size 1"):
                eng.connect()
        t.join()
        wait_sync(lambda: len(of(events, "release")) >= 1)
        time.sleep(0.1)
        assert len(of(events, "timeout")) == 3
        assert fresh_runtime.model.pools["sa-c"].timeouts == 3
        # Blocked acquirer with a longer timeout: its wait covers the blocker's hold.
        eng.pool._timeout = 5.0
        got.clear()
        t = threading.Thread(target=blocker, name="blocker")
        t.start()
        got.wait(5)
        marks["started"] = time.perf_counter()
        with eng.connect():
            pass
        t.join()
        acq = wait_sync(lambda: [e for e in of(events, "acquire") if e["task"] == "MainThread"])
        assert acq[-1]["wait"] >= marks["released"] - marks["started"] - 0.005
        assert acq[-1]["wait"] >= 0.2
    finally:
        eng.dispose()


def leaky(eng: Any) -> Any:
    return eng.connect()  # LEAK-SITE


def test_leak_site_and_gc_proven(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    eng = engine(pg_dsn, "sa-leak", pool_size=2, max_overflow=0, lt=0.3)
    line = next(
        i
        for i, t in enumerate(pathlib.Path(__file__).read_text().splitlines(), 1)
        if t.strip().endswith("# LEAK-SITE")
    )
    try:
        conn = leaky(eng)
        leak = wait_sync(lambda: of(events, "leak"), what="leak")[0]
        top = leak["stack"][0]
        assert (top["file"], top["line"], top["func"]) == (__file__, line, "leaky")
        assert leak["task"] == "MainThread"
        conn.close()
        wait_sync(lambda: of(events, "unleak"), what="unleak")
        # Dropped without close: SQLAlchemy's gc hook returns it; poolscope proves the leak.
        leaky(eng)
        gc.collect()
        proven = wait_sync(lambda: [e for e in of(events, "leak") if e.get("proven")])
        assert proven[0]["stack"][0]["line"] == line
    finally:
        eng.dispose()


def test_terminated_backends_heartbeat_lost_and_recovery(
    fresh_runtime: Runtime, pg_dsn: str
) -> None:
    events = capture(fresh_runtime)
    beat = 0.3
    eng = engine(pg_dsn, "sa-hb", pool_size=2, max_overflow=0, heartbeat=beat)
    try:
        with eng.connect(), eng.connect():
            pass  # two idle connections now
        wait_sync(lambda: [e for e in of(events, "heartbeat") if e.get("ok")], what="ok probe")
        t0 = time.monotonic()
        assert terminate_backends(pg_dsn) >= 2
        wait_sync(
            lambda: len([e for e in of(events, "close") if e["reason"] == "lost"]) >= 2,
            timeout=3 * beat + 2.0,
            what="lost closes",
        )
        failed = [e for e in of(events, "heartbeat") if e.get("ok") is False]
        assert len(failed) >= 2
        assert time.monotonic() - t0 <= 3 * beat + 2.0
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT 3")).scalar() == 3
        n_ok = len([e for e in of(events, "heartbeat") if e.get("ok")])
        wait_sync(lambda: len([e for e in of(events, "heartbeat") if e.get("ok")]) > n_ok)
        n_state = len(of(events, "state"))
        wait_sync(lambda: len(of(events, "state")) > n_state + 1)
        p = fresh_runtime.model.pools["sa-hb"]
        assert (p.in_use, p.idle) == (eng.pool.checkedout(), eng.pool.checkedin())
    finally:
        eng.dispose()


def test_failed_pre_ping_is_a_heartbeat_failure(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    eng = engine(pg_dsn, "sa-pp", pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:
        with eng.connect():
            pass
        terminate_backends(pg_dsn)
        with eng.connect() as c:  # pre-ping fails, SQLAlchemy reconnects
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
        fails = wait_sync(lambda: [e for e in of(events, "heartbeat") if e.get("pre_ping")])
        assert fails[0]["ok"] is False
        lost = wait_sync(lambda: [e for e in of(events, "close") if e["reason"] == "lost"])
        assert lost[0]["conn"] == fails[0]["conn"]
    finally:
        eng.dispose()


def test_nullpool_and_staticpool_counts(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    null = engine(pg_dsn, "sa-null", poolclass=NullPool)
    static = engine(pg_dsn, "sa-static", poolclass=StaticPool)
    try:
        for eng in (null, static):
            for _ in range(3):
                with eng.connect() as c:
                    c.execute(sa.text("SELECT 1"))
        held = null.connect()
        wait_sync(lambda: len(of(events, "acquire", "sa-null")) == 4)
        n_state = len(of(events, "state", "sa-null"))
        wait_sync(lambda: len(of(events, "state", "sa-null")) > n_state + 1)
        p = fresh_runtime.model.pools["sa-null"]
        assert (p.in_use, p.size, p.idle) == (1, 1, 0)
        held.close()
        assert len(of(events, "release", "sa-static")) == 3
        assert len([e for e in of(events, "close", "sa-null") if e["reason"] == "returned"]) == 3
    finally:
        null.dispose()
        static.dispose()


async def test_async_engine(fresh_runtime: Runtime, pg_dsn: str) -> None:
    import asyncio

    events = capture(fresh_runtime)
    eng = create_async_engine(url(pg_dsn, "asyncpg"), pool_size=2, max_overflow=0)
    assert ps.instrument(eng, name="sa-async", listen=False, heartbeat=0.2) is eng
    try:

        async def one(i: int) -> int:
            async with eng.connect() as c:
                return int((await c.execute(sa.text(f"SELECT {i}"))).scalar_one())

        assert await asyncio.gather(*(one(i) for i in range(8))) == list(range(8))
        await asyncio.sleep(0.1)
        assert len(of(events, "acquire")) == 8 == len(of(events, "release"))
        tasks = {e["task"] for e in of(events, "acquire")}
        assert all(t.startswith("Task-") for t in tasks)
        ok = [e for e in of(events, "heartbeat") if e.get("ok")]
        for _ in range(40):
            if ok:
                break
            await asyncio.sleep(0.05)
            ok = [e for e in of(events, "heartbeat") if e.get("ok")]
        assert ok, "async heartbeat on the application's loop"
    finally:
        await eng.dispose()


def test_async_engine_instrumented_before_its_loop_runs(
    fresh_runtime: Runtime, pg_dsn: str
) -> None:
    """A module-level AsyncEngine is instrumented before any event loop runs: its
    heartbeat starts with the first checkout inside the application's loop."""
    import asyncio

    events = capture(fresh_runtime)
    eng = create_async_engine(url(pg_dsn, "asyncpg"), pool_size=2, max_overflow=0)
    ps.instrument(eng, name="sa-early", listen=False, heartbeat=0.2)  # no loop running

    async def main() -> list[dict[str, object]]:
        try:
            async with eng.connect() as c:
                assert (await c.execute(sa.text("SELECT 1"))).scalar_one() == 1
            for _ in range(60):
                ok = [e for e in of(events, "heartbeat", "sa-early") if e.get("ok")]
                if ok:
                    return ok
                await asyncio.sleep(0.05)
            return []
        finally:
            await eng.dispose()

    assert asyncio.run(main()), "no heartbeat from an engine instrumented before its loop"
    assert fresh_runtime.model.pools["sa-early"].heartbeats_ok >= 1


async def test_async_engine_gc_leak_proven(fresh_runtime: Runtime, pg_dsn: str) -> None:
    """An AsyncEngine connection dropped without close: SQLAlchemy's garbage-collection
    hook detaches it (it cannot check it in outside the greenlet); poolscope still
    proves the leak, from the weak reference SQLAlchemy keeps to the checked-out
    fairy, and the connection's close follows."""
    import asyncio
    import warnings

    events = capture(fresh_runtime)
    eng = create_async_engine(url(pg_dsn, "asyncpg"), pool_size=2, max_overflow=0)
    ps.instrument(eng, name="sa-async-gc", listen=False, leak_threshold=30.0)
    try:
        async with eng.connect() as c:  # a connection checked in normally: no leak
            await c.execute(sa.text("SELECT 1"))
        c = await eng.connect()
        await c.execute(sa.text("SELECT 1"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy warns about the dropped one
            del c
            gc.collect()
        for _ in range(100):
            if [e for e in of(events, "leak", "sa-async-gc") if e.get("proven")]:
                break
            await asyncio.sleep(0.02)
        proven = [e for e in of(events, "leak", "sa-async-gc") if e.get("proven")]
        assert len(proven) == 1, of(events, "leak", "sa-async-gc")
        acquired = of(events, "acquire", "sa-async-gc")
        assert proven[0]["conn"] == acquired[-1]["conn"]
        # Detached by SQLAlchemy's hook (then closed): gone from the pool, no longer held.
        closes = wait_sync(
            lambda: [
                e for e in of(events, "close", "sa-async-gc") if e["conn"] == proven[0]["conn"]
            ]
        )
        assert closes[0]["reason"] == "detached"
    finally:
        await eng.dispose()
