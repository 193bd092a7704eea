"""aiohttp adapter: ``ClientSession`` / ``TCPConnector`` keep-alive pools, hooked in place.

aiohttp keeps one pool per host key (host, port, TLS): each is a poolscope pool of its
own, named ``aiohttp HOST:PORT`` with the target ``scheme://host:port``, made when the
first request goes there. The connector's methods are replaced on the connector
instance (the class is untouched):

- ``connect``: the acquire, with its wait - the time it took beyond opening a new
  connection, i.e. queueing when ``limit`` or ``limit_per_host`` is reached; a connect
  timeout is a ``timeout``, another failure an ``acquire_error``;
- ``_create_connection``: a new connection (``connect`` / ``connect_error``), as
  opposed to a keep-alive reuse, which is an acquire with no connect;
- ``_release``: the response released its connection; when aiohttp closes it then, the
  reason says why (``server_closed``: the server closed it or asked to; ``error``;
  ``invalid``: released before its body was read; ``closed``; ``gc_leak``: a response
  garbage-collected unreleased);
- ``_get`` / ``_cleanup``: idle connections dropped as ``idle_timeout`` (keep-alive
  expired) or ``server_closed``; ``_close``: the connector closed (``closed``).

A response never read or released holds its connection: a leak at the request's line.
Gauges: idle from the connector's keep-alive lists, in use from the tracker, waiting
from its waiter queues, max ``limit_per_host`` (else ``limit``; 0 = unlimited).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import weakref
from typing import Any

from . import errors
from .adapter import Attachment, Options, class_names, registry
from .hooks import InstanceHooks, library_is_machinery
from .runtime import Runtime
from .track import Tracker

__all__ = ["AiohttpAdapter"]

_clock = time.perf_counter
_monotonic = time.monotonic
_ATTR = "_poolscope_aiohttp"
#: Hosts tracked per connector; requests to further hosts share one "other hosts" pool.
MAX_HOSTS = 64


def _connector_of(obj: Any) -> Any:
    for top, name in class_names(obj):
        if top == "aiohttp" and name == "ClientSession":
            return obj.connector
    return obj


def _host(key: Any) -> tuple[str, int, bool]:
    return (str(key.host), int(key.port or (443 if key.is_ssl else 80)), bool(key.is_ssl))


class _State:
    """One instrumented connector: its hosts' trackers."""

    def __init__(self, connector: Any, runtime: Runtime, options: Options) -> None:
        self.connector = connector
        self.runtime = runtime
        self.options = options
        self.hooks = InstanceHooks(connector)
        self.hosts: dict[tuple[str, int, bool], Tracker] = {}
        #: id(request) -> seconds spent opening a new connection for it (not waiting).
        self.created: dict[int, float] = {}

    def tracker(self, key: Any) -> Tracker:
        host = _host(key)
        tr = self.hosts.get(host)
        if tr is None:
            if len(self.hosts) >= MAX_HOSTS:
                host = ("*", 0, False)
                tr = self.hosts.get(host)
                if tr is not None:
                    return tr
            tr = self.hosts[host] = self._make(host)
        return tr

    def _make(self, host: tuple[str, int, bool]) -> Tracker:
        name, port, ssl = host
        c = self.connector
        scheme = "https" if ssl else "http"
        label = "other hosts" if name == "*" else f"{name}:{port}"
        limit_host = int(getattr(c, "_limit_per_host", 0) or 0)
        limit = int(getattr(c, "_limit", 0) or 0)
        prefix = self.options.name or "aiohttp"
        tr = Tracker(
            self.runtime,
            f"{prefix} {label}",
            kind="aiohttp",
            max_size=limit_host or limit,
            leak_threshold=self.options.leak_threshold,
            target="" if name == "*" else f"{scheme}://{name}:{port}",
            config={
                "limit": limit,
                "limit_per_host": limit_host,
                "keepalive_timeout": getattr(c, "_keepalive_timeout", None),
                "scheme": scheme,
            },
        )
        tr.handle.gauges = lambda: self.gauges(host, tr)
        return tr

    def gauges(self, host: tuple[str, int, bool], tr: Tracker) -> dict[str, Any]:
        c = self.connector
        everything = host[0] == "*"
        # tuple() of a dict view copies it in one step under the GIL: the loop thread
        # cannot resize it meanwhile.
        idle = sum(len(v) for k, v in tuple(c._conns.items()) if everything or _host(k) == host)
        waiting = sum(
            len(v) for k, v in tuple(c._waiters.items()) if everything or _host(k) == host
        )
        in_use = sum(1 for i in tuple(tr._conns.values()) if i.held)
        return {
            "size": idle + in_use,
            "idle": idle,
            "in_use": in_use,
            "waiting": waiting,
            "max": tr.max_size or 0,
            "min": 0,
        }

    def closed_all(self, idle: list[tuple[Any, Any]]) -> None:
        """The connector closed: its idle connections, and the held ones (responses
        still open: the connector drops them too)."""
        for key, proto in idle:
            self.tracker(key).closed(proto, "closed")
        for tr in list(self.hosts.values()):
            for k, info in list(tr._conns.items()):
                if info.held:
                    tr.closed(k, "closed")

    def stale(self, key: Any, conns: Any, now: float) -> list[tuple[Any, str]]:
        """The idle connections of ``key`` aiohttp will drop before reusing one."""
        out: list[tuple[Any, str]] = []
        if not conns:
            return out
        timeout = self.connector._keepalive_timeout
        for proto, t0 in conns:
            if not proto.is_connected():
                out.append((proto, "server_closed"))
            elif timeout is not None and now - t0 > timeout:
                out.append((proto, "idle_timeout"))
            else:
                break
        return out

    def dropped(self, key: Any, stale: list[tuple[Any, str]]) -> None:
        tr = self.tracker(key)
        for proto, reason in stale:
            tr.closed(proto, reason)

    def dropped_many(self, stale: list[tuple[Any, list[tuple[Any, str]]]]) -> None:
        for key, drop in stale:
            self.dropped(key, drop)


def _guard(fn: Any) -> Any:
    """``fn()``, or None if it raised (counted): poolscope's part of a hook never
    raises into the application's request."""
    try:
        return fn()
    except Exception as exc:
        errors.report("aiohttp hook", exc)
        return None


def _release_reason(connector: Any, proto: Any, should_close: bool) -> str | None:
    """Why aiohttp is about to close a released connection (None: kept alive)."""
    if connector._force_close:
        return "closed"
    if proto._exception is not None:
        return "error"
    if not proto.is_connected():
        return "server_closed"
    if proto._should_close:
        return "server_closed"  # the server asked (Connection: close, HTTP/1.0)
    if proto.should_close:
        return "invalid"  # released with its body unread, or mid-upgrade
    if should_close:
        return "closed"
    return None


def _hook(st: _State) -> None:
    c, hooks = st.connector, st.hooks
    connect = hooks.original("connect")
    create = hooks.original("_create_connection")
    release = hooks.original("_release")
    get = hooks.original("_get")
    cleanup = hooks.original("_cleanup")
    close = hooks.original("_close")
    created = st.created

    async def connect_(req: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = _clock()
        try:
            conn = await connect(req, *args, **kwargs)
        except BaseException as exc:
            created.pop(id(req), None)
            try:
                tr = st.tracker(req.connection_key)
                if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                    tr.timeout(_clock() - t0, f"{type(exc).__name__}: connect timeout")
                elif isinstance(exc, Exception):
                    tr.acquire_error(exc)
            except Exception as exc2:
                errors.report("aiohttp connect", exc2)
            raise
        try:
            tr = st.tracker(conn._key)
            tr.acquired(conn._protocol, _clock() - t0 - created.pop(id(req), 0.0))
        except Exception as exc:
            errors.report("aiohttp acquire", exc)
        return conn

    async def create_(req: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = _clock()
        try:
            proto = await create(req, *args, **kwargs)
        except Exception as exc:
            failed = _clock() - t0
            _guard(lambda e=exc: st.tracker(req.connection_key).connect_error(e, failed))
            raise
        duration = _clock() - t0
        created[id(req)] = duration
        _guard(lambda: st.tracker(req.connection_key).connected(proto, duration))
        return proto

    def release_(key: Any, protocol: Any, *, should_close: bool = False) -> Any:
        reason = None
        tr = None
        try:
            if not c._closed:
                tr = st.tracker(key)
                reason = _release_reason(c, protocol, should_close)
                if should_close and sys._getframe(1).f_code.co_name == "__del__":
                    # A Connection collected while held: a response never released.
                    tr.handle.event("leak", conn=tr.conn_id(protocol), proven=True)
                    tr.closed(protocol, "gc_leak")
                    tr = None
                else:
                    tr.released(protocol)
        except Exception as exc:
            errors.report("aiohttp release", exc)
        result = release(key, protocol, should_close=should_close)
        if tr is not None and reason is not None:
            tr.closed(protocol, reason)
        return result

    async def aget(key: Any, *args: Any, **kwargs: Any) -> Any:
        stale = _guard(lambda: st.stale(key, c._conns.get(key), _monotonic()))
        result = await get(key, *args, **kwargs)
        if stale:
            _guard(lambda: st.dropped(key, stale))
        return result

    def sget(key: Any, *args: Any, **kwargs: Any) -> Any:  # older releases: not async
        stale = _guard(lambda: st.stale(key, c._conns.get(key), _monotonic()))
        result = get(key, *args, **kwargs)
        if stale:
            _guard(lambda: st.dropped(key, stale))
        return result

    def cleanup_() -> Any:
        now = _monotonic()
        timeout = c._keepalive_timeout
        stale: list[tuple[Any, list[tuple[Any, str]]]] = []
        try:
            for key, conns in tuple(c._conns.items()):
                drop = []
                for proto, t0 in tuple(conns):
                    if not proto.is_connected():
                        drop.append((proto, "server_closed"))
                    elif timeout is not None and now - t0 > timeout:
                        drop.append((proto, "idle_timeout"))
                if drop:
                    stale.append((key, drop))
        except Exception as exc:
            errors.report("aiohttp cleanup", exc)
        result = cleanup()
        if stale:
            _guard(lambda: st.dropped_many(stale))
        return result

    def close_(*args: Any, **kwargs: Any) -> Any:
        closing: list[tuple[Any, Any]] = []
        try:
            if not c._closed:
                for key, conns in tuple(c._conns.items()):
                    closing.extend((key, proto) for proto, _ in conns)
        except Exception as exc:
            errors.report("aiohttp close", exc)
        result = close(*args, **kwargs)
        _guard(lambda: st.closed_all(closing))
        return result

    hooks.set("connect", connect_)
    hooks.set("_create_connection", create_)
    hooks.set("_release", release_)
    hooks.set("_get", aget if inspect.iscoroutinefunction(get) else sget)
    hooks.set("_cleanup", cleanup_)
    hooks.set("_close", close_)


class AiohttpAdapter:
    """aiohttp ``ClientSession`` and its connector (``TCPConnector`` and other
    ``BaseConnector`` subclasses), one poolscope pool per host, in place."""

    kind = "aiohttp"
    classes: tuple[str, ...] = ("aiohttp ClientSession", "TCPConnector")
    distribution = "aiohttp"
    # 3.10 is where the wait for a slot (and its connect timeout) is inside connect().
    supported: tuple[str | None, str | None] = ("3.10", "4")
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "_conns",
        "_waiters",
        "_closed",
        "_limit",
        "_limit_per_host",
        "_keepalive_timeout",
        "_force_close",
        "aiohttp.connector:BaseConnector._create_connection",
        "aiohttp.connector:BaseConnector._release",
        "aiohttp.connector:BaseConnector._get",
        "aiohttp.connector:BaseConnector._cleanup",
        "aiohttp.connector:BaseConnector._close",
        "aiohttp.client_proto:ResponseHandler.should_close",
    )

    def __init__(self) -> None:
        # A closed session forgets its connector: uninstrument(session) finds it here.
        self._connectors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def matches(self, obj: Any) -> bool:
        return any(
            top == "aiohttp" and n in ("ClientSession", "BaseConnector")
            for top, n in class_names(obj)
        )

    def private_root(self, obj: Any) -> Any:
        return _connector_of(obj)

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        import aiohttp

        library_is_machinery(aiohttp)
        connector = _connector_of(obj)
        if connector is None:
            raise TypeError("poolscope.instrument: this aiohttp ClientSession has no connector")
        if isinstance(connector.__dict__.get(_ATTR), _State):
            return obj
        st = _State(connector, runtime, options)
        _hook(st)
        # Keep-alive connections opened before poolscope: known, idle.
        for key, conns in tuple(connector._conns.items()):
            tr = st.tracker(key)
            for proto, _ in conns:
                tr.conn_id(proto)
        st.hooks.set(_ATTR, st)
        if connector is not obj:
            self._connectors[obj] = connector
        return obj

    def detach(self, obj: Any) -> Any:
        connector = self._connectors.pop(obj, None) or _connector_of(obj)
        st = getattr(connector, "__dict__", {}).get(_ATTR)
        if not isinstance(st, _State):
            return None
        st.hooks.restore()
        for tr in list(st.hosts.values()):
            tr.close()
        st.hosts.clear()
        return obj


ADAPTER = registry.register(AiohttpAdapter())
