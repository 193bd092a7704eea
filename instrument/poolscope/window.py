"""Recent windows: what a pool did over the last N seconds, beside its totals.

Totals since start answer "how has this pool done"; an incident needs "how is
it doing now". A :class:`RecentWindow` keeps a ring of small slots (one per
``width`` seconds of data time, default one second), each with its own counts
and wait/hold histograms, and sums the slots of the last N seconds on demand.

Memory is bounded by the slot count, never by the time span: slots exist only
for seconds that had events, the ring holds at most ``horizon / width`` of them,
and an out-of-order event is counted in the newest slot instead of growing the
ring. Standard library only (it folds in the application too).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from poolscope.histogram import Histogram

#: The longest window the TUI offers (its ``w`` key cycles 60 s, 5 min, 15 min).
HORIZON = 900.0
#: The window the pools table and alerts use unless told otherwise.
DEFAULT_WINDOW = 60.0


class Slot:
    """Everything counted in one slot of data time."""

    __slots__ = (
        "acquire_errors",
        "acquires",
        "closes",
        "connect_errors",
        "heartbeats_failed",
        "hold",
        "in_use_max",
        "in_use_sum",
        "index",
        "releases",
        "samples",
        "saturated",
        "timeouts",
        "wait",
        "waiting_max",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.acquires = 0
        self.releases = 0
        self.timeouts = 0
        self.acquire_errors = 0
        self.connect_errors = 0
        self.heartbeats_failed = 0
        self.closes: dict[str, int] = {}
        self.wait = Histogram()
        self.hold = Histogram()
        self.samples = 0  # state samples (the pool's own gauges)
        self.saturated = 0  # of which: acquires waiting (the pool ran out)
        self.waiting_max = 0
        self.in_use_max = 0
        self.in_use_sum = 0  # over the samples: their mean is the measured busy count


@dataclass
class WindowStats:
    """The sum of a window's slots."""

    seconds: float  # the window asked for
    covered: float  # data time it actually spans (shorter early on)
    acquires: int = 0
    releases: int = 0
    timeouts: int = 0
    acquire_errors: int = 0
    connect_errors: int = 0
    heartbeats_failed: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    wait: Histogram = field(default_factory=Histogram)
    hold: Histogram = field(default_factory=Histogram)
    samples: int = 0
    saturated: int = 0
    waiting_max: int = 0
    in_use_max: int = 0
    in_use_sum: int = 0

    @property
    def mean_in_use(self) -> float | None:
        """Mean connections in use by the pool's own gauges (None without samples)."""
        return self.in_use_sum / self.samples if self.samples else None

    @property
    def acquire_rate(self) -> float:
        """Acquires per second over the window."""
        return self.acquires / self.covered if self.covered > 0 else 0.0

    @property
    def failures(self) -> int:
        return self.timeouts + self.acquire_errors

    @property
    def failure_rate(self) -> float:
        """Share of acquire attempts in the window that timed out or errored."""
        total = self.acquires + self.failures
        return self.failures / total if total else 0.0

    @property
    def saturated_share(self) -> float:
        """Share of the window's gauge samples with acquires waiting."""
        return self.saturated / self.samples if self.samples else 0.0

    @property
    def closes_total(self) -> int:
        return sum(self.closes.values())


class RecentWindow:
    """A ring of slots over the last ``horizon`` seconds of data time."""

    __slots__ = ("_cur", "first_t", "horizon", "last_t", "slots", "width")

    def __init__(self, horizon: float = HORIZON, width: float = 1.0) -> None:
        if not width > 0 or not horizon > 0:
            raise ValueError("horizon and width must be > 0")
        self.horizon = horizon
        self.width = width
        n = horizon / width
        self.slots: deque[Slot] = deque(maxlen=int(min(n, 1e6)) + 1 if math.isfinite(n) else 1)
        self._cur: Slot | None = None
        self.first_t = 0.0
        self.last_t = 0.0

    def slot(self, t: float) -> Slot:
        """The slot that counts an event at ``t``."""
        cur = self._cur
        if not -1e18 < t < 1e18:  # not a time: count it, but where it cannot spread
            t = self.last_t
        # An infinite horizon is one slot: totals over everything the span saw.
        idx = int(t // self.width) if math.isfinite(self.horizon) else 0
        if cur is not None and idx <= cur.index:
            # The current slot, or an event a little out of order: the newest slot
            # counts it (a ring with a hole in the middle would need searching).
            if t > self.last_t:
                self.last_t = t
            return cur
        cur = self._cur = Slot(idx)
        self.slots.append(cur)  # the deque's maxlen drops the oldest
        oldest = idx - self.horizon / self.width
        while self.slots and self.slots[0].index <= oldest:
            self.slots.popleft()
        if not self.first_t:
            self.first_t = t
        self.last_t = t
        return cur

    def stats(self, seconds: float, now: float | None = None) -> WindowStats:
        """The sum over the last ``seconds`` before ``now`` (default: the newest event)."""
        end = self.last_t if now is None else now
        start = end - seconds
        # A slot counts when any of it lies inside the window.
        lo = math.floor(start / self.width) if math.isfinite(start) else -math.inf
        covered = max(0.0, min(seconds, end - self.first_t)) if self.first_t else 0.0
        out = WindowStats(seconds=seconds, covered=covered)
        for s in reversed(self.slots):
            if s.index < lo:
                break
            out.acquires += s.acquires
            out.releases += s.releases
            out.timeouts += s.timeouts
            out.acquire_errors += s.acquire_errors
            out.connect_errors += s.connect_errors
            out.heartbeats_failed += s.heartbeats_failed
            for k, n in s.closes.items():
                out.closes[k] = out.closes.get(k, 0) + n
            out.wait.merge(s.wait)
            out.hold.merge(s.hold)
            out.samples += s.samples
            out.saturated += s.saturated
            out.waiting_max = max(out.waiting_max, s.waiting_max)
            out.in_use_max = max(out.in_use_max, s.in_use_max)
            out.in_use_sum += s.in_use_sum
        return out
