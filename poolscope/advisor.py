"""Pool sizing from what the pool is doing: queueing theory over observed traffic.

Three layers, all pure functions over plain data (standard library only):

1. **Theory.** A pool of ``c`` connections serving acquires that arrive at
   ``rate`` per second and hold a connection ``hold`` seconds on average is an
   M/M/c queue when arrivals are Poisson and holds exponential. Erlang C gives
   the probability an acquire has to wait; the wait beyond that is exponential,
   so every wait percentile has a closed form. ``smallest_size`` searches for
   the smallest pool meeting a p99 wait target under a utilization ceiling.
   The folk rules people size pools by are here too, for comparison.
2. **Observation.** ``observe`` turns a folded :class:`~poolscope.model.PoolState`
   (plus, when available, the timestamps of the acquires seen live) into a
   :class:`Workload`: acquire rate, mean hold time and its variability, measured
   wait percentiles and how bursty the arrivals are.
3. **Advice.** ``advise`` (from a state) / ``advise_workload`` (from a workload)
   give an :class:`Advice`: a recommended size, predicted p99 waits at the current
   and recommended sizes beside the measured one, plain-words reasoning, and
   warnings where the model's assumptions do not hold. ``format_advice`` renders
   it as text lines (the CLI and the TUI panel both use it).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from poolscope.events import Event
from poolscope.histogram import Histogram, bucket_lower, bucket_upper
from poolscope.model import PoolMetrics, PoolState
from poolscope.units import fmt_duration

#: Defaults a user can override (CLI flags / keyword arguments).
DEFAULT_P99_TARGET = 0.010  # seconds
DEFAULT_UTIL_CEILING = 0.8
#: Share of the database's max_connections the app pools may use together.
DB_SHARE_TARGET = 0.8
#: HikariCP's "effective spindle count" for an SSD or cached working set.
DEFAULT_SPINDLES = 1
#: Below these the measured rate and percentiles are too noisy to trust.
MIN_ACQUIRES = 500
MIN_SECONDS = 30.0
#: Index of dispersion of per-second acquire counts outside this range means
#: arrivals are not Poisson (1.0 is Poisson).
DISPERSION_RANGE = (0.5, 2.0)
#: Bins needed before the index of dispersion means anything.
MIN_DISPERSION_BINS = 10
#: Hold times with a coefficient of variation above this, or a p99/p50 ratio
#: above that, are heavy-tailed (exponential: CV 1, p99/p50 6.6).
HEAVY_CV = 2.0
HEAVY_P99_P50 = 20.0
#: The largest pool ``smallest_size`` will consider.
SIZE_LIMIT = 100_000
#: Series intervals longer than this are gaps (a stalled observer), not data.
MAX_SAMPLE_GAP = 5.0
#: Per-second bins kept for the index of dispersion: the last day at most, whatever
#: the span (a crafted file with t=1 and t=3e8 must not allocate 3e8 bins).
MAX_BINS = 86_400
#: A pool with acquires waiting in at least this share of its gauge samples queued in
#: the span: never "shrink" it. From this share on it was saturated outright (the
#: measured rate is capped by the pool itself).
QUEUED_SHARE = 0.05
SATURATED_SHARE = 0.5
#: A measured p99 wait this many times the target (and 5 ms above it) is far above it.
FAR_ABOVE_TARGET = 3.0


# -- theory -------------------------------------------------------------------------


def _check(servers: int, load: float) -> None:
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    if not load >= 0 or math.isinf(load):
        raise ValueError(f"offered load must be a finite number >= 0, got {load}")


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the blocking probability of ``servers`` servers with no queue.

    Computed by the recurrence ``B(k) = A·B(k-1) / (k + A·B(k-1))``, ``B(0) = 1``,
    which never forms ``A**c`` or ``c!`` and so neither overflows nor loses
    precision for thousands of servers.
    """
    _check(servers, offered_load)
    b = 1.0
    for k in range(1, servers + 1):
        ab = offered_load * b
        b = ab / (k + ab)
    return b


def _erlang_c_from_b(servers: int, load: float, b: float) -> float:
    if load >= servers:
        return 1.0
    rho = load / servers
    # C = B / (1 - rho (1 - B)); the denominator tends to B (not 0) at saturation.
    return min(1.0, b / (1.0 - rho * (1.0 - b)))


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability an arrival has to wait in an M/M/c queue.

    ``offered_load`` is ``A = rate × mean hold`` (Erlangs). 1.0 when ``A >= servers``
    (the queue grows without bound), 0.0 when there is no load.
    """
    _check(servers, offered_load)
    if offered_load == 0:
        return 0.0
    if servers == 0 or offered_load >= servers:
        return 1.0
    return _erlang_c_from_b(servers, offered_load, erlang_b(servers, offered_load))


def _quantile(c: float, servers: int, load: float, hold: float, q: float, var: float) -> float:
    """The q-quantile of the wait given Erlang C ``c``; see :func:`wait_quantile`."""
    if load >= servers:
        return math.inf
    if c <= 1.0 - q:
        return 0.0
    drain = (servers - load) / hold  # c·mu - lambda, per second
    return var * math.log(c / (1.0 - q)) / drain


def _params(servers: int, rate: float, hold: float) -> float:
    if not rate >= 0 or not hold > 0 or math.isinf(rate) or math.isinf(hold):
        raise ValueError(f"need rate >= 0 and hold > 0, got rate={rate}, hold={hold}")
    load = rate * hold
    _check(servers, load)
    return load


def mean_wait(servers: int, rate: float, hold: float) -> float:
    """Mean wait for a connection in M/M/c: ``W_q = C / (c·mu - lambda)`` (seconds).

    ``rate`` is acquires per second, ``hold`` the mean hold time in seconds;
    ``inf`` when the pool cannot keep up (``rate × hold >= servers``).
    """
    load = _params(servers, rate, hold)
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * hold / (servers - load)


def wait_quantile(
    servers: int, rate: float, hold: float, q: float = 0.99, variability: float = 1.0
) -> float:
    """The q-quantile of the wait for a connection in M/M/c (seconds).

    ``P(W > t) = C · exp(-(c·mu - lambda) t)``, so the quantile is
    ``max(0, ln(C / (1 - q)) / (c·mu - lambda))``: zero while fewer than ``1 - q``
    of acquires wait at all. ``variability`` scales the waits for non-Poisson
    traffic (the Allen-Cunneen factor ``(ca² + cs²) / 2``; 1 for M/M/c).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    load = _params(servers, rate, hold)
    return _quantile(erlang_c(servers, load), servers, load, hold, q, variability)


def wait_p99(servers: int, rate: float, hold: float, variability: float = 1.0) -> float:
    return wait_quantile(servers, rate, hold, 0.99, variability)


def smallest_size(
    rate: float,
    hold: float,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    *,
    q: float = 0.99,
    variability: float = 1.0,
    limit: int = SIZE_LIMIT,
) -> int:
    """The smallest pool whose utilization ``rate × hold / c`` is at most
    ``util_ceiling`` and whose predicted q-quantile wait is at most ``p99_target``.

    1 when there is no load. Raises ``ValueError`` if no pool up to ``limit`` does.
    """
    if not 0.0 < util_ceiling <= 1.0:
        raise ValueError(f"util_ceiling must be in (0, 1], got {util_ceiling}")
    if not p99_target >= 0:
        raise ValueError(f"p99_target must be >= 0, got {p99_target}")
    load = _params(1, rate, hold)
    if load == 0:
        return 1
    b = 1.0
    # One pass of the Erlang B recurrence serves every candidate size.
    for k in range(1, limit + 1):
        ab = load * b
        b = ab / (k + ab)
        if load >= k or load / k > util_ceiling:
            continue
        c = _erlang_c_from_b(k, load, b)
        if _quantile(c, k, load, hold, q, variability) <= p99_target:
            return k
    raise ValueError(f"no pool of up to {limit} connections meets the target")


def littles_law(rate: float, time_in_system: float) -> float:
    """Little's law, ``L = lambda · W``: the mean number of items in a system.

    With the hold time it is the mean number of connections in use (the
    offered load ``A``); with the mean wait, the mean number of waiters.
    """
    return rate * time_in_system


def folk_cores_rule(cores: int, spindles: int = DEFAULT_SPINDLES) -> int:
    """HikariCP wiki's "About Pool Sizing": ``cores × 2 + effective spindles``.

    ``cores`` are the *database server's* cores; the rule targets the total of
    all pools against one database.
    """
    return max(1, cores * 2 + spindles)


def folk_qps_rule(rate: float, mean_time: float, headroom: float = 1.2) -> int:
    """The capacity rule ``QPS × mean time × 1.2``, rounded up."""
    return max(1, math.ceil(rate * mean_time * headroom - 1e-9))


def folk_db_share(
    max_connections: int, instances: int = 1, target_util: float = DB_SHARE_TARGET
) -> int:
    """Each app instance's share of the database's ``max_connections`` when all
    instances together may use ``target_util`` of them."""
    if max_connections < 1 or instances < 1:
        raise ValueError("max_connections and instances must be >= 1")
    return max(1, math.floor(max_connections * target_util / instances + 1e-9))


def allen_cunneen(dispersion: float | None, hold_cv: float | None) -> float:
    """The Allen-Cunneen factor ``(ca² + cs²) / 2`` that scales M/M/c waits for
    G/G/c traffic; the index of dispersion stands in for ``ca²``."""
    ca2 = 1.0 if dispersion is None else dispersion
    cs2 = 1.0 if hold_cv is None else hold_cv**2
    return (ca2 + cs2) / 2.0


# -- observation ----------------------------------------------------------------------


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


# -- advice ---------------------------------------------------------------------------


@dataclass
class FolkRule:
    name: str
    size: int
    detail: str


@dataclass
class Advice:
    """A sizing recommendation for one pool, with its reasons."""

    pool: str
    current_size: int
    recommended: int | None  # None when there is nothing to base it on
    p99_target: float
    util_ceiling: float
    predicted_p99_current: float | None  # M/M/c; inf when the pool cannot keep up
    predicted_p99_recommended: float | None
    measured_p99: float | None
    utilization_current: float | None
    utilization_recommended: float | None
    model_size: int | None  # what the model alone asks for (before a database cap)
    workload: Workload
    folk: list[FolkRule] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """One of "grow", "shrink", "keep" or "unknown"."""
        if self.recommended is None or self.current_size <= 0:
            return "unknown"
        if self.recommended > self.current_size:
            return "grow"
        if self.recommended < self.current_size:
            return "shrink"
        return "keep"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite predictions become ``null`` with ``*_unbounded: true``."""
        d: dict[str, Any] = {
            "pool": self.pool,
            "verdict": self.verdict,
            "current_size": self.current_size,
            "recommended": self.recommended,
            "model_size": self.model_size,
            "p99_target": self.p99_target,
            "util_ceiling": self.util_ceiling,
            "measured_p99": self.measured_p99,
            "utilization_current": self.utilization_current,
            "utilization_recommended": self.utilization_recommended,
        }
        for key in ("predicted_p99_current", "predicted_p99_recommended"):
            v: float | None = getattr(self, key)
            unbounded = v is not None and math.isinf(v)
            d[key] = None if unbounded else v
            d[key.replace("predicted_p99", "unbounded")] = unbounded
        d["workload"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.workload.to_dict().items()
        }
        d["folk"] = [dict(f.__dict__) for f in self.folk]
        d["reasoning"] = list(self.reasoning)
        d["warnings"] = list(self.warnings)
        return d


def fmt_seconds(s: float | None) -> str:
    """A duration for people ("3.2ms", "1.25s", "unbounded"): the observer's one
    duration formatter, with "n/a" for a value that is not known."""
    return fmt_duration(s, missing="n/a")


_fmt_span = fmt_seconds


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f}%"


def advise_workload(
    w: Workload,
    *,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    db_max_connections: int | None = None,
    instances: int = 1,
    cores: int | None = None,
) -> Advice:
    """Advice for a workload (see :func:`advise` for the arguments)."""
    if not 0.0 < util_ceiling <= 1.0:
        raise ValueError(f"util_ceiling must be in (0, 1], got {util_ceiling}")
    current = w.size
    advice = Advice(
        pool=w.pool,
        current_size=current,
        recommended=None,
        p99_target=p99_target,
        util_ceiling=util_ceiling,
        predicted_p99_current=None,
        predicted_p99_recommended=None,
        measured_p99=w.wait_p99 if w.waits else None,
        utilization_current=None,
        utilization_recommended=None,
        model_size=None,
        workload=w,
    )
    why, warn = advice.reasoning, advice.warnings
    if w.rate <= 0 or w.hold_mean <= 0:
        why.append(
            "No acquires with hold times were observed, so there is nothing to size from."
            if w.rate <= 0 or w.holds == 0
            else "Hold times are all zero, so there is nothing to size from."
        )
        warn.append(_little_data_warning(w) or "Too little data: no traffic observed.")
        return advice

    load = w.offered_load
    hold = w.hold_mean
    if w.span_note:
        why.append(f"Span: {w.span_note}.")
    why.append(
        f"Observed {w.attempts:,} acquires over {_fmt_span(w.span)} ({w.rate_source}): "
        f"{w.rate:.3g} per second, each holding a connection {fmt_seconds(hold)} on average"
        + (f" (CV {w.hold_cv:.2f})." if w.hold_cv is not None else ".")
    )
    measured_busy = (
        f" (the pool's own gauges averaged {w.mean_in_use:.2f})"
        if w.mean_in_use is not None
        else ""
    )
    why.append(
        f"Little's law: {w.rate:.3g}/s × {fmt_seconds(hold)} = {load:.2f} connections busy "
        f"on average{measured_busy}."
    )
    if current > 0:
        advice.utilization_current = load / current
        advice.predicted_p99_current = wait_p99(current, w.rate, hold)
        stable = load < current
        why.append(
            f"At the current size {current}, utilization is {_pct(load / current)}; the M/M/c "
            f"model predicts a p99 wait of {fmt_seconds(advice.predicted_p99_current)}"
            + ("" if stable else " (arrivals outpace the pool: the queue grows until timeouts)")
            + f"; measured p99 wait: {fmt_seconds(advice.measured_p99)}."
        )
    try:
        size = smallest_size(w.rate, hold, p99_target, util_ceiling)
    except ValueError:
        warn.append(f"No pool of up to {SIZE_LIMIT:,} connections meets the target.")
        return advice
    advice.model_size = size
    why.append(
        f"The smallest size with utilization at most {_pct(util_ceiling)} and a predicted "
        f"p99 wait at most {fmt_seconds(p99_target)} is {size} "
        f"(utilization {_pct(load / size)}, "
        f"predicted p99 {fmt_seconds(wait_p99(size, w.rate, hold))})."
    )
    recommended = size
    share: int | None = None
    if db_max_connections is not None:
        share = folk_db_share(db_max_connections, instances)
        if size > share:
            recommended = share
            at_share = wait_p99(share, w.rate, hold)
            warn.append(
                f"The database allows {share} per instance ({db_max_connections} max_connections "
                f"× {_pct(DB_SHARE_TARGET)} / {instances} instance(s)), fewer than the {size} "
                f"the model asks for; capped at {share}, where the predicted p99 wait is "
                f"{fmt_seconds(at_share)}."
                + (
                    " The database cannot carry this load: add capacity or shorten holds."
                    if load >= share
                    else ""
                )
            )
    if current > 0 and recommended < current and recommended == size:
        reason = _why_not_shrink(w, p99_target, advice.measured_p99)
        if reason:
            # The headline must agree with the warnings: a pool that queued in the
            # span, or whose waits were far above target, is not too big.
            why.append(f"Not shrinking: {reason}.")
            recommended = current
    advice.recommended = recommended
    advice.utilization_recommended = load / recommended
    advice.predicted_p99_recommended = wait_p99(recommended, w.rate, hold)
    why.append(_verdict_line(advice))
    advice.folk = _folk(w, cores, db_max_connections, instances, share)
    if advice.folk:
        why.append(
            "Folk rules, for comparison: "
            + "; ".join(f"{f.name} = {f.size} ({f.detail})" for f in advice.folk)
            + "."
        )
    _assumption_warnings(advice, p99_target, util_ceiling)
    return advice


def saturated_in_span(w: Workload) -> bool:
    """The pool ran out of connections in the span (by its gauges, or by the load)."""
    return w.saturated >= SATURATED_SHARE or (w.size > 0 and w.offered_load >= w.size * 0.98)


def far_above_target(measured: float | None, target: float) -> bool:
    return (
        measured is not None and measured > FAR_ABOVE_TARGET * target and measured - target > 0.005
    )


def _why_not_shrink(w: Workload, target: float, measured: float | None) -> str:
    parts = []
    if w.saturated >= QUEUED_SHARE or saturated_in_span(w):
        parts.append(
            f"acquires queued in {_pct(w.saturated)} of the span's gauge samples"
            + (f" (up to {w.waiting_max} waiting)" if w.waiting_max else "")
        )
    if far_above_target(measured, target):
        parts.append(
            f"the measured p99 wait ({fmt_seconds(measured)}) is far above the target "
            f"({fmt_seconds(target)})"
        )
    return " and ".join(parts)


def _verdict_line(a: Advice) -> str:
    rec, cur = a.recommended, a.current_size
    if cur <= 0:
        return f"Recommendation: {rec} connections."
    if a.verdict == "grow":
        return f"Recommendation: grow from {cur} to {rec} connections."
    if a.verdict == "shrink":
        return (
            f"Recommendation: {rec} connections would do; the current {cur} are more than "
            f"needed (idle connections still cost the database memory)."
        )
    return f"Recommendation: keep {cur} connections."


def _folk(
    w: Workload, cores: int | None, db_max: int | None, instances: int, share: int | None
) -> list[FolkRule]:
    rules: list[FolkRule] = []
    n = cores if cores is not None else os.cpu_count()
    if n:
        where = "database cores" if cores is not None else "this machine's cores"
        rules.append(
            FolkRule(
                "cores × 2 + spindles",
                folk_cores_rule(n),
                f"{n} {where}, {DEFAULT_SPINDLES} spindle",
            )
        )
    rules.append(
        FolkRule(
            "QPS × mean time × 1.2",
            folk_qps_rule(w.rate, w.hold_mean),
            f"{w.rate:.3g}/s × {fmt_seconds(w.hold_mean)}",
        )
    )
    if db_max is not None and share is not None:
        rules.append(
            FolkRule(
                "database share",
                share,
                f"{db_max} × {_pct(DB_SHARE_TARGET)} / {instances} instance(s)",
            )
        )
    return rules


def _little_data_warning(w: Workload) -> str | None:
    if w.attempts >= MIN_ACQUIRES and w.span >= MIN_SECONDS:
        return None
    return (
        f"Too little data: {w.attempts:,} acquires over {_fmt_span(w.span)} "
        f"(want at least {MIN_ACQUIRES:,} over {MIN_SECONDS:.0f} s); "
        "the rate and percentiles are rough."
    )


def _assumption_warnings(a: Advice, p99_target: float, util_ceiling: float) -> None:
    w, warn = a.workload, a.warnings
    little = _little_data_warning(w)
    if little:
        warn.append(little)
    lo, hi = DISPERSION_RANGE
    bursty = (
        w.dispersion is not None
        and w.dispersion_bins >= MIN_DISPERSION_BINS
        and not lo <= w.dispersion <= hi
    )
    heavy = w.hold_cv is not None and w.hold_cv > HEAVY_CV
    ratio = w.hold_p99 / w.hold_p50 if w.hold_p50 > 0 else 0.0
    heavy = heavy or (w.holds >= 100 and ratio > HEAVY_P99_P50)
    if bursty and w.dispersion is not None:
        if w.dispersion > hi:
            warn.append(
                f"Bursty arrivals: per-second acquire counts vary {w.dispersion:.1f}× as much as "
                "random (Poisson) arrivals would; real waits will be longer than predicted."
            )
        else:
            warn.append(
                f"Arrivals are more regular than random (index of dispersion "
                f"{w.dispersion:.2f}), as from a fixed set of workers in a loop; the model "
                "overstates waits."
            )
    if heavy:
        cv = f"CV {w.hold_cv:.1f}, " if w.hold_cv is not None else ""
        warn.append(
            f"Heavy-tailed hold times ({cv}p99 {fmt_seconds(w.hold_p99)} vs p50 "
            f"{fmt_seconds(w.hold_p50)}): a few long holds drive the waits; find them (the "
            "holders and leaks views) before adding connections."
        )
    if bursty or heavy:
        f = allen_cunneen(w.dispersion if bursty else None, w.hold_cv)
        if f > 1.0:
            try:
                adj = smallest_size(w.rate, w.hold_mean, p99_target, util_ceiling, variability=f)
                warn.append(
                    f"Allowing for that variability (Allen-Cunneen factor {f:.1f}), the size "
                    f"meeting the target is about {adj}."
                )
            except ValueError:
                pass
    if a.current_size > 0 and saturated_in_span(w):
        share = (
            f" (acquires waiting in {_pct(w.saturated)} of the gauge samples"
            + (f", up to {w.waiting_max} waiting" if w.waiting_max else "")
            + ")"
            if w.saturated
            else ""
        )
        warn.append(
            f"The pool is saturated{share}: the observed rate is capped by the pool itself, "
            "so demand may be higher than measured; treat the recommendation as a lower bound."
        )
    if w.acquire_errors:
        warn.append(f"{w.acquire_errors:,} acquires failed with errors (not in the rate).")
    if w.timeouts:
        warn.append(f"{w.timeouts:,} acquires timed out (counted in the rate).")
    if w.mean_in_use is not None and w.offered_load > 0:
        gap = abs(w.mean_in_use - w.offered_load) / max(w.offered_load, w.mean_in_use)
        if gap > 0.5 and abs(w.mean_in_use - w.offered_load) >= 1.0:
            warn.append(
                f"The gauges say {w.mean_in_use:.1f} connections were in use on average, but "
                f"rate × hold gives {w.offered_load:.1f}: connections held without acquire "
                "events (leaks, or history from before the observation) skew the picture."
            )
    pred, meas = a.predicted_p99_current, a.measured_p99
    if (
        pred is not None
        and meas is not None
        and not math.isinf(pred)
        and meas > 3 * pred
        and meas - pred > 0.005
    ):
        warn.append(
            f"Measured p99 wait ({fmt_seconds(meas)}) is far above the prediction "
            f"({fmt_seconds(pred)}): slow connection opening, bursts or a backend stall "
            "add waits the model does not see."
        )
    if w.dropped:
        warn.append(f"The observer lost {w.dropped:,} events; counts are incomplete.")


def advise(
    state: PoolState,
    pool: str,
    *,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    db_max_connections: int | None = None,
    instances: int = 1,
    cores: int | None = None,
    arrivals: ArrivalLog | None = None,
    window: float | None = None,
) -> Advice:
    """Sizing advice for ``pool`` from a folded state (what the TUI panel calls).

    ``p99_target`` is the wait (seconds) 99% of acquires should beat;
    ``util_ceiling`` the highest acceptable mean utilization; with
    ``db_max_connections`` (and ``instances`` sharing the database) the advice is
    capped at this instance's share; ``cores`` are the database server's cores
    for the folk rule (default: this machine's); ``arrivals`` from
    :func:`fold_with_arrivals` adds live acquire timestamps (better burst detection).
    """
    return advise_workload(
        observe(state, pool, arrivals, window=window),
        p99_target=p99_target,
        util_ceiling=util_ceiling,
        db_max_connections=db_max_connections,
        instances=instances,
        cores=cores,
    )


def format_advice(advice: Advice) -> list[str]:
    """The advice as plain text lines: a headline, the numbers, reasons, warnings."""
    a = advice
    if a.recommended is None:
        head = f"{a.pool}: no recommendation"
    elif a.current_size > 0:
        head = f"{a.pool}: {a.verdict} — recommended size {a.recommended} (now {a.current_size})"
    else:
        head = f"{a.pool}: recommended size {a.recommended}"
    lines = [head]
    if a.recommended is not None:
        lines.append(
            f"  p99 wait: measured {fmt_seconds(a.measured_p99)}, predicted "
            f"{fmt_seconds(a.predicted_p99_current)} at {a.current_size}, "
            f"{fmt_seconds(a.predicted_p99_recommended)} at {a.recommended} "
            f"(target {fmt_seconds(a.p99_target)})"
        )
    lines.extend(f"  {line}" for line in a.reasoning)
    lines.extend(f"  ! {line}" for line in a.warnings)
    return lines
