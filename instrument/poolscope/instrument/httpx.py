"""httpx adapter: ``Client`` / ``AsyncClient`` and the httpcore pool behind them, in place.

httpcore keeps one pool for all hosts (``max_connections`` is shared); poolscope shows
one pool per origin, ``httpx HOST:PORT`` with the target ``scheme://host:port``, as for
aiohttp. Hooks are instance attributes of the httpcore pool and of each connection it
makes (classes untouched):

- the pool's ``handle_request`` / ``handle_async_request``: starts the wait clock; an
  ``httpcore.PoolTimeout`` (``httpx.PoolTimeout`` to the application) is a ``timeout``,
  a failure before any connection was assigned an ``acquire_error``;
- ``create_connection``: each new connection gets its hooks;
- a connection's ``handle_request``: the acquire (the wait ends when the pool assigned
  it); a fresh connection is acquired once its ``_connect`` succeeded (``connect``
  before ``acquire``, or ``connect_error`` and no acquire);
- the response stream's close: the release; if httpcore closed the connection then,
  the reason is ``server_closed`` (the server would not keep it alive), ``invalid``
  (closed before its body was read) or ``error``;
- a connection's ``close``: ``idle_timeout`` (keep-alive expiry), ``server_closed``
  (the server closed an idle one), ``overflow`` (idle beyond
  ``max_keepalive_connections``) or ``closed`` (the pool closed).

A response never read or closed (``client.send(..., stream=True)``) holds its
connection: a leak at the request's line.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from . import errors
from .adapter import Attachment, Options, class_names, registry
from .hooks import InstanceHooks, library_is_machinery
from .runtime import Runtime
from .track import Tracker

__all__ = ["HttpxAdapter"]

_clock = time.perf_counter
_ATTR = "_poolscope_httpx"
MAX_HOSTS = 64
#: The request being sent on this thread or task: [start, wait or None, acquired?].
_request: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "poolscope_httpx_request", default=None
)


def _pools_of(obj: Any) -> list[Any]:
    """The httpcore pools behind a client (its transport and mounts), or ``obj`` itself."""
    for top, name in class_names(obj):
        if top == "httpx" and name in ("Client", "AsyncClient"):
            transports = [obj._transport, *obj._mounts.values()]
            return [t._pool for t in transports if t is not None and hasattr(t, "_pool")]
    return [obj]


def _origin(origin: Any) -> tuple[str, str, int]:
    scheme = origin.scheme.decode("ascii", "replace")
    port = origin.port or (443 if scheme == "https" else 80)
    return scheme, origin.host.decode("ascii", "replace"), int(port)


class _State:
    """One instrumented httpcore pool: its origins' trackers."""

    def __init__(self, pool: Any, runtime: Runtime, options: Options, timeout_cls: Any) -> None:
        self.pool = pool
        self.runtime = runtime
        self.options = options
        self.hooks = InstanceHooks(pool)
        self.timeout_cls = timeout_cls
        self.is_async = hasattr(type(pool), "handle_async_request")
        self.hosts: dict[tuple[str, str, int], Tracker] = {}
        self.closing = 0

    def tracker(self, origin: Any) -> Tracker:
        key = _origin(origin)
        tr = self.hosts.get(key)
        if tr is None:
            if len(self.hosts) >= MAX_HOSTS:
                key = ("", "*", 0)
                tr = self.hosts.get(key)
                if tr is not None:
                    return tr
            tr = self.hosts[key] = self._make(key)
        return tr

    def _make(self, key: tuple[str, str, int]) -> Tracker:
        scheme, host, port = key
        pool = self.pool
        label = "other hosts" if host == "*" else f"{host}:{port}"
        tr = Tracker(
            self.runtime,
            f"{self.options.name or 'httpx'} {label}",
            kind="httpx",
            max_size=pool._max_connections,
            leak_threshold=self.options.leak_threshold,
            target="" if host == "*" else f"{scheme}://{host}:{port}",
            config={
                "max_connections": pool._max_connections,
                "max_keepalive_connections": pool._max_keepalive_connections,
                "keepalive_expiry": pool._keepalive_expiry,
                "shared_limit": True,  # max_connections is for all hosts together
                "scheme": scheme,
            },
        )
        tr.handle.gauges = lambda: self.gauges(key, tr)
        return tr

    def gauges(self, key: tuple[str, str, int], tr: Tracker) -> dict[str, Any]:
        every = key[1] == "*"
        conns = [c for c in tuple(self.pool._connections) if every or _origin(c._origin) == key]
        idle = sum(1 for c in conns if c._connection is not None and c.is_idle())
        waiting = sum(
            1
            for r in tuple(self.pool._requests)
            if r.is_queued() and (every or _origin(r.request.url.origin) == key)
        )
        return {
            "size": len(conns),
            "idle": idle,
            "in_use": max(len(conns) - idle, 0),
            "waiting": waiting,
            "max": tr.max_size or 0,
            "min": 0,
        }

    def close_reason(self, conn: Any) -> str:
        """Why httpcore closes ``conn`` now (asked before it closes)."""
        try:
            return self._close_reason(conn)
        except Exception as exc:
            errors.report("httpx close", exc)
            return "closed"

    def _close_reason(self, conn: Any) -> str:
        if self.closing:
            return "closed"
        inner = conn._connection
        if inner is None:
            return "closed"
        expire = getattr(inner, "_expire_at", None)
        if expire is not None and time.monotonic() > expire:
            return "idle_timeout"
        if conn.is_idle():
            stream = getattr(inner, "_network_stream", None)
            if stream is not None and stream.get_extra_info("is_readable"):
                return "server_closed"
            return "overflow"
        return "closed"

    def acquire_now(self, conn: Any, tr: Tracker, box: list[Any] | None) -> None:
        wait = box[1] if box is not None and box[1] is not None else 0.0
        if box is not None:
            box[2] = True
        # Frames: capture, acquired, this, the connection hook; then httpcore and httpx
        # (machinery), then the application's request line.
        tr.acquired(conn, wait, up=1)

    def after_response(self, conn: Any, tr: Tracker, how: str) -> None:
        """The response stream closed: the release, and the close if httpcore closed it."""
        tr.released(conn)
        if conn.is_closed():
            tr.closed(conn, "error" if how == "error" else how)


class _Stream:
    """The response body as httpcore hands it on, telling the release when closed."""

    def __init__(self, stream: Any, st: _State, conn: Any, tr: Tracker) -> None:
        self._stream = stream
        self._st = st
        self._conn = conn
        self._tr = tr
        self._how = "invalid"  # closed before the body was read to its end
        self._done = False

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            how = "server_closed" if self._how == "read" else self._how
            try:
                self._st.after_response(self._conn, self._tr, how)
            except Exception as exc:
                errors.report("httpx release", exc)

    def __iter__(self) -> Any:
        try:
            yield from self._stream
        except BaseException:
            self._how = "error"
            raise
        self._how = "read"

    def close(self) -> None:
        try:
            if hasattr(self._stream, "close"):
                self._stream.close()
        finally:
            self._finish()

    async def __aiter__(self) -> Any:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            self._how = "error"
            raise
        self._how = "read"

    async def aclose(self) -> None:
        try:
            if hasattr(self._stream, "aclose"):
                await self._stream.aclose()
        finally:
            self._finish()


def _hook_conn(st: _State, conn: Any) -> None:
    if _ATTR in conn.__dict__:
        return
    hooks = InstanceHooks(conn)
    hooks.set(_ATTR, hooks)  # found by detach; a cycle the collector frees with conn
    tr = st.tracker(conn._origin)
    close = hooks.original("aclose" if st.is_async else "close")
    connect = hooks.original("_connect")

    def on_response(response: Any) -> Any:
        try:
            response.stream = _Stream(response.stream, st, conn, tr)
        except Exception as exc:  # unobserved from here: the hold ends now
            errors.report("httpx response", exc)
            tr.released(conn)
        return response

    def failed(exc: BaseException) -> None:
        tr.released(conn)
        try:
            if conn.is_closed():
                tr.closed(conn, "error")
        except Exception as exc2:
            errors.report("httpx request", exc2)

    if st.is_async:
        handle = hooks.original("handle_async_request")

        async def ahandle(request: Any) -> Any:
            box = _request.get()
            if box is not None:
                box[1] = _clock() - box[0]
            if getattr(conn, "_connection", None) is not None:
                st.acquire_now(conn, tr, box)
            try:
                response = await handle(request)
            except BaseException as exc:
                failed(exc)
                raise
            return on_response(response)

        async def aconnect(request: Any) -> Any:
            t0 = _clock()
            try:
                stream = await connect(request)
            except Exception as exc:
                tr.connect_error(exc, _clock() - t0)
                raise
            tr.connected(conn, _clock() - t0)
            st.acquire_now(conn, tr, _request.get())
            return stream

        async def aclose() -> Any:
            reason = st.close_reason(conn)
            try:
                return await close()
            finally:
                tr.closed(conn, reason)

        hooks.set("handle_async_request", ahandle)
        hooks.set("_connect", aconnect)
        hooks.set("aclose", aclose)
    else:
        shandle = hooks.original("handle_request")

        def handle_(request: Any) -> Any:
            box = _request.get()
            if box is not None:
                box[1] = _clock() - box[0]
            if getattr(conn, "_connection", None) is not None:
                st.acquire_now(conn, tr, box)
            try:
                response = shandle(request)
            except BaseException as exc:
                failed(exc)
                raise
            return on_response(response)

        def connect_(request: Any) -> Any:
            t0 = _clock()
            try:
                stream = connect(request)
            except Exception as exc:
                tr.connect_error(exc, _clock() - t0)
                raise
            tr.connected(conn, _clock() - t0)
            st.acquire_now(conn, tr, _request.get())
            return stream

        def close_() -> Any:
            reason = st.close_reason(conn)
            try:
                return close()
            finally:
                tr.closed(conn, reason)

        hooks.set("handle_request", handle_)
        hooks.set("_connect", connect_)
        hooks.set("close", close_)


def _request_failed(st: _State, request: Any, box: list[Any], exc: BaseException) -> None:
    if box[2]:
        return  # it had a connection: the request failed, not the acquire
    try:
        tr = st.tracker(request.url.origin)
        if isinstance(exc, st.timeout_cls):
            tr.timeout(_clock() - box[0], "PoolTimeout: no connection within the pool timeout")
        elif isinstance(exc, Exception):
            tr.acquire_error(exc)
    except Exception as exc2:
        errors.report("httpx acquire", exc2)


def _hook_pool(st: _State) -> None:
    hooks = st.hooks
    create = hooks.original("create_connection")

    def create_connection(origin: Any) -> Any:
        conn = create(origin)
        try:
            _hook_conn(st, conn)
        except Exception as exc:
            errors.report("httpx connection", exc)
        return conn

    hooks.set("create_connection", create_connection)
    if st.is_async:
        handle = hooks.original("handle_async_request")
        pclose = hooks.original("aclose")

        async def ahandle(request: Any) -> Any:
            box = [_clock(), None, False]
            token = _request.set(box)
            try:
                return await handle(request)
            except BaseException as exc:
                _request_failed(st, request, box, exc)
                raise
            finally:
                _request.reset(token)

        async def aclose() -> Any:
            st.closing += 1
            try:
                return await pclose()
            finally:
                st.closing -= 1

        hooks.set("handle_async_request", ahandle)
        hooks.set("aclose", aclose)
    else:
        shandle = hooks.original("handle_request")
        sclose = hooks.original("close")

        def handle_(request: Any) -> Any:
            box = [_clock(), None, False]
            token = _request.set(box)
            try:
                return shandle(request)
            except BaseException as exc:
                _request_failed(st, request, box, exc)
                raise
            finally:
                _request.reset(token)

        def close_() -> Any:
            st.closing += 1
            try:
                return sclose()
            finally:
                st.closing -= 1

        hooks.set("handle_request", handle_)
        hooks.set("close", close_)


class HttpxAdapter:
    """httpx ``Client`` / ``AsyncClient`` (their httpcore pools), or an httpcore
    ``ConnectionPool`` / ``AsyncConnectionPool``; one poolscope pool per origin."""

    kind = "httpx"
    classes: tuple[str, ...] = ("httpx Client", "AsyncClient", "httpcore ConnectionPool")
    distribution = "httpcore"
    # From 1.0.3 the pool keeps ``_connections`` and ``_requests`` (1.0.2 does not);
    # tested with 1.0.3, 1.0.4, 1.0.5 and 1.0.9.
    supported: tuple[str | None, str | None] = ("1.0.3", "2")
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "_connections",
        "_requests",
        "_max_connections",
        "_max_keepalive_connections",
        "_keepalive_expiry",
        "httpcore._sync.connection:HTTPConnection._connect",
        "httpcore._async.connection:AsyncHTTPConnection._connect",
        "httpcore._sync.http11:HTTP11Connection.has_expired",
    )

    def matches(self, obj: Any) -> bool:
        return any(
            (top == "httpx" and n in ("Client", "AsyncClient"))
            or (top == "httpcore" and n in ("ConnectionPool", "AsyncConnectionPool"))
            for top, n in class_names(obj)
        )

    def private_root(self, obj: Any) -> Any:
        pools = _pools_of(obj)
        return pools[0] if pools else obj

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        import httpcore

        library_is_machinery(httpcore)
        for name in ("httpx", "h11", "anyio"):
            module = _optional(name)
            if module is not None:
                library_is_machinery(module)
        for pool in _pools_of(obj):
            if isinstance(pool.__dict__.get(_ATTR), _State):
                continue
            st = _State(pool, runtime, options, httpcore.PoolTimeout)
            _hook_pool(st)
            for conn in tuple(pool._connections):  # opened before poolscope
                _hook_conn(st, conn)
                st.tracker(conn._origin).conn_id(conn)
            st.hooks.set(_ATTR, st)
        return obj

    def detach(self, obj: Any) -> Any:
        found = False
        for pool in _pools_of(obj):
            st = pool.__dict__.get(_ATTR)
            if not isinstance(st, _State):
                continue
            found = True
            for conn in tuple(pool._connections):
                hooks = conn.__dict__.get(_ATTR)
                if isinstance(hooks, InstanceHooks):
                    hooks.restore()
            st.hooks.restore()
            for tr in list(st.hosts.values()):
                tr.close()
            st.hosts.clear()
        return obj if found else None


def _optional(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


ADAPTER = registry.register(HttpxAdapter())
