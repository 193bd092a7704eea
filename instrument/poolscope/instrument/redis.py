"""redis-py adapter: ``ConnectionPool``/``BlockingConnectionPool``, sync and ``redis.asyncio``,
and ``Redis`` clients (their pool), hooked in place.

The pool's own methods are replaced on the pool instance (the class is untouched):
``get_connection`` (acquire; a ``BlockingConnectionPool`` timeout - "No connection
available." - is a ``timeout``, "Too many connections" an ``acquire_error``),
``release``, ``make_connection`` (each new connection gets its ``connect_check_health``
and ``disconnect`` hooked, to see sockets open and close) and ``disconnect`` (closes
asked for by the application). Pub/sub and pipelines take their connection through
``get_connection`` too, so a subscriber never closed shows as a leak at its
``subscribe`` line. A redis connection object reconnects by itself; each socket is a
connection to poolscope, and a reconnect inside one checkout is told at its release.

The heartbeat sends ``PING`` on an idle connection taken with the pool's original
method (not counted as an acquire), and skips when none is idle. Gauges are read from
the pool's lists; the target is ``host:port/db`` and never carries the password.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from typing import Any

from . import errors
from .adapter import Attachment, Options, class_names, registry
from .adapters import describe_error, probe_timeout
from .hooks import InstanceHooks, library_is_machinery
from .runtime import Runtime
from .track import Tracker

__all__ = ["RedisAdapter"]

_clock = time.perf_counter
_CLIENTS = ("Redis", "StrictRedis")
_POOLS = ("ConnectionPool", "BlockingConnectionPool")
_NO_CONNECTION = "No connection available."
_TOO_MANY = "Too many connections"
_ATTR = "_poolscope_redis"


def _takes_timeout(method: Any) -> bool:
    try:
        return "timeout" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _pool_of(obj: Any) -> Any:
    for top, name in class_names(obj):
        if top == "redis" and name in _CLIENTS:
            return obj.connection_pool
    return obj


def _is_async(pool: Any) -> bool:
    return ".asyncio" in type(pool).__module__


def _is_blocking(pool: Any) -> bool:
    return any(top == "redis" and n == "BlockingConnectionPool" for top, n in class_names(pool))


def target_of(pool: Any) -> str:
    kw = getattr(pool, "connection_kwargs", {}) or {}
    if kw.get("path"):
        return f"unix:{kw['path']}/{kw.get('db', 0)}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


class _State:
    """One instrumented redis pool."""

    def __init__(self, pool: Any, tracker: Tracker, hooks: InstanceHooks) -> None:
        self.pool = pool
        self.tracker = tracker
        self.hooks = hooks
        self.blocking = _is_blocking(pool)
        self.is_async = _is_async(pool)
        #: A pool-wide disconnect in progress: its closes are "closed", not failures.
        self.closing = 0
        #: id(conn) -> seconds its socket took to open inside the current get_connection
        #: (not part of the wait).
        self.connect_time: dict[int, float] = {}

    # -- gauges ---------------------------------------------------------------------
    def gauges(self) -> dict[str, Any]:
        pool = self.pool
        if self.blocking and not self.is_async:
            size = len(pool._connections)
            idle = sum(1 for c in list(pool.pool.queue) if c is not None)
            waiters = getattr(getattr(pool.pool, "not_empty", None), "_waiters", ())
            waiting = len(waiters)
        else:
            idle = len(pool._available_connections)
            size = idle + len(pool._in_use_connections)
            cond = getattr(pool, "_condition", None)
            waiting = len(getattr(cond, "_waiters", None) or ()) if cond is not None else 0
        return {
            "size": size,
            "idle": idle,
            "in_use": max(size - idle, 0),
            "waiting": waiting,
            "max": pool.max_connections,
            "min": 0,
        }

    # -- acquire outcomes -------------------------------------------------------------
    def failed(self, t0: float, exc: BaseException) -> None:
        try:
            text = str(exc)
            if _NO_CONNECTION in text:
                self.tracker.timeout(_clock() - t0, describe_error(exc))
            elif isinstance(exc, Exception):
                # The pool's own limit is not the server's health.
                self.tracker.acquire_error(exc, backend=_TOO_MANY not in text)
        except Exception as exc2:
            errors.report("redis acquire", exc2)

    def wait(self, conn: Any, t0: float) -> float:
        return _clock() - t0 - self.connect_time.pop(id(conn), 0.0)

    def close_reason(self, kwargs: dict[str, Any]) -> str:
        if self.closing:
            return "closed"
        if kwargs.get("error") is not None or kwargs.get("health_check_failed"):
            return "lost"
        # Called from redis's own ``except`` blocks when a socket fails.
        return "lost" if sys.exc_info()[1] is not None else "closed"

    # -- connections ------------------------------------------------------------------
    def hook_conn(self, conn: Any) -> None:
        if _ATTR in conn.__dict__:
            return
        hooks = InstanceHooks(conn)
        # On the connection itself (a cycle the collector frees with it), so that
        # detach finds it and nothing here keeps a dropped connection alive.
        hooks.set(_ATTR, hooks)
        tr = self.tracker
        st = self
        connect = hooks.original("connect_check_health")
        disconnect = hooks.original("disconnect")
        if self.is_async:

            async def aconnect(*args: Any, **kwargs: Any) -> Any:
                if st.is_open(conn) is not False:
                    return await connect(*args, **kwargs)
                t0 = _clock()
                try:
                    result = await connect(*args, **kwargs)
                except Exception as exc:
                    tr.connect_error(exc, _clock() - t0)
                    raise
                if st.is_open(conn):
                    st.opened(conn, _clock() - t0)
                return result

            async def adisconnect(*args: Any, **kwargs: Any) -> Any:
                was_open = st.is_open(conn)
                reason = st.close_reason(kwargs) if was_open else ""
                try:
                    return await disconnect(*args, **kwargs)
                finally:
                    if was_open:
                        tr.closed(conn, reason, defer=True)

            hooks.set("connect_check_health", aconnect)
            hooks.set("disconnect", adisconnect)
        else:

            def sconnect(*args: Any, **kwargs: Any) -> Any:
                if st.is_open(conn) is not False:
                    return connect(*args, **kwargs)
                t0 = _clock()
                try:
                    result = connect(*args, **kwargs)
                except Exception as exc:
                    tr.connect_error(exc, _clock() - t0)
                    raise
                if st.is_open(conn):
                    st.opened(conn, _clock() - t0)
                return result

            def sdisconnect(*args: Any, **kwargs: Any) -> Any:
                was_open = st.is_open(conn)
                reason = st.close_reason(kwargs) if was_open else ""
                try:
                    return disconnect(*args, **kwargs)
                finally:
                    if was_open:
                        tr.closed(conn, reason, defer=True)

            hooks.set("connect_check_health", sconnect)
            hooks.set("disconnect", sdisconnect)

    def opened(self, conn: Any, duration: float) -> None:
        self.connect_time[id(conn)] = duration
        if len(self.connect_time) > 10_000:  # opened outside get_connection: bounded
            self.connect_time.clear()
        self.tracker.connected(conn, duration)

    def existing(self) -> list[Any]:
        pool = self.pool
        if self.blocking and not self.is_async:
            return list(pool._connections)
        return list(pool._available_connections) + list(pool._in_use_connections)

    def is_open(self, conn: Any) -> bool | None:
        """Whether ``conn`` has a socket; None if it cannot be told (then the hooks
        stand aside)."""
        try:
            return bool(conn.is_connected) if self.is_async else conn._sock is not None
        except Exception as exc:
            errors.report("redis connection state", exc)
            return None


def _hook_sync(st: _State) -> None:
    tr, hooks = st.tracker, st.hooks
    get = hooks.original("get_connection")
    release = hooks.original("release")
    make = hooks.original("make_connection")
    disconnect = hooks.original("disconnect")

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        t0 = _clock()
        try:
            conn = get(*args, **kwargs)
        except BaseException as exc:
            st.failed(t0, exc)
            raise
        tr.acquired(conn, st.wait(conn, t0))
        return conn

    def release_(conn: Any) -> Any:
        tr.released(conn)
        return release(conn)

    def make_connection() -> Any:
        conn = make()
        try:
            st.hook_conn(conn)
        except Exception as exc:  # the connection works unobserved
            errors.report("redis connection hooks", exc)
        return conn

    def disconnect_(*args: Any, **kwargs: Any) -> Any:
        st.closing += 1
        try:
            return disconnect(*args, **kwargs)
        finally:
            st.closing -= 1

    hooks.set("get_connection", get_connection)
    hooks.set("release", release_)
    hooks.set("make_connection", make_connection)
    hooks.set("disconnect", disconnect_)

    def ping() -> bool:
        g = st.gauges()
        if g["idle"] == 0 or g["waiting"]:
            tr.skipped()
            return True
        t0 = _clock()
        try:
            # The original: a probe is not the application's acquire. It connects a
            # connection whose socket is gone, so a refused connect is a failed probe.
            conn = get()
        except Exception as exc:
            tr.probed(None, False, _clock() - t0, describe_error(exc))
            return True
        try:
            conn.send_command("PING", check_health=False)
            if _takes_timeout(conn.read_response):
                conn.read_response(timeout=probe_timeout(tr.handle.heartbeat or 2.0))
            else:  # redis < 6.1: the socket's own timeout applies
                conn.read_response()
        except Exception as exc:
            tr.probed(conn, False, _clock() - t0, describe_error(exc))
        else:
            tr.probed(conn, True, _clock() - t0)
        finally:
            release(conn)
        return True

    st.ping = ping  # type: ignore[attr-defined]


def _hook_async(st: _State) -> None:
    tr, hooks = st.tracker, st.hooks
    get = hooks.original("get_connection")
    release = hooks.original("release")
    make = hooks.original("make_connection")
    disconnect = hooks.original("disconnect")

    async def get_connection(*args: Any, **kwargs: Any) -> Any:
        t0 = _clock()
        try:
            conn = await get(*args, **kwargs)
        except BaseException as exc:
            st.failed(t0, exc)
            raise
        tr.acquired(conn, st.wait(conn, t0))
        return conn

    async def release_(conn: Any) -> Any:
        tr.released(conn)
        return await release(conn)

    def make_connection() -> Any:
        conn = make()
        try:
            st.hook_conn(conn)
        except Exception as exc:  # the connection works unobserved
            errors.report("redis connection hooks", exc)
        return conn

    async def disconnect_(*args: Any, **kwargs: Any) -> Any:
        st.closing += 1
        try:
            return await disconnect(*args, **kwargs)
        finally:
            st.closing -= 1

    hooks.set("get_connection", get_connection)
    hooks.set("release", release_)
    hooks.set("make_connection", make_connection)
    hooks.set("disconnect", disconnect_)

    async def ping() -> bool:
        g = st.gauges()
        if g["idle"] == 0 or g["waiting"]:
            tr.skipped()
            return True
        t0 = _clock()
        try:
            # The original: a probe is not the application's acquire. It connects a
            # connection whose socket is gone, so a refused connect is a failed probe.
            conn = await get()
        except Exception as exc:
            tr.probed(None, False, _clock() - t0, describe_error(exc))
            return True
        try:
            await conn.send_command("PING", check_health=False)
            await asyncio.wait_for(conn.read_response(), probe_timeout(tr.handle.heartbeat or 2.0))
        except Exception as exc:
            tr.probed(conn, False, _clock() - t0, describe_error(exc))
        else:
            tr.probed(conn, True, _clock() - t0)
        finally:
            await release(conn)
        return True

    st.ping = ping  # type: ignore[attr-defined]


class RedisAdapter:
    """redis-py pools and clients (sync and ``redis.asyncio``), in place."""

    kind = "redis"
    classes: tuple[str, ...] = (
        "redis Redis",
        "ConnectionPool",
        "BlockingConnectionPool (sync and redis.asyncio)",
    )
    distribution = "redis"
    # connect_check_health (where a socket opens) first appears in 6.0.
    supported: tuple[str | None, str | None] = ("6.0", "9")
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "connection_kwargs",
        "max_connections",
        "redis.connection:AbstractConnection.connect_check_health",
        "redis.connection:AbstractConnection.disconnect",
        "redis.asyncio.connection:AbstractConnection.connect_check_health",
    )

    def matches(self, obj: Any) -> bool:
        return any(top == "redis" and n in _CLIENTS + _POOLS for top, n in class_names(obj))

    def private_root(self, obj: Any) -> Any:
        return _pool_of(obj)

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        import redis

        library_is_machinery(redis)
        pool = _pool_of(obj)
        if getattr(pool, _ATTR, None) is not None:
            return obj  # a second client of an instrumented pool
        target = target_of(pool)
        blocking = _is_blocking(pool)
        # The lists the gauges read differ by pool class (declared ones are common).
        lists = (
            ("_connections", "pool")
            if blocking and not _is_async(pool)
            else ("_available_connections", "_in_use_connections")
        )
        missing = [a for a in lists if not hasattr(pool, a)]
        if missing:
            raise TypeError(
                f"poolscope.instrument: the redis adapter cannot hook {type(pool).__qualname__}: "
                f"missing {', '.join(missing)} (supported: redis>=6.0,<9)"
            )
        box: list[_State] = []
        tracker = Tracker(
            runtime,
            options.name or f"redis {target}",
            kind="redis",
            max_size=pool.max_connections,
            leak_threshold=options.leak_threshold,
            target=target,
            config={"timeout": getattr(pool, "timeout", None) if blocking else None},
        )
        tracker.handle.gauges = lambda: box[0].gauges()
        hooks = InstanceHooks(pool)
        st = _State(pool, tracker, hooks)
        box.append(st)
        (_hook_async if st.is_async else _hook_sync)(st)
        for conn in st.existing():
            st.hook_conn(conn)
            if st.is_open(conn):
                tracker.conn_id(conn)  # opened before poolscope was attached
        hooks.set(_ATTR, st)
        if options.heartbeat:
            tracker.start_heartbeat(options.heartbeat, st.ping)  # type: ignore[attr-defined]
        return obj

    def detach(self, obj: Any) -> Any:
        pool = _pool_of(obj)
        st = pool.__dict__.get(_ATTR)
        if not isinstance(st, _State):
            return None
        for conn in st.existing():
            hooks = conn.__dict__.get(_ATTR)
            if isinstance(hooks, InstanceHooks):
                hooks.restore()
        st.hooks.restore()
        st.tracker.close()
        return obj


ADAPTER = registry.register(RedisAdapter())
