"""``ps.track``: the adapter machinery for any pool, and the base of the client adapters.

    tracker = ps.track("jobs", max_size=8, stats=pool.stats)
    conn = pool.get(); tracker.acquired(conn, wait)   # or the helpers below
    tracker.released(conn); pool.put(conn)

A ``Tracker`` is one pool as poolscope sees it: a ``PoolHandle`` registered with the
runtime (hot path, leaks, state polling, Prometheus and the stream all come with it),
short connection ids for the application's connection objects, the ``backend`` health
state (``backend.BackendTracker``, fed with what the pool reports), and an optional
heartbeat. The redis-py, aiohttp and httpx adapters are built on it.

The hot path (``acquired``/``released``) is a dict lookup, a site capture and the
handle's append. Nothing here raises into the application: every failure is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import errors, sites
from .adapters import describe_error, start_async_heartbeat, start_thread_heartbeat
from .backend import BackendTracker
from .recorder import PoolHandle
from .runtime import Runtime, get_runtime

__all__ = ["SKIP", "Tracker", "track"]

F = TypeVar("F", bound=Callable[..., Any])

_clock = time.perf_counter
_get_ident = threading.get_ident
_running_loop = asyncio._get_running_loop
# The C module's table of running tasks by loop (see recorder.acquired_here).
_tasks_by_loop: Any = getattr(asyncio.tasks, "_current_tasks", None)

#: Close reasons that say the backend (or the network to it) failed.
FAILED_CLOSES = frozenset({"lost", "error"})
#: What the helpers count as a timeout by default (3.10's asyncio.TimeoutError is apart).
TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)
#: Returned by a ``probe`` that chose not to run (e.g. nothing idle): said, not hidden.
SKIP = object()


def _holder() -> Any:
    """The current asyncio task, else the thread ident (what leaks are attributed to)."""
    loop = _running_loop()
    if loop is None:
        return _get_ident()
    if _tasks_by_loop is not None:
        return _tasks_by_loop.get(loop)
    return asyncio.current_task(loop)


class _Conn:
    """What a tracker remembers about one connection."""

    __slots__ = ("created", "held", "id", "pending")

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.created = time.monotonic()
        self.held = False
        #: A close (and maybe a reconnect) that happened while held, told at release so
        #: the hold is not cut short: (reason, reconnect duration or None).
        self.pending: tuple[str, float | None] | None = None


class Tracker:
    """One tracked pool. Made by :func:`track` (or by an adapter)."""

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        *,
        kind: str = "custom",
        max_size: int | None = None,
        min_size: int = 0,
        stats: Callable[[], dict[str, Any]] | None = None,
        leak_threshold: float | None = 30.0,
        heartbeat: float | None = None,
        probe: Callable[[], Any] | None = None,
        target: str = "",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_size = max_size
        self.min_size = min_size
        self.stats = stats
        self.probe = probe
        self._conns: dict[Any, _Conn] = {}
        self._next = 0
        self._ids_lock = threading.Lock()
        #: Acquires in progress through the helpers (the waiting gauge without ``stats``).
        self.waiting = 0
        cfg = {"min": min_size, "max": max_size}
        cfg.update(config or {})
        self.handle = PoolHandle(
            runtime.recorder,
            name,
            kind,
            leak_threshold=leak_threshold,
            heartbeat=heartbeat if probe is not None else None,
            target=target,
            config=cfg,
            gauges=self.gauges,
        )
        self.backend = BackendTracker(self.handle, heartbeat)
        self._stop_heartbeat: Callable[[], None] | None = None
        self._start_async: Callable[[asyncio.AbstractEventLoop], None] | None = None
        runtime.register(self.handle)
        if probe is not None and heartbeat:
            self._heartbeat_from_probe(probe, heartbeat)

    # -- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def kind(self) -> str:
        return self.handle.kind

    @staticmethod
    def _key(conn: Any) -> Any:
        # Strings and ints are ids already; anything else is keyed by identity, so the
        # tracker never keeps a connection alive (it forgets it when it closes).
        return conn if isinstance(conn, (str, int)) else id(conn)

    def _info(self, conn: Any) -> _Conn:
        key = self._key(conn)
        info = self._conns.get(key)
        if info is None:
            with self._ids_lock:
                info = self._conns.get(key)
                if info is None:
                    self._next += 1
                    cid = conn if isinstance(conn, str) else f"c{self._next}"
                    info = self._conns[key] = _Conn(cid)
        return info

    def conn_id(self, conn: Any) -> str:
        """The id poolscope shows for ``conn`` ("c1", "c2", ... or the string given)."""
        return self._info(conn).id

    def knows(self, conn: Any) -> bool:
        return self._key(conn) in self._conns

    def is_held(self, conn: Any) -> bool:
        info = self._conns.get(self._key(conn))
        return info is not None and info.held

    # -- the hot path --------------------------------------------------------------------
    def acquired(self, conn: Any, wait: float = 0.0, *, up: int = 0) -> None:
        """``conn`` was handed to the application after waiting ``wait`` seconds.

        The acquire site is the caller's line (``up`` more frames up, for a pool's own
        helper frames; frames of poolscope and of known pool libraries are skipped)."""
        try:
            if self._start_async is not None:
                self._start_async_heartbeat()
            info = self._conns.get(conn if isinstance(conn, (str, int)) else id(conn))
            if info is None:
                info = self._info(conn)
            info.held = True
            h = self.handle
            depth = h.site_depth
            site = sites.capture(depth, 2 + up) if depth else None
            h.acquired(info.id, wait if wait > 0.0 else 0.0, site, _holder())
        except Exception as exc:
            errors.report("track acquired", exc)

    def released(self, conn: Any) -> None:
        """``conn`` came back to the pool (a connection not handed out is ignored)."""
        try:
            info = self._conns.get(conn if isinstance(conn, (str, int)) else id(conn))
            if info is None or not info.held:
                return
            info.held = False
            self.handle.released(info.id)
            if info.pending is not None:
                self._settle(conn, info)
        except Exception as exc:
            errors.report("track released", exc)

    # -- the rest of a connection's life -------------------------------------------------
    def connected(self, conn: Any, duration: float = 0.0) -> None:
        """A new connection was opened in ``duration`` seconds."""
        try:
            info = self._conns.get(self._key(conn))
            if info is not None and info.held:
                # A reconnect while held (a client library's retry): the old one's close
                # and this connect are told at release.
                reason = info.pending[0] if info.pending else "lost"
                info.pending = (reason, max(duration, 0.0))
                self.backend.ok("connect")
                return
            info = self._info(conn)
            self.handle.event("connect", conn=info.id, duration=max(duration, 0.0))
            self.backend.ok("connect")
        except Exception as exc:
            errors.report("track connected", exc)

    def connect_error(self, exc: BaseException | str, duration: float = 0.0) -> None:
        """Opening a connection failed."""
        try:
            error = exc if isinstance(exc, str) else describe_error(exc)
            self.handle.event("connect_error", conn="", error=error, duration=max(duration, 0.0))
            # An attempt begun before the last success says nothing about now.
            self.backend.failed("connect", error, started=_clock() - max(duration, 0.0))
        except Exception as exc2:
            errors.report("track connect_error", exc2)

    def closed(self, conn: Any, reason: str = "closed", *, defer: bool = False) -> None:
        """``conn`` was closed. ``defer``: if it is held, tell it at its release (for
        libraries that reconnect the same connection object within one hold)."""
        try:
            key = self._key(conn)
            info = self._conns.get(key)
            if info is None:
                return
            if defer and info.held:
                info.pending = (reason, None)
                return
            del self._conns[key]
            self._close_event(info, reason)
        except Exception as exc:
            errors.report("track closed", exc)

    def _close_event(self, info: _Conn, reason: str) -> None:
        self.handle.event("close", conn=info.id, reason=reason, age=time.monotonic() - info.created)
        if reason in FAILED_CLOSES:
            self.backend.failed("lost", f"connection {reason}")

    def _settle(self, conn: Any, info: _Conn) -> None:
        """Tell a close (and reconnect) that happened during the hold just ended."""
        assert info.pending is not None
        reason, reconnect = info.pending
        info.pending = None
        key = self._key(conn)
        self._conns.pop(key, None)
        self._close_event(info, reason)
        if reconnect is not None:
            fresh = self._info(conn)
            self.handle.event("connect", conn=fresh.id, duration=reconnect)

    def timeout(self, wait: float, error: str = "timed out waiting for a connection") -> None:
        """An acquire gave up after waiting ``wait`` seconds."""
        try:
            self.handle.event("timeout", wait=max(wait, 0.0), error=error)
        except Exception as exc:
            errors.report("track timeout", exc)

    def acquire_error(self, exc: BaseException | str, *, backend: bool = True) -> None:
        """An acquire failed for another reason than a timeout. ``backend=False`` when
        the pool itself refused (e.g. "too many connections"): not the backend's health."""
        try:
            error = exc if isinstance(exc, str) else describe_error(exc)
            self.handle.event("acquire_error", error=error)
            if backend:
                self.backend.failed("acquire", error)
        except Exception as exc2:
            errors.report("track acquire_error", exc2)

    def probed(self, conn: Any, ok: bool, latency: float | None, error: str | None = None) -> None:
        """The result of one health probe (``conn`` may be None for the pool as a whole)."""
        try:
            info = self._conns.get(self._key(conn)) if conn is not None else None
            cid = info.id if info is not None else ""
            self.handle.event("heartbeat", conn=cid, ok=ok, latency=latency, error=error)
            if ok:
                self.backend.ok("probe")
            else:
                self.backend.failed("probe", error or "probe failed")
        except Exception as exc:
            errors.report("track probe", exc)

    def skipped(self, why: str = "no idle connection") -> None:
        self.handle.event(
            "heartbeat", conn="", ok=None, latency=None, error=None, skipped=True, why=why
        )

    # -- gauges ----------------------------------------------------------------------------
    def gauges(self) -> dict[str, Any]:
        """The pool's own numbers from ``stats()`` where given, else the tracker's counts."""
        held = sum(1 for c in list(self._conns.values()) if c.held)
        size = len(self._conns)
        g: dict[str, Any] = {
            "size": size,
            "idle": max(size - held, 0),
            "in_use": held,
            "waiting": self.waiting,
            "max": self.max_size or 0,
            "min": self.min_size,
        }
        if self.stats is not None:
            own = self.stats() or {}
            g.update({k: v for k, v in own.items() if k in g or k == "stats"})
            if "in_use" not in own and ("size" in own or "idle" in own):
                g["in_use"] = max(int(g["size"]) - int(g["idle"]), 0)
            if "idle" not in own and "size" in own:
                g["idle"] = max(int(g["size"]) - int(g["in_use"]), 0)
        return g

    # -- heartbeat -------------------------------------------------------------------------
    def start_heartbeat(
        self,
        interval: float,
        tick: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Call ``tick`` (sync, on a thread; or a coroutine function, on ``loop`` or the
        loop of the first acquire) every ``interval`` seconds while the tracker is open;
        it returns False to stop."""
        self.handle.heartbeat = interval
        if inspect.iscoroutinefunction(tick):
            atick: Callable[[], Awaitable[bool]] = tick

            async def guarded() -> bool:
                return not self.handle.closed and await atick() is not False

            def start(lp: asyncio.AbstractEventLoop) -> None:
                self._stop_heartbeat = start_async_heartbeat(lp, interval, guarded)

            if loop is None:
                loop = _running_loop()
            if loop is not None:
                start(loop)
            else:  # no loop yet: start inside it, at the first acquire
                self._start_async = start
        else:

            def sync_tick() -> bool:
                return not self.handle.closed and tick() is not False

            self._stop_heartbeat = start_thread_heartbeat(self.name, interval, sync_tick)

    def _start_async_heartbeat(self) -> None:
        start, loop = self._start_async, _running_loop()
        if start is not None and loop is not None:
            self._start_async = None
            start(loop)

    def _heartbeat_from_probe(self, probe: Callable[[], Any], interval: float) -> None:
        """The heartbeat of ``track(probe=...)``: time ``probe()``; it fails by raising or
        returning False, and returns ``SKIP`` when it chose not to run."""

        def busy() -> bool:
            if self.stats is None:
                return False
            g = self.gauges()
            if g.get("waiting"):
                self.skipped("requests waiting")
                return True
            return False

        def judge(t0: float, result: Any, exc: BaseException | None) -> None:
            if result is SKIP:
                self.skipped("probe skipped")
            elif exc is not None:
                self.probed(None, False, _clock() - t0, describe_error(exc))
            else:
                ok = result is not False
                self.probed(None, ok, _clock() - t0, None if ok else "probe returned False")

        if inspect.iscoroutinefunction(probe):

            async def atick() -> bool:
                if busy():
                    return True
                t0 = _clock()
                try:
                    result = await probe()
                except Exception as exc:
                    judge(t0, None, exc)
                else:
                    judge(t0, result, None)
                return True

            self.start_heartbeat(interval, atick)
        else:

            def tick() -> bool:
                if busy():
                    return True
                t0 = _clock()
                try:
                    result = probe()
                except Exception as exc:
                    judge(t0, None, exc)
                else:
                    judge(t0, result, None)
                return True

            self.start_heartbeat(interval, tick)

    # -- helpers for the common shape ------------------------------------------------------
    def acquire(
        self,
        get: Callable[[], Any],
        put: Callable[[Any], Any] | None = None,
        *,
        timeouts: tuple[type[BaseException], ...] = TIMEOUTS,
    ) -> _Acquire:
        """``with tracker.acquire(pool.get, pool.put) as conn:`` (or ``async with`` when
        ``get``/``put`` are coroutine functions): timed, tracked, and given back."""
        return _Acquire(self, get, put, timeouts)

    def acquirer(
        self, fn: F | None = None, *, timeouts: tuple[type[BaseException], ...] = TIMEOUTS
    ) -> Any:
        """Decorate a pool's get function (sync or async): its wait is timed, the
        connection it returns is ``acquired`` at its caller's line, an exception in
        ``timeouts`` is a ``timeout`` and any other an ``acquire_error``."""

        def wrap(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def aget(*args: Any, **kwargs: Any) -> Any:
                    t0 = self._begin()
                    try:
                        conn = await fn(*args, **kwargs)
                    except BaseException as exc:
                        self._failed(t0, exc, timeouts)
                        raise
                    self._got(conn, t0)
                    return conn

                return aget  # type: ignore[return-value]

            @functools.wraps(fn)
            def get(*args: Any, **kwargs: Any) -> Any:
                t0 = self._begin()
                try:
                    conn = fn(*args, **kwargs)
                except BaseException as exc:
                    self._failed(t0, exc, timeouts)
                    raise
                self._got(conn, t0)
                return conn

            return get  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

    def releaser(self, fn: F) -> F:
        """Decorate a pool's put function ``put(conn, ...)`` (sync or async)."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def aput(conn: Any, *args: Any, **kwargs: Any) -> Any:
                self.released(conn)
                return await fn(conn, *args, **kwargs)

            return aput  # type: ignore[return-value]

        @functools.wraps(fn)
        def put(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.released(conn)
            return fn(conn, *args, **kwargs)

        return put  # type: ignore[return-value]

    def connector(self, fn: F) -> F:
        """Decorate a function that opens a connection and returns it (sync or async)."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def aconnect(*args: Any, **kwargs: Any) -> Any:
                t0 = _clock()
                try:
                    conn = await fn(*args, **kwargs)
                except Exception as exc:
                    self.connect_error(exc, _clock() - t0)
                    raise
                self.connected(conn, _clock() - t0)
                return conn

            return aconnect  # type: ignore[return-value]

        @functools.wraps(fn)
        def connect(*args: Any, **kwargs: Any) -> Any:
            t0 = _clock()
            try:
                conn = fn(*args, **kwargs)
            except Exception as exc:
                self.connect_error(exc, _clock() - t0)
                raise
            self.connected(conn, _clock() - t0)
            return conn

        return connect  # type: ignore[return-value]

    def closer(self, fn: F | None = None, *, reason: str = "closed") -> Any:
        """Decorate a function ``close(conn, ...)`` that closes a connection."""

        def wrap(fn: F) -> F:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def aclose(conn: Any, *args: Any, **kwargs: Any) -> Any:
                    self.closed(conn, reason)
                    return await fn(conn, *args, **kwargs)

                return aclose  # type: ignore[return-value]

            @functools.wraps(fn)
            def close(conn: Any, *args: Any, **kwargs: Any) -> Any:
                self.closed(conn, reason)
                return fn(conn, *args, **kwargs)

            return close  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

    def _begin(self) -> float:
        self.waiting += 1
        return _clock()

    def _got(self, conn: Any, t0: float) -> None:
        self.waiting -= 1
        # Frames: capture, acquired, _got, the helper; then the application's caller.
        self.acquired(conn, _clock() - t0, up=2)

    def _failed(
        self, t0: float, exc: BaseException, timeouts: tuple[type[BaseException], ...]
    ) -> None:
        self.waiting -= 1
        if isinstance(exc, timeouts):
            self.timeout(_clock() - t0, describe_error(exc))
        elif isinstance(exc, Exception):  # a cancellation is not a pool failure
            self.acquire_error(exc)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop tracking: the heartbeat stops and the pool leaves the runtime."""
        if self._stop_heartbeat is not None:
            self._stop_heartbeat()
            self._stop_heartbeat = None
        self._start_async = None
        self.runtime.unregister(self.handle)


class _Acquire:
    """The context manager of :meth:`Tracker.acquire`, for ``with`` and ``async with``."""

    def __init__(
        self,
        tracker: Tracker,
        get: Callable[[], Any],
        put: Callable[[Any], Any] | None,
        timeouts: tuple[type[BaseException], ...],
    ) -> None:
        self.tracker = tracker
        self.get = get
        self.put = put
        self.timeouts = timeouts
        self.conn: Any = None

    def __enter__(self) -> Any:
        tr = self.tracker
        t0 = tr._begin()
        try:
            self.conn = self.get()
        except BaseException as exc:
            tr._failed(t0, exc, self.timeouts)
            raise
        tr._got(self.conn, t0)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.tracker.released(self.conn)
        if self.put is not None:
            self.put(self.conn)

    async def __aenter__(self) -> Any:
        tr = self.tracker
        t0 = tr._begin()
        try:
            self.conn = await self.get()
        except BaseException as exc:
            tr._failed(t0, exc, self.timeouts)
            raise
        tr._got(self.conn, t0)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        self.tracker.released(self.conn)
        if self.put is not None:
            result = self.put(self.conn)
            if inspect.isawaitable(result):
                await result


def track(
    name: str,
    *,
    kind: str = "custom",
    max_size: int | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
    leak_threshold: float | None = 30.0,
    heartbeat: float | None = None,
    probe: Callable[[], Any] | None = None,
    target: str = "",
    listen: Any = None,
) -> Tracker:
    """Track a pool poolscope has no adapter for; returns its :class:`Tracker`.

    ``stats``: returns the pool's own gauges (``size``, ``idle``, ``in_use``,
    ``waiting``, ``max``, ``min``; missing ones are filled from the tracker's counts).
    ``probe``: a health check (sync, or a coroutine function) run every ``heartbeat``
    seconds; it fails by raising or returning False. ``target``: where the pool
    connects (a DSN's password is redacted). ``listen`` as for ``instrument()``.
    """
    if leak_threshold is not None and leak_threshold <= 0:
        raise ValueError(f"leak_threshold must be positive or None, got {leak_threshold}")
    if heartbeat is not None and heartbeat <= 0:
        raise ValueError(f"heartbeat must be positive or None, got {heartbeat}")
    runtime = get_runtime()
    tracker = Tracker(
        runtime,
        name,
        kind=kind,
        max_size=max_size,
        stats=stats,
        leak_threshold=leak_threshold,
        heartbeat=heartbeat,
        probe=probe,
        target=target,
    )
    if listen is not False and runtime.server is None:
        with contextlib.suppress(OSError, ValueError):
            runtime.serve(None if listen is True else listen)
    return tracker
