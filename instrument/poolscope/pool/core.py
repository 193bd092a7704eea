"""The reference pool's core: limits, FIFO hand-off, lifecycle, health, events.

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
import inspect
import itertools
import logging
import math
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from poolscope.pool import breaker as _breaker
from poolscope.pool import health as _health
from poolscope.pool.autoscale import Autoscaler
from poolscope.pool.errors import CircuitOpenError, PoolClosed, PoolError, PoolTimeout

if TYPE_CHECKING:
    from poolscope.instrument.recorder import PoolHandle

log = logging.getLogger("poolscope.pool")

C = TypeVar("C")
Factory = Callable[[], Awaitable[C]]
Hook = Callable[[C], Awaitable[Any]]

_clock = time.perf_counter
_ids = itertools.count(1)
_names = itertools.count(1)

# Connection record states.
_IDLE = 0  # in the idle deque, strongly held
_OUT = 1  # checked out; weakly held when possible
_BUSY = 2  # held by the pool outside the idle deque: hand-off, validation, reset
_CLOSED = 3
_RECLAIMED = 4  # forcibly closed while checked out; the holder may still release it

_SLOT = object()  # a waiter's future result: a slot was freed for you, open a connection
_EXPIRED = object()  # a waiter's future result: your acquire timed out

#: Errors that mean the peer is gone (close reason ``lost``) rather than unhealthy.
_LOST_ERRORS = (ConnectionError, EOFError, asyncio.IncompleteReadError, BrokenPipeError)


def _err(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _checked_at(rec: _Conn[Any]) -> float:
    return rec.checked


def _close_reason(exc: BaseException) -> str:
    return "lost" if isinstance(exc, _LOST_ERRORS) else "invalid"


class _Conn(Generic[C]):
    """The pool's record of one connection, reused for each of its checkouts."""

    __slots__ = (
        "acquired_at",
        "checked",
        "created",
        "expires",
        "id",
        "key",
        "last_used",
        "raw",
        "state",
        "uses",
        "wref",
    )

    def __init__(self, raw: C, expires: float) -> None:
        self.raw: C | None = raw
        self.id = next(_ids)
        self.key = id(raw)
        self.created = self.last_used = self.checked = _clock()
        self.expires = expires
        self.acquired_at = 0.0
        self.state = _BUSY
        self.uses = 0
        self.wref: weakref.ref[Any] | None = None

    def get(self) -> C | None:
        """The raw connection, whether held strongly or weakly (None once collected)."""
        if self.raw is not None:
            return self.raw
        w = self.wref
        return w() if w is not None else None


def _check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a positive number, got None")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"{name} must be a positive number{' or None' * allow_none}, got {value!r}"
        )


class Pool(Generic[C]):
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
        if not callable(factory):
            raise TypeError(f"factory must be an async callable, got {factory!r}")
        for iname, ival in (("max_size", max_size), ("min_size", min_size)):
            if isinstance(ival, bool) or not isinstance(ival, int):
                raise ValueError(f"{iname} must be an int, got {ival!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if min_size < 0 or min_size > max_size:
            raise ValueError(
                f"min_size must be between 0 and max_size ({max_size}), got {min_size}"
            )
        if max_idle is not None and max_idle < 0:
            raise ValueError(f"max_idle must be >= 0 or None, got {max_idle}")
        for pname, pval in (
            ("acquire_timeout", acquire_timeout),
            ("idle_timeout", idle_timeout),
            ("max_lifetime", max_lifetime),
            ("validation_interval", validation_interval),
            ("heartbeat_interval", heartbeat_interval),
            ("leak_threshold", leak_threshold),
            ("reclaim_after", reclaim_after),
            ("maintenance_interval", maintenance_interval),
            ("close_timeout", close_timeout),
        ):
            _check_positive(pname, pval)
        for pname, pval in (
            ("reset_timeout", reset_timeout),
            ("validation_timeout", validation_timeout),
            ("heartbeat_timeout", heartbeat_timeout),
            ("backoff_base", backoff_base),
            ("backoff_cap", backoff_cap),
            ("breaker_reset", breaker_reset),
            ("autoscale_interval", autoscale_interval),
        ):
            _check_positive(pname, pval, allow_none=False)
        if backoff_cap < backoff_base:
            raise ValueError(
                f"backoff_cap ({backoff_cap}) must be >= backoff_base ({backoff_base})"
            )
        if borrow_ping_skip < 0:
            raise ValueError(f"borrow_ping_skip must be >= 0, got {borrow_ping_skip}")
        if autoscale_cooldown < 0:
            raise ValueError(f"autoscale_cooldown must be >= 0, got {autoscale_cooldown}")
        if not 0 <= lifetime_jitter < 1:
            raise ValueError(f"lifetime_jitter must be in [0, 1), got {lifetime_jitter}")
        if breaker_threshold is not None and (
            isinstance(breaker_threshold, bool)
            or not isinstance(breaker_threshold, int)
            or breaker_threshold < 1
        ):
            raise ValueError(
                f"breaker_threshold must be an int >= 1 or None, got {breaker_threshold!r}"
            )
        if ping is None:
            for flag, val in (
                ("test_on_borrow", test_on_borrow),
                ("test_on_return", test_on_return),
                ("validation_interval", validation_interval),
                ("heartbeat_interval", heartbeat_interval),
            ):
                if val:
                    raise ValueError(f"{flag} needs a ping callable (ping=...)")
        lo = autoscale_min if autoscale_min is not None else max(1, min_size)
        hi = autoscale_max if autoscale_max is not None else max_size * 4
        if autoscale and not (1 <= lo <= max_size <= hi and lo >= min_size):
            raise ValueError(
                f"autoscale_min ({lo}) <= max_size ({max_size}) <= autoscale_max ({hi}) "
                f"must hold, with autoscale_min >= min_size ({min_size}) and >= 1"
            )

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

    # -- observation -------------------------------------------------------------
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

    def _emit(self, etype: str, **fields: Any) -> None:
        h = self._handle
        if h is not None:
            h.event(etype, **fields)

    def _on_breaker(self, state: str, previous: str, failures: int, error: str) -> None:
        self._gate = self._closed or state != _breaker.CLOSED
        self._emit("breaker", state=state, previous=previous, failures=failures, error=error)
        if state == _breaker.OPEN:
            log.warning("pool %s: circuit open after %d connect failures", self.name, failures)

    def _on_backend(self, state: str, previous: str, error: str) -> None:
        self._emit("backend", state=state, previous=previous, error=error)

    def enable_heartbeat(self, interval: float) -> None:
        """Turn the heartbeat on (used by ``poolscope.instrument(heartbeat=...)``)."""
        _check_positive("heartbeat interval", interval, allow_none=False)
        if self.ping is None:
            raise ValueError("a heartbeat needs a ping callable (ping=...)")
        running = self.heartbeat_interval is not None
        self.heartbeat_interval = interval
        if self._opened and not self._closed and not running and self._loop is not None:
            self._tasks.append(self._loop.create_task(self._heartbeat_loop()))

    # -- open / close ------------------------------------------------------------
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

    async def _open_one(self, *, validate: bool) -> None:
        """Open one connection in a new slot and put it in the pool (or raise)."""
        self._size += 1
        try:
            rec = await self._connect()
        except BaseException:
            self._release_slot()
            raise
        # A failed warm-up ping retires the connection.
        if (
            validate
            and self.ping is not None
            and not await self._validate(rec, self.validation_timeout)
        ):
            raise ConnectionError(f"pool {self.name}: new connection failed its ping")
        self._put_back(rec)

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

    def _check_drained(self) -> None:
        d = self._drained
        if (
            d is not None
            and not d.done()
            and not self._in_use
            and not self._busy
            and not self._acquiring
        ):
            d.set_result(None)

    # -- acquire -----------------------------------------------------------------
    def acquire(self, *, timeout: float | None = None) -> _AcquireContext[C]:
        """``async with pool.acquire() as conn`` or ``conn = await pool.acquire()``.

        ``timeout`` overrides ``acquire_timeout`` for this call.
        """
        return _AcquireContext(self, timeout)

    async def _acquire(self, timeout: float | None, up: int = 0) -> C:
        # ``up``: the pool's own frames between this one and the application's (1 from
        # ``async with``'s __aenter__), so the acquire site is found without a walk.
        start = _clock()
        if self._gate:
            self._check_gate()
        idle = self._idle
        rec: _Conn[C]
        if idle and not self._waiters:
            rec = idle[-1]
            if rec.expires > start and (
                not self.test_on_borrow or start - rec.last_used <= self.borrow_ping_skip
            ):
                idle.pop()
            else:
                rec = await self._acquire_slow(start, timeout)
        else:
            rec = await self._acquire_slow(start, timeout)
        now = _clock()
        rec.acquired_at = now
        rec.state = _OUT
        rec.uses += 1
        self._n_acquires += 1
        self._in_use[rec.key] = rec
        raw = rec.raw
        if rec.wref is not None:
            rec.raw = None  # only the holder keeps it alive now (see module docstring)
        h = self._handle
        if h is not None:
            h.acquired_here(rec.id, now - start, now, self._loop, up)  # site, task inside
        return raw  # type: ignore[return-value]

    def _check_gate(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.name} is closed")
        try:
            self._breaker.check_acquire()
        except CircuitOpenError as exc:
            self._emit("acquire_error", error=str(exc), reason="circuit_open")
            raise

    async def _acquire_slow(self, start: float, timeout: float | None) -> _Conn[C]:
        if not self._opened:
            await self.open()
        if timeout is None:
            timeout = self.acquire_timeout
        deadline = None if timeout is None else start + timeout
        self._acquiring += 1
        try:
            while True:
                if self._gate:
                    self._check_gate()
                try:
                    rec = await self._get(start, deadline, timeout)
                except CircuitOpenError as exc:
                    self._emit("acquire_error", error=str(exc), reason="circuit_open")
                    raise
                while True:
                    if self._closed:
                        self._retire(rec, "closed")
                        raise PoolClosed(f"pool {self.name} is closed")
                    now = _clock()
                    # A connection that turns out unusable is replaced in its own
                    # slot, so this acquirer keeps its place in the queue (FIFO).
                    keep = bool(self._waiters) or not self._idle
                    if rec.expires <= now:
                        self._retire(rec, "lifetime", free_slot=not keep)
                    elif (
                        self.test_on_borrow
                        and now - rec.last_used > self.borrow_ping_skip
                        and not await self._validate(rec, self.validation_timeout, keep_slot=keep)
                    ):
                        pass
                    else:
                        return rec
                    if not keep:
                        break  # take an idle one instead
                    rec = await self._connect_in_slot(start, deadline, timeout)
        finally:
            self._acquiring -= 1
            self._check_drained()

    async def _get(self, start: float, deadline: float | None, timeout: float | None) -> _Conn[C]:
        """An idle connection, a new one, or one handed over after waiting."""
        if self._waiters and self._size < self.max_size:
            self._wake_for_slot()  # a free slot while others wait: theirs first
        if self._idle and not self._waiters:
            return self._idle.pop()
        if self._size < self.max_size and not self._waiters:
            self._size += 1
            return await self._connect_in_slot(start, deadline, timeout)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(fut)
        self._n_waited += 1
        timer = None
        if deadline is not None:
            timer = loop.call_at(loop.time() + max(0.0, deadline - _clock()), self._expire, fut)
        try:
            got = await fut
        except BaseException:
            # Cancelled (or failed by close()) while waiting: if a connection or a
            # slot was already handed to us, pass it on rather than lose it.
            self._abandon(fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if got is _EXPIRED:
            raise self._timeout(start, timeout)
        if got is _SLOT:
            return await self._connect_in_slot(start, deadline, timeout)
        self._busy -= 1  # handed over (see _put_back)
        return got  # type: ignore[no-any-return]

    def _expire(self, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            fut.set_result(_EXPIRED)

    def _timeout(self, start: float, timeout: float | None) -> PoolTimeout:
        waited = _clock() - start
        st = self.stats()
        msg = (
            f"pool {self.name}: no connection within {timeout if timeout is not None else 0:.3g}s "
            f"(size {st['size']}/{self.max_size}, in use {st['in_use']}, "
            f"{st['waiting']} waiting)"
        )
        self._n_timeouts += 1
        self._emit("timeout", wait=waited, error=msg)
        return PoolTimeout(msg)

    def _abandon(self, fut: asyncio.Future[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            got = fut.result()
            if got is _SLOT:
                self._release_slot()
            elif isinstance(got, _Conn):
                self._busy -= 1
                self._put_back(got, touch=False)
        else:
            fut.cancel()

    async def _connect_in_slot(
        self, start: float, deadline: float | None, timeout: float | None
    ) -> _Conn[C]:
        """Open a connection in a slot already taken; free the slot on failure."""
        try:
            if deadline is None:
                return await self._connect()
            remaining = deadline - _clock()
            if remaining <= 0:
                raise asyncio.TimeoutError
            return await asyncio.wait_for(self._connect(), remaining)
        except asyncio.TimeoutError:
            self._release_slot()
            if deadline is not None and _clock() >= deadline:
                raise self._timeout(start, timeout) from None
            raise
        except BaseException:
            self._release_slot()
            raise

    async def _connect(self, *, gated: bool = True) -> _Conn[C]:
        """Open one connection in a slot already counted in ``_size``."""
        br = self._breaker
        if gated:
            br.before_connect()
        start = _clock()
        self._connecting += 1
        try:
            raw = await self._factory()
        except asyncio.CancelledError:
            br.cancelled()
            raise
        except Exception as exc:
            err = _err(exc)
            self._emit("connect_error", error=err, duration=_clock() - start)
            br.failure(err)
            raise
        finally:
            self._connecting -= 1
        expires = math.inf
        if self.max_lifetime is not None:
            # Jitter so that connections opened together do not expire together.
            jitter = self.max_lifetime * self.lifetime_jitter * self._rng.random()
            expires = start + self.max_lifetime - jitter
        rec = _Conn(raw, expires)
        self._watch(rec)
        self._emit("connect", conn=str(rec.id), duration=_clock() - start)
        br.success()
        return rec

    def _watch(self, rec: _Conn[C]) -> None:
        pool_ref = self._self_ref

        def collected(_: Any) -> None:
            # Runs wherever the garbage collector runs: only schedule.
            pool = pool_ref()
            if pool is None or rec.state not in (_OUT, _RECLAIMED):
                return
            loop = pool._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(pool._collected, rec)

        try:
            rec.wref = weakref.ref(rec.raw, collected)
        except TypeError:
            rec.wref = None  # not weakly referenceable: held strongly, never reported as GC'd

    def _collected(self, rec: _Conn[C]) -> None:
        """The holder dropped a checked-out connection without releasing it."""
        if rec.state == _RECLAIMED:
            if self._reclaimed.get(rec.key) is rec:
                del self._reclaimed[rec.key]
            rec.state = _CLOSED
            return
        if rec.state != _OUT:
            return
        if self._in_use.get(rec.key) is rec:
            del self._in_use[rec.key]
        held = _clock() - rec.acquired_at
        log.warning(
            "pool %s: connection %d was garbage-collected while checked out (held %.3gs)",
            self.name,
            rec.id,
            held,
        )
        self._emit("leak", conn=str(rec.id), held=held, proven=True)  # runtime adds the site
        self._retire(rec, "gc_leak")
        self._check_drained()

    # -- release -----------------------------------------------------------------
    async def release(self, conn: C) -> None:
        """Give a connection back."""
        rec = self._in_use.pop(id(conn), None)
        if rec is None or (rec.raw is not conn and (rec.wref is None or rec.wref() is not conn)):
            if rec is not None:
                self._in_use[rec.key] = rec
            self._release_unknown(conn, "release")
            return
        now = _clock()
        rec.raw = conn
        h = self._handle
        if h is not None:
            h.released(rec.id, now - rec.acquired_at, now)
        rec.last_used = now
        if (
            self._plain_release
            and not self._closed
            and rec.expires > now
            and self._size <= self.max_size
        ):
            self._put_back(rec)
        else:
            await self._release_slow(rec)

    def _release_unknown(self, conn: Any, what: str) -> None:
        rec = self._reclaimed.pop(id(conn), None)
        if rec is not None and rec.get() is conn:
            return  # reclaimed earlier; the holder's late release is fine
        if self._closed:
            return  # abandoned at close
        raise PoolError(f"pool {self.name}: {what} of a connection it did not hand out")

    async def _release_slow(self, rec: _Conn[C]) -> None:
        if self._closed:
            self._retire(rec, "closed")
            self._check_drained()
            return
        if rec.expires <= rec.last_used:
            self._retire(rec, "lifetime")
            return
        if self._size > self.max_size:
            self._retire(rec, "overflow")  # max_size shrank while it was out
            return
        rec.state = _BUSY
        self._busy += 1
        try:
            if self.reset is not None:
                try:
                    await asyncio.wait_for(self.reset(rec.raw), self.reset_timeout)  # type: ignore[arg-type]
                except Exception as exc:
                    self._busy -= 1
                    self._retire(rec, "reset_failed", error=_err(exc))
                    return
            if self.test_on_return:
                ok = await self._ping_ok(rec, self.validation_timeout)
                if not ok:
                    return
        except BaseException:
            # Cancelled during reset or the return ping: the connection's state is unknown.
            if rec.state == _BUSY:
                self._busy -= 1
                self._retire(rec, "invalid", error="cancelled during release")
            raise
        self._busy -= 1
        if self._closed:
            self._retire(rec, "closed")
            self._check_drained()
            return
        self._put_back(rec, touch=False)

    async def discard(self, conn: C, reason: str = "invalid") -> None:
        """Give a connection back as broken: it is closed, and its slot freed."""
        rec = self._in_use.pop(id(conn), None)
        if rec is None or rec.get() is not conn:
            if rec is not None:
                self._in_use[rec.key] = rec
            self._release_unknown(conn, "discard")
            return
        rec.raw = conn
        h = self._handle
        if h is not None:
            h.released(rec.id, _clock() - rec.acquired_at)
        self._retire(rec, reason)
        self._check_drained()

    # -- the pool's bookkeeping --------------------------------------------------
    def _put_back(self, rec: _Conn[C], *, touch: bool = True) -> None:
        """A usable connection: to the oldest waiter, else idle (or closed if surplus)."""
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                rec.state = _BUSY  # in the hand: neither idle nor in use until it resumes
                self._busy += 1
                w.set_result(rec)
                return
        if self._closed:
            self._retire(rec, "closed")
            return
        if self._size > self.max_size:
            self._retire(rec, "overflow")
            return
        if (
            self.max_idle is not None
            and len(self._idle) >= self.max_idle
            and self._size > self.min_size
        ):
            self._retire(rec, "max_idle")
            return
        rec.state = _IDLE
        if touch:
            self._idle.append(rec)
        else:
            # Not used, only checked: keep its place so idle expiry stays fair.
            self._insert_idle(rec)

    def _insert_idle(self, rec: _Conn[C]) -> None:
        idle = self._idle
        i = len(idle)
        while i > 0 and idle[i - 1].last_used > rec.last_used:
            i -= 1
        idle.insert(i, rec)

    def _release_slot(self) -> None:
        self._size -= 1
        self._wake_for_slot()

    def _wake_for_slot(self) -> None:
        """Slots are free: let the oldest waiters open connections in them."""
        waiters = self._waiters
        while waiters and self._size < self.max_size and not self._closed:
            w = waiters.popleft()
            if not w.done():
                self._size += 1
                w.set_result(_SLOT)

    def _retire(self, rec: _Conn[C], reason: str, *, free_slot: bool = True, **extra: Any) -> None:
        """Close a connection the pool no longer wants; its slot is freed at once
        (unless the caller keeps the slot to open a replacement in it)."""
        if rec.state == _CLOSED or rec.state == _RECLAIMED:
            return
        raw = rec.get()
        rec.state = _CLOSED
        rec.raw = None
        self._emit("close", conn=str(rec.id), reason=reason, age=_clock() - rec.created, **extra)
        if raw is not None:
            self._close_raw(raw)
        if free_slot:
            self._size -= 1
            self._wake_for_slot()
        if self._drained is not None:
            self._check_drained()

    def _close_raw(self, raw: Any) -> None:
        close = getattr(raw, "close", None)
        if close is None:
            return
        try:
            result = close()
        except Exception as exc:
            log.debug("pool %s: close failed: %s", self.name, _err(exc))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await_close(result))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def _await_close(self, aw: Awaitable[Any]) -> None:
        try:
            await asyncio.wait_for(aw, 5.0)
        except Exception as exc:
            log.debug("pool %s: close failed: %s", self.name, _err(exc))

    async def _ping_ok(self, rec: _Conn[C], timeout: float, keep_slot: bool = False) -> bool:
        """Ping a connection the pool holds in state _BUSY (counted in ``_busy``).

        On failure the connection is retired and False returned; on cancellation
        the caller decides. On success it stays _BUSY, still counted.
        """
        assert self.ping is not None
        try:
            await asyncio.wait_for(self.ping(rec.raw), timeout)  # type: ignore[arg-type]
        except Exception as exc:
            self._busy -= 1
            self._retire(rec, _close_reason(exc), free_slot=not keep_slot, error=_err(exc))
            return False
        rec.checked = _clock()
        return True

    async def _validate(self, rec: _Conn[C], timeout: float, keep_slot: bool = False) -> bool:
        """Ping a connection the pool holds privately; retire it when it fails."""
        rec.state = _BUSY
        self._busy += 1
        try:
            ok = await self._ping_ok(rec, timeout, keep_slot)
        except BaseException:
            if rec.state == _BUSY:
                self._busy -= 1
                self._retire(rec, "invalid", error="cancelled during validation")
            self._check_drained()
            raise
        if ok:
            self._busy -= 1
        self._check_drained()
        return ok

    # -- background: housekeeping ------------------------------------------------
    def _tick(self) -> float:
        if self._maintenance_interval is not None:
            return self._maintenance_interval
        periods = [
            p
            for p in (
                self.idle_timeout,
                self.max_lifetime,
                self.validation_interval,
                self.reclaim_after,
                self.autoscale_interval if self.autoscale else None,
            )
            if p is not None
        ]
        return min(1.0, max(0.005, min(periods, default=1.0) / 4))

    async def _housekeeper(self) -> None:
        last_scale = _clock()
        acquires, waited = self._n_acquires, self._n_waited
        while not self._closed:
            await asyncio.sleep(self._tick())
            try:
                self._expire_idle()
                self._reclaim()
                if self.validation_interval is not None and self.ping is not None:
                    await self._validate_idle()
                await self._refill()
                if self._autoscaler is not None:
                    self._autoscaler.sample(len(self._in_use), self.max_size)
                    now = _clock()
                    if now - last_scale >= self.autoscale_interval:
                        last_scale = now
                        decision = self._autoscaler.decide(
                            now,
                            self.max_size,
                            self._n_acquires - acquires,
                            self._n_waited - waited,
                        )
                        acquires, waited = self._n_acquires, self._n_waited
                        if decision is not None:
                            self.resize(decision[0], decision[1])
            except Exception as exc:  # a housekeeping bug must not stop housekeeping
                log.exception("pool %s: housekeeping failed: %s", self.name, _err(exc))

    def _expire_idle(self) -> None:
        now = _clock()
        for rec in list(self._idle):
            if rec.expires <= now:
                self._idle.remove(rec)
                self._retire(rec, "lifetime")
            elif (
                self.idle_timeout is not None
                and now - rec.last_used > self.idle_timeout
                and self._size > self.min_size
            ):
                self._idle.remove(rec)
                self._retire(rec, "idle_timeout", idle=now - rec.last_used)

    def _reclaim(self) -> None:
        if self.reclaim_after is None:
            return
        now = _clock()
        for rec in list(self._in_use.values()):
            held = now - rec.acquired_at
            if held <= self.reclaim_after:
                continue
            del self._in_use[rec.key]
            raw = rec.get()
            self._emit("reclaim", conn=str(rec.id), held=held)
            log.warning("pool %s: reclaimed connection %d held %.3gs", self.name, rec.id, held)
            self._retire(rec, "reclaimed", held=held)
            rec.state = _RECLAIMED
            if rec.wref is None:
                rec.raw = raw  # to recognise the holder's late release
            self._reclaimed[rec.key] = rec
            while len(self._reclaimed) > 1024:
                self._reclaimed.pop(next(iter(self._reclaimed)))
        self._check_drained()

    async def _validate_idle(self) -> None:
        assert self.validation_interval is not None
        now = _clock()
        due = [r for r in self._idle if now - r.checked > self.validation_interval]
        for rec in due:
            if self._closed:
                return
            try:
                self._idle.remove(rec)
            except ValueError:
                continue  # borrowed meanwhile
            if await self._validate(rec, self.validation_timeout):
                self._put_back(rec, touch=False)

    async def _refill(self) -> None:
        """Keep ``min_size`` open, unless the backend is down or the breaker open."""
        deficit = self.min_size - self._size
        if deficit <= 0 or self._closed or self._backend.state == _health.DOWN:
            return
        if self._breaker.state != _breaker.CLOSED:
            deficit = 1  # at most the breaker's trial connect (it may refuse)
        await asyncio.gather(
            *(self._open_one(validate=False) for _ in range(deficit)), return_exceptions=True
        )

    def resize(self, new_max: int, reason: str = "manual") -> None:
        """Change ``max_size`` (the autoscaler's lever; also public)."""
        if new_max < max(1, self.min_size):
            raise ValueError(f"max_size must be >= max(1, min_size), got {new_max}")
        previous, self.max_size = self.max_size, new_max
        if previous == new_max:
            return
        self._emit("resize", max=new_max, previous=previous, reason=reason)
        if new_max > previous:
            self._wake_for_slot()
        else:
            while self._size > new_max and self._idle:
                self._retire(self._idle.popleft(), "overflow")

    # -- background: heartbeat ---------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while not self._closed and self.heartbeat_interval is not None:
            if self._backend.state == _health.DOWN:
                await asyncio.sleep(self._backend.backoff())
            else:
                await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_round()
            except Exception as exc:
                log.exception("pool %s: heartbeat failed: %s", self.name, _err(exc))

    async def _heartbeat_round(self) -> None:
        b = self._backend
        ok = await self._probe()
        if ok is None:
            return
        if ok:
            if b.state != _health.HEALTHY:
                b.set(_health.HEALTHY)
            return
        if b.state == _health.HEALTHY:
            b.set(_health.SUSPECT, b.last_error)
            ok = await self._probe()  # a second probe at once
            if ok:
                b.set(_health.HEALTHY)
            elif ok is False:
                b.probe_failed(b.last_error)
        else:
            b.probe_failed(b.last_error)

    async def _probe(self) -> bool | None:
        """Ping the least recently used idle connection; with none idle, skip -
        unless the backend is in doubt, then try to open one (a reconnect)."""
        if self._closed:
            return None
        if self._idle:
            # The connection checked longest ago, so that probes rotate over all.
            rec = min(self._idle, key=_checked_at)
            self._idle.remove(rec)
            rec.state = _BUSY
            self._busy += 1
            t0 = _clock()
            assert self.ping is not None
            try:
                await asyncio.wait_for(self.ping(rec.raw), self.heartbeat_timeout)  # type: ignore[arg-type]
            except Exception as exc:
                err = _err(exc)
                self._backend.last_error = err
                self._emit(
                    "heartbeat", conn=str(rec.id), ok=False, latency=_clock() - t0, error=err
                )
                self._busy -= 1
                self._retire(rec, _close_reason(exc), error=err)
                self._check_drained()
                return False
            except BaseException:
                self._busy -= 1
                self._retire(rec, "closed")
                self._check_drained()
                raise
            latency = _clock() - t0
            self._busy -= 1
            rec.checked = _clock()
            self._emit("heartbeat", conn=str(rec.id), ok=True, latency=latency, error=None)
            self._put_back(rec, touch=False)
            self._check_drained()
            return True
        if self._backend.state == _health.HEALTHY or self._size >= self.max_size:
            self._emit("heartbeat", conn="", ok=None, latency=None, error=None, skipped=True)
            return None
        # Reconnect probe: bypasses the breaker's gate but informs it, so that a
        # recovered backend also closes the breaker.
        self._size += 1
        t0 = _clock()
        try:
            rec = await self._connect(gated=False)
        except Exception as exc:
            self._release_slot()
            err = _err(exc)
            self._backend.last_error = err
            self._emit(
                "heartbeat", conn="", ok=False, latency=_clock() - t0, error=err, probe="connect"
            )
            return False
        except BaseException:
            self._release_slot()
            raise
        self._emit(
            "heartbeat",
            conn=str(rec.id),
            ok=True,
            latency=_clock() - t0,
            error=None,
            probe="connect",
        )
        self._put_back(rec)
        return True


class _AcquireContext(Generic[C]):
    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: C | None = None

    def __await__(self) -> Any:
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> C:
        self._conn = await self._pool._acquire(self._timeout, 1)
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)
