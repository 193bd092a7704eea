"""Where the TUI's data comes from: live endpoints (a fold thread) or a recording.

Every attached process is a :class:`ProcessFeed`: a
:class:`~poolscope.follow.StreamFollower` (its folded state and what the observer
knows about the connection: connected, disconnected since) plus its events log and
events/s. A *source* owns the feeds and a lock; the screen reads the
feeds under the lock on its own timer, so folding never waits for drawing and
a burst of events costs one redraw, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Protocol

from poolscope.client import CONNECTED, DISCONNECTED, FileFeed, StreamClient
from poolscope.endpoint import Endpoint
from poolscope.events import Event
from poolscope.follow import StreamFollower
from poolscope.textsafe import visible

#: Recent events of every type (the acquire/release churn too) kept per process.
LOG_KEPT = 2000
#: Incidents kept per process, for as long as the observer runs: the rare events
#: that explain an outage, apart from the churn that would push them out in seconds.
INCIDENTS_KEPT = 10_000
#: Event types too bulky or too internal for the events log.
LOG_SKIP = frozenset({"sync"})
#: Rare events: always incidents (a failed heartbeat is one too, see is_incident).
INCIDENT_TYPES = frozenset(
    {
        "connect_error",
        "close",
        "backend",
        "breaker",
        "timeout",
        "acquire_error",
        "leak",
        "unleak",
        "reclaim",
        "resize",
        "dropped",
        "error",
        "pool",
        "hello",
        "bye",
        CONNECTED,
        DISCONNECTED,
    }
)


def is_incident(ev: Event) -> bool:
    """True for the events worth keeping apart from the churn (see INCIDENT_TYPES);
    a heartbeat only when it failed (not when it succeeded or was skipped)."""
    etype = ev.get("type")
    if etype in INCIDENT_TYPES:
        return True
    if etype == "release":
        return ev.get("lost") is True  # a hold ended by the connection dying
    return etype == "heartbeat" and ev.get("ok") is False and not ev.get("skipped")


class ProcessFeed(StreamFollower):
    """One attached process (or recording): its state and connection status (the
    :class:`StreamFollower`'s, kept across reconnects), plus the events log."""

    def __init__(self, label: str, *, endpoint: Endpoint | None = None, live: bool = True) -> None:
        super().__init__(live=live, windowed=True)
        self.label = visible(label)  # an endpoint or a file name: shown in the header
        self.endpoint = endpoint
        self.seq = 0  # events applied, across reconnects (the model's count restarts)
        self.log: deque[tuple[int, Event]] = deque(maxlen=LOG_KEPT)
        self.incidents: deque[tuple[int, Event]] = deque(maxlen=INCIDENTS_KEPT)
        # (clock, seq) about once a second: events/s is a difference of two marks.
        self._marks: deque[tuple[float, int]] = deque(maxlen=32)

    def apply(self, ev: Event, clock: float) -> None:
        """Fold one event in; ``clock`` is wall time live, the data's time in replay."""
        self.follow(ev, clock)
        self.seq += 1
        if ev.get("type") not in LOG_SKIP:
            self.log.append((self.seq, ev))
            if is_incident(ev):
                self.incidents.append((self.seq, ev))
        marks = self._marks
        if not marks or clock - marks[-1][0] >= 1.0:
            marks.append((clock, self.seq))

    def events(self, churn: bool = False) -> deque[tuple[int, Event]]:
        """(seq, event) oldest first: the incident log, or with ``churn`` every recent
        event (acquires and releases too, but only the last LOG_KEPT)."""
        return self.log if churn else self.incidents

    def events_per_second(self, clock: float, window: float = 5.0) -> float:
        """Events per second over about the last ``window`` seconds of ``clock``."""
        marks = self._marks
        if not marks:
            return 0.0
        base = marks[0]
        for m in reversed(marks):
            base = m
            if clock - m[0] >= window:
                break
        dt = clock - base[0]
        return (self.seq - base[1]) / dt if dt > 0.5 else 0.0

    def uptime(self) -> float | None:
        """How long the application has run, by the data's own clock."""
        if self.started is None or not self.state.now:
            return None
        return max(0.0, self.state.now - self.started)


class Source(Protocol):
    """What the app needs from a data source."""

    feeds: list[ProcessFeed]
    lock: threading.Lock
    live: bool

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def clock(self) -> float: ...
    def tick(self, wall_dt: float) -> None: ...


class LiveSource:
    """Attached endpoints, each read by a reconnecting :class:`StreamClient` and
    folded on one background thread (its own asyncio loop), so a flood of events
    never starves the screen's event loop."""

    live = True

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        token: str | None = None,
        backoff_cap: float = 2.0,
    ) -> None:
        self.feeds = [ProcessFeed(str(ep), endpoint=ep) for ep in endpoints]
        self.lock = threading.Lock()
        self._token = token
        self._backoff_cap = backoff_cap
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._clients: list[StreamClient] = []

    def clock(self) -> float:
        return time.time()

    def tick(self, wall_dt: float) -> None:
        return

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="poolscope-fold", daemon=True
        )
        self._thread.start()
        ready.wait(5.0)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [asyncio.ensure_future(self._pump(feed)) for feed in self.feeds]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            for c in self._clients:
                c.close()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _pump(self, feed: ProcessFeed) -> None:
        assert feed.endpoint is not None
        client = StreamClient(
            feed.endpoint, token=self._token, backoff_base=0.1, backoff_cap=self._backoff_cap
        )
        self._clients.append(client)
        lock = self.lock
        async for ev in client.events():
            with lock:
                feed.apply(ev, time.time())


class ReplaySource:
    """A recording played back by the data's own clock: play/pause, step, speed, seek.

    Seeking backwards folds again from the start (folding is cheap next to
    drawing; a recording of a minute folds in milliseconds).
    """

    live = False
    SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

    def __init__(self, path: Path, *, speed: float = 1.0, start: float = 0.0) -> None:
        self.path = path
        self.file = FileFeed(path)
        self.events: list[Event] = list(self.file)  # OSError propagates: the caller says so
        self.lock = threading.Lock()
        self.speed = speed
        self.playing = True
        ts = [float(ev["t"]) for ev in self.events]
        self.t0 = min(ts[:16]) if ts else 0.0
        self.t_end = max(ts) if ts else 0.0
        self.feeds: list[ProcessFeed] = []
        self._idx = 0
        self.pos = self.t0
        self._reset()
        self.seek_to(self.t0 + start)

    @property
    def ended(self) -> bool:
        return self._idx >= len(self.events)

    @property
    def stopped_reading(self) -> str:
        """Why reading stopped early or what was skipped ("" when the file was clean)."""
        f = self.file
        if f.stopped:
            return f"read {f.lines} lines; {f.stopped}"
        if f.bad_lines:
            return f"skipped {f.bad_lines} unreadable lines (first at line {f.first_bad_line})"
        return ""

    def _reset(self) -> None:
        self.feeds = [ProcessFeed(self.path.name, live=False)]
        self._idx = 0
        self.pos = self.t0

    def clock(self) -> float:
        return self.pos

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def seek_to(self, pos: float) -> None:
        """Show the recording as it was at data time ``pos`` (clamped to the file)."""
        pos = min(max(pos, self.t0), self.t_end)
        with self.lock:
            if pos < self.pos:
                self._reset()
            feed = self.feeds[0]
            events = self.events
            i = self._idx
            while i < len(events) and events[i]["t"] <= pos:
                feed.apply(events[i], float(events[i]["t"]))
                i += 1
            self._idx = i
            self.pos = pos
        if self.pos >= self.t_end:
            self.playing = False

    def tick(self, wall_dt: float) -> None:
        if self.playing:
            self.seek_to(self.pos + wall_dt * self.speed)

    def toggle(self) -> None:
        if not self.playing and self.pos >= self.t_end:
            self.seek_to(self.t0)  # play again from the start
        self.playing = not self.playing

    def step(self, seconds: float = 1.0) -> None:
        """Pause and move one step (a second of data) forward."""
        self.playing = False
        self.seek_to(self.pos + seconds)

    def seek(self, delta: float) -> None:
        self.seek_to(self.pos + delta)

    def change_speed(self, factor: float) -> None:
        target = self.speed * factor
        self.speed = min(self.SPEEDS, key=lambda s: abs(s - target))

    def status(self) -> str:
        state = "▶ playing" if self.playing else ("■ end" if self.ended else "‖ paused")
        return (
            f"{state} {self.speed:g}x  {_mmss(self.pos - self.t0)} / {_mmss(self.t_end - self.t0)}"
        )


def _mmss(seconds: float) -> str:
    if not math.isfinite(seconds):  # decode refuses such times; never crash on one
        return "--:--"
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"
