"""SQLAlchemy 2.x adapter: ``Engine``, ``AsyncEngine`` (through ``sync_engine``) and ``Pool``.

Hooked in place (the same object is returned):

* pool events ``checkout``/``checkin`` (the hot path), ``invalidate``,
  ``soft_invalidate``, ``close``, ``detach``, ``close_detached``, ``reset``;
* ``pool._do_get`` (the pool's own get: where QueuePool blocks and raises
  "QueuePool limit of size N overflow M reached") is wrapped on the instance to
  measure the wait, count waiters and see timeouts;
* ``pool._invoke_creator`` (what a connection record calls to open a DBAPI
  connection) is wrapped to time connects;
* ``dialect._do_ping_w_event`` (``pool_pre_ping``) is wrapped on the engine's dialect
  instance: a failed pre-ping is a heartbeat failure and the connection is ``lost``.

Gauges: ``checkedout()``/``checkedin()`` for queue pools (open = in + out, since
``overflow()`` is negative until the pool fills); NullPool, StaticPool and
SingletonThreadPool keep no counts worth the name, so in-use comes from our own
checkout/checkin count there.
"""

from __future__ import annotations

import asyncio
import threading
import time
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
    emit_close,
    emit_connect,
    emit_heartbeat,
    probe_timeout,
    start_async_heartbeat,
    start_thread_heartbeat,
    sync_round,
)
from .backend import BackendTracker
from .recorder import PoolHandle
from .redact import target
from .runtime import Runtime

__all__ = ["SQLAlchemyAdapter", "instrument_sqlalchemy"]

_clock = time.perf_counter
_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident


class _State:
    def __init__(self, pool: Any, handle: PoolHandle, runtime: Runtime) -> None:
        self.pool = pool
        self.handle = handle
        self.runtime = runtime
        self.ids = ConnIds()
        self.waiting = 0
        self.held = 0
        self.waits: dict[int, float] = {}  # id(record) -> wait measured in _do_get
        self.by_key = self.ids.by_key  # id(dbapi conn) -> ConnInfo, looked up per checkout
        self.site_paths: list[tuple[int, Any, Any]] = []  # see adapters.cached_site
        self.queue_pool = hasattr(pool, "checkedout") and hasattr(pool, "_pool")
        # An AsyncEngine instrumented before its loop runs (a module-level engine):
        # the heartbeat's interval, started on the first checkout inside the loop.
        self.deferred_heartbeat: float | None = None
        #: What detach undoes: (event name, listener) pairs, the heartbeat's stop
        #: function, and attribute -> value each wrapped attribute had on its instance
        #: before (``_MISSING``: it came from the class).
        self.listeners: list[tuple[str, Any]] = []
        self.stop_heartbeat: Any = None
        self.saved: list[tuple[Any, str, Any]] = []
        self.heartbeat: float | None = handle.heartbeat
        self.backend = BackendTracker(handle, handle.heartbeat)
        self.probes = (SyncProbe(handle.name), SyncProbe(f"{handle.name}-connect"))
        #: The pool's own creator (before we wrapped it): the heartbeat's own connects.
        self.creator: Any = getattr(pool, "_invoke_creator", None)

    # -- events ---------------------------------------------------------------------
    def on_checkout(self, dbapi_con: Any, rec: Any, fairy: Any) -> None:
        if self.deferred_heartbeat is not None:
            _start_async(self, self.deferred_heartbeat)
        try:
            info = self.by_key.get(id(dbapi_con)) or self.ids.add(dbapi_con)
            info.held = True
            self.held += 1
            # Proven leaks: SQLAlchemy already keeps a weak reference to the fairy it
            # hands out (its own garbage-collection hook checks the connection back
            # in). Holding on to that one costs an attribute store; making our own
            # weakref and callback per checkout cost ~1 us.
            info.checkout_ref = rec.fairy_ref
            h = self.handle
            depth = h.site_depth
            try:
                # Frames: cached_site, this listener, then SQLAlchemy's (internal).
                site = cached_site(self.site_paths, depth, 2) if depth else None
            except Exception as exc:  # the checkout is still recorded, without a site
                errors.report("site capture", exc)
                site = None
            # Under AsyncEngine the pool runs in a greenlet inside the application's task.
            holder = _current_task() if _get_running_loop() is not None else _get_ident()
            h.acquired(info.id, self.waits.pop(id(rec), 0.0), site, holder)
        except Exception as exc:
            errors.report("sqlalchemy checkout", exc)

    def proven(self, info: ConnInfo) -> None:
        if info.hint != "gc":
            info.hint = "gc"
            self.handle.event("leak", conn=info.id, proven=True)

    def _check_gc(self, info: ConnInfo) -> None:
        """The checked-out fairy was garbage-collected: a proven leak."""
        ref = info.checkout_ref
        info.checkout_ref = None
        if ref is not None and ref() is None:
            self.proven(info)

    def on_checkin(self, dbapi_con: Any, rec: Any) -> None:
        try:
            if dbapi_con is None:
                return
            info = self.by_key.get(id(dbapi_con))
            if info is None or not info.held:
                return
            ref = info.checkout_ref
            if ref is not None:
                info.checkout_ref = None
                if ref() is None:
                    self.proven(info)  # checked in by SQLAlchemy's garbage-collection hook
            info.held = False
            self.held -= 1
            if info.hint == "gc":
                info.hint = None
            self.handle.released(info.id)
        except Exception as exc:
            errors.report("sqlalchemy checkin", exc)

    def on_invalidate(self, dbapi_con: Any, rec: Any, exc: BaseException | None) -> None:
        info = self.ids.get(dbapi_con) if dbapi_con is not None else None
        if info is not None and info.hint is None:
            info.hint = "lost" if exc is not None and _is_disconnect(exc) else "invalid"

    def on_soft_invalidate(self, dbapi_con: Any, rec: Any, exc: BaseException | None) -> None:
        info = self.ids.get(dbapi_con) if dbapi_con is not None else None
        if info is not None and info.hint is None:
            info.hint = "invalid"

    def on_close(self, dbapi_con: Any, rec: Any) -> None:
        self._closed(dbapi_con, None)

    def on_detach(self, dbapi_con: Any, rec: Any) -> None:
        self._closed(dbapi_con, "detached")

    def on_close_detached(self, dbapi_con: Any) -> None:
        self._closed(dbapi_con, None)

    def _closed(self, dbapi_con: Any, reason: str | None) -> None:
        try:
            info = self.ids.forget(dbapi_con)
            if info is None:
                return
            if info.held:
                # An async engine's garbage-collection hook detaches the connection of
                # a dropped fairy instead of checking it in.
                self._check_gc(info)
                info.held = False
                self.held -= 1
            info.checkout_ref = None
            if reason is None:
                if info.hint == "gc":
                    reason = "gc_leak"
                elif info.hint is not None:
                    reason = info.hint
                elif not self.queue_pool and type(self.pool).__name__ == "NullPool":
                    reason = "returned"  # NullPool closes every connection on checkin
                else:
                    reason = "closed"
            emit_close(self.handle, info, reason)
            if reason == "lost":
                self.backend.failed("lost", "connection lost (closed by server)")
        except Exception as exc:
            errors.report("sqlalchemy close", exc)

    # -- gauges (background thread) ----------------------------------------------------
    def gauges(self) -> dict[str, Any]:
        pool = self.pool
        if self.queue_pool:
            out_ = pool.checkedout()
            in_ = pool.checkedin()
            size = pool.size()
            overflow = getattr(pool, "_max_overflow", 0)
            mx = size + overflow if overflow >= 0 else 0
            return {
                "size": in_ + out_,
                "idle": in_,
                "in_use": out_,
                "waiting": self.waiting,
                "max": mx,
                "min": 0,
                "overflow": pool.overflow(),
            }
        held = max(self.held, 0)
        kind = type(pool).__name__
        if kind == "StaticPool":
            size = 1 if getattr(pool, "connection", None) is not None else 0
        elif kind == "SingletonThreadPool":
            size = len(getattr(pool, "_all_conns", ()))
        else:  # NullPool and anything else: only the connections checked out exist
            size = held
        size = max(size, held)
        return {
            "size": size,
            "idle": size - held,
            "in_use": held,
            "waiting": self.waiting,
            "max": 0,
            "min": 0,
        }

    # -- heartbeat -------------------------------------------------------------------
    def probe_idle(self) -> ProbeResult | None:
        """Ping an idle connection, if the pool has one at once (sync code: runs on a
        probe thread, or in a greenlet on the application's loop); None: none idle."""
        import queue as std_queue

        pool = self.pool
        if not self.queue_pool or self.waiting or pool.checkedin() == 0:
            return None
        try:
            rec = pool._pool.get(False)  # never blocks: an idle record or Empty
        except std_queue.Empty:
            return None
        except Exception as exc:  # sqlalchemy's own queue raises its own Empty
            if type(exc).__name__ == "Empty":
                return None
            raise
        try:
            dbapi_con = rec.dbapi_connection
            if dbapi_con is None:
                return None
            info = self.ids.get(dbapi_con)
            cid = info.id if info is not None else ""
            t0 = _clock()
            try:
                ok = _ping(pool, dbapi_con)
                err = None if ok else "ping returned false"
            except Exception as exc:
                ok, err = False, describe_error(exc)
                if info is not None:
                    info.hint = "lost" if _is_disconnect(exc) else "invalid"
            latency = _clock() - t0
            if not ok:
                if info is not None and info.hint is None:
                    info.hint = "invalid"
                rec.invalidate(Exception(err or "heartbeat failed"))
        finally:
            pool._do_return_conn(rec)
        return bool(ok), latency, err, cid

    def connect_own(self) -> ProbeResult:
        """Open a DBAPI connection as the pool would (its creator), close it at once."""
        creator = self.creator
        t0 = _clock()
        try:
            con = creator(None)
        except Exception as exc:
            return False, _clock() - t0, describe_error(exc), ""
        latency = _clock() - t0
        try:
            con.close()
        except Exception as exc:
            errors.report("sqlalchemy probe close", exc)
        return True, latency, None, ""

    def tick(self) -> bool:
        """The heartbeat thread's call: one round (``probe``)."""
        return self.probe()

    def probe(self) -> bool:
        """One heartbeat round: an idle connection, else one of our own."""
        assert self.heartbeat is not None
        sync_round(
            self.handle,
            self.backend,
            self.probes,
            self.probe_idle,
            self.connect_own,
            probe_timeout(self.heartbeat),
        )
        return True


def _ping(pool: Any, dbapi_con: Any) -> bool:
    do_ping = getattr(pool._dialect, "do_ping", None)
    if do_ping is not None:
        return bool(do_ping(dbapi_con))
    cur = dbapi_con.cursor()  # a bare Pool has no dialect: plain DBAPI
    try:
        cur.execute("SELECT 1")
    finally:
        cur.close()
    return True


def _is_disconnect(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        w in text for w in ("disconnect", "closed", "terminat", "lost", "broken", "reset", "ping")
    )


_MISSING = object()


def _save(st: _State, obj: Any, attr: str) -> None:
    """Remember what ``obj.attr`` was on the instance, so detach puts it back exactly."""
    st.saved.append((obj, attr, vars(obj).get(attr, _MISSING)))


def _restore(st: _State) -> None:
    for obj, attr, value in reversed(st.saved):
        try:
            if value is _MISSING:
                vars(obj).pop(attr, None)
            else:
                setattr(obj, attr, value)
        except Exception as exc:
            errors.report("sqlalchemy detach", exc)
    st.saved.clear()


def _wrap_do_get(st: _State) -> None:
    """Measure the wait and see timeouts around the pool's own get (``pool._do_get``)."""
    pool = st.pool
    original = pool._do_get
    if getattr(original, "_poolscope", False):
        return
    from sqlalchemy import exc as sa_exc

    timeout_error = sa_exc.TimeoutError

    def _do_get() -> Any:
        start = _clock()
        st.waiting += 1
        try:
            rec = original()
        except timeout_error as exc:
            st.waiting -= 1
            st.handle.event("timeout", wait=_clock() - start, error=describe_error(exc))
            raise
        except BaseException as exc:
            st.waiting -= 1
            if isinstance(exc, Exception):
                error = describe_error(exc)
                st.handle.event("acquire_error", error=error)
                st.backend.failed("acquire", error)
            raise
        st.waiting -= 1
        st.waits[id(rec)] = _clock() - start
        return rec

    _do_get._poolscope = True  # type: ignore[attr-defined]
    _save(st, pool, "_do_get")
    pool._do_get = _do_get


def _wrap_creator(st: _State) -> None:
    pool = st.pool
    original = getattr(pool, "_invoke_creator", None)
    if original is None or getattr(original, "_poolscope", False):
        return

    def invoke_creator(rec: Any) -> Any:
        t0 = _clock()
        try:
            con = original(rec)
        except Exception as exc:
            error = describe_error(exc)
            st.handle.event("connect_error", error=error, duration=_clock() - t0)
            st.backend.failed("connect", error, t0)
            raise
        st.backend.ok("connect")
        try:
            emit_connect(st.handle, st.ids.add(con), _clock() - t0, con)
        except Exception as exc:
            errors.report("sqlalchemy connect", exc)
        return con

    invoke_creator._poolscope = True  # type: ignore[attr-defined]
    _save(st, pool, "_invoke_creator")
    pool._invoke_creator = invoke_creator


def _wrap_pre_ping(st: _State) -> None:
    dialect = getattr(st.pool, "_dialect", None)
    original = getattr(dialect, "_do_ping_w_event", None)
    if original is None or getattr(original, "_poolscope", False):
        return

    def do_ping_w_event(dbapi_con: Any) -> bool:
        t0 = _clock()
        try:
            ok = bool(original(dbapi_con))
            err = None if ok else "pre-ping failed"
        except Exception as exc:
            ok, err = False, describe_error(exc)
            _pre_ping_failed(st, dbapi_con, t0, err)
            raise
        if not ok:
            _pre_ping_failed(st, dbapi_con, t0, err)
        return ok

    do_ping_w_event._poolscope = True  # type: ignore[attr-defined]
    try:
        _save(st, dialect, "_do_ping_w_event")
        dialect._do_ping_w_event = do_ping_w_event  # type: ignore[union-attr]
    except Exception as exc:
        errors.report("sqlalchemy pre-ping", exc)


def _pre_ping_failed(st: _State, dbapi_con: Any, t0: float, err: str | None) -> None:
    # Successful pre-pings happen on every checkout: only failures are reported.
    info = st.ids.get(dbapi_con)
    if info is not None:
        info.hint = "lost"
    emit_heartbeat(st.handle, info.id if info else "", False, _clock() - t0, err, pre_ping=True)
    st.backend.failed("probe", err or "pre-ping failed")


def _target(engine: Any) -> str:
    url = getattr(engine, "url", None)
    if url is None:
        return ""
    if url.host or url.port:
        return target(url.host, url.port, url.database)
    return f"{url.get_backend_name()}:{url.database or ''}"


def _pool_of(obj: Any) -> Any:
    engine = getattr(obj, "sync_engine", None) or (obj if hasattr(obj, "pool") else None)
    return engine.pool if engine is not None else obj


class SQLAlchemyAdapter:
    """SQLAlchemy 2.x ``Engine``, ``AsyncEngine`` and ``Pool``, hooked in place: pool
    events plus three wrapped attributes on the pool and dialect instances."""

    kind = "sqlalchemy"
    classes: tuple[str, ...] = ("sqlalchemy Engine", "AsyncEngine", "Pool")
    distribution = "SQLAlchemy"
    supported: tuple[str | None, str | None] = ("2.0.5", "2.2")
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "_do_get",
        "_invoke_creator",
        "_do_return_conn",
        "_dialect",
        "_pre_ping",
        "_recycle",
        "sqlalchemy.engine.default:DefaultDialect._do_ping_w_event",
        "sqlalchemy.pool:QueuePool.checkedout",
        "sqlalchemy.pool:QueuePool.checkedin",
        "sqlalchemy.pool.base:_ConnectionRecord.dbapi_connection",
        "sqlalchemy.pool.base:_ConnectionRecord.fairy_ref",
        "sqlalchemy.pool.base:_ConnectionRecord.invalidate",
    )

    def __init__(self) -> None:
        self._attached: dict[int, _State] = {}  # id(pool) -> its state

    def matches(self, obj: Any) -> bool:
        return any(
            top == "sqlalchemy" and name in ("Engine", "AsyncEngine", "Pool")
            for top, name in class_names(obj)
        )

    def private_root(self, obj: Any) -> Any:
        return _pool_of(obj)

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        """Instrument an Engine, AsyncEngine or Pool in place; returns the same object."""
        pool = _pool_of(obj)
        known = self._attached.get(id(pool))
        if known is not None and known.pool is pool:
            return obj
        st = _attach(obj, pool, runtime, options)
        self._attached[id(pool)] = st
        return obj

    def detach(self, obj: Any) -> Any:
        pool = _pool_of(obj)
        st = self._attached.get(id(pool))
        if st is None or st.pool is not pool:
            return None
        del self._attached[id(pool)]
        from sqlalchemy import event

        try:
            st.deferred_heartbeat = None
            if st.stop_heartbeat is not None:
                st.stop_heartbeat()
                st.stop_heartbeat = None
            for ev, fn in st.listeners:
                try:
                    event.remove(pool, ev, fn)
                except Exception as exc:
                    errors.report("sqlalchemy detach", exc)
            st.listeners.clear()
            _restore(st)
        finally:
            st.runtime.unregister(st.handle)
        return obj


def _attach(obj: Any, pool: Any, runtime: Runtime, options: Options) -> _State:
    from sqlalchemy import event

    engine = getattr(obj, "sync_engine", None) or (obj if hasattr(obj, "pool") else None)
    heartbeat = options.heartbeat
    is_async = hasattr(obj, "sync_engine") or bool(
        getattr(getattr(pool, "_dialect", None), "is_async", False)
    )
    config: dict[str, Any] = {"pool_class": type(pool).__name__}
    if hasattr(pool, "size") and hasattr(pool, "_max_overflow"):
        config.update(
            min=0,
            max=pool.size() + max(pool._max_overflow, 0),
            size=pool.size(),
            max_overflow=pool._max_overflow,
            timeout=getattr(pool, "_timeout", None),
        )
    config["pre_ping"] = bool(getattr(pool, "_pre_ping", False))
    config["recycle"] = getattr(pool, "_recycle", None)
    box: list[_State] = []
    handle = PoolHandle(
        runtime.recorder,
        options.name
        or (engine.url.database if engine is not None and engine.url.database else "sqlalchemy"),
        "sqlalchemy",
        leak_threshold=options.leak_threshold,
        heartbeat=heartbeat,
        target=_target(engine) if engine is not None else "",
        config=config,
        gauges=lambda: box[0].gauges(),
    )
    st = _State(pool, handle, runtime)
    box.append(st)
    runtime.register(handle)
    for ev, fn in (
        ("checkout", st.on_checkout),
        ("checkin", st.on_checkin),
        ("invalidate", st.on_invalidate),
        ("soft_invalidate", st.on_soft_invalidate),
        ("close", st.on_close),
        ("detach", st.on_detach),
        ("close_detached", st.on_close_detached),
    ):
        event.listen(pool, ev, fn)
        st.listeners.append((ev, fn))
    _wrap_do_get(st)
    _wrap_creator(st)
    _wrap_pre_ping(st)
    if heartbeat:
        if is_async:
            _start_async(st, heartbeat)
        else:
            st.stop_heartbeat = start_thread_heartbeat(handle.name, heartbeat, st.tick)
    return st


ADAPTER = registry.register(SQLAlchemyAdapter())


instrument_sqlalchemy = attach_function(ADAPTER)


def _start_async(st: _State, interval: float) -> None:
    """Probe on the application's loop, in a greenlet as SQLAlchemy's async pools need."""
    from sqlalchemy.util import greenlet_spawn

    loop = _get_running_loop()
    if loop is None:
        # No loop yet (the engine was made at import time): start on the first
        # checkout, which runs inside the application's loop.
        st.deferred_heartbeat = interval
        return
    st.deferred_heartbeat = None

    probes = (AsyncProbe(), AsyncProbe())

    async def tick() -> bool:
        await async_round(
            st.handle,
            st.backend,
            probes,
            lambda: greenlet_spawn(st.probe_idle),
            lambda: greenlet_spawn(st.connect_own),
            probe_timeout(interval),
        )
        return True

    st.stop_heartbeat = start_async_heartbeat(loop, interval, tick)
