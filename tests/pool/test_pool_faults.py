"""The reference pool against a real loopback TCP server that stops, slows down,
stalls or drops connections: health, breaker, expiry, reclaim, leaks, close."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

from poolscope.pool import CircuitOpenError, Pool, PoolError, tcp
from poolscope.pool.tcp import TcpConnection
from tests.fixtures.tcpserver import EventLog, FaultServer, eventually

pytestmark = pytest.mark.timeout(30)


def make(srv: FaultServer, **kw: Any) -> Pool[TcpConnection]:
    kw.setdefault("acquire_timeout", 1.0)
    kw.setdefault("max_size", 3)
    kw.setdefault("breaker_threshold", None)
    return Pool(tcp.factory("127.0.0.1", srv.port, connect_timeout=0.5), name="faults", **kw)


async def test_heartbeat_healthy_suspect_down_healthy(tcpserver: FaultServer) -> None:
    pool = make(
        tcpserver,
        min_size=2,
        ping=tcp.ping,
        heartbeat_interval=0.03,
        heartbeat_timeout=0.2,
        backoff_base=0.02,
        backoff_cap=0.08,
    )
    log = EventLog(pool)
    async with pool:
        await log.wait("heartbeat", ok=True)
        await tcpserver.stop()
        await log.wait("backend", state="down", timeout=5)
        assert pool.backend_state == "down"
        # While down, probes are reconnect attempts that fail; they back off.
        await log.wait("heartbeat", ok=False, probe="connect")
        await tcpserver.restart()
        ev = await log.wait("backend", state="healthy", previous="down", timeout=5)
        assert ev["type"] == "backend"
        states = [(e["previous"], e["state"]) for e in log.of("backend")]
        assert states[:3] == [("healthy", "suspect"), ("suspect", "down"), ("down", "healthy")]
        # The dead connections were closed as lost, and the pool refills min_size.
        assert log.closes().count("lost") == 2
        await eventually(lambda: pool.stats()["idle"] == 2)
        async with pool.acquire() as conn:
            assert await conn.request("Q 0") == "OK"
        failed = log.of("heartbeat", ok=False)
        assert all(e["error"] for e in failed)


async def test_heartbeat_skips_a_busy_pool(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, max_size=1, ping=tcp.ping, heartbeat_interval=0.02)
    log = EventLog(pool)
    async with pool, pool.acquire():
        await log.wait("heartbeat", skipped=True)
    assert not log.of("heartbeat", ok=False)


async def test_slow_backend_heartbeat_times_out(tcpserver: FaultServer) -> None:
    pool = make(
        tcpserver, min_size=2, ping=tcp.ping, heartbeat_interval=0.03, heartbeat_timeout=0.05
    )
    log = EventLog(pool)
    async with pool:
        await log.wait("heartbeat", ok=True)
        tcpserver.stall(True)
        t0 = time.monotonic()
        ev = await log.wait("heartbeat", ok=False)
        assert "Timeout" in ev["error"]
        assert ev["latency"] < 0.2  # the probe gave up at its timeout
        await log.wait("backend", state="suspect")
        assert time.monotonic() - t0 < 2
        assert "invalid" in log.closes()  # an unanswered ping is not 'lost'
        tcpserver.stall(False)


async def test_tcp_ping_never_blocks_past_its_timeout(tcpserver: FaultServer) -> None:
    conn = await tcp.factory("127.0.0.1", tcpserver.port)()
    await tcp.ping(conn, timeout=0.5)
    tcpserver.stall(True)
    t0 = time.monotonic()
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):  # one class from 3.11
        await tcp.ping(conn, timeout=0.05)
    assert time.monotonic() - t0 < 0.3
    assert conn.is_closed  # out of step: broken from now on
    with pytest.raises(ConnectionError):
        await tcp.ping(conn, timeout=0.05)
    await conn.close()
    tcpserver.stall(False)
    conn = await tcp.factory("127.0.0.1", tcpserver.port)()
    tcpserver.drop()
    with pytest.raises(ConnectionError):
        await tcp.ping(conn, timeout=0.5)
    await conn.close()


async def test_breaker_opens_fails_fast_and_closes(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, breaker_threshold=2, breaker_reset=0.15)
    log = EventLog(pool)
    async with pool:
        await tcpserver.stop()
        for _ in range(2):
            with pytest.raises(OSError):
                await pool.acquire()
        assert pool.breaker_state == "open"
        attempts = len(log.of("connect_error"))
        t0 = time.monotonic()
        with pytest.raises(CircuitOpenError, match="circuit open after 2"):
            await pool.acquire()
        assert time.monotonic() - t0 < 0.05  # fast, without trying to connect
        assert len(log.of("connect_error")) == attempts
        assert log.of("acquire_error", reason="circuit_open")
        # After breaker_reset a trial connect is let through; it fails: open again.
        await asyncio.sleep(0.2)
        with pytest.raises(OSError):
            await pool.acquire()
        assert pool.breaker_state == "open"
        # Backend back; after the reset the trial succeeds and closes the breaker.
        await tcpserver.restart()
        await asyncio.sleep(0.2)
        async with pool.acquire() as conn:
            assert await conn.request("Q 0") == "OK"
        assert pool.breaker_state == "closed"
    states = [e["state"] for e in log.of("breaker")]
    assert states == ["open", "half_open", "open", "half_open", "closed"]


async def test_idle_timeout_keeps_min_size(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, min_size=1, idle_timeout=0.08, max_lifetime=None)
    log = EventLog(pool)
    async with pool:
        conns = [await pool.acquire() for _ in range(3)]
        for c in conns:
            await pool.release(c)
        assert pool.stats()["idle"] == 3
        await eventually(lambda: log.closes().count("idle_timeout") == 2)
        await asyncio.sleep(0.15)
        assert pool.stats()["size"] == 1  # min_size kept
        assert log.closes() == ["idle_timeout", "idle_timeout"]
        assert all(e["idle"] > 0.08 for e in log.of("close", reason="idle_timeout"))


async def test_max_lifetime_expires_idle_and_in_use(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, min_size=2, max_lifetime=0.12, idle_timeout=None)
    log = EventLog(pool)
    async with pool:
        held = await pool.acquire()
        await eventually(lambda: "lifetime" in log.closes())  # the idle one
        assert held is not None and not held.is_closed  # in use: never closed under the holder
        await asyncio.sleep(0.05)
        await pool.release(held)  # past its lifetime: closed on return
        await eventually(lambda: log.closes().count("lifetime") >= 2)
        await eventually(lambda: pool.stats()["size"] == 2)  # refilled to min_size
        ages = [e["age"] for e in log.of("close", reason="lifetime")]
        assert all(a >= 0.12 * 0.95 for a in ages)


async def test_reclaim_after(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, max_size=1, reclaim_after=0.1)
    log = EventLog(pool)
    async with pool:
        conn = await pool.acquire()
        ev = await log.wait("reclaim")
        assert ev["held"] > 0.1
        assert log.closes() == ["reclaimed"]
        await eventually(lambda: tcpserver.connections == 0)  # the old one is gone
        # The slot is back: another acquire gets a new connection at once.
        async with pool.acquire(timeout=0.5) as other:
            assert other is not conn
        with pytest.raises(ConnectionError):
            await conn.request("Q 0", timeout=0.5)
        await pool.release(conn)  # the holder's late release is quiet


async def test_gc_leak_is_proven_and_the_slot_recovered(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, max_size=1)
    log = EventLog(pool)
    async with pool:

        async def leaky() -> None:
            conn = await pool.acquire()
            await conn.request("Q 0")  # uses it and forgets to release

        await leaky()
        gc.collect()
        leak = await log.wait("leak")
        assert leak["proven"] is True and leak["held"] >= 0
        assert log.closes() == ["gc_leak"]
        assert pool.stats()["in_use"] == 0 and pool.stats()["size"] == 0
        async with pool.acquire(timeout=0.5) as conn:  # the slot came back
            assert await conn.request("Q 0") == "OK"
        # The leaked connection's socket was closed too (its own finalizer).
        await eventually(lambda: tcpserver.connections == 1)


async def test_close_drains_then_returns(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, min_size=1)
    log = EventLog(pool)
    await pool.open()
    conn = await pool.acquire()

    async def give_back_later() -> None:
        await asyncio.sleep(0.1)
        await pool.release(conn)

    t = asyncio.ensure_future(give_back_later())
    t0 = time.monotonic()
    await pool.close(timeout=2.0)
    assert 0.09 <= time.monotonic() - t0 < 1.0
    await t
    assert log.closes() == ["closed"]
    assert pool.stats()["size"] == 0
    with pytest.raises(PoolError, match="closed"):
        await pool.acquire()


async def test_close_abandons_after_timeout(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, min_size=2)
    log = EventLog(pool)
    await pool.open()
    held = await pool.acquire()
    before = set(asyncio.all_tasks())
    t0 = time.monotonic()
    await pool.close(timeout=0.1)
    assert 0.09 <= time.monotonic() - t0 < 1.0
    assert sorted(log.closes()) == ["abandoned", "closed"]
    assert log.of("close", reason="abandoned")[0]["held"] >= 0.1
    await eventually(lambda: tcpserver.connections == 0)  # really closed
    await pool.release(held)  # late release after close is quiet
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert not left
    assert pool.stats()["size"] == 0


async def test_validation_interval_finds_dropped_connections(tcpserver: FaultServer) -> None:
    pool = make(
        tcpserver, min_size=2, ping=tcp.ping, validation_interval=0.05, test_on_borrow=False
    )
    log = EventLog(pool)
    async with pool:
        tcpserver.drop()
        await eventually(lambda: log.closes().count("lost") == 2)
        await eventually(lambda: pool.stats()["idle"] == 2)  # refilled
        async with pool.acquire() as conn:
            assert await conn.request("Q 0") == "OK"


async def test_borrow_ping_replaces_a_dead_connection(tcpserver: FaultServer) -> None:
    pool = make(tcpserver, min_size=1, ping=tcp.ping, borrow_ping_skip=0.05)
    log = EventLog(pool)
    async with pool:
        await asyncio.sleep(0.06)
        tcpserver.drop()
        await asyncio.sleep(0.01)
        async with pool.acquire() as conn:
            assert await conn.request("Q 0") == "OK"
        assert log.closes() == ["lost"]
        # Used within borrow_ping_skip: no ping on the next borrow.
        before = tcpserver.requests
        async with pool.acquire():
            pass
        assert tcpserver.requests == before


async def test_warmup_failures_reported_not_fatal_unless_required(
    tcpserver: FaultServer,
) -> None:
    real = tcp.factory("127.0.0.1", tcpserver.port)
    calls = 0

    async def every_other() -> TcpConnection:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:
            return await tcp.factory("127.0.0.1", 1, connect_timeout=0.5)()  # refused
        return await real()

    pool = Pool(every_other, min_size=4, max_size=4, breaker_threshold=None, name="warm")
    log = EventLog(pool)
    async with pool:
        assert pool.stats()["idle"] == 2
        assert len(log.of("connect_error")) == 2
    calls = 0
    strict = Pool(every_other, min_size=4, max_size=4, warmup_required=True, name="strict")
    with pytest.raises(PoolError, match="warm-up failed: 2 of 4"):
        await strict.open()
    assert strict.stats()["size"] == 0
    await tcpserver.stop()
    down = make(tcpserver, min_size=2)
    with pytest.raises(PoolError, match="warm-up failed: 2 of 2"):
        await down.open()
