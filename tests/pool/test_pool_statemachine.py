"""Property-based stateful test of the reference pool's accounting.

Random interleavings of acquire, release, discard, cancel, timeout, connection
death and factory failure, on an event loop whose clock jumps ahead whenever
nothing is ready (so acquire timeouts cost no real time). After every step, at
quiescence: never more than ``max_size`` connections open, none lost or handed
to two holders, waiters served in arrival order, ``stats()`` equal to the truth;
after ``close()`` every connection is closed and no task is left.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from poolscope.pool import Pool, PoolClosed, PoolTimeout
from poolscope.pool import records as _records

_REAL_CLOCK = _records._clock

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses


class _SkipSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never sleeps: when nothing is ready, it moves the loop's clock to the next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or self.loop is None:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing ready and no timer pending")
        self.loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        sel = _SkipSelector()
        super().__init__(sel)
        sel.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.alive = True
        self.closed = False

    def close(self) -> Any:
        # The close starts now (the count of open connections drops at once); the
        # awaitable exercises the pool's background closers.
        assert not self.closed, "closed twice"
        self.closed = True
        return asyncio.sleep(0)


class World:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.conns: list[FakeConn] = []
        self.connecting = 0
        self.failing = False
        self.peak = 0

    def open_count(self) -> int:
        return sum(1 for c in self.conns if not c.closed)

    async def factory(self) -> FakeConn:
        self.connecting += 1
        self.peak = max(self.peak, self.connecting + self.open_count())
        try:
            await asyncio.sleep(0)
            if self.failing:
                raise ConnectionRefusedError("backend refuses")
            c = FakeConn(len(self.conns))
            self.conns.append(c)
            return c
        finally:
            self.connecting -= 1

    async def ping(self, c: FakeConn) -> None:
        await asyncio.sleep(0)
        if not c.alive:
            raise ConnectionResetError("dead")


class Acq:
    def __init__(self, n: int) -> None:
        self.n = n  # arrival order
        self.task: asyncio.Task[None] | None = None
        self.conn: FakeConn | None = None
        self.outcome = "pending"


def _pool_modules() -> list[Any]:
    """The pool's modules that read its clock (each imported ``_clock`` by name)."""
    return [
        m
        for name, m in sorted(sys.modules.items())
        if name.startswith("poolscope.pool") and getattr(m, "_clock", None) is _REAL_CLOCK
    ]


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualClockLoop()
        self.acqs: list[Acq] = []
        self.held: list[Acq] = []
        # The pool measures deadlines on its own clock and arms timers on the loop's.
        # Left on the real clock, whether a waiter's deadline has passed when it is
        # handed a slot depended on how fast the machine ran the steps (a flaky
        # example). Here the pool's clock is the virtual one plus ``lag``, which a rule
        # advances without firing timers: a loop late to fire them, explored on purpose.
        self.lag = 0.0
        self._patched = _pool_modules()
        for m in self._patched:
            m._clock = self.clock

    def clock(self) -> float:
        return self.loop.now + self.lag

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    @initialize(
        max_size=st.integers(1, 4),
        min_size=st.integers(0, 2),
        test_on_borrow=st.booleans(),
        test_on_return=st.booleans(),
    )
    def setup(
        self, max_size: int, min_size: int, test_on_borrow: bool, test_on_return: bool
    ) -> None:
        min_size = min(min_size, max_size)
        self.world = World(max_size)
        self.pool: Pool[FakeConn] = Pool(
            self.world.factory,
            min_size=min_size,
            max_size=max_size,
            acquire_timeout=0.05,
            idle_timeout=None,
            max_lifetime=None,
            ping=self.world.ping,
            test_on_borrow=test_on_borrow,
            test_on_return=test_on_return,
            borrow_ping_skip=0.0,
            breaker_threshold=None,
            name="sm",
        )
        self.run(self.pool.open())

    # -- rules ---------------------------------------------------------------------
    @rule(timeout=st.sampled_from([0.05, 0.2]))
    def acquire(self, timeout: float) -> None:
        a = Acq(len(self.acqs))
        self.acqs.append(a)

        async def go() -> None:
            try:
                a.conn = await self.pool.acquire(timeout=timeout)
            except PoolTimeout:
                a.outcome = "timeout"
            except ConnectionRefusedError:
                a.outcome = "factory_error"
            except PoolClosed:
                a.outcome = "closed"
            except asyncio.CancelledError:
                a.outcome = "cancelled"
                raise
            else:
                a.outcome = "ok"
                self.held.append(a)

        async def start() -> None:
            a.task = asyncio.ensure_future(go())
            await self.settle()

        self.run(start())

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 100), dead=st.booleans())
    def release(self, i: int, dead: bool) -> None:
        a = self.held.pop(i % len(self.held))
        assert a.conn is not None
        if dead:
            a.conn.alive = False  # the connection died while held

        async def go() -> None:
            assert a.conn is not None
            await self.pool.release(a.conn)
            await self.settle()

        a.outcome = "released"
        self.run(go())

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 100))
    def discard(self, i: int) -> None:
        a = self.held.pop(i % len(self.held))

        async def go() -> None:
            assert a.conn is not None
            await self.pool.discard(a.conn)
            await self.settle()

        a.outcome = "discarded"
        self.run(go())

    @precondition(lambda self: any(a.outcome == "pending" for a in self.acqs))
    @rule(i=st.integers(0, 100))
    def cancel_waiter(self, i: int) -> None:
        pending = [a for a in self.acqs if a.outcome == "pending"]
        a = pending[i % len(pending)]
        assert a.task is not None
        a.task.cancel()
        self.run(self.settle())

    @precondition(lambda self: self.held and any(a.outcome == "pending" for a in self.acqs))
    @rule(i=st.integers(0, 100))
    def release_then_cancel_oldest_waiter(self, i: int) -> None:
        # The hand-off race: the connection is handed to the oldest waiter, which is
        # cancelled before it resumes; it must pass the connection on, not lose it.
        a = self.held.pop(i % len(self.held))
        oldest = min((x for x in self.acqs if x.outcome == "pending"), key=lambda x: x.n)

        async def go() -> None:
            assert a.conn is not None and oldest.task is not None
            await self.pool.release(a.conn)
            oldest.task.cancel()
            await self.settle()

        a.outcome = "released"
        self.run(go())

    @rule()
    def let_time_pass(self) -> None:
        self.run(asyncio.sleep(0.3))  # virtual: every pending acquire times out
        self.run(self.settle())

    @rule(dt=st.sampled_from([0.01, 0.06, 0.3]))
    def loop_fires_timers_late(self, dt: float) -> None:
        self.lag += dt  # the pool's clock moves on; the loop's timers have not fired yet

    @rule(i=st.integers(0, 100))
    def kill_idle_connection(self, i: int) -> None:
        held = {id(a.conn) for a in self.held}
        idle = [c for c in self.world.conns if not c.closed and id(c) not in held]
        if idle:
            idle[i % len(idle)].alive = False

    @rule(on=st.booleans())
    def factory_fails(self, on: bool) -> None:
        self.world.failing = on

    # -- invariants ----------------------------------------------------------------
    @invariant()
    def never_more_than_max_open(self) -> None:
        assert self.world.peak <= self.pool.max_size
        assert self.world.open_count() <= self.pool.max_size

    @invariant()
    def none_lost_or_shared(self) -> None:
        held = [a.conn for a in self.held]
        assert len({id(c) for c in held}) == len(held), "one connection, two holders"
        assert all(c is not None and not c.closed for c in held)
        idle = [r.raw for r in self.pool._idle]
        assert len({id(c) for c in idle}) == len(idle)
        assert not ({id(c) for c in idle} & {id(c) for c in held}), "idle and held at once"
        open_ = {id(c) for c in self.world.conns if not c.closed}
        # Every open connection is either idle or held: none lost.
        assert open_ == {id(c) for c in idle} | {id(c) for c in held}

    @invariant()
    def stats_equal_truth(self) -> None:
        s = self.pool.stats()
        pending = sum(1 for a in self.acqs if a.outcome == "pending")
        assert s["in_use"] == len(self.held)
        assert s["size"] == self.world.open_count()
        assert s["idle"] == self.world.open_count() - len(self.held)
        assert s["waiting"] == pending
        assert s["busy"] == 0 and s["connecting"] == 0
        assert s["size"] <= s["max_size"]

    @invariant()
    def waiters_served_in_order(self) -> None:
        pending = [a.n for a in self.acqs if a.outcome == "pending"]
        if pending:
            first_pending = min(pending)
            served_later = [
                a.n
                for a in self.acqs
                if a.n > first_pending and a.outcome in ("ok", "released", "discarded")
            ]
            assert not served_later, f"{served_later} served while {first_pending} waits"

    def teardown(self) -> None:
        try:
            self._finish()
        finally:
            for m in self._patched:
                m._clock = _REAL_CLOCK

    def _finish(self) -> None:
        if not hasattr(self, "pool"):
            self.loop.close()
            return

        async def finish() -> None:
            for a in self.held:
                assert a.conn is not None
                await self.pool.release(a.conn)
            self.held.clear()
            await self.pool.close(timeout=1.0)
            await self.settle()

        try:
            self.run(finish())
            assert all(c.closed for c in self.world.conns), "a connection left open"
            assert self.pool.stats()["size"] == 0
            left = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            assert not left, f"tasks left after close(): {left}"
            assert all(a.outcome != "pending" for a in self.acqs)
        finally:
            self.loop.close()


PoolMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("POOL_SM_EXAMPLES", "200")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolStateMachine = PoolMachine.TestCase
