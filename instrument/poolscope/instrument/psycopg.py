"""psycopg_pool adapter (3.x): ``ConnectionPool`` and ``AsyncConnectionPool``, hooked in place.

Methods are overridden on the pool instance (the class is untouched, other pools are not
affected): ``getconn``/``putconn`` (``connection()`` calls them, so it is timed too),
``_connect`` (timed connects), ``_close_connection`` (closes), ``_check_connection``
and ``check_connection`` (the ``check`` callback and ``check()``: a failure is a
heartbeat failure and the connection is ``lost``), ``_return_connection`` (a broken
connection coming back is ``lost``). Gauges come from ``get_stats()``.

The heartbeat calls the pool's own ``check()`` when a connection is idle and nobody
waits; ``check()`` probes the idle connections and replaces broken ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

from . import errors
from .adapter import Attachment, Options, attach_function, class_names, registry
from .adapters import (
    AsyncProbe,
    ConnIds,
    ConnInfo,
    ProbeResult,
    SyncProbe,
    async_round,
    cached_site,
    describe_error,
    emit_adopted,
    emit_close,
    emit_connect,
    emit_gc_leak,
    emit_heartbeat,
    probe_timeout,
    start_async_heartbeat,
    start_thread_heartbeat,
    sync_round,
)
from .backend import BackendTracker
from .recorder import PoolHandle
from .redact import target_from_dsn
from .runtime import Runtime

__all__ = ["PsycopgPoolAdapter", "instrument_psycopg"]

_clock = time.perf_counter
_current_task = asyncio.current_task
_get_ident = threading.get_ident


class _State:
    def __init__(self, pool: Any, handle: PoolHandle) -> None:
        self.pool = pool
        self.handle = handle
        self.ids = ConnIds()
        #: id(conn) -> the weakref watching it: one per connection, made at its first
        #: checkout and kept across checkouts (a weakref and a closure per checkout
        #: cost ~1 us); its callback proves a leak only if the connection was held.
        self.refs: dict[int, Any] = {}
        self.site_paths: list[tuple[int, Any, Any]] = []  # see adapters.cached_site
        # An async pool instrumented before its loop runs (made at import time):
        # the heartbeat, started by the first getconn inside the loop.
        self.start_heartbeat: Any = None
        self.stop_heartbeat: Any = None
        self.runtime: Runtime | None = None
        self.backend = BackendTracker(handle)
        self.check_failures = 0  # failed checks so far: did one round's check() fail?

    def info(self, conn: Any) -> ConnInfo:
        return self.ids.get(conn) or self.ids.add(conn)

    def acquired(self, conn: Any, start: float, holder: Any) -> None:
        try:
            key = id(conn)
            info = self.ids.by_key.get(key) or self.ids.add(conn)
            info.held = True
            h = self.handle
            depth = h.site_depth
            try:
                # Frames: cached_site, this method, the hooked getconn, then its caller.
                site = cached_site(self.site_paths, depth, 3) if depth else None
            except Exception as exc:  # the checkout is still recorded, without a site
                errors.report("site capture", exc)
                site = None
            h.acquired(info.id, _clock() - start, site, holder)
            if key not in self.refs:
                self.refs[key] = weakref.ref(conn, lambda _r: self.collected(key, info))
        except Exception as exc:
            errors.report("psycopg getconn", exc)

    def collected(self, key: int, info: ConnInfo) -> None:
        """A connection garbage-collected while checked out: its slot is gone for good."""
        try:
            self.refs.pop(key, None)
            if info.held and self.ids.by_key.get(key) is info:
                self.ids.by_key.pop(key, None)
                emit_gc_leak(self.handle, info)
        except Exception as exc:
            errors.report("psycopg gc", exc)

    def released(self, conn: Any) -> None:
        try:
            info = self.ids.get(conn)
            if info is not None and info.held:
                info.held = False  # its weakref stays: the next checkout reuses it
                self.handle.released(info.id)
        except Exception as exc:
            errors.report("psycopg putconn", exc)

    def timed_out(self, start: float, exc: BaseException) -> None:
        self.handle.event("timeout", wait=_clock() - start, error=describe_error(exc))

    def connected(self, conn: Any, t0: float) -> None:
        try:
            emit_connect(self.handle, self.ids.add(conn), _clock() - t0, conn)
        except Exception as exc:
            errors.report("psycopg connect", exc)

    def closing(self, conn: Any, default: str | None = None) -> None:
        try:
            info = self.ids.forget(conn)
            if info is None:
                return
            self.refs.pop(id(conn), None)
            reason = info.hint or default
            if reason == "lost":
                self.backend.failed("lost", "connection lost (closed by server)")
            if reason is None:
                expire = getattr(conn, "_expire_at", None)
                if getattr(self.pool, "_closed", False):
                    reason = "closed"
                elif expire is not None and expire <= time.monotonic():
                    reason = "lifetime"
                else:
                    reason = "closed"
            emit_close(self.handle, info, reason)
        except Exception as exc:
            errors.report("psycopg close", exc)

    def check_failed(self, conn: Any, t0: float, exc: BaseException) -> None:
        info = self.ids.get(conn)
        error = describe_error(exc)
        emit_heartbeat(self.handle, info.id if info else "", False, _clock() - t0, error)
        self.check_failures += 1
        self.backend.failed("probe", error, t0)
        self.closing(conn, "lost")

    def check_ok(self, conn: Any, t0: float) -> None:
        info = self.ids.get(conn)
        emit_heartbeat(self.handle, info.id if info else "", True, _clock() - t0, None)
        self.backend.ok("probe")

    def connect_failed(self, t0: float, exc: BaseException) -> None:
        error = describe_error(exc)
        self.handle.event("connect_error", error=error, duration=_clock() - t0)
        self.backend.failed("connect", error, t0)

    def own_kwargs(self, limit: float) -> dict[str, Any]:
        kwargs = dict(getattr(self.pool, "kwargs", None) or {})
        kwargs["connect_timeout"] = max(1, round(limit))
        return kwargs

    def own_failed(self, t0: float, exc: BaseException) -> ProbeResult:
        return False, _clock() - t0, describe_error(exc), ""

    def put_back(self, conn: Any) -> None:
        """A connection given back dead (the server ended it while it was held): its
        close comes first, so its hold ends as lost - not as an ordinary release."""
        try:
            if getattr(conn, "broken", False) or getattr(conn, "closed", False):
                self.closing(conn, "lost")
        except Exception as exc:
            errors.report("psycopg putconn", exc)

    def returned_broken(self, conn: Any) -> None:
        try:
            if getattr(conn, "closed", False) or _status_unknown(conn):
                self.closing(conn, "lost")
        except Exception as exc:
            errors.report("psycopg return", exc)

    def gauges(self) -> dict[str, Any]:
        s = self.pool.get_stats()
        size = s.get("pool_size", 0)
        idle = s.get("pool_available", 0)
        return {
            "size": size,
            "idle": idle,
            "in_use": max(size - idle, 0),
            "waiting": s.get("requests_waiting", 0),
            "max": s.get("pool_max", 0),
            "min": s.get("pool_min", 0),
            "stats": {k: v for k, v in s.items() if k.startswith(("requests", "connections"))},
        }

    def can_probe(self) -> bool:
        s = self.pool.get_stats()
        return not (s.get("pool_available", 0) == 0 or s.get("requests_waiting", 0))


def _status_unknown(conn: Any) -> bool:
    from psycopg.pq import TransactionStatus

    return bool(conn.pgconn.transaction_status == TransactionStatus.UNKNOWN)


#: The pool methods replaced on the instance (the class is untouched).
HOOKED = (
    "getconn",
    "putconn",
    "_connect",
    "_close_connection",
    "_check_connection",
    "check_connection",
    "_return_connection",
)


def _install(pool: Any, **hooks: Any) -> None:
    for attr, fn in hooks.items():
        fn._poolscope = True
        setattr(pool, attr, fn)


def _uninstall(pool: Any) -> None:
    """Remove our instance overrides: the class's methods show through again."""
    for attr in HOOKED:
        if getattr(vars(pool).get(attr), "_poolscope", False):
            del pool.__dict__[attr]


def _hook_sync(pool: Any, st: _State) -> None:
    getconn, putconn = pool.getconn, pool.putconn
    connect, close_connection = pool._connect, pool._close_connection
    check_one, check_static = pool._check_connection, pool.check_connection
    return_connection = pool._return_connection
    from psycopg_pool import PoolTimeout

    def _getconn(timeout: float | None = None) -> Any:
        start = _clock()
        try:
            conn = getconn(timeout)
        except PoolTimeout as exc:
            st.timed_out(start, exc)
            raise
        st.acquired(conn, start, _get_ident())
        return conn

    def _putconn(conn: Any) -> None:
        st.put_back(conn)
        st.released(conn)
        putconn(conn)

    def _connect(timeout: float | None = None) -> Any:
        t0 = _clock()
        try:
            conn = connect(timeout)
        except Exception as exc:
            st.connect_failed(t0, exc)
            raise
        st.connected(conn, t0)
        return conn

    def _close_connection(conn: Any) -> None:
        st.closing(conn)
        close_connection(conn)

    def _checked(fn: Any) -> Any:
        def run(conn: Any) -> None:
            if fn is check_one and not getattr(pool, "_check", None):
                fn(conn)  # no check callback: a no-op on every getconn, not a probe
                return
            t0 = _clock()
            try:
                fn(conn)
            except Exception as exc:
                st.check_failed(conn, t0, exc)
                raise
            st.check_ok(conn, t0)

        return run

    def _return_connection(conn: Any, from_getconn: bool) -> None:
        st.returned_broken(conn)
        return_connection(conn, from_getconn)

    _install(
        pool,
        getconn=_getconn,
        putconn=_putconn,
        _connect=_connect,
        _close_connection=_close_connection,
        _check_connection=_checked(check_one),
        check_connection=_checked(check_static),
        _return_connection=_return_connection,
    )


def _hook_async(pool: Any, st: _State) -> None:
    getconn, putconn = pool.getconn, pool.putconn
    connect, close_connection = pool._connect, pool._close_connection
    check_one, check_static = pool._check_connection, pool.check_connection
    return_connection = pool._return_connection
    from psycopg_pool import PoolTimeout

    async def _getconn(timeout: float | None = None) -> Any:
        if st.start_heartbeat is not None:
            starter, st.start_heartbeat = st.start_heartbeat, None
            try:
                starter()
            except Exception as exc:
                errors.report("psycopg heartbeat", exc)
        start = _clock()
        try:
            conn = await getconn(timeout)
        except PoolTimeout as exc:
            st.timed_out(start, exc)
            raise
        st.acquired(conn, start, _current_task())
        return conn

    async def _putconn(conn: Any) -> None:
        st.put_back(conn)
        st.released(conn)
        await putconn(conn)

    async def _connect(timeout: float | None = None) -> Any:
        t0 = _clock()
        try:
            conn = await connect(timeout)
        except Exception as exc:
            st.connect_failed(t0, exc)
            raise
        st.connected(conn, t0)
        return conn

    async def _close_connection(conn: Any) -> None:
        st.closing(conn)
        await close_connection(conn)

    def _checked(fn: Any) -> Any:
        async def run(conn: Any) -> None:
            if fn is check_one and not getattr(pool, "_check", None):
                await fn(conn)  # no check callback: a no-op, not a probe
                return
            t0 = _clock()
            try:
                await fn(conn)
            except Exception as exc:
                st.check_failed(conn, t0, exc)
                raise
            st.check_ok(conn, t0)

        return run

    async def _return_connection(conn: Any, from_getconn: bool) -> None:
        st.returned_broken(conn)
        await return_connection(conn, from_getconn)

    _install(
        pool,
        getconn=_getconn,
        putconn=_putconn,
        _connect=_connect,
        _close_connection=_close_connection,
        _check_connection=_checked(check_one),
        check_connection=_checked(check_static),
        _return_connection=_return_connection,
    )


class PsycopgPoolAdapter:
    """psycopg_pool ``ConnectionPool`` and ``AsyncConnectionPool`` (and subclasses such as
    ``NullConnectionPool``), hooked in place by instance overrides of its methods."""

    kind = "psycopg_pool"
    classes: tuple[str, ...] = ("psycopg_pool ConnectionPool", "AsyncConnectionPool")
    distribution = "psycopg-pool"
    supported: tuple[str | None, str | None] = ("3.2.8", "3.4")
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "_pool",
        "_closed",
        "_check",
        "_connect",
        "_close_connection",
        "_check_connection",
        "_return_connection",
        "psycopg_pool:ConnectionPool.check_connection",
        "psycopg_pool:AsyncConnectionPool.check_connection",
        "connection_class",
        "conninfo",
        "kwargs",
    )

    def __init__(self) -> None:
        self._attached: dict[int, _State] = {}

    def matches(self, obj: Any) -> bool:
        return any(
            top == "psycopg_pool" and name in ("ConnectionPool", "AsyncConnectionPool")
            for top, name in class_names(obj)
        )

    def private_root(self, obj: Any) -> Any:
        return obj

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        """Instrument a psycopg_pool pool in place; returns the same object."""
        known = self._attached.get(id(obj))
        if known is not None and known.pool is obj:
            return obj
        self._attached[id(obj)] = _attach(obj, runtime, options)
        return obj

    def detach(self, obj: Any) -> Any:
        st = self._attached.get(id(obj))
        if st is None or st.pool is not obj:
            return None
        del self._attached[id(obj)]
        try:
            st.start_heartbeat = None
            if st.stop_heartbeat is not None:
                st.stop_heartbeat()
                st.stop_heartbeat = None
            _uninstall(obj)
            st.refs.clear()
        finally:
            if st.runtime is not None:
                st.runtime.unregister(st.handle)
        return obj


def _attach(pool: Any, runtime: Runtime, options: Options) -> _State:
    name, leak_threshold, heartbeat = options.name, options.leak_threshold, options.heartbeat
    is_async = asyncio.iscoroutinefunction(type(pool).getconn)
    conninfo = getattr(pool, "conninfo", "") or ""
    kwargs = getattr(pool, "kwargs", {}) or {}
    config = {
        "min": getattr(pool, "min_size", 0),
        "max": getattr(pool, "max_size", 0),
        "timeout": getattr(pool, "timeout", None),
        "max_lifetime": getattr(pool, "max_lifetime", None),
        "max_idle": getattr(pool, "max_idle", None),
        "check": getattr(pool, "_check", None) is not None,
    }
    box: list[_State] = []
    handle = PoolHandle(
        runtime.recorder,
        name or getattr(pool, "name", None) or "psycopg",
        "psycopg_pool",
        leak_threshold=leak_threshold,
        heartbeat=heartbeat,
        target=target_from_dsn(
            conninfo if isinstance(conninfo, str) else "",
            host=kwargs.get("host"),
            port=kwargs.get("port"),
            dbname=kwargs.get("dbname"),
        ),
        config=config,
        gauges=lambda: box[0].gauges(),
    )
    st = _State(pool, handle)
    st.runtime = runtime
    st.backend = BackendTracker(handle, heartbeat)
    box.append(st)
    runtime.register(handle)
    for conn in list(getattr(pool, "_pool", ())):
        emit_adopted(handle, st.info(conn), conn)  # opened before we were attached
    if is_async:
        _hook_async(pool, st)
    else:
        _hook_sync(pool, st)
    if heartbeat:
        if is_async:
            probes = (AsyncProbe(), AsyncProbe())
            limit = probe_timeout(heartbeat)

            async def check() -> bool | None:
                if not st.can_probe():
                    return None
                before = st.check_failures
                await pool.check()  # our hooks report each connection it probes
                return st.check_failures == before

            async def connect_own() -> ProbeResult:
                t0 = _clock()
                try:
                    conn = await pool.connection_class.connect(
                        pool.conninfo, **st.own_kwargs(limit)
                    )
                except Exception as exc:
                    return st.own_failed(t0, exc)
                latency = _clock() - t0
                await conn.close()
                return True, latency, None, ""

            async def tick() -> bool:
                if getattr(pool, "_closed", False):
                    return False
                await async_round(handle, st.backend, probes, check, connect_own, limit)
                return True

            def start() -> None:
                st.stop_heartbeat = start_async_heartbeat(
                    asyncio.get_running_loop(), heartbeat, tick
                )

            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop yet: start inside it, on the first getconn
                st.start_heartbeat = start
            else:
                start()
        else:
            sync_probes = (SyncProbe(handle.name), SyncProbe(f"{handle.name}-connect"))
            sync_limit = probe_timeout(heartbeat)

            def sync_check() -> bool | None:
                if not st.can_probe():
                    return None
                before = st.check_failures
                pool.check()  # our hooks report each connection it probes
                return st.check_failures == before

            def sync_connect_own() -> ProbeResult:
                t0 = _clock()
                try:
                    conn = pool.connection_class.connect(pool.conninfo, **st.own_kwargs(sync_limit))
                except Exception as exc:
                    return st.own_failed(t0, exc)
                latency = _clock() - t0
                conn.close()
                return True, latency, None, ""

            def sync_tick() -> bool:
                if getattr(pool, "_closed", False):
                    return False
                sync_round(
                    handle, st.backend, sync_probes, sync_check, sync_connect_own, sync_limit
                )
                return True

            st.stop_heartbeat = start_thread_heartbeat(handle.name, heartbeat, sync_tick)
    return st


ADAPTER = registry.register(PsycopgPoolAdapter())


instrument_psycopg = attach_function(ADAPTER)
