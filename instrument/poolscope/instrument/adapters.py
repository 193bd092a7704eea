"""Helpers shared by the third-party pool adapters (asyncpg, SQLAlchemy, psycopg_pool).

Standard library only. Connection ids, the heartbeat loops (asyncio and thread
flavours), and the small event helpers whose field sets the protocol fixes.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import errors, sites
from .backend import HEALTHY, BackendTracker
from .recorder import PoolHandle

#: Upper bound of a heartbeat probe's own timeout (the heartbeat interval if shorter).
PROBE_TIMEOUT = 2.0


def probe_timeout(interval: float) -> float:
    """The timeout of one probe for a heartbeat every ``interval`` seconds."""
    return min(PROBE_TIMEOUT, interval)


class ConnInfo:
    """What an adapter remembers about one physical connection."""

    __slots__ = ("checkout_ref", "created", "held", "hint", "id", "idle_since")

    def __init__(self, cid: str) -> None:
        self.id = cid
        self.created = time.monotonic()
        self.held = False
        #: perf_counter when it last became idle (opened or released): tells an
        #: inactivity close from any other.
        self.idle_since = time.perf_counter()
        #: A close reason the adapter already knows (e.g. "lost" after a failed probe).
        self.hint: str | None = None
        #: While checked out, a weak reference to what the application holds, if the
        #: pool keeps one anyway (SQLAlchemy's ``_ConnectionRecord.fairy_ref``): dead at
        #: checkin means the pool's garbage-collection hook returned it, a proven leak.
        self.checkout_ref: Any = None


class ConnIds:
    """Short, stable connection ids ("c1", "c2", ...) keyed by ``id()`` of the raw connection.

    Keys are ``id()`` ints, not the objects, so this never keeps a connection alive;
    the adapter forgets a connection when it closes.
    """

    def __init__(self) -> None:
        self.by_key: dict[int, ConnInfo] = {}
        self._next = itertools.count(1)

    def get(self, raw: Any) -> ConnInfo | None:
        return self.by_key.get(id(raw))

    def add(self, raw: Any) -> ConnInfo:
        info = self.by_key.get(id(raw))
        if info is None:
            info = self.by_key[id(raw)] = ConnInfo(f"c{next(self._next)}")
        return info

    def forget(self, raw: Any) -> ConnInfo | None:
        return self.by_key.pop(id(raw), None)


_getframe = sys._getframe
_MAX_KNOWN_PATHS = 4


def cached_site(known: list[tuple[int, Any, Any]], depth: int, skip: int = 2) -> Any:
    """``sites.capture(depth, skip)`` as seen from the caller, without walking the pool's
    own frames one by one.

    Walking ``f_back`` through a frame makes Python (3.11+) allocate a frame object for
    it: through SQLAlchemy's seven frames between a checkout listener and the
    application's ``engine.connect()`` that was a third of a checkout's added cost.
    ``sys._getframe(n)`` jumps ``n`` frames and allocates only the one it returns, so
    once a call path is known the site is read by jumping to the application's frame.
    ``known`` (one list per pool, at most four paths) holds ``(n, first, last)``: the
    distance to the application's frame and the code objects of the pool's first and
    last frame on that path. A path is trusted only if both ends match and the frame
    at ``n`` is the application's; anything else (another path, application code
    called back from inside the pool) takes the full walk. ``skip`` counts as for
    ``sites.capture`` called by the caller (0 would be the caller itself).
    """
    index = sites._code_index
    internal = sites._code_internal
    for n, first, last in known:
        try:
            if _getframe(skip).f_code is not first or _getframe(n - 1).f_code is not last:
                continue
            f = _getframe(n)
        except ValueError:  # a shallower stack than that path's
            continue
        i = index.get(id(f.f_code), -1)
        if i < 0 or internal[i]:
            continue
        if depth == 1:
            return (i, f.f_lasti)
        return sites.capture(depth, n + 1)  # starts at the application's frame
    site = sites.capture(depth, skip + 1)
    # Learn this path (the walk above interned every code on it).
    try:
        g: Any = _getframe(skip)
    except ValueError:
        return site
    first, last, k = g.f_code, None, skip
    while g is not None:
        i = index.get(id(g.f_code), -1)
        if i < 0:
            break
        if not internal[i]:
            path = (k, first, last)
            if k > skip and len(known) < _MAX_KNOWN_PATHS and path not in known:
                known.append(path)
            break
        last = g.f_code
        g = g.f_back
        k += 1
    return site


def describe_error(exc: BaseException) -> str:
    # Redact first, then cut: a DSN straddling the cut would leak its password's start.
    text = errors.redact(str(exc)).strip()
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def backend_pid(raw: Any) -> int | None:
    """The PostgreSQL server process of a driver connection, read from what the driver
    already knows (no round trip): asyncpg ``get_server_pid()``, psycopg 3
    ``info.backend_pid``, psycopg2 ``get_backend_pid()``, and through SQLAlchemy's
    adapted connections the driver's own. None for anything else."""
    for _ in range(3):  # an adapter around an adapter around the driver's connection
        if raw is None:
            return None
        try:
            get = getattr(raw, "get_server_pid", None)
            info = getattr(raw, "info", None) if get is None else None
            pid = get() if get is not None else getattr(info, "backend_pid", None)
            if pid is None and type(raw).__module__.startswith("psycopg2"):
                pid = raw.get_backend_pid()
        except Exception:  # a closed or unusual connection: no pid, no error
            return None
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            return pid
        raw = getattr(raw, "driver_connection", None) or getattr(raw, "_connection", None)
    return None


def emit_connect(handle: PoolHandle, info: ConnInfo, duration: float, raw: Any = None) -> None:
    pid = backend_pid(raw) if raw is not None else None
    if pid is not None:
        handle.event("connect", conn=info.id, duration=duration, backend_pid=pid)
    else:
        handle.event("connect", conn=info.id, duration=duration)


def emit_adopted(handle: PoolHandle, info: ConnInfo, raw: Any) -> None:
    """A connection the pool opened before it was instrumented has no ``connect``
    event: its backend pid, if it has one, goes in a ``backend_pid`` event."""
    pid = backend_pid(raw)
    if pid is not None:
        handle.event("backend_pid", conn=info.id, backend_pid=pid)


def emit_close(handle: PoolHandle, info: ConnInfo, reason: str, **extra: Any) -> None:
    handle.event("close", conn=info.id, reason=reason, age=time.monotonic() - info.created, **extra)


def emit_heartbeat(
    handle: PoolHandle,
    conn: str,
    ok: bool | None,
    latency: float | None,
    error: str | None,
    **extra: Any,
) -> None:
    handle.event("heartbeat", conn=conn, ok=ok, latency=latency, error=error, **extra)


def emit_skipped(handle: PoolHandle, why: str = "no idle connection") -> None:
    """A heartbeat that did not run because nothing was idle at once: said, not hidden."""
    handle.event("heartbeat", conn="", ok=None, latency=None, error=None, skipped=True, why=why)


def emit_gc_leak(handle: PoolHandle, info: ConnInfo) -> None:
    """A connection garbage-collected while checked out: a proven leak, and its close."""
    handle.event("leak", conn=info.id, proven=True)
    emit_close(handle, info, "gc_leak")


# -- heartbeat loops -------------------------------------------------------------------


def start_async_heartbeat(
    loop: asyncio.AbstractEventLoop,
    interval: float,
    tick: Callable[[], Awaitable[bool]],
) -> Callable[[], None]:
    """Run ``await tick()`` every ``interval`` seconds as a task on ``loop`` (the
    application's loop, where the pool's connections live). ``tick`` returns False to
    stop. Returns a function that cancels the task."""
    holder: dict[str, asyncio.Task[None]] = {}

    async def run() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if not await tick():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.report("heartbeat", exc)

    def start() -> None:
        # The loop keeps only a weak reference to tasks: hold it here.
        holder["task"] = loop.create_task(run(), name="poolscope-heartbeat")

    def stop() -> None:
        task = holder.get("task")
        if task is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        start()
    else:
        loop.call_soon_threadsafe(start)
    return stop


def start_thread_heartbeat(
    name: str, interval: float, tick: Callable[[], bool]
) -> Callable[[], None]:
    """Call ``tick()`` every ``interval`` seconds on a daemon thread until it returns
    False or the returned stop function is called."""
    stopped = threading.Event()

    def run() -> None:
        while not stopped.wait(interval):
            try:
                if not tick():
                    return
            except Exception as exc:
                errors.report("heartbeat", exc)

    threading.Thread(target=run, name=f"poolscope-heartbeat-{name}", daemon=True).start()
    return stopped.set


# -- probes with a deadline ------------------------------------------------------------
#: What a probe found: (ok, latency, error, conn id). ok None: nothing to probe.
ProbeResult = tuple["bool | None", "float | None", "str | None", str]


def timed_out_error(limit: float) -> str:
    return f"probe timed out after {limit:g}s (no answer)"


class SyncProbe:
    """Runs one blocking probe at a time on a worker thread, waiting at most ``limit``.

    A probe that does not answer in time is reported once, as a timed-out heartbeat; it
    is never interrupted (a DBAPI call cannot be safely), so its connection stays with
    it until the server answers - then its late result is dropped. Meanwhile ``busy``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = False

    def run(self, fn: Callable[[], Any], limit: float) -> tuple[str, Any]:
        """("done", result), ("timeout", None) or ("busy", None)."""
        if self.running:
            return "busy", None
        done = threading.Event()
        box: list[Any] = [None]

        def work() -> None:
            try:
                box[0] = fn()
            except Exception as exc:
                errors.report("probe", exc)
            finally:
                self.running = False
                done.set()

        self.running = True
        threading.Thread(target=work, name=f"poolscope-probe-{self.name}", daemon=True).start()
        if done.wait(limit):
            return "done", box[0]
        return "timeout", None


class AsyncProbe:
    """``SyncProbe`` for coroutines: the probe runs as a task that is never cancelled
    (cancelling a driver mid-query can leave its connection outside the pool)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None

    async def run(self, coro_fn: Callable[[], Awaitable[Any]], limit: float) -> tuple[str, Any]:
        if self.task is not None and not self.task.done():
            return "busy", None

        async def guarded() -> Any:
            try:
                return await coro_fn()
            except Exception as exc:
                errors.report("probe", exc)
                return None

        task = self.task = asyncio.get_running_loop().create_task(guarded())
        done, _ = await asyncio.wait({task}, timeout=limit)
        if done:
            return "done", task.result()
        return "timeout", None


# -- one heartbeat round, shared by the sync and async adapters --------------------------
# A probe function returns a ProbeResult to report, a bool when it reported itself (the
# pool's own check emitted per-connection heartbeats), or None: nothing to probe.


def report_probe(
    handle: PoolHandle,
    tracker: BackendTracker,
    status: str,
    result: Any,
    limit: float,
    *,
    connect: bool = False,
) -> bool | None:
    """Report one probe's outcome (once) and feed the backend tracker; True ok, False
    failed, None nothing probed."""
    extra: dict[str, Any] = {"probe": "connect"} if connect else {}
    source = "connect" if connect else "probe"
    if status == "timeout":
        error = timed_out_error(limit)
        emit_heartbeat(handle, "", False, limit, error, **extra)
        tracker.failed(source, error, time.perf_counter() - limit)
        return False
    if status != "done" or result is None:
        return None
    if isinstance(result, bool):
        return result
    ok, latency, error, cid = result
    if ok is None:
        return None
    emit_heartbeat(handle, cid, ok, latency, error, **extra)
    if ok:
        tracker.ok(source)
    else:
        started = time.perf_counter() - (latency or 0.0)
        tracker.failed(source, error or "probe failed", started)
    return bool(ok)


def sync_round(
    handle: PoolHandle,
    tracker: BackendTracker,
    probes: tuple[SyncProbe, SyncProbe],
    idle: Callable[[], Any],
    own: Callable[[], Any],
    limit: float,
) -> None:
    """Probe an idle connection; with none (or to confirm a failure on a fresh one)
    open a connection of our own - at most once per interval."""
    ok = report_probe(handle, tracker, *probes[0].run(idle, limit), limit)
    if ok is not True and (ok is None or tracker.state != HEALTHY):
        if tracker.own_probe_due():
            report_probe(handle, tracker, *probes[1].run(own, limit), limit, connect=True)
        elif ok is None:
            emit_skipped(handle)


async def async_round(
    handle: PoolHandle,
    tracker: BackendTracker,
    probes: tuple[AsyncProbe, AsyncProbe],
    idle: Callable[[], Awaitable[Any]],
    own: Callable[[], Awaitable[Any]],
    limit: float,
) -> None:
    """``sync_round`` on the application's loop."""
    ok = report_probe(handle, tracker, *(await probes[0].run(idle, limit)), limit)
    if ok is not True and (ok is None or tracker.state != HEALTHY):
        if tracker.own_probe_due():
            outcome = await probes[1].run(own, limit)
            report_probe(handle, tracker, *outcome, limit, connect=True)
        elif ok is None:
            emit_skipped(handle)
