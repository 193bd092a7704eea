"""Copies of the feeds, taken under the data lock, that the views compute from
after it is released.

The folding thread mutates the state in place (counters, histograms' bucket
dicts, deques, holder dicts), so a view that iterated the live state outside the
lock could read a torn state or fail on a dict changed during iteration. A
snapshot copies the containers and the mutable aggregates a view reads, and
shares what is never mutated once stored (samples, stack frames, events, past
window slots). It
copies only what is bounded and small, except the holders (up to ``MAX_HOLDERS``
per pool, a C-level dict copy), which it copies only for the views that show
them. Everything here is quick: drawing, filtering, sorting and the sizing
advice run on the copy, with the lock released.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Sequence

from poolscope.attribution import Attribution
from poolscope.histogram import Histogram
from poolscope.model import PoolMetrics, PoolState
from poolscope.tui.data import ProcessFeed
from poolscope.window import RecentWindow, Slot


def copy_histogram(h: Histogram) -> Histogram:
    out = Histogram()
    out.buckets = dict(h.buckets)
    out.count, out.sum, out.min, out.max = h.count, h.sum, h.min, h.max
    return out


def _copy_slot(s: Slot) -> Slot:
    out = copy.copy(s)
    out.closes = dict(s.closes)
    out.wait = copy_histogram(s.wait)
    out.hold = copy_histogram(s.hold)
    return out


def copy_recent(r: RecentWindow, seconds: float, now: float) -> RecentWindow:
    """The slots of the last ``seconds`` before ``now``: enough for ``stats(seconds, now)``
    to answer as the live window would. The fold counts every event in the newest
    slot (``RecentWindow.slot``), so only that one is copied; the older ones are
    shared, as they never change again."""
    out = copy.copy(r)
    lo = (now - seconds) // r.width - 1
    kept = [s for s in r.slots if s.index >= lo]
    if kept and kept[-1] is r._cur:
        kept[-1] = _copy_slot(kept[-1])
    out.slots = deque(kept, maxlen=r.slots.maxlen)
    out._cur = None  # a copy is never counted into
    return out


def copy_pool(p: PoolMetrics, *, holders: bool, window: float, now: float) -> PoolMetrics:
    """``p`` with its mutable parts copied; its holders only when ``holders``."""
    out = copy.copy(p)
    out.config = dict(p.config)
    out.closes = dict(p.closes)
    out.wait = copy_histogram(p.wait)
    out.hold = copy_histogram(p.hold)
    out.create = copy_histogram(p.create)
    out.heartbeat_latency = deque(p.heartbeat_latency, maxlen=p.heartbeat_latency.maxlen)
    out.heartbeat_failures = deque(p.heartbeat_failures, maxlen=p.heartbeat_failures.maxlen)
    out.series = deque(p.series)  # samples are appended, never changed
    out.holders = dict(p.holders) if holders else {}
    out.recent = copy_recent(p.recent, window, now) if p.recent is not None else None
    return out


def _copy_attribution(a: Attribution) -> Attribution:
    """The labels and backend pids the holders and leaks views read. The per-route
    and blame aggregates are not copied: the Routes view reads them under the lock."""
    out = copy.copy(a)
    out.labels = dict(a.labels)
    out.pids = dict(a.pids)
    return out


def copy_state(st: PoolState, *, holders: bool, window: float) -> PoolState:
    out = copy.copy(st)
    out.process = dict(st.process)
    out.pools = {
        name: copy_pool(p, holders=holders, window=window, now=st.now)
        for name, p in st.pools.items()
    }
    out.sites = dict(st.sites)
    out.leaks = dict(st.leaks)
    out.resolved_leaks = deque(st.resolved_leaks, maxlen=st.resolved_leaks.maxlen)
    out.attribution = _copy_attribution(st.attribution)
    return out


def snapshot_feeds(
    feeds: Sequence[ProcessFeed],
    *,
    holders: bool = False,
    events: bool = False,
    window: float,
) -> list[ProcessFeed]:
    """Copies of ``feeds`` to compute views from without the lock (call it holding
    the lock). ``holders``: copy the checked-out connections; ``events``: copy the
    event logs; ``window``: the recent-window span the views ask about."""
    out: list[ProcessFeed] = []
    for feed in feeds:
        snap = copy.copy(feed)
        snap.state = copy_state(feed.state, holders=holders, window=window)
        snap._marks = deque(feed._marks, maxlen=feed._marks.maxlen)
        if events:
            snap.log = deque(feed.log, maxlen=feed.log.maxlen)
            snap.incidents = deque(feed.incidents, maxlen=feed.incidents.maxlen)
        else:
            snap.log = deque(maxlen=feed.log.maxlen)
            snap.incidents = deque(maxlen=feed.incidents.maxlen)
        out.append(snap)
    return out
