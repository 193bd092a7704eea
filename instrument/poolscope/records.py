"""The records the fold keeps: a pool's metrics, its holders, leaks and samples.

Plain dataclasses with the queries the views ask of them, and the limits that
bound them (an observer's memory must not grow without limit whatever a peer
sends). Their ``sync`` form is :mod:`poolscope.sync_codec`; the fold that fills
them is :mod:`poolscope.fold`. Standard library only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from poolscope.histogram import Histogram
from poolscope.window import RecentWindow, WindowStats

#: How much utilisation history each pool keeps.
SERIES_SECONDS = 15 * 60.0
#: Samples closer together than this replace each other (state events may come often).
SERIES_MIN_STEP = 0.5
RESOLVED_LEAKS_KEPT = 500
HEARTBEATS_KEPT = 120
FAILURES_KEPT = 50
# Bounds against a peer that floods the fold with names (an observer's memory must
# not grow without limit whatever it is sent); far above any real application.
MAX_POOLS = 1_000
MAX_SITES = 10_000
MAX_HOLDERS = 100_000
MAX_OPEN_LEAKS = 10_000
MAX_CLOSE_REASONS = 64


@dataclass
class Sample:
    """One point of a pool's utilisation history."""

    t: float
    in_use: int
    idle: int
    waiting: int
    max: int
    acquires: int  # cumulative, so a rate is a difference of two samples
    timeouts: int


#: The fields of a holder that travel in a ``sync`` (the rest are the application's).
HOLDER_WIRE_FIELDS = ("conn", "since", "site", "task", "tags")


@dataclass(slots=True)
class Holder:
    """A connection checked out right now.

    The one record of an open hold, on both sides. In the application the runtime's
    leak watch reads it too (the fields after ``tags``): when it was taken by the
    monotonic clock, the raw acquire site to format for a leak, the holder to read a
    live stack from, and whether it was reported as a leak. An observer leaves those
    at their defaults; a ``sync`` carries only :data:`HOLDER_WIRE_FIELDS`.
    """

    conn: str
    since: float
    site: int | None
    task: str
    tags: int | None = None  # the ps.tag() labels id (see PoolState.attribution)
    #: ``time.perf_counter()`` at the acquire (application side; 0.0 when unknown).
    mono: float = 0.0
    #: The acquire site as captured (``sites.capture``), formatted only for a leak.
    raw_site: Any = None
    #: A weak reference to the holding task, or the holding thread's ident.
    ref: Any = None
    #: Reported as a leak and not yet returned (an ``unleak`` follows its release).
    leak_reported: bool = False

    def wire(self) -> dict[str, Any]:
        """The holder as a ``sync`` carries it."""
        return {
            "conn": self.conn,
            "since": self.since,
            "site": self.site,
            "task": self.task,
            "tags": self.tags,
        }


def let_go(holder: Holder) -> None:
    """A hold ended: drop what only an open hold needs - the task's weak reference
    (for a leak's live stack) and the raw site (formatted for a leak). Wait
    attribution keeps ended holders for a while (``_PoolBlame.acquired``, up to 4,096
    acquires); kept alive that long, their weak references reached the collector's
    oldest generation by the thousand a second on a saturated pool. The C fold does
    the same (``_accel.c``: fold_release)."""
    holder.ref = None
    holder.raw_site = None


@dataclass
class Leak:
    """A connection held past the leak threshold (or garbage-collected while held)."""

    pool: str
    conn: str
    t: float  # when it was reported
    held: float  # held time when reported
    stack: list[dict[str, Any]]
    task: str
    site: int | None = None
    proven: bool = False
    resolved_t: float | None = None
    resolved_held: float | None = None
    resolution: str | None = None  # "returned", "gc", "closed:<reason>"
    tags: int | None = None  # the ps.tag() labels id of the acquire

    # The codec imports these classes, so it is imported when called, not at load.
    def to_dict(self) -> dict[str, Any]:
        from poolscope.sync_codec import leak_to_dict

        return leak_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leak:
        from poolscope.sync_codec import leak_from_dict

        return leak_from_dict(d)


@dataclass
class PoolMetrics:
    """Everything known about one pool."""

    name: str
    kind: str = "unknown"
    target: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    # Gauges, from the pool's own API (``state`` events).
    size: int = 0
    idle: int = 0
    in_use: int = 0
    waiting: int = 0
    max: int = 0
    min: int = 0
    # Counters.
    acquires: int = 0
    releases: int = 0  # including releases_lost: acquires = releases + holders
    releases_lost: int = 0  # holds ended by the connection dying while checked out
    timeouts: int = 0
    acquire_errors: int = 0
    connects: int = 0
    connect_errors: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    heartbeats_ok: int = 0
    heartbeats_failed: int = 0
    heartbeats_skipped: int = 0
    leaks_total: int = 0
    leaks_resolved: int = 0
    reclaims: int = 0
    # Distributions.
    wait: Histogram = field(default_factory=Histogram)
    hold: Histogram = field(default_factory=Histogram)
    create: Histogram = field(default_factory=Histogram)
    # Health.
    backend: str = "healthy"
    breaker: str = "closed"
    heartbeat_latency: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=HEARTBEATS_KEPT)
    )
    heartbeat_failures: deque[tuple[float, str, str]] = field(
        default_factory=lambda: deque(maxlen=FAILURES_KEPT)
    )
    last_error: str = ""
    # Now.
    holders: dict[str, Holder] = field(default_factory=dict)
    series: deque[Sample] = field(default_factory=deque)
    last_t: float = 0.0
    #: Recent slots (observers only: ``PoolState(windowed=True)``); never in a sync.
    recent: RecentWindow | None = None
    #: Waits and holds folded but not yet counted into ``wait`` / ``hold`` (the
    #: application's ``PoolState(bulk=True)`` only: its drain counts a tick's values
    #: in one go, see ``PoolState.settle``); never in a sync.
    pending_waits: list[float] | None = None
    pending_holds: list[float] | None = None

    def window_stats(self, seconds: float, now: float | None = None) -> WindowStats:
        """Counts and wait/hold histograms of the last ``seconds`` of data time
        (empty when this state keeps no windows)."""
        if self.recent is None:
            return WindowStats(seconds=seconds, covered=0.0)
        return self.recent.stats(seconds, now)

    @property
    def utilization(self) -> float:
        """In use over max (0..1; above 1 only if the pool overshoots its max)."""
        return self.in_use / self.max if self.max > 0 else 0.0

    @property
    def failure_rate(self) -> float:
        """Share of acquire attempts that failed (timed out or errored)."""
        failed = self.timeouts + self.acquire_errors
        total = self.acquires + failed
        return failed / total if total else 0.0

    @property
    def closes_total(self) -> int:
        return sum(self.closes.values())

    def rate(self, attr: str = "acquires", window: float = 5.0) -> float:
        """Per-second rate of a cumulative sample field over the last ``window`` s."""
        if len(self.series) < 2:
            return 0.0
        last = self.series[-1]
        first = last
        for s in reversed(self.series):
            first = s
            if last.t - s.t >= window:
                break
        dt = last.t - first.t
        if dt <= 0:
            return 0.0
        delta = float(getattr(last, attr)) - float(getattr(first, attr))
        return max(0.0, delta / dt)

    def window(self, seconds: float) -> list[Sample]:
        """The samples of the last ``seconds`` (relative to the newest sample)."""
        if not self.series:
            return []
        start = self.series[-1].t - seconds
        return [s for s in self.series if s.t >= start]

    # The codec imports these classes, so it is imported when called, not at load.
    def to_dict(self) -> dict[str, Any]:
        from poolscope.sync_codec import pool_to_dict

        return pool_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolMetrics:
        from poolscope.sync_codec import pool_from_dict

        return pool_from_dict(d)
