"""The reference pool's bookkeeping: opening, handing back, retiring and pinging
connection records, which hand-off, maintenance and the heartbeat all build on.

Its state is declared here and set by ``Pool.__init__`` (core.py); see core.py's
docstring for the design (hand-off, hot path, GC leaks, background work).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import random
import weakref
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Generic

from poolscope.pool import breaker as _breaker
from poolscope.pool import health as _health
from poolscope.pool.autoscale import Autoscaler
from poolscope.pool.records import (
    _BUSY,
    _CLOSED,
    _IDLE,
    _OUT,
    _RECLAIMED,
    _SLOT,
    C,
    Factory,
    Hook,
    _clock,
    _close_reason,
    _Conn,
    _err,
)

if TYPE_CHECKING:
    from poolscope.instrument.recorder import PoolHandle

log = logging.getLogger("poolscope.pool")


class PoolBase(Generic[C]):
    # The pool's state, set by Pool.__init__ (core.py) and shared by the parts below.
    kind: str
    name: str
    target: str
    min_size: int
    max_size: int
    acquire_timeout: float | None
    idle_timeout: float | None
    max_lifetime: float | None
    lifetime_jitter: float
    max_idle: int | None
    ping: Hook[C] | None
    reset: Hook[C] | None
    reset_timeout: float
    test_on_borrow: bool
    test_on_return: bool
    validation_interval: float | None
    validation_timeout: float
    borrow_ping_skip: float
    heartbeat_interval: float | None
    heartbeat_timeout: float
    leak_threshold: float | None
    reclaim_after: float | None
    warmup_required: bool
    autoscale: bool
    autoscale_interval: float
    close_timeout: float | None
    _factory: Factory[C]
    _maintenance_interval: float | None
    _rng: random.Random
    _idle: deque[_Conn[C]]
    _in_use: dict[int, _Conn[C]]
    _reclaimed: dict[int, _Conn[C]]
    _waiters: deque[asyncio.Future[Any]]
    _size: int
    _connecting: int
    _busy: int
    _acquiring: int
    _closed: bool
    _opened: bool
    _gate: bool
    _handle: PoolHandle | None
    _loop: asyncio.AbstractEventLoop | None
    _tasks: list[asyncio.Task[None]]
    _closers: set[asyncio.Task[None]]
    _drained: asyncio.Future[None] | None
    _close_done: asyncio.Future[None] | None
    _self_ref: weakref.ref[PoolBase[C]]
    _n_acquires: int
    _n_waited: int
    _n_timeouts: int
    _breaker: _breaker.CircuitBreaker
    _backend: _health.Backend
    _autoscaler: Autoscaler | None
    _plain_release: bool

    # Provided by Pool (core.py): the parts call them, the pool defines them.
    async def open(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _emit(self, etype: str, **fields: Any) -> None:
        h = self._handle
        if h is not None:
            h.event(etype, **fields)

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
