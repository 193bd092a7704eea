"""The reference pool's core: limits, FIFO waiters, safe hand-off, events.

Standard library only. Connections come from an async ``factory`` and are closed
with their own ``close()`` (awaited when it is a coroutine).

Hand-off: a released connection goes straight to the oldest waiter's future, so
waiters are served first-come first-served. A waiter that is cancelled or times
out after a connection was handed to it gives that connection back before it
leaves (the bug class of asyncpg #467/#955).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from poolscope.pool.errors import PoolClosed, PoolError, PoolTimeout

if TYPE_CHECKING:
    from poolscope.instrument.recorder import PoolHandle

C = TypeVar("C")
Factory = Callable[[], Awaitable[C]]

_ids = itertools.count(1)
_names = itertools.count(1)


class _Conn(Generic[C]):
    """The pool's record of one connection."""

    __slots__ = ("acquired_at", "created", "id", "last_used", "raw")

    def __init__(self, raw: C) -> None:
        self.raw = raw
        self.id = next(_ids)
        self.created = time.monotonic()
        self.last_used = self.created
        self.acquired_at = 0.0


async def _close_raw(raw: Any) -> None:
    close = getattr(raw, "close", None)
    if close is None:
        return
    result = close()
    if inspect.isawaitable(result):
        await result


class Pool(Generic[C]):
    """An asyncio connection pool. See the module docstring and ``docs/``."""

    kind = "poolscope"

    def __init__(
        self,
        factory: Factory[C],
        *,
        min_size: int = 0,
        max_size: int = 10,
        acquire_timeout: float | None = 5.0,
        name: str | None = None,
        leak_threshold: float | None = None,
        target: str = "",
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if min_size < 0 or min_size > max_size:
            raise ValueError(
                f"min_size must be between 0 and max_size ({max_size}), got {min_size}"
            )
        if acquire_timeout is not None and acquire_timeout <= 0:
            raise ValueError(f"acquire_timeout must be positive, got {acquire_timeout}")
        self._factory = factory
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.name = name or f"pool-{next(_names)}"
        self.leak_threshold = leak_threshold
        self.target = target
        self._idle: deque[_Conn[C]] = deque()
        self._in_use: dict[int, _Conn[C]] = {}  # id(raw) -> record
        self._waiters: deque[asyncio.Future[_Conn[C] | None]] = deque()
        self._size = 0  # open connections plus those being opened
        self._closed = False
        self._opened = False
        self._handle: PoolHandle | None = None

    # -- observation -------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The pool's own gauges: size, idle, in_use, waiting, max_size, min_size."""
        return {
            "size": self._size,
            "idle": len(self._idle),
            "in_use": len(self._in_use),
            "waiting": sum(1 for w in self._waiters if not w.done()),
            "max_size": self.max_size,
            "min_size": self.min_size,
        }

    def config(self) -> dict[str, Any]:
        return {
            "min": self.min_size,
            "max": self.max_size,
            "acquire_timeout": self.acquire_timeout,
            "leak_threshold": self.leak_threshold,
        }

    def _attach(self, handle: PoolHandle) -> None:
        """Called by ``poolscope.instrument.instrument``: start emitting events."""
        self._handle = handle

    def _emit(self, etype: str, **fields: Any) -> None:
        h = self._handle
        if h is not None:
            h.event(etype, **fields)

    # -- lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Open ``min_size`` connections concurrently."""
        if self._opened:
            return
        self._opened = True
        need = self.min_size - self._size
        if need > 0:
            self._size += need
            results = await asyncio.gather(
                *(self._connect() for _ in range(need)), return_exceptions=True
            )
            for r in results:
                if isinstance(r, _Conn):
                    self._put_idle(r)
                else:
                    self._size -= 1
            if need and not any(isinstance(r, _Conn) for r in results):
                err = next(r for r in results if isinstance(r, BaseException))
                raise PoolError(f"pool {self.name}: no connection could be opened: {err}")

    async def __aenter__(self) -> Pool[C]:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop new acquires, fail waiters, close idle connections and, as they
        come back, those in use."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(PoolClosed(f"pool {self.name} is closed"))
        idle = list(self._idle)
        self._idle.clear()
        for rec in idle:
            await self._close_conn(rec, "closed")

    @property
    def closed(self) -> bool:
        return self._closed

    # -- acquire / release -------------------------------------------------------
    def acquire(self, *, timeout: float | None = None) -> _AcquireContext[C]:
        """``async with pool.acquire() as conn`` or ``conn = await pool.acquire()``."""
        return _AcquireContext(self, timeout)

    async def _acquire(self, timeout: float | None) -> C:
        if self._closed:
            raise PoolClosed(f"pool {self.name} is closed")
        h = self._handle
        start = time.perf_counter()
        rec = await self._get(start, self.acquire_timeout if timeout is None else timeout)
        rec.acquired_at = now = time.perf_counter()
        self._in_use[id(rec.raw)] = rec
        if h is not None:
            h.acquired(rec.id, now - start, h.capture_site(), asyncio.current_task())
        return rec.raw

    async def _get(self, start: float, timeout: float | None) -> _Conn[C]:
        if self._idle and not self._waiters:
            return self._idle.pop()
        if self._size < self.max_size and not self._waiters:
            self._size += 1
            return await self._connect_or_release_slot()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Conn[C] | None] = loop.create_future()
        self._waiters.append(fut)
        try:
            remaining = (
                None if timeout is None else max(0.0, timeout - (time.perf_counter() - start))
            )
            done, _ = await asyncio.wait({fut}, timeout=remaining)
        except BaseException:
            # Cancelled while waiting: if a connection (or a slot) was already
            # handed to us, pass it on rather than lose it.
            self._abandon(fut)
            raise
        if not done:
            self._abandon(fut)
            waited = time.perf_counter() - start
            st = self.stats()
            msg = (
                f"pool {self.name}: no connection within {timeout:.3g}s "
                f"(size {st['size']}/{self.max_size}, in use {st['in_use']}, "
                f"{st['waiting']} waiting)"
            )
            self._emit("timeout", wait=waited, error=msg)
            raise PoolTimeout(msg)
        got = fut.result()
        if got is None:  # a slot was freed for us: open a connection in it
            return await self._connect_or_release_slot()
        return got

    def _abandon(self, fut: asyncio.Future[_Conn[C] | None]) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            got = fut.result()
            if got is None:
                self._size -= 1
                self._wake_for_slot()
            else:
                self._hand_off(got)
        else:
            fut.cancel()

    async def _connect_or_release_slot(self) -> _Conn[C]:
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._wake_for_slot()
            raise

    async def _connect(self) -> _Conn[C]:
        """Open one connection in a slot already counted in ``_size``."""
        start = time.perf_counter()
        try:
            raw = await self._factory()
        except Exception as exc:
            self._emit(
                "connect_error",
                error=f"{type(exc).__name__}: {exc}",
                duration=time.perf_counter() - start,
            )
            raise
        rec = _Conn(raw)
        self._emit("connect", conn=str(rec.id), duration=time.perf_counter() - start)
        return rec

    def _wake_for_slot(self) -> None:
        """A slot became free: let the oldest waiter open a connection in it."""
        while self._waiters and self._size < self.max_size:
            w = self._waiters.popleft()
            if not w.done():
                self._size += 1
                w.set_result(None)
                return

    def _hand_off(self, rec: _Conn[C]) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(rec)
                return
        self._put_idle(rec)

    def _put_idle(self, rec: _Conn[C]) -> None:
        rec.last_used = time.monotonic()
        self._idle.append(rec)

    async def release(self, conn: C) -> None:
        """Give a connection back."""
        rec = self._in_use.pop(id(conn), None)
        if rec is None:
            raise PoolError(f"pool {self.name}: release of a connection it did not hand out")
        h = self._handle
        if h is not None:
            h.released(rec.id, time.perf_counter() - rec.acquired_at)
        if self._closed:
            await self._close_conn(rec, "closed")
            return
        self._hand_off(rec)

    async def discard(self, conn: C, reason: str = "invalid") -> None:
        """Give a connection back as broken: it is closed, and its slot freed."""
        rec = self._in_use.pop(id(conn), None)
        if rec is None:
            raise PoolError(f"pool {self.name}: discard of a connection it did not hand out")
        h = self._handle
        if h is not None:
            h.released(rec.id, time.perf_counter() - rec.acquired_at)
        await self._close_conn(rec, reason)

    async def _close_conn(self, rec: _Conn[C], reason: str) -> None:
        self._size -= 1
        self._emit("close", conn=str(rec.id), reason=reason, age=time.monotonic() - rec.created)
        self._wake_for_slot()
        try:
            await _close_raw(rec.raw)
        except Exception:
            pass


class _AcquireContext(Generic[C]):
    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: C | None = None

    def __await__(self) -> Any:
        return self._pool._acquire(self._timeout).__await__()

    async def __aenter__(self) -> C:
        self._conn = await self._pool._acquire(self._timeout)
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
