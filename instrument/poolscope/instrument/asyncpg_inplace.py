"""asyncpg, hooked in place: class-level hooks that act only on the pools adopted here.

``asyncpg.Pool`` has ``__slots__`` (no instance attributes, no weak references), so the
public adapter returns a proxy. A live application (``poolscope inject``) or one started
under ``poolscope run`` already holds, or will hold, the pool object itself, so here
``asyncpg.pool.Pool._acquire``, ``release``, ``close`` and ``terminate`` are replaced on
the class by wrappers that look the pool up by ``id()`` among the adopted ones and fall
straight through to asyncpg's own method for every other pool. ``_acquire`` is what both
``async with pool.acquire()`` and ``await pool.acquire()`` end in, and what the pool-level
``fetch``/``execute``/... use, so one hook sees every checkout.

The per-pool bookkeeping (connection ids, close reasons, gauges, the heartbeat probe,
proven leaks by reference count) is the asyncpg adapter's own ``_State``; the pool's
``_connect`` slot is wrapped as the adapter does. ``release_pool`` undoes all of it for
one pool, and the last one puts asyncpg's class back exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

from . import errors
from .recorder import PoolHandle
from .runtime import Runtime

__all__ = ["adopt_pool", "adopted_pools", "is_adopted", "release_all", "release_pool"]

_clock = time.perf_counter

#: id(pool) -> _State of every adopted pool (the pool itself is ``state.pool``).
_adopted: dict[int, Any] = {}
#: id(pool) -> the pool's ``_connect`` before it was wrapped, restored on release.
_connects: dict[int, Any] = {}
#: Class attributes replaced, with their originals (empty when no hook is installed).
_originals: dict[str, Any] = {}
_lock = threading.Lock()
#: Set while poolscope's own heartbeat probe acquires: not the application's checkout.
_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar("poolscope_bypass", default=False)


def _state_for(pool: Any) -> Any:
    st = _adopted.get(id(pool))
    if st is None or st.pool is not pool or _bypass.get():
        return None
    return st


def _install(pool_cls: Any) -> None:
    """Replace the four methods on ``asyncpg.pool.Pool`` (once)."""
    if _originals:
        return
    orig_acquire = pool_cls.__dict__["_acquire"]
    orig_release = pool_cls.__dict__["release"]
    orig_close = pool_cls.__dict__["close"]
    orig_terminate = pool_cls.__dict__["terminate"]

    async def _acquire(self: Any, timeout: Any) -> Any:
        st = _state_for(self)
        if st is None:
            return await orig_acquire(self, timeout)
        start = _clock()
        st.waiting += 1
        try:
            con = await orig_acquire(self, timeout)
        except asyncio.TimeoutError:
            st.waiting -= 1
            _timed_out(st, start, timeout)
            raise
        except BaseException as exc:
            st.waiting -= 1
            _failed(st, exc)
            raise
        st.waiting -= 1
        try:
            raw = con._con
            info = st.ids.by_key.get(id(raw)) or st.track(raw)
            info.held = True
            now = _clock()
            # Frames: acquired_here, this wrapper, then asyncpg's context or the app.
            st.handle.acquired_here(info.id, now - start, now, self._loop, 0)
        except Exception as exc:
            errors.report("asyncpg acquire", exc)
        return con

    async def release(self: Any, connection: Any, *, timeout: Any = None) -> Any:
        st = _state_for(self)
        if st is not None:
            try:
                raw = getattr(connection, "_con", None)
                info = st.ids.by_key.get(id(raw)) if raw is not None else None
                if info is not None and info.held:
                    info.held = False
                    info.idle_since = now = _clock()
                    st.handle.released(info.id, None, now)
            except Exception as exc:
                errors.report("asyncpg release", exc)
        return await orig_release(self, connection, timeout=timeout)

    async def close(self: Any) -> None:
        try:
            await orig_close(self)
        finally:
            _closed(self)

    def terminate(self: Any) -> None:
        try:
            orig_terminate(self)
        finally:
            _closed(self)

    hooks: tuple[tuple[str, Any, Any], ...] = (
        ("_acquire", _acquire, orig_acquire),
        ("release", release, orig_release),
        ("close", close, orig_close),
        ("terminate", terminate, orig_terminate),
    )
    for name, fn, orig in hooks:
        fn.__name__ = orig.__name__
        fn.__qualname__ = orig.__qualname__
        fn.__doc__ = orig.__doc__
        fn._poolscope = True
        _originals[name] = orig
        setattr(pool_cls, name, fn)


def _uninstall() -> None:
    """Put asyncpg's own methods back on the class."""
    if not _originals:
        return
    from asyncpg.pool import Pool

    for name, orig in _originals.items():
        setattr(Pool, name, orig)
    _originals.clear()


def _timed_out(st: Any, start: float, timeout: Any) -> None:
    try:
        pool = st.pool
        msg = (
            f"asyncpg: no connection within {timeout}s (size {pool.get_size()}/"
            f"{pool.get_max_size()}, idle {pool.get_idle_size()}, {st.waiting} waiting)"
        )
        st.handle.event("timeout", wait=_clock() - start, error=msg)
    except Exception as exc:
        errors.report("asyncpg timeout", exc)


def _failed(st: Any, exc: BaseException) -> None:
    if isinstance(exc, Exception):
        from .adapters import describe_error

        st.handle.event("acquire_error", error=describe_error(exc))


def _closed(pool: Any) -> None:
    """The application closed an adopted pool: it stops reporting (its hooks stay until
    release, so a later close/terminate of the same object is still seen once)."""
    try:
        st = _adopted.get(id(pool))
        if st is not None and st.pool is pool:
            st.stopped()
            release_pool(pool)
    except Exception as exc:
        errors.report("asyncpg close", exc)


def is_adopted(pool: Any) -> bool:
    st = _adopted.get(id(pool))
    return st is not None and st.pool is pool


def adopted_pools() -> list[Any]:
    return [st.pool for st in list(_adopted.values())]


def handle_of(pool: Any) -> PoolHandle | None:
    st = _adopted.get(id(pool))
    return st.handle if st is not None and st.pool is pool else None


def state_of(pool: Any) -> Any:
    """The adapter state of an adopted pool (connection ids, handle), or None."""
    st = _adopted.get(id(pool))
    return st if st is not None and st.pool is pool else None


def adopt_pool(
    pool: Any,
    runtime: Runtime,
    *,
    name: str | None,
    leak_threshold: float | None,
    heartbeat: float | None,
) -> PoolHandle:
    """Instrument ``pool`` (an ``asyncpg.Pool``, initialised or not) in place."""
    from asyncpg.pool import Pool

    from .adapters import start_async_heartbeat
    from .asyncpg import _State, _target, _wrap_connect

    with _lock:
        st = state_of(pool)
        if st is not None:
            handle: PoolHandle = st.handle
            return handle
        _install(Pool)
        config = {
            "min": pool.get_min_size(),
            "max": pool.get_max_size(),
            "max_queries": getattr(pool, "_max_queries", None),
            "max_inactive_connection_lifetime": getattr(
                pool, "_max_inactive_connection_lifetime", None
            ),
        }
        box: list[Any] = []
        handle = PoolHandle(
            runtime.recorder,
            name or "asyncpg",
            "asyncpg",
            leak_threshold=leak_threshold,
            heartbeat=heartbeat,
            target=_target(pool),
            config=config,
            gauges=lambda: box[0].gauges(),
        )
        st = _State(pool, handle, heartbeat, runtime)
        box.append(st)
        _adopted[id(pool)] = st
    runtime.register(handle)
    _connects[id(pool)] = getattr(pool, "_connect", None)
    _wrap_connect(st)
    st.adopt_existing()
    if heartbeat:
        loop = getattr(pool, "_loop", None)
        if loop is not None:

            async def probe() -> bool:
                token = _bypass.set(True)
                try:
                    return bool(await st.probe())
                finally:
                    _bypass.reset(token)

            st.stop_heartbeat = start_async_heartbeat(loop, heartbeat, probe)
    return handle


def _forget_listeners(raw: Any) -> None:
    """Remove the termination listener the adapter gave ``raw`` (an asyncpg Connection)."""
    listeners = getattr(raw, "_termination_listeners", None)
    if not listeners:
        return
    for cb in list(listeners):
        fn = getattr(cb, "cb", cb)
        if getattr(fn, "__module__", "").startswith("poolscope.") and getattr(
            fn, "__name__", ""
        ) in ("on_terminated",):
            listeners.discard(cb)


def release_pool(pool: Any) -> bool:
    """Undo ``adopt_pool`` for ``pool``; the last one restores asyncpg's class. False if
    ``pool`` was not adopted."""
    with _lock:
        st = _adopted.get(id(pool))
        if st is None or st.pool is not pool:
            return False
        del _adopted[id(pool)]
        original = _connects.pop(id(pool), None)
        if not _adopted:
            _uninstall()
    try:
        if hasattr(st, "detach"):
            # The adapter's own undo: _connect, termination listeners, heartbeat,
            # registration.
            st.detach()
        else:
            if st.stop_heartbeat is not None:
                st.stop_heartbeat()
                st.stop_heartbeat = None
            st.runtime.unregister(st.handle)
            for holder in list(getattr(pool, "_holders", ())):
                raw = getattr(holder, "_con", None)
                if raw is not None:
                    _forget_listeners(raw)
        if original is not None and getattr(pool, "_connect", None) is not original:
            pool._connect = original
    except Exception as exc:
        errors.report("asyncpg release", exc)
    return True


def release_all() -> int:
    """Undo every adoption; how many pools were released."""
    return sum(1 for pool in adopted_pools() if release_pool(pool))
