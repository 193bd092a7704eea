"""The reference pool's API and mechanisms that need no fault injection:
constructor checks, acquire forms, FIFO, timeouts, hooks, limits, autoscaling,
and its events reaching poolscope's model through the real instrument runtime."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from poolscope.pool import CircuitOpenError, Pool, PoolClosed, PoolError, PoolTimeout, tcp
from poolscope.pool.tcp import TcpConnection
from tests.fixtures.tcpserver import EventLog, FaultServer, eventually

pytestmark = pytest.mark.timeout(30)


class Conn:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def factory() -> Conn:
    await asyncio.sleep(0)
    return Conn()


def make(srv: FaultServer, **kw: Any) -> Pool[TcpConnection]:
    kw.setdefault("acquire_timeout", 1.0)
    return Pool(tcp.factory("127.0.0.1", srv.port), name="basics", **kw)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"min_size": -1}, "min_size"),
        ({"acquire_timeout": 0}, "acquire_timeout"),
        ({"idle_timeout": -1.0}, "idle_timeout"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"heartbeat_timeout": 0}, "heartbeat_timeout"),
        ({"backoff_base": 1.0, "backoff_cap": 0.5}, "backoff_cap"),
        ({"breaker_threshold": 0}, "breaker_threshold"),
        ({"breaker_reset": -2}, "breaker_reset"),
        ({"leak_threshold": 0}, "leak_threshold"),
        ({"reclaim_after": -1}, "reclaim_after"),
        ({"borrow_ping_skip": -0.1}, "borrow_ping_skip"),
        ({"max_idle": -1}, "max_idle"),
        ({"test_on_return": True}, "test_on_return"),
        ({"heartbeat_interval": 1.0}, "heartbeat_interval"),
        ({"autoscale": True, "autoscale_max": 2, "max_size": 5}, "autoscale_max"),
    ],
)
def test_constructor_names_the_bad_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Pool(factory, **kwargs)


def test_error_hierarchy() -> None:
    assert issubclass(PoolTimeout, PoolError) and issubclass(PoolTimeout, TimeoutError)
    assert issubclass(PoolClosed, PoolError) and issubclass(CircuitOpenError, PoolError)


async def test_acquire_forms_stats_and_timeout_message() -> None:
    pool: Pool[Conn] = Pool(factory, min_size=1, max_size=2, acquire_timeout=0.05, name="forms")
    async with pool:
        assert pool.stats()["idle"] == 1
        async with pool.acquire() as a:
            b = await pool.acquire()
            assert a is not b
            s = pool.stats()
            assert (s["size"], s["idle"], s["in_use"], s["waiting"], s["max_size"]) == (
                2,
                0,
                2,
                0,
                2,
            )
            waiter = asyncio.ensure_future(pool.acquire(timeout=5))
            await asyncio.sleep(0.01)
            assert pool.stats()["waiting"] == 1
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout) as err:
                await pool.acquire()
            assert 0.04 <= time.monotonic() - t0 < 0.5
            msg = str(err.value)
            for part in ("forms", "0.05s", "size 2/2", "in use 2", "1 waiting"):
                assert part in msg
            await pool.release(b)
            c = await waiter  # the waiter got b
            assert c is b
            await pool.release(c)
        with pytest.raises(PoolError, match="did not hand out"):
            await pool.release(Conn())
        with pytest.raises(PoolError, match="did not hand out"):
            await pool.release(a)  # twice
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_waiters_are_served_first_come_first_served() -> None:
    pool: Pool[Conn] = Pool(factory, max_size=1, acquire_timeout=5, name="fifo")
    order: list[int] = []
    async with pool:
        first = await pool.acquire()

        async def take(i: int) -> None:
            async with pool.acquire():
                order.append(i)
                await asyncio.sleep(0)

        tasks = []
        for i in range(8):
            tasks.append(asyncio.ensure_future(take(i)))
            await asyncio.sleep(0)
        await pool.release(first)
        # A newcomer arriving while others wait queues behind them.
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(take(99)))
        await asyncio.gather(*tasks)
    assert order == [*range(8), 99]


async def test_cancelled_waiter_passes_the_connection_on() -> None:
    pool: Pool[Conn] = Pool(factory, max_size=1, acquire_timeout=5, name="cancel")
    async with pool:
        held = await pool.acquire()
        w1 = asyncio.ensure_future(pool.acquire())
        w2 = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        await pool.release(held)  # handed to w1 ...
        w1.cancel()  # ... which is cancelled before it runs
        got = await asyncio.wait_for(w2, 1)
        assert got is held
        assert w1.cancelled()
        await pool.release(got)
        assert pool.stats()["idle"] == 1 and pool.stats()["size"] == 1


async def test_timed_out_waiter_at_hand_off_keeps_no_connection_from_others() -> None:
    pool: Pool[Conn] = Pool(factory, max_size=1, acquire_timeout=0.05, name="race")
    async with pool:
        for _ in range(20):
            held = await pool.acquire()
            w = asyncio.ensure_future(pool.acquire())
            await asyncio.sleep(0.045)
            await pool.release(held)
            try:
                got = await w
            except PoolTimeout:
                pass
            else:
                await pool.release(got)
            s = pool.stats()
            assert (s["size"], s["idle"], s["in_use"], s["waiting"]) == (1, 1, 0, 0)


async def test_max_idle_and_reset_hook(tcpserver: FaultServer) -> None:
    resets: list[int] = []

    async def reset(conn: TcpConnection) -> None:
        resets.append(id(conn))
        if getattr(conn, "poison", False):
            raise RuntimeError("rollback failed")

    pool = make(tcpserver, max_size=4, max_idle=2, reset=reset)
    log = EventLog(pool)
    async with pool:
        conns = [await pool.acquire() for _ in range(4)]
        conns[0].poison = True  # type: ignore[attr-defined]
        for c in conns:
            await pool.release(c)
        assert len(resets) == 4
        assert log.closes() == ["reset_failed", "max_idle"]
        assert log.of("close", reason="reset_failed")[0]["error"].endswith("rollback failed")
        assert pool.stats()["idle"] == 2


async def test_connect_failure_reaches_the_acquirer_and_frees_the_slot() -> None:
    fail = True

    async def flaky() -> Conn:
        if fail:
            raise ConnectionRefusedError("nope")
        return Conn()

    pool: Pool[Conn] = Pool(flaky, max_size=1, breaker_threshold=None, name="flaky")
    log = EventLog(pool)
    async with pool:
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()
        assert pool.stats()["size"] == 0
        assert "nope" in log.of("connect_error")[0]["error"]
        fail = False
        async with pool.acquire():
            assert pool.stats()["size"] == 1


async def test_autoscale_grows_under_pressure_and_shrinks_when_idle(
    tcpserver: FaultServer,
) -> None:
    pool = make(
        tcpserver,
        max_size=4,
        autoscale=True,
        autoscale_min=2,
        autoscale_max=8,
        autoscale_interval=0.1,
        autoscale_cooldown=0.1,
        acquire_timeout=5,
    )
    log = EventLog(pool)
    async with pool:
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                async with pool.acquire() as conn:
                    await conn.request("Q 10")

        workers = [asyncio.ensure_future(worker()) for _ in range(20)]
        await eventually(lambda: pool.max_size == 8, timeout=10)
        stop.set()
        await asyncio.gather(*workers)
        await eventually(lambda: pool.max_size == 2, timeout=10)
        assert pool.stats()["size"] <= 2
    resizes = log.of("resize")
    grows = [e for e in resizes if e["max"] > e["previous"]]
    shrinks = [e for e in resizes if e["max"] < e["previous"]]
    assert [e["max"] for e in grows] == [5, 6, 8]  # +20%, at least one, capped at 8
    assert [e["max"] for e in shrinks] == [6, 4, 3, 2]
    assert all(e["reason"].startswith("grow") for e in grows)
    assert all(e["reason"].startswith("shrink") for e in shrinks)
    assert "overflow" in log.closes()


async def test_events_reach_the_model_through_the_runtime(
    tcpserver: FaultServer, fresh_runtime: Runtime
) -> None:
    pool = make(tcpserver, max_size=2, ping=tcp.ping)
    ps.instrument(pool, name="wired", leak_threshold=5.0, heartbeat=0.03, listen=False)
    assert pool.heartbeat_interval == 0.03  # instrument(heartbeat=) turned it on
    async with pool:

        async def leaky() -> None:
            conn = await pool.acquire()  # the leak site
            await conn.request("Q 0")

        await leaky()
        gc.collect()
        async with pool.acquire():
            pass

        def resolved() -> Any:
            return [lk for lk in fresh_runtime.model.resolved_leaks if lk.pool == "wired"]

        leaks = await eventually(resolved)
        assert leaks[0].proven and leaks[0].resolution == "gc"
        assert leaks[0].stack and leaks[0].stack[0]["func"].endswith("leaky")
        assert "test_pool_basics.py" in leaks[0].stack[0]["file"]
        p = await eventually(lambda: fresh_runtime.model.pools.get("wired"))
        await eventually(lambda: p.heartbeats_ok > 0)
        assert p.closes.get("gc_leak") == 1
        # The collected connection's hold ended with it (a lost release): acquires =
        # releases + holds open.
        assert p.acquires == 2 and p.releases == 2 and p.releases_lost == 1
        assert p.config["heartbeat"] == 0.03 and p.config["max"] == 2
        assert p.config["leak_threshold"] == 5.0 and p.config["acquire_timeout"] == 1.0
