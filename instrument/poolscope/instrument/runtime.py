"""The background thread: drain the Recorder, fold, detect leaks, poll gauges, stream.

One daemon thread runs an asyncio loop that owns everything after the hot path.
Nothing here may raise into the application: every step is guarded and a
failure is counted by :mod:`errors`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from poolscope.endpoint import DEFAULT_HOST, DEFAULT_PORT, Endpoint, parse_endpoint
from poolscope.events import PROTOCOL_VERSION, Event, encode, encode_acquire, encode_release
from poolscope.model import MAX_SITES, PoolState
from poolscope.version import __version__

from . import discovery, errors, sites
from .recorder import PoolHandle, Recorder
from .redact import redact, redact_argv
from .server import StreamServer

log = logging.getLogger("poolscope")

DRAIN_INTERVAL = 0.02
#: Raw events folded and broadcast per step; between steps the senders write, so a
#: backlog reaches a healthy observer in pieces instead of overflowing its queue at once.
DRAIN_CHUNK = 2048
#: Chunks drained per tick at most (a backlog is worked off in ticks of this size).
TICK_CHUNKS = 8
#: Overloaded (the recorder dropping), a tick stops draining after this much CPU ...
TICK_BUDGET = 0.005
#: ... and the thread then sleeps so that it keeps at most this share of the GIL.
BACKGROUND_SHARE = 0.2
#: Overloaded, events are drained in smaller chunks: short ticks, so accepts and
#: greetings never wait long for the next one.
OVERLOAD_CHUNK = 512
STATE_INTERVAL = 1.0
LEAK_CHECK_INTERVAL = 0.25
MAX_TAGS = 10_000


# An open hold, by (pool, conn): (perf_counter at acquire, site id, raw site, task
# name, holder - a weakref to the task or a thread ident). A tuple, not an object:
# one is made per acquire on the background thread. Reported ones are in ``_reported``.
_Hold = tuple[float, "int | None", Any, str, Any]


def _holder_name(holder: Any) -> tuple[str, Any]:
    if holder is None:
        return "", None
    if isinstance(holder, int):
        th = threading._active.get(holder)  # type: ignore[attr-defined]
        return (th.name if th is not None else f"thread-{holder}"), holder
    get_name = getattr(holder, "get_name", None)
    if get_name is not None:
        try:
            return str(get_name()), weakref.ref(holder)
        except TypeError:
            return str(get_name()), None
    return str(holder), None


# Task and thread names are the application's text (``GET /login?password=...``, a
# DSN in a thread name): redacted before they reach the stream, leaks and holders.
# Names repeat, so a bounded cache keeps the per-acquire cost a dict lookup.
MAX_NAMES = 4096
_redacted_names: dict[str, str] = {}


def _redacted_name(name: str) -> str:
    out = _redacted_names.get(name)
    if out is None:
        if len(_redacted_names) >= MAX_NAMES:
            _redacted_names.clear()
        out = _redacted_names[name] = redact(name)
    return out


def request_name(labels: Any) -> str | None:
    try:
        name = labels.request_name()
        return name if isinstance(name, str) else None
    except Exception as exc:
        errors.report("tags", exc)
        return None


def _format_site(raw: Any) -> list[dict[str, Any]]:
    """An acquire site as frames; [] when there is none or it cannot be formatted, so
    the acquire, release or leak that carries it is never lost with it."""
    if not raw:
        return []
    try:
        return sites.format_site(raw)
    except Exception as exc:
        errors.report("site formatting", exc)
        return []


def _current_stack(holder: Any) -> list[dict[str, Any]]:
    """The holder's stack right now (innermost first), application frames only."""
    try:
        if isinstance(holder, int):
            frame = sys._current_frames().get(holder)
            frames: list[Any] = []
            while frame is not None and len(frames) < 50:
                frames.append(frame)
                frame = frame.f_back
            return sites.format_frames(frames)
        task = holder() if isinstance(holder, weakref.ref) else None
        if task is not None and not task.done():
            frames = list(reversed(task.get_stack(limit=50)))
            return sites.format_frames(frames)
    except Exception as exc:
        errors.report("current stack", exc)
    return []


def _quiet_loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if not isinstance(exc, BaseException):
        exc = RuntimeError(str(context.get("message", "asyncio error")))
    errors.report("runtime loop", exc)


class Runtime:
    """The process-wide poolscope runtime (one per process; see :func:`get_runtime`)."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.handles: dict[str, PoolHandle] = {}
        self.model = PoolState()
        self.server: StreamServer | None = None
        self.endpoint: Endpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.state_interval = STATE_INTERVAL
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._offset = time.time() - time.perf_counter()
        self._holds: dict[tuple[str, str], _Hold] = {}
        self._reported: set[tuple[str, str]] = set()  # holds reported as leaks
        self._site_ids: dict[Any, int] = {}
        # ps.tag() labels interned like sites; the labels id of each open hold.
        self._tag_ids: dict[tuple[tuple[str, str], ...], int] = {}
        self._hold_tags: dict[tuple[str, str], int] = {}
        self._pending: list[Event] = []
        self._stopping = False
        self._listen_token: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: In-process listeners called (on the background thread) with every batch
        #: of events after it is folded - for tests and embedders; must not block.
        self.taps: list[Callable[[list[Event]], None]] = []
        #: Called on the background thread at the end of every tick (the in-app
        #: /metrics publishes its snapshot there); must not block.
        self.tick_hooks: list[Callable[[], None]] = []
        #: Bumped whenever the model folds something: a snapshot names what it saw.
        self.generation = 0
        #: Ticks begun (a snapshot published in the latest one is as fresh as any).
        self.ticks = 0
        # serve()'s limits, kept for a forked child's own server.
        self._serve_limits: dict[str, Any] = {}
        # Internal errors by place, waiting for the next drain: (count, last message).
        self._errors: dict[str, tuple[int, str]] = {}
        self._errors_lock = threading.Lock()
        errors.listeners.append(self._on_internal_error)
        self._process = discovery.process_name()
        self.model.apply(self._hello())
        self._serve_args: tuple[Endpoint, bool, str | None] | None = None
        #: ``ps.serve()`` was called: the server stays up with no pool left (otherwise
        #: uninstrumenting the last pool stops the server and the background thread).
        self.explicit_serve = False
        self._atexit = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    # -- lifecycle ---------------------------------------------------------------
    def ensure_thread(self) -> None:
        with self._lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run_thread, name="poolscope", daemon=True)
            self.thread.start()
            if self._on_internal_error not in errors.listeners:  # restarted after a stop
                errors.listeners.append(self._on_internal_error)
        self._ready.wait(5.0)
        if not self._atexit:
            self._atexit = True
            atexit.register(self.shutdown)

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        # poolscope's own loop only: whatever asyncio would print (tracebacks of
        # callbacks, "socket.send() raised exception") is counted and logged once.
        loop.set_exception_handler(_quiet_loop_errors)
        self.loop = loop
        asyncio.set_event_loop(loop)
        self._tasks = [
            loop.create_task(self._drain_loop()),
            loop.create_task(self._state_loop()),
            loop.create_task(self._leak_loop()),
        ]
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        except Exception as exc:
            errors.report("runtime loop", exc)

    def call(self, coro: Any, timeout: float = 5.0) -> Any:
        """Run a coroutine on the runtime's loop from another thread and wait for it."""
        self.ensure_thread()
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def serve(
        self,
        listen: str | Endpoint | None = None,
        *,
        allow_remote: bool = False,
        token: str | None = None,
        max_observers: int | None = None,
        allow_other_users: bool | None = None,
    ) -> Endpoint:
        """Start the stream server (idempotent); returns where it listens.

        ``max_observers`` (default ``$POOLSCOPE_MAX_OBSERVERS`` or 64) caps observers
        served at once; ``allow_other_users`` (default ``$POOLSCOPE_ALLOW_OTHER_USERS=1``)
        lets loopback TCP peers of another user in (see docs/security.md)."""
        if self.server is not None and self.endpoint is not None:
            return self.endpoint
        if listen is None:
            listen = os.environ.get("POOLSCOPE_LISTEN") or f"{DEFAULT_HOST}:{DEFAULT_PORT}"
        ep = listen if isinstance(listen, Endpoint) else parse_endpoint(listen)
        token = token or os.environ.get("POOLSCOPE_TOKEN") or None
        if not ep.is_loopback and not (allow_remote and token):
            raise ValueError(
                f"poolscope: refusing to listen on non-loopback {ep}; "
                "pass allow_remote=True and a token to opt in"
            )
        self._listen_token = token
        self._serve_args = (ep, allow_remote, token)
        self._serve_limits = {
            "max_observers": max_observers,
            "allow_other_users": allow_other_users,
        }
        server = StreamServer(
            self._greeting,
            token=token,
            max_observers=max_observers,
            allow_other_users=allow_other_users,
        )
        self.endpoint = self.call(server.start(ep))
        self.server = server
        if self.endpoint != ep and ep.port != 0:  # the asked-for port was taken
            log.warning("poolscope: streaming on %s", self.endpoint)
        else:
            log.info("poolscope: streaming on %s", self.endpoint)
        self._write_discovery()
        return self.endpoint

    def _after_fork_in_child(self) -> None:
        """A forked worker (gunicorn --preload, multiprocessing with fork) inherits the
        runtime but not its thread: start afresh in the child - its own background
        thread, stream server (a free port, the parent keeps its own) and discovery
        entry - while the pools instrumented before the fork keep reporting."""
        try:
            inherited = self.server
            self.thread = None
            self.loop = None
            self._tasks = []
            self._lock = threading.Lock()
            self._ready = threading.Event()
            self._errors_lock = threading.Lock()
            self._stopping = False
            self.server = None
            self.endpoint = None
            self.recorder.buffer.clear()  # the parent's events, the parent sends them
            self._holds.clear()
            self._hold_tags.clear()
            self._reported.clear()
            self.model = PoolState()
            self._process = discovery.process_name()
            self.model.apply(self._hello())
            if inherited is not None:
                inherited.forget_inherited()
            for handle in list(self.handles.values()):
                self.recorder.append({"type": "pool", "t": time.time(), **handle.describe()})
            if self.handles:
                self.ensure_thread()
            if inherited is not None and self._serve_args is not None:
                ep, allow_remote, token = self._serve_args
                if ep.path is not None:
                    ep = Endpoint(host="", port=0, path=f"{ep.path}.{os.getpid()}")
                else:
                    ep = Endpoint(host=ep.host, port=0)
                self.serve(ep, allow_remote=allow_remote, token=token, **self._serve_limits)
        except Exception as exc:
            errors.report("after fork", exc)

    def _write_discovery(self) -> None:
        if self.endpoint is None:
            return
        try:
            discovery.write_entry(str(self.endpoint), sorted(self.handles))
        except Exception as exc:  # not only OSError: this runs inside instrument()
            errors.report("discovery", exc)

    def register(self, handle: PoolHandle) -> PoolHandle:
        """Add a pool; its name is made unique in this process."""
        with self._lock:
            # A DSN given as the name would travel to every observer, /metrics and ps.
            base = name = errors.redact(handle.name)
            n = 2
            while name in self.handles:
                name = f"{base}-{n}"
                n += 1
            if name != handle.name:
                handle.rename(name)
            self.handles[name] = handle
        # The target is shown to every observer (and re-sent in each greeting).
        handle.target = errors.redact(str(handle.target or ""))
        self.recorder.append({"type": "pool", "t": time.time(), **handle.describe()})
        self.ensure_thread()
        self._write_discovery()
        return handle

    def unregister(self, handle: PoolHandle) -> None:
        with self._lock:
            self.handles.pop(handle.name, None)
        handle.closed = True

    def stop_if_unused(self, timeout: float = 1.0) -> bool:
        """After the last pool is uninstrumented: flush, stop the stream server and the
        background thread, leaving no thread, socket or discovery entry behind (unless
        ``ps.serve()`` was called explicitly). A later ``instrument()`` starts afresh."""
        with self._lock:
            if self.handles or self.explicit_serve or self.thread is None:
                return False
            thread, loop = self.thread, self.loop
        self.shutdown(timeout)
        if loop is not None and not loop.is_closed():

            async def halt() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                asyncio.get_running_loop().stop()

            try:
                asyncio.run_coroutine_threadsafe(halt(), loop)
                thread.join(timeout + 1)
                if not thread.is_alive():
                    loop.close()
            except Exception as exc:
                errors.report("stop", exc)
        with self._lock:
            self.thread = None
            self.loop = None
            self._tasks = []
            self._ready = threading.Event()
            self.server = None
            self.endpoint = None
            self._serve_args = None
            self._holds.clear()
            self._hold_tags.clear()
            self._reported.clear()
            self._stopping = False
        return True

    def shutdown(self, timeout: float = 1.0) -> None:
        """Flush the last events to observers and stop (registered with atexit)."""
        if self._stopping or self.loop is None:
            return
        self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._final(timeout), self.loop).result(timeout + 1)
        except Exception as exc:
            errors.report("shutdown", exc)
        try:
            errors.listeners.remove(self._on_internal_error)
        except ValueError:
            pass
        discovery.remove_entry()

    async def _final(self, timeout: float) -> None:
        self._poll_state()
        deadline = time.monotonic() + timeout / 2
        while self._drain():
            await asyncio.sleep(self._pause() if time.monotonic() < deadline else 0)
        self._emit([{"type": "bye", "t": time.time()}])
        if self.server is not None:
            await self.server.flush(timeout)
            await self.server.close()

    # -- protocol ----------------------------------------------------------------
    def _hello(self) -> Event:
        return {
            "type": "hello",
            "t": time.time(),
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "process": self._process,
            "argv": redact_argv(sys.argv)[:8],  # redacted whole, then cut
            "version": __version__,
            "python": sys.version.split()[0],
        }

    def _greeting(self) -> list[bytes]:
        now = time.time()
        lines = [
            encode(self._hello()),
            encode({"type": "sync", "t": now, "state": self.model.to_dict()}),
        ]
        # Each pool's configuration again as a live event, so a recording that
        # starts late still describes its pools line by line.
        for handle in list(self.handles.values()):
            lines.append(encode({"type": "pool", "t": now, **handle.describe()}))
        return lines

    # -- the background work -----------------------------------------------------
    async def _drain_loop(self) -> None:
        """The tick, one loop iteration each: accept and close first, then drain and
        fold up to TICK_CHUNKS chunks (each broadcast as one shared blob), then greet
        and write - one send per observer. When the application's thread is CPU-bound,
        every GIL release costs this thread a switch interval, so a tick does a lot at
        once rather than a little often (a backlog waits for the next tick, not for a
        wake-up per event)."""
        while True:
            cpu0 = time.thread_time()
            self.ticks += 1
            more = False
            server = self.server
            if server is not None:
                try:
                    server.service()
                except Exception as exc:
                    errors.report("stream server", exc)
            overloaded = self._overloaded()
            chunk = OVERLOAD_CHUNK if overloaded else DRAIN_CHUNK
            try:
                more = self._drain(chunk)
                chunks = 1
                while more and chunks < TICK_CHUNKS and not (server and server.lagging()):
                    if overloaded and time.thread_time() - cpu0 >= TICK_BUDGET:
                        break
                    more = self._drain(chunk)
                    chunks += 1
            except Exception as exc:
                errors.report("drain", exc)
            if server is not None:
                try:
                    server.deliver()
                except Exception as exc:
                    errors.report("stream server", exc)
            for hook in self.tick_hooks:
                try:
                    hook()
                except Exception as exc:
                    errors.report("tick hook", exc)
            await asyncio.sleep(self._pause(more, time.thread_time() - cpu0, overloaded))

    def _overloaded(self) -> bool:
        """The recorder is dropping or half full: the application produces faster than
        this thread folds, and every GIL slice taken here is one the application loses."""
        rec = self.recorder
        return rec.dropped > 0 or 2 * len(rec.buffer) >= rec.capacity

    def _pause(self, more: bool = True, busy: float = 0.0, overloaded: bool = False) -> float:
        """Until the next tick. Overloaded: long enough that this thread keeps at most
        BACKGROUND_SHARE of the GIL (the recorder drops the excess, counted and told)
        and the application the rest. Otherwise, with a backlog: none, unless an
        observer's queue is half full - then give it a moment, so a healthy but briefly
        slower observer catches up instead of losing lines (a stalled one still only
        costs drops)."""
        if overloaded:
            return max(DRAIN_INTERVAL, busy * (1 - BACKGROUND_SHARE) / BACKGROUND_SHARE)
        if not more:
            return DRAIN_INTERVAL
        server = self.server
        return DRAIN_INTERVAL if server is not None and server.lagging() else 0.0

    async def _state_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state_interval)
            try:
                self._poll_state()
            except Exception as exc:
                errors.report("state poll", exc)

    async def _leak_loop(self) -> None:
        while True:
            await asyncio.sleep(LEAK_CHECK_INTERVAL)
            try:
                self._check_leaks()
            except Exception as exc:
                errors.report("leak check", exc)

    def _poll_state(self) -> None:
        now = time.time()
        for handle in list(self.handles.values()):
            if handle.gauges is None or handle.closed:
                continue
            try:
                g = handle.gauges()
            except Exception as exc:
                errors.report(f"gauges of {handle.kind}", exc)
                continue
            if g is not None:
                self.recorder.append({"type": "state", "t": now, "pool": handle.name, **g})

    def _on_internal_error(self, where: str, message: str) -> None:
        # Coalesced into one ``error`` event per place per drain: an error raised
        # while emitting an error event (a broken fold, a broken recorder) must not
        # feed itself without end.
        with self._errors_lock:
            n, _ = self._errors.get(where, (0, ""))
            self._errors[where] = (n + 1, message)

    def _take_errors(self) -> list[Event]:
        if not self._errors:
            return []
        with self._errors_lock:
            pending, self._errors = self._errors, {}
        now = time.time()
        return [
            {"type": "error", "t": now, "where": where, "error": message, "count": n}
            for where, (n, message) in pending.items()
        ]

    def _site_id(self, raw: Any) -> int | None:
        if not raw:
            return None
        sid = self._site_ids.get(raw)
        if sid is None:
            if len(self._site_ids) >= MAX_SITES:
                return None
            sid = self._site_ids[raw] = len(self._site_ids) + 1
            stack = _format_site(raw)
            self._pending.append({"type": "site", "t": time.time(), "id": sid, "stack": stack})
        return sid

    def _tags_id(self, labels: Any) -> int | None:
        """The id of the labels in effect at an acquire (a ``tags`` event for new ones)."""
        try:
            pairs = labels.items()
        except Exception as exc:
            errors.report("tags", exc)
            return None
        if not pairs:
            return None
        tid = self._tag_ids.get(pairs)
        if tid is None:
            if len(self._tag_ids) >= MAX_TAGS:
                return None
            tid = self._tag_ids[pairs] = len(self._tag_ids) + 1
            self._pending.append(
                {"type": "tags", "t": time.time(), "id": tid, "labels": dict(pairs)}
            )
        return tid

    def _complete_leak(self, ev: Event) -> None:
        """An adapter's proven leak (collected or unreachable while held) names only the
        connection: add the acquire site, task and held time from the open hold."""
        key = (str(ev.get("pool")), str(ev.get("conn")))
        h = self._holds.get(key)
        ev["held"] = time.perf_counter() - h[0] if h is not None else ev.get("held", 0.0)
        ev["stack"] = _format_site(h[2]) if h is not None else []
        ev["task"] = h[3] if h is not None else ""
        ev["site"] = h[1] if h is not None else None
        ev["tags"] = self._hold_tags.get(key)
        if h is not None:
            self._reported.add(key)

    def _end_lost_hold(self, close: Event) -> None:
        """A connection closed while checked out (lost, invalidated, collected): its hold
        ends here, as a ``release`` with ``lost: true`` and the time held, queued just
        before the close - so acquires = releases + holds open, for every adapter."""
        key = (str(close.get("pool")), str(close.get("conn")))
        h = self._holds.pop(key, None)
        if h is None:
            return
        t = close.get("t")
        end = t - self._offset if isinstance(t, float) else time.perf_counter()
        release: Event = {"type": "release", "t": t, "pool": key[0], "conn": key[1]}
        release.update(hold=max(end - h[0], 0.0), lost=True, reason=close.get("reason"))
        self._pending.append(release)

    def _normalise(self, item: Any) -> Event | None:
        """A non-hot event (a dict from ``PoolHandle.event`` or the runtime), checked."""
        if not isinstance(item, dict):
            return None
        if item.get("type") == "leak" and "stack" not in item:
            self._complete_leak(item)
        elif item.get("type") == "close":
            self._end_lost_hold(item)
        # Last line of defence for secrets: a driver's message may quote the DSN (and
        # a task name, in events such as ``adopt``, a request's query string).
        for key in ("error", "target", "task"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = errors.redact(value)
        return item

    def _drain(self, limit: int = DRAIN_CHUNK) -> bool:
        """Fold and send up to DRAIN_CHUNK buffered events; True if more are waiting.

        Events are folded here, in order. The hot-path tuples (acquire, release) never
        become dicts unless a tap wants them: they are folded through the model's
        checked-argument fast path and, only when an observer is connected, formatted
        straight into their NDJSON lines (``encode_acquire``/``encode_release``, byte
        for byte what ``encode`` makes of the dict). Everything else goes through
        ``apply`` and ``encode``.
        """
        self._offset = offset = time.time() - time.perf_counter()
        items = self.recorder.drain(limit)
        dropped = self.recorder.take_dropped()
        server = self.server
        want_lines = server is not None and bool(server.observers)
        want_events = bool(self.taps)
        lines: list[bytes] = []
        events: list[Event] = []
        model = self.model
        fold_acquire = model.fold_acquire
        fold_release = model.fold_release
        holds = self._holds
        reported = self._reported
        pending = self._pending
        site_id = self._site_id
        tags_id = self._tags_id
        hold_tags = self._hold_tags
        # Fast events not yet counted by the model: counted in one go before any
        # generic ``apply`` (so its clock never runs behind an event it folds) and at
        # the end.
        n_fast = 0
        t_first = t_last = 0.0

        def generic(batch: list[Event]) -> None:
            nonlocal n_fast
            if n_fast:
                model.advance_many(n_fast, t_first, t_last)
                n_fast = 0
            for ev in batch:
                try:
                    model.apply(ev)
                except Exception as exc:
                    errors.report("fold", exc)
                if ev.get("type") == "close":
                    # A connection closed while held (lost, reclaimed, collected) is no
                    # longer a holder; the model resolves any leak reported for it.
                    key = (str(ev.get("pool")), str(ev.get("conn")))
                    holds.pop(key, None)
                    hold_tags.pop(key, None)
                    reported.discard(key)
                if want_lines:
                    try:
                        lines.append(encode(ev))
                    except Exception as exc:
                        errors.report("encode", exc)
            if want_events:
                events.extend(batch)

        first = self._take_errors()
        if dropped:
            first.append(
                {"type": "dropped", "t": time.time(), "count": dropped, "where": "recorder"}
            )
        if first:
            generic(first)
        for item in items:
            try:
                if type(item) is not tuple:
                    ev = self._normalise(item)
                    if pending:
                        generic(pending)
                        pending.clear()
                    if ev is not None:
                        generic([ev])
                    continue
                kind = item[0]
                if kind == "acquire":
                    _, mono, pool, conn, wait, raw_site, holder, labels = item
                    t = mono + offset
                    site = site_id(raw_site) if raw_site else None
                    # Before the holder's name: a request's labels may rename its task.
                    tid = tags_id(labels) if labels is not None else None
                    task, ref = _holder_name(holder)
                    if tid is not None:  # a web request's holder is named after it
                        task = request_name(labels) or task
                    task = _redacted_name(task)
                    c = conn if type(conn) is str else str(conn)
                    key = (pool, c)
                    if reported:
                        reported.discard(key)
                    holds[key] = (mono, site, raw_site, task, ref)
                    if tid is not None:
                        hold_tags[key] = tid
                    elif hold_tags:
                        hold_tags.pop(key, None)
                    if pending:  # a new site's ``site`` event goes before its acquire
                        generic(pending)
                        pending.clear()
                    try:
                        fold_acquire(pool, c, t, wait, site, task, tid)
                    except Exception as exc:
                        errors.report("fold", exc)
                    if not n_fast:
                        t_first = t
                    n_fast += 1
                    if t > t_last:
                        t_last = t
                    if want_lines:
                        try:
                            lines.append(encode_acquire(t, pool, c, wait, site, task, tid))
                        except Exception as exc:
                            errors.report("encode", exc)
                    if want_events:
                        events.append(
                            {
                                "type": "acquire",
                                "t": t,
                                "pool": pool,
                                "conn": c,
                                "wait": wait,
                                "site": site,
                                "task": task,
                                **({"tags": tid} if tid is not None else {}),
                            }
                        )
                elif kind == "release":
                    _, mono, pool, conn, hold = item
                    t = mono + offset
                    c = conn if type(conn) is str else str(conn)
                    key = (pool, c)
                    h = holds.pop(key, None)
                    rtid = hold_tags.pop(key, None) if hold_tags else None
                    if hold is None:
                        hold = mono - h[0] if h is not None else 0.0
                    if h is not None and key in reported:
                        reported.discard(key)
                        unleak: Event = {
                            "type": "unleak",
                            "t": t,
                            "pool": pool,
                            "conn": c,
                            "held": hold,
                            "stack": _format_site(h[2]),
                            "task": h[3],
                            "site": h[1],
                            "tags": rtid,
                        }
                        release: Event = {
                            "type": "release",
                            "t": t,
                            "pool": pool,
                            "conn": c,
                            "hold": hold,
                        }
                        generic([unleak, release])
                        continue
                    try:
                        fold_release(pool, c, t, hold)
                    except Exception as exc:
                        errors.report("fold", exc)
                    if not n_fast:
                        t_first = t
                    n_fast += 1
                    if t > t_last:
                        t_last = t
                    if want_lines:
                        try:
                            lines.append(encode_release(t, pool, c, hold))
                        except Exception as exc:
                            errors.report("encode", exc)
                    if want_events:
                        events.append(
                            {"type": "release", "t": t, "pool": pool, "conn": c, "hold": hold}
                        )
            except Exception as exc:
                errors.report("normalise", exc)
        if pending:
            generic(pending)
            pending.clear()
        if n_fast:
            model.advance_many(n_fast, t_first, t_last)
        if items or first:
            self.generation += 1
        if events:
            self._tap(events)
        if lines and server is not None:
            try:
                server.broadcast(lines)
            except Exception as exc:
                errors.report("broadcast", exc)
        return bool(self.recorder.buffer)

    def _fold(self, events: list[Event]) -> None:
        self.generation += 1
        apply = self.model.apply
        for ev in events:
            try:
                apply(ev)
            except Exception as exc:
                errors.report("fold", exc)

    def _tap(self, events: list[Event]) -> None:
        for tap in self.taps:
            try:
                tap(events)
            except Exception as exc:
                errors.report("tap", exc)

    def _send(self, events: list[Event]) -> None:
        """Encode events once and queue them for every observer (and taps)."""
        self._tap(events)
        server = self.server
        if server is None or not server.observers:
            return
        lines: list[bytes] = []
        for ev in events:
            try:
                lines.append(encode(ev))
            except Exception as exc:
                errors.report("encode", exc)
        if lines:
            try:
                server.broadcast(lines)
            except Exception as exc:
                errors.report("broadcast", exc)

    def _emit(self, events: list[Event]) -> None:
        """Fold and send events made on the background thread (leaks, bye, ...)."""
        self._fold(events)
        self._send(events)

    def _check_leaks(self) -> None:
        now = time.perf_counter()
        out: list[Event] = []
        reported = self._reported
        for key, (t0, site, raw_site, task, holder) in list(self._holds.items()):
            if key in reported:
                continue
            pool, conn = key
            handle = self.handles.get(pool)
            threshold = handle.leak_threshold if handle is not None else None
            if not threshold or now - t0 < threshold:
                continue
            reported.add(key)
            out.append(
                {
                    "type": "leak",
                    "t": time.time(),
                    "pool": pool,
                    "conn": conn,
                    "held": now - t0,
                    "stack": _format_site(raw_site),
                    "current": _current_stack(holder),
                    "task": task,
                    "site": site,
                    "tags": self._hold_tags.get(key),
                }
            )
        if out:
            self._emit(out)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime
