"""The reference pool: its options, observation (stats, config) and lifecycle (open,
close), assembled from parts with one job each, as psycopg_pool splits its pools:

* ``config.py`` - every option checked in one place;
* ``records.py`` - the record of one connection and its states;
* ``base.py`` - bookkeeping: open, hand back, retire and ping records;
* ``handoff.py`` - acquire (fast path, FIFO waiters, timeouts) and release;
* ``maintenance.py`` - housekeeping: expiry, reclaim, validation, refill, autoscale;
* ``heartbeat.py`` - probes that drive the backend state (``health.py``).

Standard library only. Connections come from an async ``factory`` and are closed
with their own ``close()`` (awaited when it returns an awaitable). Every decision
the pool takes is an event through the attached instrument handle, so the
dashboard can say *why* (see ``_emit`` call sites; close reasons are distinct).

Design choices worth knowing:

* **Hand-off.** A released connection goes straight to the oldest waiter's
  future; a freed slot (a connection closed) is granted to the oldest waiter,
  who opens a connection in it. So waiters are served first-come first-served.
  A waiter cancelled, or timed out, after a connection or slot was handed to it
  passes it on before it leaves (the bug class of asyncpg #467/#955).
* **Hot path.** ``acquire`` with an idle connection and no waiters, and a
  plain ``release``, touch only a deque, a dict and the connection's record
  (``_Conn``, one per connection, reused for every checkout); no allocation
  besides what the instrument handle does.
* **Garbage-collected while checked out.** The application gets the raw
  connection, not a proxy. While it is checked out the pool keeps only a weak
  reference to it (``_Conn.wref``, made once per connection with a callback);
  idle, the record holds it strongly. When the holder drops a connection
  without releasing it, the callback fires, and on the pool's loop the pool
  reports a proven ``leak`` and a ``close`` with reason ``gc_leak`` and frees
  the slot. The pool can no longer close such a connection; the connection's
  own finalizer does (``tcp.TcpConnection`` aborts its transport, asyncpg's
  ``Connection`` terminates). Connections that cannot be weakly referenced are
  held strongly and simply never reported this way.
* **Background work** (housekeeping: idle/lifetime expiry, idle validation,
  reclaim, ``min_size`` refill, autoscaling; and the heartbeat) runs as tasks
  of the pool on the application's loop, created by ``open()`` and cancelled
  and awaited by ``close()``; closing connections in the background is tracked
  too, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from poolscope.pool import breaker as _breaker
from poolscope.pool import health as _health
from poolscope.pool.autoscale import Autoscaler
from poolscope.pool.config import check_options
from poolscope.pool.errors import PoolClosed, PoolError
from poolscope.pool.handoff import HandOff
from poolscope.pool.heartbeat import Heartbeat
from poolscope.pool.maintenance import Maintenance
from poolscope.pool.records import C, Factory, Hook, _clock, _Conn, _err

if TYPE_CHECKING:
    from poolscope.instrument.recorder import PoolHandle

__all__ = ["Pool"]

log = logging.getLogger("poolscope.pool")

_names = itertools.count(1)


class Pool(HandOff[C], Maintenance[C], Heartbeat[C]):
    """An asyncio connection pool. See the module docstring and ``docs/pool.md``.

    Limits: ``min_size`` connections kept open (warmed up by ``open()``),
    ``max_size`` at most, ``max_idle`` idle at most (None: no limit).
    Lifecycle: ``idle_timeout``, ``max_lifetime`` (minus up to ``lifetime_jitter``
    of it, at random), ``reset`` run on release, ``ping`` for validation:
    ``test_on_borrow`` (default: on when ``ping`` is given; skipped for a
    connection used within ``borrow_ping_skip`` seconds), ``test_on_return``,
    and idle validation every ``validation_interval``. Health: ``heartbeat_interval``
    / ``heartbeat_timeout``, reconnect back-off ``backoff_base``..``backoff_cap``,
    circuit breaker ``breaker_threshold`` / ``breaker_reset``. Leaks:
    ``leak_threshold`` (reported by poolscope.instrument), ``reclaim_after``.
    ``autoscale`` moves ``max_size`` within ``[autoscale_min, autoscale_max]``.
    """

    kind = "poolscope"

    def __init__(
        self,
        factory: Factory[C],
        *,
        min_size: int = 0,
        max_size: int = 10,
        acquire_timeout: float | None = 5.0,
        idle_timeout: float | None = 600.0,
        max_lifetime: float | None = 1800.0,
        lifetime_jitter: float = 0.05,
        max_idle: int | None = None,
        ping: Hook[C] | None = None,
        reset: Hook[C] | None = None,
        reset_timeout: float = 5.0,
        test_on_borrow: bool | None = None,
        test_on_return: bool = False,
        validation_interval: float | None = None,
        validation_timeout: float = 2.0,
        borrow_ping_skip: float = 0.5,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 2.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 10.0,
        breaker_threshold: int | None = 5,
        breaker_reset: float = 5.0,
        leak_threshold: float | None = None,
        reclaim_after: float | None = None,
        warmup_required: bool = False,
        autoscale: bool = False,
        autoscale_min: int | None = None,
        autoscale_max: int | None = None,
        autoscale_interval: float = 5.0,
        autoscale_cooldown: float = 10.0,
        maintenance_interval: float | None = None,
        close_timeout: float | None = 10.0,
        name: str | None = None,
        target: str = "",
    ) -> None:
        lo, hi = check_options(locals())  # before any other local is bound

        self._factory = factory
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.lifetime_jitter = lifetime_jitter
        self.max_idle = max_idle
        self.ping = ping
        self.reset = reset
        self.reset_timeout = reset_timeout
        self.test_on_borrow = bool(ping is not None if test_on_borrow is None else test_on_borrow)
        self.test_on_return = test_on_return
        self.validation_interval = validation_interval
        self.validation_timeout = validation_timeout
        self.borrow_ping_skip = borrow_ping_skip
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.leak_threshold = leak_threshold
        self.reclaim_after = reclaim_after
        self.warmup_required = warmup_required
        self.autoscale = autoscale
        self.autoscale_interval = autoscale_interval
        self.close_timeout = close_timeout
        self.name = name or f"pool-{next(_names)}"
        self.target = target
        self._maintenance_interval = maintenance_interval
        self._rng = random.Random()

        self._idle: deque[_Conn[C]] = deque()
        self._in_use: dict[int, _Conn[C]] = {}  # id(raw) -> record
        self._reclaimed: dict[int, _Conn[C]] = {}  # reclaimed, not yet released by the holder
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._size = 0  # open connections plus those being opened (slots taken)
        self._connecting = 0
        self._busy = 0  # records in state _BUSY: validation, reset, heartbeat, hand-over
        self._acquiring = 0  # acquires on the slow path (close() waits for them too)
        self._closed = False
        self._opened = False
        self._gate = False  # True when acquire must look closer: closed or breaker not closed
        self._handle: PoolHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Future[None] | None = None
        self._close_done: asyncio.Future[None] | None = None
        self._self_ref = weakref.ref(self)
        # Counters (read by stats() and the autoscaler).
        self._n_acquires = 0
        self._n_waited = 0
        self._n_timeouts = 0
        self._breaker = _breaker.CircuitBreaker(
            self.name, breaker_threshold, breaker_reset, self._on_breaker
        )
        self._backend = _health.Backend(self._on_backend, backoff_base, backoff_cap, self._rng)
        self._autoscaler = Autoscaler(lo, hi, autoscale_cooldown) if autoscale else None
        self._plain_release = reset is None and not test_on_return

    def stats(self) -> dict[str, Any]:
        """The pool's own gauges and counters.

        ``size`` counts open connections plus those being opened; ``idle`` and
        ``in_use`` are what they say; connections the pool is validating,
        resetting or handing over are in ``size`` but neither idle nor in use.
        """
        return {
            "size": self._size,
            "idle": len(self._idle),
            "in_use": len(self._in_use),
            "waiting": sum(1 for w in self._waiters if not w.done()),
            "max_size": self.max_size,
            "min_size": self.min_size,
            "connecting": self._connecting,
            "busy": self._busy,
            "backend": self._backend.state,
            "breaker": self._breaker.state,
            "acquires": self._n_acquires,
            "waited": self._n_waited,
            "timeouts": self._n_timeouts,
        }

    def config(self) -> dict[str, Any]:
        """The configuration as the ``pool`` event carries it."""
        return {
            "min": self.min_size,
            "max": self.max_size,
            "max_idle": self.max_idle,
            "acquire_timeout": self.acquire_timeout,
            "idle_timeout": self.idle_timeout,
            "max_lifetime": self.max_lifetime,
            "leak_threshold": self.leak_threshold,
            "reclaim_after": self.reclaim_after,
            "heartbeat": self.heartbeat_interval,
            "heartbeat_timeout": self.heartbeat_timeout,
            "validation_interval": self.validation_interval,
            "test_on_borrow": self.test_on_borrow,
            "test_on_return": self.test_on_return,
            "borrow_ping_skip": self.borrow_ping_skip,
            "breaker_threshold": self._breaker.threshold,
            "breaker_reset": self._breaker.reset,
            "autoscale": self.autoscale,
            "autoscale_min": self._autoscaler.low if self._autoscaler else None,
            "autoscale_max": self._autoscaler.high if self._autoscaler else None,
        }

    @property
    def backend_state(self) -> str:
        return self._backend.state

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    @property
    def closed(self) -> bool:
        return self._closed

    def _attach(self, handle: PoolHandle) -> None:
        """Called by ``poolscope.instrument.instrument``: start emitting events."""
        self._handle = handle
        self._breaker.name = self.name

    def _on_breaker(self, state: str, previous: str, failures: int, error: str) -> None:
        self._gate = self._closed or state != _breaker.CLOSED
        self._emit("breaker", state=state, previous=previous, failures=failures, error=error)
        if state == _breaker.OPEN:
            log.warning("pool %s: circuit open after %d connect failures", self.name, failures)

    def _on_backend(self, state: str, previous: str, error: str) -> None:
        self._emit("backend", state=state, previous=previous, error=error)

    async def open(self) -> None:
        """Warm up: open ``min_size`` connections concurrently and ping them.

        Failures are reported (events) and tolerated unless none succeeds or
        ``warmup_required`` is set; then ``PoolError`` is raised and the pool is
        left as it was before ``open()``.
        """
        if self._opened:
            return
        if self._closed:
            raise PoolClosed(f"pool {self.name} is closed")
        self._opened = True
        self._loop = asyncio.get_running_loop()
        need = self.min_size
        if need:
            results = await asyncio.gather(
                *(self._open_one(validate=True) for _ in range(need)), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors and (self.warmup_required or len(errors) == need):
                for rec in list(self._idle):
                    self._idle.remove(rec)
                    self._retire(rec, "closed")
                await self._await_closers()
                self._opened = False
                raise PoolError(
                    f"pool {self.name}: warm-up failed: {len(errors)} of {need} connections "
                    f"could not be opened: {_err(errors[0])}"
                ) from errors[0]
            if errors:
                log.warning(
                    "pool %s: warm-up opened %d of %d connections: %s",
                    self.name,
                    need - len(errors),
                    need,
                    _err(errors[0]),
                )
        loop = self._loop
        self._tasks.append(loop.create_task(self._housekeeper()))
        if self.heartbeat_interval is not None:
            self._tasks.append(loop.create_task(self._heartbeat_loop()))

    async def __aenter__(self) -> Pool[C]:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop new acquires (``PoolClosed``), wait up to ``timeout`` (default
        ``close_timeout``) for connections in use to come back, then close
        everything, reporting any connection it had to abandon (close reason
        ``abandoned``). Background tasks are cancelled and awaited."""
        if self._close_done is not None:
            await asyncio.shield(self._close_done)
            return
        loop = asyncio.get_running_loop()
        self._close_done = loop.create_future()
        try:
            await self._close(timeout if timeout is not None else self.close_timeout)
        finally:
            self._close_done.set_result(None)

    async def _close(self, timeout: float | None) -> None:
        self._closed = True
        self._gate = True
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(PoolClosed(f"pool {self.name} is closed"))
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        while self._idle:
            self._retire(self._idle.popleft(), "closed")
        if self._in_use or self._busy or self._acquiring:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            self._drained = None
        if self._in_use:
            log.warning(
                "pool %s: closing with %d connections still in use (abandoned)",
                self.name,
                len(self._in_use),
            )
            for rec in list(self._in_use.values()):
                del self._in_use[rec.key]
                self._retire(rec, "abandoned", held=_clock() - rec.acquired_at)
        self._reclaimed.clear()
        await self._await_closers()

    async def _await_closers(self) -> None:
        while self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)
