"""asyncpg adapter: a transparent proxy around ``asyncpg.Pool`` (which has ``__slots__``).

    pool = ps.instrument(await asyncpg.create_pool(dsn), name="orders")
    pool = await poolscope.instrument.asyncpg.create_pool(dsn, name="orders", heartbeat=5)

What is hooked, and how:

* ``acquire()`` (``async with`` and ``await`` forms), ``release()`` and the pool-level
  ``execute``/``executemany``/``fetch*``/``copy_*`` (they acquire internally) go through
  the proxy: a clock read before and after ``asyncpg.Pool.acquire`` and an append.
  The proxy counts acquirers in flight: that is the ``waiting`` gauge.
* ``acquire(timeout=...)`` expiring is a ``timeout`` event; the ``TimeoutError`` is
  re-raised unchanged.
* Connects: the pool's ``_connect`` slot (the function asyncpg calls to open a
  connection) is wrapped to time it; every connection gets a termination listener
  (``add_termination_listener``) that reports its ``close`` with a reason.
* Gauges come from ``get_size()``/``get_idle_size()``/``get_min_size()``/
  ``get_max_size()``.
* Proven leaks: asyncpg keeps a strong reference to a checked-out connection proxy, so
  an abandoned one is never garbage-collected; it stays checked out for ever. We see
  that instead by reference count: a checked-out proxy referenced only by asyncpg's
  own holder and connection can never be released by the application.

Everything else (attribute access, ``close()``, ``terminate()``, ...) passes through.
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from typing import Any

from . import errors
from .adapter import Attachment, Options, class_names, registry
from .adapters import (
    ConnIds,
    ConnInfo,
    describe_error,
    emit_adopted,
    emit_close,
    emit_connect,
    emit_heartbeat,
    emit_skipped,
    probe_timeout,
    start_async_heartbeat,
    timed_out_error,
)
from .backend import HEALTHY, BackendTracker
from .recorder import PoolHandle
from .redact import target_from_dsn
from .runtime import Runtime

__all__ = ["AsyncpgAdapter", "InstrumentedPool", "create_pool", "instrument_asyncpg"]

_clock = time.perf_counter

# References to a checked-out proxy held by asyncpg itself: the holder's ``_proxy``,
# the connection's ``_proxy``, plus getrefcount's own argument.
_INTERNAL_REFS = 3


class _State:
    """Per-pool bookkeeping shared by the proxy and the callbacks."""

    def __init__(
        self, pool: Any, handle: PoolHandle, heartbeat: float | None, runtime: Runtime
    ) -> None:
        self.runtime = runtime
        self.pool = pool
        self.handle = handle
        self.heartbeat = heartbeat
        self.ids = ConnIds()
        self.waiting = 0
        self.proven: set[int] = set()  # id() of proxies already reported as proven leaks
        self.stop_heartbeat: Any = None
        #: id(raw) -> (weakref to the raw connection, its termination listener): what
        #: detach removes.
        self.listeners: dict[int, tuple[Any, Any]] = {}
        #: The pool's own ``_connect`` before we wrapped it (None: not wrapped).
        self.original_connect: Any = None
        self.backend = BackendTracker(handle, heartbeat)
        # The hot path's lookups, made once: the id -> ConnInfo table, the pool's loop
        # (its table of current tasks names the acquirer) and the pool's own bound
        # methods. ``raw_acquire(timeout)`` is asyncpg's ``Pool._acquire`` when the
        # class's ``acquire`` is asyncpg's own (it only wraps ``_acquire`` in a
        # context object: skipping it saves three Python calls per acquire), else
        # the subclass's ``acquire``.
        self.by_key = self.ids.by_key
        self.loop: Any = getattr(pool, "_loop", None)
        self.raw_release: Any = pool.release
        self.raw_acquire: Any = _direct_acquire(pool)

    # -- connections ------------------------------------------------------------------
    def track(self, raw: Any) -> ConnInfo:
        """Give a raw ``asyncpg.Connection`` an id and watch for its end."""
        info = self.ids.add(raw)
        ref = weakref.ref(self)
        key = id(raw)
        generation = getattr(self.pool, "_generation", 0)

        def on_terminated(_con: Any) -> None:
            st = ref()
            if st is not None:
                st.closed(key, raw_ref, generation)

        raw_ref = weakref.ref(raw)
        try:
            raw.add_termination_listener(on_terminated)
            self.listeners[key] = (raw_ref, on_terminated)
        except Exception as exc:
            errors.report("asyncpg termination listener", exc)
        return info

    def closed(self, key: int, raw_ref: Any, generation: int) -> None:
        """A connection ended: say why, as best the pool's state tells."""
        try:
            self.listeners.pop(key, None)
            info = self.ids.by_key.pop(key, None)
            if info is None:
                return
            raw = raw_ref()
            pool = self.pool
            if info.hint is not None:
                reason = info.hint
            elif pool.is_closing():
                reason = "closed"
            elif raw is not None and getattr(raw, "_aborted", False):
                # Terminated by asyncpg itself: its inactivity timer if the connection sat
                # idle that long; otherwise it gave up on it (a failed reset or query,
                # e.g. around a server restart).
                lifetime = getattr(pool, "_max_inactive_connection_lifetime", 0) or 0
                idle_for = _clock() - info.idle_since
                if not info.held and lifetime and idle_for >= lifetime * 0.9:
                    reason = "idle_timeout"
                else:
                    reason = "invalid"
            elif generation != getattr(pool, "_generation", generation):
                reason = "expired"
            elif raw is not None and _queries(raw) >= getattr(pool, "_max_queries", 1 << 62):
                reason = "lifetime"
            else:
                # Not closed by asyncpg, the pool or us: the server or network ended it.
                reason = "lost"
            h = self.handle
            emit_close(h, info, reason)
            if reason == "lost":
                self.backend.failed("lost", "connection lost (closed by server)")
            if reason == "lost" and info.hint is None and not info.held and self.heartbeat:
                # asyncpg notices a closed socket at once, before any probe could: a
                # passive health check that failed, reported as such.
                emit_heartbeat(
                    h, info.id, False, None, "connection lost (closed by server)", passive=True
                )
        except Exception as exc:
            errors.report("asyncpg close", exc)

    def adopt_existing(self) -> None:
        """Track connections opened before we were attached (no connect event: not seen)."""
        try:
            for holder in list(getattr(self.pool, "_holders", ())):
                raw = getattr(holder, "_con", None)
                if raw is not None and self.ids.get(raw) is None and not raw.is_closed():
                    emit_adopted(self.handle, self.track(raw), raw)
        except Exception as exc:
            errors.report("asyncpg adopt", exc)

    def stopped(self) -> None:
        """The pool was closed: stop probing and polling."""
        try:
            if self.stop_heartbeat is not None:
                self.stop_heartbeat()
            self.runtime.unregister(self.handle)
        except Exception as exc:
            errors.report("asyncpg stop", exc)

    def detach(self) -> None:
        """Undo every hook: the pool's ``_connect``, each connection's termination
        listener, the heartbeat, the registration."""
        try:
            if self.original_connect is not None:
                self.pool._connect = self.original_connect
                self.original_connect = None
            for raw_ref, listener in list(self.listeners.values()):
                raw = raw_ref()
                if raw is not None:
                    try:
                        raw.remove_termination_listener(listener)
                    except Exception as exc:
                        errors.report("asyncpg detach listener", exc)
            self.listeners.clear()
            self.ids.by_key.clear()
        finally:
            self.stopped()

    def info_of(self, proxy: Any) -> ConnInfo | None:
        raw = getattr(proxy, "_con", None)
        if raw is None:
            return None
        info = self.ids.get(raw)
        if info is None:
            info = self.track(raw)  # opened before we were attached
            emit_adopted(self.handle, info, raw)
        return info

    # -- gauges (background thread) ---------------------------------------------------
    def gauges(self) -> dict[str, Any] | None:
        pool = self.pool
        if not getattr(pool, "_initialized", True) or getattr(pool, "_closed", False):
            return None
        size = pool.get_size()
        idle = pool.get_idle_size()
        if self.handle.leak_threshold:
            self.find_unreachable()
        return {
            "size": size,
            "idle": idle,
            "in_use": size - idle,
            "waiting": self.waiting,
            "max": pool.get_max_size(),
            "min": pool.get_min_size(),
        }

    def find_unreachable(self) -> None:
        """Report checked-out proxies nothing but asyncpg references: proven leaks."""
        for holder in list(getattr(self.pool, "_holders", ())):
            proxy = getattr(holder, "_proxy", None)
            if proxy is None or id(proxy) in self.proven:
                continue
            # Three references: holder._proxy, con._proxy, getrefcount's argument;
            # our local ``proxy`` makes four.
            if sys.getrefcount(proxy) > _INTERNAL_REFS + 1:
                continue
            raw = getattr(proxy, "_con", None)
            if raw is None or getattr(holder, "_proxy", None) is not proxy:
                continue  # released meanwhile
            info = self.ids.get(raw)
            if info is None:
                continue
            self.proven.add(id(proxy))
            self.handle.event("leak", conn=info.id, proven=True, unreachable=True)

    # -- heartbeat (application's loop) -----------------------------------------------
    async def probe(self) -> bool:
        """One heartbeat: probe an idle connection; with none idle (or after a failure,
        to confirm on a fresh one) open a connection of our own and close it at once."""
        pool = self.pool
        if getattr(pool, "_closed", False) or pool.is_closing():
            return False
        if not getattr(pool, "_initialized", False):
            return True
        assert self.heartbeat is not None
        limit = probe_timeout(self.heartbeat)
        result: bool | None = None
        # Only when a connection is idle right now and nobody waits: then asyncpg's
        # queue hands it over without suspending, so the probe never waits for a slot.
        if pool.get_idle_size() and not self.waiting:
            result = await self.probe_idle(limit)
        if result is not True and (result is None or self.backend.state != HEALTHY):
            if self.backend.own_probe_due():
                await self.probe_own(limit)
            elif result is None:
                emit_skipped(self.handle)
        return True

    async def probe_idle(self, limit: float) -> bool:
        pool, h = self.pool, self.handle
        con = await pool.acquire(timeout=limit)
        info = self.info_of(con)
        cid = info.id if info is not None else ""
        t0 = _clock()
        try:
            await con.fetchval("SELECT 1", timeout=limit)
        except Exception as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            error = timed_out_error(limit) if timed_out else describe_error(exc)
            emit_heartbeat(h, cid, False, _clock() - t0, error)
            self.backend.failed("probe", error, t0)
            if info is not None:
                # We close it: a timed-out probe's connection is in an unknown state.
                # Already closed under us: the server (or network) ended it.
                raw = getattr(con, "_con", None)
                lost = raw is not None and raw.is_closed() and not timed_out
                info.hint = "probe_timeout" if timed_out else ("lost" if lost else "invalid")
            con.terminate()  # returns the holder to the pool, closed
            return False
        finally:
            if getattr(con, "_con", None) is not None:
                await pool.release(con)
        emit_heartbeat(h, cid, True, _clock() - t0, None)
        self.backend.ok("probe")
        return True

    async def probe_own(self, limit: float) -> None:
        """Open a connection outside the pool (as the pool would), close it at once."""
        pool = self.pool
        connect = self.original_connect or pool._connect
        t0 = _clock()
        try:
            con = await asyncio.wait_for(
                connect(
                    *pool._connect_args,
                    loop=pool._loop,
                    connection_class=pool._connection_class,
                    record_class=pool._record_class,
                    **pool._connect_kwargs,
                ),
                limit,
            )
        except Exception as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            error = timed_out_error(limit) if timed_out else describe_error(exc)
            emit_heartbeat(self.handle, "", False, _clock() - t0, error, probe="connect")
            self.backend.failed("connect", error, t0)
            return
        latency = _clock() - t0
        try:
            await asyncio.wait_for(con.close(), limit)
        except Exception:
            con.terminate()
        emit_heartbeat(self.handle, "", True, latency, None, probe="connect")
        self.backend.ok("connect")


def _direct_acquire(pool: Any) -> Any:
    """``timeout -> awaitable connection``: the cheapest way in that keeps the pool's
    own behaviour (a subclass overriding ``acquire`` keeps its override)."""
    try:
        from asyncpg.pool import Pool

        if getattr(type(pool), "acquire", None) is Pool.acquire:
            return pool._acquire
    except Exception as exc:  # an asyncpg without the attribute: the public way in
        errors.report("asyncpg acquire path", exc)
    acquire = pool.acquire
    return lambda timeout: acquire(timeout=timeout)


def _queries(raw: Any) -> int:
    proto = getattr(raw, "_protocol", None)
    return int(getattr(proto, "queries_count", 0)) if proto is not None else 0


_new_object = object.__new__


class _AcquireContext:
    """What ``InstrumentedPool.acquire()`` returns: ``async with`` or ``await``.

    The hot path is written out in ``__aenter__``/``__aexit__`` rather than shared
    through helpers: every Python call there is paid on every acquire (issue 18 counts
    them; bench/overhead_adapters.py prints the count)."""

    __slots__ = ("_conn", "_done", "_pool", "_timeout")
    _pool: InstrumentedPool
    _timeout: float | None
    _conn: Any
    _done: bool

    async def __aenter__(self) -> Any:
        if self._conn is not None or self._done:
            # Same error as asyncpg's own context.
            from asyncpg import exceptions

            raise exceptions.InterfaceError("a connection is already acquired")
        proxy = self._pool
        st = proxy._ps_state
        timeout = self._timeout
        start = _clock()
        st.waiting += 1
        try:
            con = await st.raw_acquire(timeout)
        except asyncio.TimeoutError:
            st.waiting -= 1
            proxy._ps_timeout(start, timeout)
            raise
        except BaseException as exc:
            st.waiting -= 1
            proxy._ps_failed(exc)
            raise
        st.waiting -= 1
        self._conn = con
        try:
            raw = con._con
            info = st.by_key.get(id(raw)) or st.track(raw)
            info.held = True
            # One call takes the site (this frame is the pool's acquire: up=0), the
            # task (from the pool's loop) and the clock reading.
            now = _clock()
            st.handle.acquired_here(info.id, now - start, now, st.loop, 0)
        except Exception as exc:
            errors.report("asyncpg acquire", exc)
        return con

    async def __aexit__(self, *exc: object) -> None:
        self._done = True
        con = self._conn
        self._conn = None
        st = self._pool._ps_state
        try:
            info = st.by_key.get(id(con._con))
            if info is not None and info.held:
                info.held = False
                info.idle_since = now = _clock()
                st.handle.released(info.id, None, now)
        except Exception as exc:
            errors.report("asyncpg release", exc)
        await st.raw_release(con)

    def __await__(self) -> Any:
        self._done = True
        return self._pool._ps_acquire(self._timeout).__await__()


class InstrumentedPool:
    """A transparent proxy for an ``asyncpg.Pool``; ``isinstance(p, asyncpg.Pool)`` holds."""

    __slots__ = ("__weakref__", "_ps_pool", "_ps_state")
    _ps_pool: Any
    _ps_state: _State

    def __init__(self, pool: Any, state: _State) -> None:
        object.__setattr__(self, "_ps_pool", pool)
        object.__setattr__(self, "_ps_state", state)

    # Transparency: isinstance() and attribute access see the real pool.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._ps_pool)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ps_pool, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ps_pool, name, value)

    def __repr__(self) -> str:
        return f"<poolscope {self._ps_state.handle.name!r} {self._ps_pool!r}>"

    @property
    def poolscope_handle(self) -> PoolHandle:
        return self._ps_state.handle

    # -- acquire / release (the hot path) ----------------------------------------------
    def acquire(self, *, timeout: float | None = None) -> _AcquireContext:
        # Built without __init__: one Python call fewer on every acquire.
        ctx: _AcquireContext = _new_object(_AcquireContext)
        ctx._pool = self
        ctx._timeout = timeout
        ctx._conn = None
        ctx._done = False
        return ctx

    async def _ps_acquire(self, timeout: float | None, up: int = 0) -> Any:
        """``await pool.acquire()`` (``async with`` goes through ``_AcquireContext``)."""
        st = self._ps_state
        start = _clock()
        st.waiting += 1
        try:
            con = await st.raw_acquire(timeout)
        except asyncio.TimeoutError:
            st.waiting -= 1
            self._ps_timeout(start, timeout)
            raise
        except BaseException as exc:
            st.waiting -= 1
            self._ps_failed(exc)
            raise
        st.waiting -= 1
        try:
            raw = con._con
            info = st.by_key.get(id(raw)) or st.track(raw)
            info.held = True
            # One call takes the site (at the depth stated: no frame walk for the
            # common case), the task (from the pool's loop) and the clock reading.
            now = _clock()
            st.handle.acquired_here(info.id, now - start, now, st.loop, up)
        except Exception as exc:
            errors.report("asyncpg acquire", exc)
        return con

    def _ps_timeout(self, start: float, timeout: float | None) -> None:
        try:
            pool = self._ps_pool
            waited = _clock() - start
            msg = (
                f"asyncpg: no connection within {timeout}s (size {pool.get_size()}/"
                f"{pool.get_max_size()}, idle {pool.get_idle_size()}, "
                f"{self._ps_state.waiting} waiting)"
            )
            self._ps_state.handle.event("timeout", wait=waited, error=msg)
        except Exception as exc:
            errors.report("asyncpg timeout", exc)

    def _ps_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            error = describe_error(exc)
            self._ps_state.handle.event("acquire_error", error=error)
            self._ps_state.backend.failed("acquire", error)

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        st = self._ps_state
        try:
            raw = getattr(connection, "_con", None)
            info = st.by_key.get(id(raw)) if raw is not None else None
            if info is not None and info.held:
                info.held = False
                info.idle_since = now = _clock()
                st.handle.released(info.id, None, now)
        except Exception as exc:
            errors.report("asyncpg release", exc)
        if timeout is None:
            return await st.raw_release(connection)  # type: ignore[no-any-return]
        return await st.raw_release(connection, timeout=timeout)  # type: ignore[no-any-return]

    # -- pool-level queries: asyncpg acquires internally, so do it through the proxy ---
    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        async with self.acquire() as con:
            return await con.execute(query, *args, timeout=timeout)

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> Any:
        async with self.acquire() as con:
            return await con.executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetchval(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetchrow(query, *args, **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetchmany(query, args, **kwargs)

    async def copy_from_table(self, table_name: str, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.copy_from_table(table_name, **kwargs)

    async def copy_from_query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.copy_from_query(query, *args, **kwargs)

    async def copy_to_table(self, table_name: str, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.copy_to_table(table_name, **kwargs)

    async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.copy_records_to_table(table_name, **kwargs)

    # -- lifecycle: pass through, but hand back the proxy ---------------------------
    def __await__(self) -> Any:
        return self._ps_init().__await__()

    async def _ps_init(self) -> InstrumentedPool:
        await self._ps_pool
        self._ps_state.adopt_existing()
        return self

    async def __aenter__(self) -> InstrumentedPool:
        return await self._ps_init()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._ps_pool.close()
        finally:
            self._ps_state.stopped()

    def terminate(self) -> None:
        try:
            self._ps_pool.terminate()
        finally:
            self._ps_state.stopped()


def _wrap_connect(st: _State) -> None:
    """Time connects: wrap the function asyncpg.Pool calls to open one (its ``_connect``)."""
    pool = st.pool
    original = getattr(pool, "_connect", None)
    if original is None or getattr(original, "_poolscope", False):
        return

    async def connect(*args: Any, **kwargs: Any) -> Any:
        t0 = _clock()
        try:
            pending = original(*args, **kwargs)
            # args/kwargs carry the DSN and password: drop them before waiting, so this
            # frame's locals (printed by Sentry, loguru's diagnose) never hold them.
            del args, kwargs
            con = await pending
        except Exception as exc:
            error = describe_error(exc)
            st.handle.event("connect_error", error=error, duration=_clock() - t0)
            st.backend.failed("connect", error, t0)
            raise
        st.backend.ok("connect")
        try:
            emit_connect(st.handle, st.track(con), _clock() - t0, con)
        except Exception as exc:
            errors.report("asyncpg connect", exc)
        return con

    connect._poolscope = True  # type: ignore[attr-defined]
    st.original_connect = original
    pool._connect = connect


def _target(pool: Any) -> str:
    args = getattr(pool, "_connect_args", ()) or ()
    kwargs = getattr(pool, "_connect_kwargs", {}) or {}
    dsn = args[0] if args and isinstance(args[0], str) else kwargs.get("dsn")
    return target_from_dsn(
        dsn, host=kwargs.get("host"), port=kwargs.get("port"), database=kwargs.get("database")
    )


class AsyncpgAdapter:
    """``asyncpg.Pool``: a proxy (the pool has ``__slots__``), plus in-place hooks on the
    pool's ``_connect`` slot and each connection's termination listeners."""

    kind = "asyncpg"
    classes: tuple[str, ...] = ("asyncpg.Pool",)
    distribution = "asyncpg"
    supported: tuple[str | None, str | None] = ("0.30", "0.33")
    attaches: Attachment = "proxy"
    private_attributes: tuple[str, ...] = (
        "asyncpg.pool:Pool._connect",
        "asyncpg.pool:Pool._acquire",
        "asyncpg.pool:Pool._holders",
        "asyncpg.pool:Pool._loop",
        "asyncpg.pool:Pool._generation",
        "asyncpg.pool:Pool._initialized",
        "asyncpg.pool:Pool._closed",
        "asyncpg.pool:Pool._max_queries",
        "asyncpg.pool:Pool._max_inactive_connection_lifetime",
        "asyncpg.pool:Pool._connect_args",
        "asyncpg.pool:Pool._connect_kwargs",
        "asyncpg.pool:Pool._connection_class",
        "asyncpg.pool:Pool._record_class",
        "asyncpg.pool:PoolConnectionHolder._con",
        "asyncpg.pool:PoolConnectionHolder._proxy",
        "asyncpg.pool:PoolConnectionProxy._con",
        "asyncpg.connection:Connection._aborted",
        "asyncpg.connection:Connection._protocol",
        "asyncpg.connection:Connection.add_termination_listener",
        "asyncpg.connection:Connection.remove_termination_listener",
    )

    def __init__(self) -> None:
        self._attached: dict[int, InstrumentedPool] = {}  # id(raw pool) -> its proxy

    def matches(self, obj: Any) -> bool:
        if type(obj) is InstrumentedPool:
            return True
        return any(top == "asyncpg" and name == "Pool" for top, name in class_names(obj))

    def private_root(self, obj: Any) -> Any:
        return obj._ps_pool if type(obj) is InstrumentedPool else obj

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> InstrumentedPool:
        """Instrument an ``asyncpg.Pool`` (initialised or not); returns the proxy to use."""
        if type(obj) is InstrumentedPool:
            return obj
        known = self._attached.get(id(obj))
        if known is not None and known._ps_pool is obj:
            return known
        pool = obj
        heartbeat = options.heartbeat
        config = {
            "min": pool.get_min_size(),
            "max": pool.get_max_size(),
            "max_queries": getattr(pool, "_max_queries", None),
            "max_inactive_connection_lifetime": getattr(
                pool, "_max_inactive_connection_lifetime", None
            ),
        }
        state_box: list[_State] = []
        handle = PoolHandle(
            runtime.recorder,
            options.name or "asyncpg",
            "asyncpg",
            leak_threshold=options.leak_threshold,
            heartbeat=heartbeat,
            target=_target(pool),
            config=config,
            gauges=lambda: state_box[0].gauges(),
        )
        st = _State(pool, handle, heartbeat, runtime)
        state_box.append(st)
        runtime.register(handle)
        _wrap_connect(st)
        st.adopt_existing()
        if heartbeat:
            loop = getattr(pool, "_loop", None)
            if loop is None:
                loop = asyncio.get_event_loop()
            st.stop_heartbeat = start_async_heartbeat(loop, heartbeat, st.probe)
        proxy = InstrumentedPool(pool, st)
        self._attached[id(pool)] = proxy
        return proxy

    def detach(self, obj: Any) -> Any:
        raw = obj._ps_pool if type(obj) is InstrumentedPool else obj
        proxy = self._attached.get(id(raw))
        if proxy is None or proxy._ps_pool is not raw:
            # Hooked in place by `poolscope run` / `inject` (asyncpg_inplace), if at all.
            from .asyncpg_inplace import release_pool

            return raw if release_pool(raw) else None
        del self._attached[id(raw)]
        proxy._ps_state.detach()
        return raw


ADAPTER = registry.register(AsyncpgAdapter())


def instrument_asyncpg(
    obj: Any,
    runtime: Runtime,
    *,
    name: str | None,
    leak_threshold: float | None,
    heartbeat: float | None,
) -> InstrumentedPool:
    """The asyncpg adapter's ``attach`` (kept for callers of the old function)."""
    result: InstrumentedPool = ADAPTER.attach(
        obj, runtime, Options(name, leak_threshold, heartbeat)
    )
    return result


def create_pool(
    dsn: str | None = None,
    *,
    name: str | None = None,
    leak_threshold: float | None = 30.0,
    heartbeat: float | None = None,
    listen: Any = None,
    **kwargs: Any,
) -> InstrumentedPool:
    """``asyncpg.create_pool`` plus poolscope's arguments; ``await`` it (or ``async with``)
    exactly like asyncpg's: ``pool = await create_pool(dsn, name="orders")``."""
    import asyncpg

    from . import instrument

    pool = asyncpg.create_pool(dsn, **kwargs)
    result: InstrumentedPool = instrument(
        pool, name=name, leak_threshold=leak_threshold, heartbeat=heartbeat, listen=listen
    )
    return result
