"""The reference pool's hand-off: acquire (fast path, FIFO waiters, timeouts,
cancellation) and release, reset and discard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic

from poolscope.pool.base import PoolBase
from poolscope.pool.errors import CircuitOpenError, PoolClosed, PoolError, PoolTimeout
from poolscope.pool.records import (
    _BUSY,
    _EXPIRED,
    _OUT,
    _SLOT,
    C,
    _clock,
    _Conn,
    _err,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("poolscope.pool")


class HandOff(PoolBase[C]):
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


class _AcquireContext(Generic[C]):
    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: HandOff[C], timeout: float | None) -> None:
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
