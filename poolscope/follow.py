"""Following one stream: its connection status and its folded state, event by event.

A :class:`~poolscope.client.StreamClient` yields the protocol's events plus two
local ones about its own connection (``connected``, ``disconnected``). What an
observer makes of them is decided here, once, for the TUI (``ProcessFeed``) and
the exporter (``Target``): whether it is connected and since when it is not, the
last error, whether the stream was refused (a protocol this poolscope cannot
read), whether the current connection delivered its ``sync``, when the
application started, and the state folded from it all.

Two policies, because the two consumers need different things when a stream drops:

- ``per_connection=False`` (the TUI): the state goes on across reconnects, so the
  screen keeps showing the last known state (marked disconnected), and the fold
  keeps a restarted application's utilisation history in front of the new one;
- ``per_connection=True`` (the exporter): each connection starts from an empty
  state, and a dropped stream has none, so no stale series are served.
"""

from __future__ import annotations

import time

from poolscope.client import CONNECTED, DISCONNECTED, open_stream
from poolscope.endpoint import Endpoint
from poolscope.events import Event
from poolscope.model import PoolState


async def check_reachable(endpoint: Endpoint, token: str | None = None) -> None:
    """Connect once and hang up: a command that follows a stream fails fast, with one
    line (the :class:`~poolscope.client.ConnectError`), when nothing listens at the
    start, instead of retrying quietly as a follower does later."""
    _, writer = await open_stream(endpoint, token=token)
    writer.close()


class StreamFollower:
    """One stream's connection status and state (see the module docstring)."""

    def __init__(
        self, *, live: bool = True, windowed: bool = False, per_connection: bool = False
    ) -> None:
        self.live = live
        self.windowed = windowed
        self.per_connection = per_connection
        self.state = PoolState(windowed=windowed)
        #: A recording is "connected" from the start; a live stream once it connects.
        self.connected = not live
        self.ever_connected = not live
        self.disconnected_since: float | None = None
        self.last_error = ""
        #: Why this poolscope cannot read the stream ("" unless the client said so).
        self.refused = ""
        #: The current connection delivered its ``sync`` (the full state).
        self.synced = False
        self.started: float | None = None  # the application's start time, from ``sync``
        self.changed = time.time()  # wall time of the last connect or disconnect

    def follow(self, ev: Event, clock: float) -> None:
        """Take one event in; ``clock`` is wall time live, the data's time in replay."""
        etype = ev.get("type")
        if etype == CONNECTED:
            self.connected = self.ever_connected = True
            self.disconnected_since = None
            self.last_error = ""
            self._new_connection()
        elif etype == DISCONNECTED:
            self.connected = False
            t = ev.get("t")
            self.disconnected_since = float(t) if isinstance(t, (int, float)) else clock
            self.last_error = str(ev.get("error", ""))
            if ev.get("incompatible"):
                self.refused = self.last_error or "incompatible stream"
            self._new_connection()
        else:
            # The fold keeps a restarted application's history (PoolState._on_sync).
            self.state.apply(ev)
            if etype == "sync":
                self.synced = True
                self._note_start(ev)

    def _new_connection(self) -> None:
        self.synced = False
        self.changed = time.time()
        if self.per_connection:
            self.state = PoolState(windowed=self.windowed)

    def _note_start(self, ev: Event) -> None:
        started = self.state.process.get("t")
        sync_state = ev.get("state")
        if isinstance(sync_state, dict) and isinstance(sync_state.get("process"), dict):
            started = sync_state["process"].get("t", started)
        if isinstance(started, (int, float)):
            self.started = float(started)
