"""What a pool's traffic looks like, estimated from a folded state.

``observe`` turns a folded :class:`~poolscope.model.PoolState` (plus, when
available, the timestamps of the acquires seen live, from ``fold_with_arrivals``)
into a :class:`Workload`: acquire rate, mean hold time and its variability,
measured wait percentiles and how bursty the arrivals are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from poolscope.events import Event
from poolscope.histogram import Histogram, bucket_lower, bucket_upper
from poolscope.model import PoolMetrics, PoolState
from poolscope.sizing.queueing import littles_law

#: Series intervals longer than this are gaps (a stalled observer), not data.
MAX_SAMPLE_GAP = 5.0
#: Per-second bins kept for the index of dispersion: the last day at most, whatever
#: the span (a crafted file with t=1 and t=3e8 must not allocate 3e8 bins).
MAX_BINS = 86_400


def histogram_cv(h: Histogram) -> float | None:
    """Coefficient of variation (std / mean) estimated from a histogram's buckets.

    Each bucket's values are placed at its geometric midpoint (clamped to the
    observed min and max); buckets are about 26% wide, so this is within a few
    percent for spread-out distributions. None when empty or all zero.
    """
    if h.count < 2:
        return None
    mids: list[tuple[float, int]] = []
    for k, n in h.buckets.items():
        m = math.sqrt(bucket_lower(k) * bucket_upper(k))
        mids.append((min(max(m, h.min), h.max), n))
    mean_mid = sum(m * n for m, n in mids) / h.count
    if mean_mid <= 0:
        return None
    var = sum(n * (m - mean_mid) ** 2 for m, n in mids) / (h.count - 1)
    return math.sqrt(var) / mean_mid


def dispersion_index(
    counts: Sequence[float], lengths: Sequence[float] | None = None
) -> float | None:
    """Index of dispersion (variance / mean) of counts in intervals; 1 for Poisson.

    With ``lengths`` the intervals may differ: each count is compared with the
    rate times its own length. None with too few intervals or no events.
    """
    n = len(counts)
    if n < 2:
        return None
    spans = list(lengths) if lengths is not None else [1.0] * n
    total_t = sum(spans)
    total = sum(counts)
    if total <= 0 or total_t <= 0:
        return None
    rate = total / total_t
    sq = sum((x - rate * d) ** 2 for x, d in zip(counts, spans, strict=True))
    return sq / total * n / (n - 1)


def per_second_counts(times: Sequence[float], start: float, end: float) -> list[int]:
    """Counts of ``times`` in whole one-second bins from ``start`` (a partial last
    bin is dropped); only the last :data:`MAX_BINS` bins of a longer span."""
    if not end - start < math.inf:
        return []
    bins = int(end - start)
    if bins <= 0:
        return []
    if bins > MAX_BINS:
        start += bins - MAX_BINS
        bins = MAX_BINS
    counts = [0] * bins
    for t in times:
        i = int(t - start)
        if 0 <= i < bins:
            counts[i] += 1
    return counts


@dataclass
class ArrivalLog:
    """When each pool's acquire attempts (acquires and timeouts) happened, as seen
    live (after the ``sync`` that opens a stream or recording)."""

    start: float = 0.0
    end: float = 0.0
    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def span(self) -> float:
        return max(0.0, self.end - self.start)


def fold_with_arrivals(
    events: Iterable[Event], state: PoolState | None = None
) -> tuple[PoolState, ArrivalLog]:
    """``model.fold`` that also keeps the timestamps of acquire attempts, which
    the folded state does not (they tell bursty traffic from Poisson)."""
    st = state if state is not None else PoolState()
    log = ArrivalLog()
    started = False
    for ev in events:
        st.apply(ev)
        etype = ev.get("type")
        t = ev.get("t")
        if not isinstance(t, (int, float)) or etype in ("connected", "disconnected", "hello"):
            continue
        t = float(t)
        if not started:
            log.start = t
            started = True
        if etype == "sync":
            # Everything before a sync is summarised by it; live timing starts here.
            log.start = t
            log.times.clear()
        elif etype in ("acquire", "timeout"):
            # The event comes when the wait ends; the arrival was ``wait`` earlier.
            wait = ev.get("wait")
            arrived = t - wait if isinstance(wait, (int, float)) and wait > 0 else t
            log.times.setdefault(str(ev.get("pool", "?")), []).append(arrived)
        log.end = max(log.end, t)
    return st, log


@dataclass
class Workload:
    """What a pool's traffic looks like, estimated from observation."""

    pool: str
    size: int  # the pool's current maximum size
    rate: float  # acquire attempts per second
    rate_source: str  # "acquire events", "gauge samples" or "none"
    span: float  # seconds the rate was measured over
    attempts: int  # acquire attempts counted in that span
    holds: int
    hold_mean: float
    hold_cv: float | None
    hold_p50: float
    hold_p99: float
    waits: int
    wait_mean: float
    wait_p50: float
    wait_p99: float
    timeouts: int
    dispersion: float | None
    dispersion_bins: int
    mean_in_use: float | None  # from the pool's own gauges
    dropped: int = 0
    #: Share of the span's gauge samples with acquires waiting.
    saturated: float = 0.0
    waiting_max: int = 0  # most acquires waiting at once in the span (gauges)
    acquire_errors: int = 0
    #: What the span is, for people ("the 15 s watched", "the last 60 s of the file").
    span_note: str = ""

    @property
    def offered_load(self) -> float:
        """Mean connections busy, by Little's law (rate × mean hold)."""
        return littles_law(self.rate, self.hold_mean)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["offered_load"] = self.offered_load
        return d


def _series_rate(
    p: PoolMetrics, window: float | None = None
) -> tuple[float, float, int, list[float], list[float]]:
    """Rate of attempts from the gauge samples: (rate, span, attempts, counts, lengths)."""
    counts: list[float] = []
    lengths: list[float] = []
    samples = p.window(window) if window is not None else list(p.series)
    for a, b in itertools.pairwise(samples):
        dt = b.t - a.t
        n = (b.acquires + b.timeouts) - (a.acquires + a.timeouts)
        if dt <= 0 or dt > MAX_SAMPLE_GAP or n < 0:  # a gap, or the app restarted
            continue
        counts.append(float(n))
        lengths.append(dt)
    span = sum(lengths)
    total = int(sum(counts))
    return (total / span if span > 0 else 0.0), span, total, counts, lengths


def observe(
    state: PoolState,
    pool: str,
    arrivals: ArrivalLog | None = None,
    *,
    window: float | None = None,
) -> Workload:
    """Estimate a pool's workload from its folded state (and live acquire times).

    The rate comes from whichever covers more time: the acquire timestamps seen
    live, or the pool's gauge samples (up to 15 minutes of history, carried by
    the ``sync`` a late attacher receives), each only over the last ``window``
    seconds when given. Hold and wait statistics come from the pool's histograms
    (all of its history: a sync carries them undated). For advice over exactly a
    span of events, see :mod:`poolscope.span`.
    """
    p = state.pools.get(pool) or PoolMetrics(name=pool)
    s_rate, s_span, s_total, s_counts, s_lengths = _series_rate(p, window)
    times = arrivals.times.get(pool, []) if arrivals is not None else []
    a_start = arrivals.start if arrivals is not None else 0.0
    if arrivals is not None and window is not None and arrivals.end - window > a_start:
        a_start = arrivals.end - window
        times = [t for t in times if t >= a_start]
    a_span = max(0.0, arrivals.end - a_start) if arrivals is not None and times else 0.0
    source = "none"
    rate, span, attempts = 0.0, 0.0, 0
    dispersion: float | None = None
    bins = 0
    if a_span > 0 and a_span * 2 >= s_span:
        source, span, attempts = "acquire events", a_span, len(times)
        rate = attempts / span
        assert arrivals is not None
        counts = per_second_counts(times, a_start, arrivals.end)
        bins = len(counts)
        dispersion = dispersion_index([float(c) for c in counts])
    elif s_span > 0:
        source, span, attempts, rate = "gauge samples", s_span, s_total, s_rate
        bins = len(s_counts)
        dispersion = dispersion_index(s_counts, s_lengths)
    samples = p.window(window) if window is not None else list(p.series)
    in_use = [s.in_use for s in samples]
    busy = sum(1 for s in samples if s.waiting > 0)
    return Workload(
        pool=pool,
        size=p.max,
        rate=rate,
        rate_source=source,
        span=span,
        attempts=attempts,
        holds=p.hold.count,
        hold_mean=p.hold.mean,
        hold_cv=histogram_cv(p.hold),
        hold_p50=p.hold.p50,
        hold_p99=p.hold.p99,
        waits=p.wait.count,
        wait_mean=p.wait.mean,
        wait_p50=p.wait.p50,
        wait_p99=p.wait.p99,
        timeouts=p.timeouts,
        dispersion=dispersion,
        dispersion_bins=bins,
        mean_in_use=sum(in_use) / len(in_use) if in_use else None,
        dropped=state.dropped,
        saturated=busy / len(samples) if samples else 0.0,
        waiting_max=max((s.waiting for s in samples), default=0),
        acquire_errors=p.acquire_errors,
        span_note="everything the state holds, history from its sync included",
    )
