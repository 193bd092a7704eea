"""The background thread's life and its tick: when to drain, poll, watch and send.

One daemon thread runs an asyncio loop that owns everything after the hot path.
This module starts and stops it (also across a fork), registers pools, and
schedules the work others do: the drain (:mod:`.drain`: fold and format), the
leak watch (:mod:`.leakwatch`), the gauges poll, the stream server
(:mod:`.server`) and what an observer is greeted with (:mod:`.greeting`).
Nothing here may raise into the application: every step is guarded and a
failure is counted by :mod:`errors`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from poolscope.endpoint import DEFAULT_HOST, DEFAULT_PORT, Endpoint, parse_endpoint
from poolscope.events import Event, encode
from poolscope.fold import PoolState

from . import discovery, errors, greeting, leakwatch
from .drain import Drain
from .recorder import PoolHandle, Recorder
from .server import StreamServer

log = logging.getLogger("poolscope")

#: The tick's period with no backlog. Every wake-up of a sleeping thread costs
#: ~200 us of CPU on the reference VM (an asyncio loop sleeping 20 ms took 1% of a
#: core doing nothing), and the application pays for it in GIL hand-offs: so one
#: timer, at 10 Hz, drives the drain, the leak watch and the gauges poll. Events
#: reach observers within about this long; a backlog is drained without waiting.
DRAIN_INTERVAL = 0.1
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
LEAK_CHECK_INTERVAL = 0.2


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
        self.model = PoolState(bulk=True)
        self.drain = Drain(self.model)
        self.server: StreamServer | None = None
        self.endpoint: Endpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.state_interval = STATE_INTERVAL
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = False
        # When the tick next polls the gauges and watches for leaks (monotonic).
        self._next_state_poll = 0.0
        self._next_leak_check = 0.0
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
            self.model = PoolState(bulk=True)  # the parent's holds too: they are the parent's
            self.drain = Drain(self.model)
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
            for p in self.model.pools.values():  # no leak watch of pools now gone
                p.holders.clear()
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
        return greeting.hello(self._process)

    def _greeting(self) -> list[bytes]:
        return greeting.lines(self._process, self.model, list(self.handles.values()))

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
            self._poll_state_if_due(time.monotonic())
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
            now = time.monotonic()
            self._check_leaks_if_due(now)
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
            pause = self._pause(more, time.thread_time() - cpu0, overloaded)
            due = min(self._next_leak_check, self._next_state_poll) - now
            await asyncio.sleep(max(0.0, min(pause, due)))

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

    def _poll_state_if_due(self, now: float) -> None:
        """The gauges poll, when due: on the tick's timer, not one of its own."""
        if now >= self._next_state_poll:
            self._next_state_poll = now + self.state_interval
            try:
                self._poll_state()
            except Exception as exc:
                errors.report("state poll", exc)

    def _check_leaks_if_due(self, now: float) -> None:
        """The leak watch, when due - after the tick's drain, so that holds given back
        meanwhile are folded first."""
        if now >= self._next_leak_check:
            self._next_leak_check = now + LEAK_CHECK_INTERVAL
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

    def _drain(self, limit: int = DRAIN_CHUNK) -> bool:
        """Fold and send up to ``limit`` buffered events (:mod:`.drain`); True if more
        are waiting. Internal errors and the recorder's drops go first."""
        offset = time.time() - time.perf_counter()
        items = self.recorder.drain(limit)
        dropped = self.recorder.take_dropped()
        server = self.server
        first = self._take_errors()
        if dropped:
            first.append(
                {"type": "dropped", "t": time.time(), "count": dropped, "where": "recorder"}
            )
        lines, events = self.drain.run(
            items,
            first,
            offset,
            want_lines=server is not None and bool(server.observers),
            want_events=bool(self.taps),
        )
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
        thresholds = {name: h.leak_threshold for name, h in list(self.handles.items())}
        out = leakwatch.check(self.model, thresholds)
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
