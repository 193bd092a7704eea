"""``ps.uninstrument`` restores each kind of pool exactly, against a real PostgreSQL:
hooks gone, listeners removed, proxy unwrapped, no thread or server left, and nothing
of poolscope's kept alive (gc)."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import weakref
from typing import Any

import asyncpg
import psycopg_pool
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import poolscope.instrument as ps
from poolscope.instrument.psycopg import HOOKED
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, until, wait_sync
from tests.fixtures.faults import free_port, make_pool

pytestmark = [pytest.mark.timeout(60), pytest.mark.pg]

SA_EVENTS = ("checkout", "checkin", "invalidate", "soft_invalidate", "close", "detach")


def poolscope_threads(pool: str = "") -> list[str]:
    """The runtime's thread and the pool's heartbeat and probe threads."""
    return [
        t.name
        for t in threading.enumerate()
        if t.name == "poolscope"
        or (pool and t.name.startswith((f"poolscope-heartbeat-{pool}", f"poolscope-probe-{pool}")))
    ]


def handle_ref(rt: Runtime, name: str) -> Any:
    return weakref.ref(rt.handles[name])


def assert_all_gone(rt: Runtime, ref: Any, port: int | None = None) -> None:
    """No pool, no background thread, no server, and the pool's handle collected."""
    assert rt.handles == {}
    name = ref().name if ref() is not None else ""
    wait_sync(
        lambda: not poolscope_threads(name), what=f"threads to end: {poolscope_threads(name)}"
    )
    assert rt.thread is None and rt.server is None

    def collected() -> bool:
        for _ in range(3):
            gc.collect()
        return ref() is None

    # A hook already entered when the pool was uninstrumented keeps its state until it
    # returns: psycopg_pool's worker thread may be inside the hooked _connect (a check
    # that emptied the pool grows it). So wait for in-flight calls, a few seconds at most.
    if not collected():
        try:
            wait_sync(collected, what="the pool's handle to be collected")
        except AssertionError:
            raise AssertionError(f"kept alive by {gc.get_referrers(ref())}") from None
    if port is not None:
        with socket.socket() as s, pytest.raises(OSError):
            s.connect(("127.0.0.1", port))


def sa_url(dsn: str, driver: str) -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


async def test_reference_pool(fresh_runtime: Runtime) -> None:
    port = free_port()
    raw = make_pool("ref")
    async with raw:
        pool = ps.instrument(raw, heartbeat=0.05, listen=f"127.0.0.1:{port}")
        assert pool is raw and pool._handle is not None and pool.heartbeat_interval == 0.05
        ref = handle_ref(fresh_runtime, "ref")
        async with pool.acquire():
            pass
        assert ps.uninstrument(pool) is raw
        assert raw._handle is None and raw.name == "ref" and raw.heartbeat_interval is None
        await asyncio.sleep(0.1)
        assert not [t for t in raw._tasks if "heartbeat" in repr(t.get_coro())]
        async with pool.acquire():  # still a working pool
            pass
        assert_all_gone(fresh_runtime, ref, port)
        assert ps.uninstrument(raw) is raw  # again: a no-op


async def test_asyncpg_proxy_unwrapped(fresh_runtime: Runtime, pg_dsn: str) -> None:
    events = capture(fresh_runtime)
    raw = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        connect_before = raw._connect
        pool = ps.instrument(raw, name="apg", heartbeat=0.05, listen=False)
        assert pool is not raw and isinstance(pool, asyncpg.Pool)
        ref = handle_ref(fresh_runtime, "apg")
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT 1") == 1
        await until(lambda: of(events, "heartbeat"), what="a heartbeat")
        raws = [h._con for h in raw._holders if h._con is not None]
        assert raws and all(c._termination_listeners for c in raws)
        assert ps.uninstrument(pool) is raw
        assert raw._connect is connect_before
        assert all(not c._termination_listeners for c in raws)
        await asyncio.sleep(0.15)
        names = [t.get_name() for t in asyncio.all_tasks()]
        assert "poolscope-heartbeat" not in names
        n = len(events)
        async with raw.acquire() as con:
            assert await con.fetchval("SELECT 2") == 2
        del pool, con
        assert_all_gone(fresh_runtime, ref)
        assert len(events) == n
    finally:
        await raw.close()


def test_sqlalchemy_engine(fresh_runtime: Runtime, pg_dsn: str) -> None:
    eng = sa.create_engine(sa_url(pg_dsn, "psycopg"), pool_size=2, pool_pre_ping=True)
    pool = eng.pool
    before = {ev: len(getattr(pool.dispatch, ev)) for ev in SA_EVENTS}
    creator = pool._invoke_creator
    try:
        assert ps.instrument(eng, name="sae", heartbeat=0.05, listen=False) is eng
        ref = handle_ref(fresh_runtime, "sae")
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        assert "poolscope-heartbeat-sae" in poolscope_threads("sae")
        assert "_do_get" in vars(pool) and "_do_ping_w_event" in vars(eng.dialect)
        assert ps.uninstrument(eng) is eng
        assert {ev: len(getattr(pool.dispatch, ev)) for ev in SA_EVENTS} == before
        assert "_do_get" not in vars(pool) and "_do_ping_w_event" not in vars(eng.dialect)
        assert pool._invoke_creator is creator
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT 3")).scalar() == 3
        assert_all_gone(fresh_runtime, ref)
    finally:
        eng.dispose()


async def test_sqlalchemy_async_engine(fresh_runtime: Runtime, pg_dsn: str) -> None:
    eng = create_async_engine(sa_url(pg_dsn, "asyncpg"), pool_size=2)
    pool = eng.sync_engine.pool
    try:
        assert ps.instrument(eng, name="saa", heartbeat=0.05, listen=False) is eng
        ref = handle_ref(fresh_runtime, "saa")
        async with eng.connect() as c:
            await c.execute(sa.text("SELECT 1"))
        await asyncio.sleep(0.12)
        assert "poolscope-heartbeat" in [t.get_name() for t in asyncio.all_tasks()]
        assert ps.uninstrument(eng) is eng
        await asyncio.sleep(0.12)
        assert "poolscope-heartbeat" not in [t.get_name() for t in asyncio.all_tasks()]
        assert len(pool.dispatch.checkout) == 0 and "_do_get" not in vars(pool)
        async with eng.connect() as c:
            assert (await c.execute(sa.text("SELECT 4"))).scalar() == 4
        assert_all_gone(fresh_runtime, ref)
    finally:
        await eng.dispose()


def test_psycopg_pool(fresh_runtime: Runtime, pg_dsn: str) -> None:
    pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True)
    try:
        assert ps.instrument(pool, name="pgp", heartbeat=0.05, listen=False) is pool
        ref = handle_ref(fresh_runtime, "pgp")
        with pool.connection() as c:
            c.execute("SELECT 1")
        assert all(attr in vars(pool) for attr in HOOKED)
        assert ps.uninstrument(pool) is pool
        assert not any(attr in vars(pool) for attr in HOOKED)
        with pool.connection() as c:
            assert c.execute("SELECT 5").fetchone() == (5,)
        assert_all_gone(fresh_runtime, ref)
    finally:
        pool.close()


async def test_psycopg_async_pool(fresh_runtime: Runtime, pg_dsn: str) -> None:
    pool = psycopg_pool.AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        ps.instrument(pool, name="pga", heartbeat=0.05, listen=False)
        ref = handle_ref(fresh_runtime, "pga")
        async with pool.connection() as c:
            await c.execute("SELECT 1")
        assert ps.uninstrument(pool) is pool
        assert not any(attr in vars(pool) for attr in HOOKED)
        await asyncio.sleep(0.12)
        assert "poolscope-heartbeat" not in [t.get_name() for t in asyncio.all_tasks()]
        assert_all_gone(fresh_runtime, ref)
    finally:
        await pool.close()


async def test_explicit_serve_keeps_the_server_and_a_new_pool_restarts_it(
    fresh_runtime: Runtime,
) -> None:
    port = free_port()
    first = make_pool("one")
    async with first:
        ps.instrument(first, listen=f"127.0.0.1:{port}")
        ps.uninstrument(first)
        assert fresh_runtime.thread is None
        # A later instrument() starts afresh (thread and server).
        second = make_pool("two")
        async with second:
            ps.instrument(second, listen=f"127.0.0.1:{port}")
            assert fresh_runtime.thread is not None and fresh_runtime.server is not None
            ep = ps.serve()
            ps.uninstrument(second)
            time.sleep(0.05)
            assert fresh_runtime.thread is not None  # serve() was explicit: stays
            with socket.create_connection((ep.host, ep.port), timeout=2) as s:
                assert b'"hello"' in s.recv(4096)
