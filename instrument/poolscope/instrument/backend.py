"""The backend's health as an adapter sees it: ``healthy`` -> ``suspect`` -> ``down``.

Every adapter feeds one tracker per pool with what its pool sees - probe results,
connects and connect errors, acquire errors, connections the server closed - and the
tracker emits a ``backend`` event when the state changes:

* ``healthy`` -> ``suspect``: any failure (a failed probe or connect, an acquire error,
  a connection lost). One killed connection is worth a look, not an alarm.
* ``suspect`` -> ``down``: another *active* failure - a probe or a connect that fails -
  while suspect: the database does not answer when asked.
* ``suspect``/``down`` -> ``healthy``: a probe or a connect that succeeds: it answers.

Lost connections and acquire errors never make ``down`` on their own (pg_terminate_backend
of every connection is not an outage), and their success counterparts (a checkout) are
not fed: the hot path stays a clock read and an append. The heartbeat provides the
active evidence: it probes an idle connection, or, with none idle, opens one of its own
(at most once per interval) - see ``own_probe_due``.

Thread-safe (a lock): adapters call it from the application's threads and loops.
"""

from __future__ import annotations

import threading
import time

from .recorder import PoolHandle

HEALTHY = "healthy"
SUSPECT = "suspect"
DOWN = "down"

#: Failures that ask the database something (and so can make ``down``).
ACTIVE = frozenset({"probe", "connect"})
#: What a failure may come from.
SOURCES = frozenset({"probe", "connect", "acquire", "lost"})


class BackendTracker:
    """One pool's backend state, derived from what its adapter reports."""

    def __init__(self, handle: PoolHandle, interval: float | None = None) -> None:
        self.handle = handle
        self.interval = interval
        self.state = HEALTHY
        self.last_error = ""
        #: Probes the heartbeat made on a connection of its own (none was idle).
        self.own_probes = 0
        self._last_own = float("-inf")
        self._last_ok = float("-inf")  # perf_counter of the last success
        self._lock = threading.Lock()

    def ok(self, source: str) -> None:
        """A probe or connect succeeded: the database answers."""
        self._last_ok = time.perf_counter()
        if self.state == HEALTHY:
            return  # the common case: no lock, no event
        with self._lock:
            self._set(HEALTHY, "")

    def failed(self, source: str, error: str, started: float | None = None) -> None:
        """Something failed: ``source`` is one of ``SOURCES``. ``started``: when the
        attempt began (perf_counter) - one begun before the last success (a reconnect
        in flight through a recovery) says nothing about now, and is ignored."""
        if started is not None and started < self._last_ok:
            return
        with self._lock:
            self.last_error = error
            if self.state == HEALTHY:
                self._set(SUSPECT, error)
            elif self.state == SUSPECT and source in ACTIVE:
                self._set(DOWN, error)

    def own_probe_due(self) -> bool:
        """Whether the heartbeat may open a connection of its own now (nothing idle to
        probe): at most once per interval, counted."""
        now = time.monotonic()
        with self._lock:
            if self.interval is not None and now - self._last_own < self.interval * 0.9:
                return False
            self._last_own = now
            self.own_probes += 1
            return True

    def _set(self, state: str, error: str) -> None:
        previous = self.state
        if previous == state:
            return
        self.state = state
        # The base method: a handle that filters the pool's own ``backend`` events (the
        # reference pool's) lets this one through.
        PoolHandle.event(self.handle, "backend", state=state, previous=previous, error=error)
