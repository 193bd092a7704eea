"""What each pool did over an observation span, folded as the events stream by.

``poolscope advise`` advises on a span, not on whatever history a state carries:

- a live endpoint watched for ``--duration S``: the events of those S seconds;
- a recording: the file's own events;

in both cases the events after the stream's ``sync`` (which summarises, undated,
everything before it). ``window`` narrows a span to its last S seconds.

Memory is bounded whatever the span or the file size: events are folded as they
are read (never kept), the counts and histograms live in at most
:data:`MAX_SLOTS` slots a pool, and per-second arrival counts in at most
:data:`~poolscope.advisor.MAX_BINS` bins.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from poolscope.events import Event
from poolscope.model import PoolState
from poolscope.sizing.workload import (
    MAX_BINS,
    Workload,
    dispersion_index,
    histogram_cv,
)
from poolscope.window import RecentWindow

#: Slots a pool's window is cut into (each holds counts and two small histograms).
MAX_SLOTS = 3600


@dataclass
class PoolSpan:
    """One pool's traffic in the span."""

    slots: RecentWindow
    #: [second, arrivals] for seconds that had acquire attempts, oldest first.
    arrivals: deque[list[int]]


def _new_pool(window: float | None) -> PoolSpan:
    if window is None:
        slots = RecentWindow(horizon=math.inf)  # one slot: totals over the span
        bins = MAX_BINS
    else:
        slots = RecentWindow(horizon=window, width=max(1.0, window / MAX_SLOTS))
        bins = min(MAX_BINS, math.ceil(window) + 2)
    return PoolSpan(slots, deque(maxlen=bins))


@dataclass
class Span:
    """Every pool's span, and where it starts and ends (data time)."""

    window: float | None = None
    start: float | None = None
    end: float = 0.0
    syncs: int = 0  # syncs seen: each restarts the span
    pools: dict[str, PoolSpan] = field(default_factory=dict)

    def _pool(self, name: str) -> PoolSpan:
        p = self.pools.get(name)
        if p is None:
            p = self.pools[name] = _new_pool(self.window)
        return p

    def apply(self, ev: Event) -> None:
        """Count one event (already folded into the state by the caller)."""
        etype = ev.get("type")
        t = ev.get("t")
        if not isinstance(t, (int, float)) or not math.isfinite(t):
            return
        if etype in ("connected", "disconnected", "hello"):
            return
        t = float(t)
        if etype == "sync":
            # Everything before the first sync is summarised by it: the span starts
            # there. A later sync (a reconnect, a restarted application) summarises
            # what the span has counted already: the span goes on.
            self.syncs += 1
            if self.syncs == 1:
                self.start, self.end = t, t
                self.pools.clear()
            return
        if self.start is None:
            self.start = t
        if t > self.end:
            self.end = t
        if etype not in _COUNTED:
            return
        name = str(ev.get("pool", "?"))
        p = self._pool(name)
        slot = p.slots.slot(t)
        if etype == "acquire" or etype == "timeout":
            wait = _duration(ev, "wait")
            if etype == "acquire":
                slot.acquires += 1
                slot.wait.add(wait)
            else:
                slot.timeouts += 1
            # The event comes when the wait ends; the arrival was ``wait`` earlier.
            sec = int(t - wait)
            arr = p.arrivals
            if arr and arr[-1][0] == sec:
                arr[-1][1] += 1
            elif not arr or sec > arr[-1][0]:
                arr.append([sec, 1])
            else:  # out of order by a second or more: the newest bin counts it
                arr[-1][1] += 1
        elif etype == "release":
            slot.releases += 1
            slot.hold.add(_duration(ev, "hold"))
        elif etype == "acquire_error":
            slot.acquire_errors += 1
        elif etype == "state":
            waiting, in_use = _int(ev, "waiting"), _int(ev, "in_use")
            slot.samples += 1
            if waiting > 0:
                slot.saturated += 1
            slot.waiting_max = max(slot.waiting_max, waiting)
            slot.in_use_max = max(slot.in_use_max, in_use)
            slot.in_use_sum += in_use

    @property
    def seconds(self) -> float:
        """Data time the span (or its window) covers."""
        if self.start is None:
            return 0.0
        whole = max(0.0, self.end - self.start)
        return whole if self.window is None else min(whole, self.window)

    def note(self, live: float | None = None) -> str:
        where = f"the {live:g} s watched" if live is not None else "the recording's events"
        if self.syncs:
            where += " after its sync (the history the sync carries is left out; --all adds it)"
        if self.window is not None:
            return f"the last {self.window:g} s of {where}"
        return where

    def workload(self, state: PoolState, pool: str, note: str = "") -> Workload:
        """The pool's workload over the span (its size from the folded state)."""
        ps = self.pools.get(pool)
        metrics = state.pools.get(pool)
        size = metrics.max if metrics is not None else 0
        dropped = state.dropped
        seconds = self.seconds
        if ps is None:
            ps = _new_pool(self.window)
        w = ps.slots.stats(self.window if self.window is not None else math.inf, self.end)
        attempts = w.acquires + w.timeouts
        counts = self._bins(ps, seconds)
        return Workload(
            pool=pool,
            size=size,
            rate=attempts / seconds if seconds > 0 else 0.0,
            rate_source="acquire events" if attempts else "none",
            span=seconds,
            attempts=attempts,
            holds=w.hold.count,
            hold_mean=w.hold.mean,
            hold_cv=histogram_cv(w.hold),
            hold_p50=w.hold.p50,
            hold_p99=w.hold.p99,
            waits=w.wait.count,
            wait_mean=w.wait.mean,
            wait_p50=w.wait.p50,
            wait_p99=w.wait.p99,
            timeouts=w.timeouts,
            dispersion=dispersion_index([float(c) for c in counts]),
            dispersion_bins=len(counts),
            mean_in_use=w.mean_in_use,
            dropped=dropped,
            saturated=w.saturated_share,
            waiting_max=w.waiting_max,
            acquire_errors=w.acquire_errors,
            span_note=note,
        )

    def _bins(self, ps: PoolSpan, seconds: float) -> list[int]:
        """Per-second arrival counts over the span's whole seconds (zeros included),
        the last MAX_BINS at most."""
        if self.start is None:
            return []
        n = min(int(seconds), MAX_BINS)
        if n <= 0:
            return []
        first = int(self.end - seconds)
        counts = [0] * n
        for sec, k in ps.arrivals:
            i = sec - first
            if 0 <= i < n:
                counts[i] += k
        return counts


_COUNTED = frozenset({"acquire", "timeout", "release", "acquire_error", "state"})


def _duration(ev: Event, key: str) -> float:
    v = ev.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < math.inf:
        return float(v)
    return 0.0


def _int(ev: Event, key: str) -> int:
    v = ev.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return 0


def fold_span(
    events: Iterable[Event], *, window: float | None = None, state: PoolState | None = None
) -> tuple[PoolState, Span]:
    """Fold ``events`` (an iterator is read once and never kept) into a state and a span."""
    st = state if state is not None else PoolState()
    span = Span(window=window)
    for ev in events:
        st.apply(ev)
        span.apply(ev)
    return st, span
