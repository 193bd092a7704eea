"""PoolState -> Prometheus metric families: the one mapping both exporters share.

The in-app collector (``poolscope.instrument.prometheus``) and the headless
exporter (``poolscope export``) both call :func:`families`, so the two speak the
same names, types, labels and buckets. This module is standard library only (it
is imported inside the application); :func:`to_client` converts to
prometheus_client's families and imports prometheus_client only when called.

Names follow the OpenTelemetry database connection-pool semantic conventions,
translated to Prometheus (dots to underscores, units and ``_total`` suffixes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from poolscope.histogram import Histogram, bucket_upper
from poolscope.model import PoolMetrics, PoolState

POOL_LABEL = "db_client_connection_pool_name"

#: Histogram ``le`` edges: every other log-bucket edge of the model (5 a decade,
#: each 58% above the last) from 100 us to 63 s. They are edges of the model's
#: own buckets, so the cumulative counts are exact, not interpolated.
EDGE_STEP = 2
EDGE_FIRST = -40  # 10**(-40/10) = 100 us
EDGE_LAST = 18  # 10**(18/10) = 63.1 s, the first edge covering 60 s
BUCKET_EDGES: tuple[float, ...] = tuple(
    bucket_upper(k) for k in range(EDGE_FIRST, EDGE_LAST + 1, EDGE_STEP)
)

#: Backend states (from the pool's heartbeat) that mean "down".
DOWN_STATES = frozenset({"down"})

Kind = Literal["gauge", "counter", "histogram"]


def format_le(edge: float) -> str:
    """An edge as the ``le`` label shows it: 6 significant digits, no float noise."""
    return f"{edge:.6g}"


@dataclass
class Series:
    """One labelled value of a gauge or counter."""

    labels: dict[str, str]
    value: float


@dataclass
class HistSeries:
    """One labelled histogram: cumulative counts at :data:`BUCKET_EDGES`, then +Inf."""

    labels: dict[str, str]
    buckets: list[tuple[str, float]]  # (le, cumulative count), last is ("+Inf", count)
    count: int
    sum: float


@dataclass
class Family:
    """A metric family in neutral form. Counter names carry no ``_total``."""

    name: str
    kind: Kind
    help: str
    unit: str = ""
    series: list[Series] = field(default_factory=list)
    hists: list[HistSeries] = field(default_factory=list)

    @property
    def exposed_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name


# name -> (kind, unit, help). Order here is the order of the exposition.
SPEC: dict[str, tuple[Kind, str, str]] = {
    "db_client_connection_count": (
        "gauge",
        "",
        "Connections open in the pool, by state: idle, or used (checked out).",
    ),
    "db_client_connection_max": (
        "gauge",
        "",
        "Maximum number of open connections the pool allows.",
    ),
    "db_client_connection_idle_max": (
        "gauge",
        "",
        "Maximum number of idle connections the pool keeps (its max size when it has no "
        "separate idle limit).",
    ),
    "db_client_connection_idle_min": (
        "gauge",
        "",
        "Minimum number of idle connections the pool keeps open (its min size).",
    ),
    "db_client_connection_pending_requests": (
        "gauge",
        "",
        "Acquire requests waiting for a connection right now.",
    ),
    "db_client_connection_timeouts": (
        "counter",
        "",
        "Acquire requests that timed out waiting for a connection (timeouts only: "
        "other acquire failures are poolscope_acquire_errors_total).",
    ),
    "db_client_connection_create_time_seconds": (
        "histogram",
        "seconds",
        "Time taken to open a new connection.",
    ),
    "db_client_connection_wait_time_seconds": (
        "histogram",
        "seconds",
        "Time an acquire waited for a connection (one observation per successful acquire).",
    ),
    "db_client_connection_use_time_seconds": (
        "histogram",
        "seconds",
        "Time between an acquire and the release of that connection.",
    ),
    "poolscope_acquire_errors": (
        "counter",
        "",
        "Acquire requests that failed with an error other than a timeout (e.g. the "
        "pool could not open a connection).",
    ),
    "poolscope_connect_errors": (
        "counter",
        "",
        "Attempts to open a new connection that failed.",
    ),
    "poolscope_connection_closes": (
        "counter",
        "",
        "Connections closed, by reason (idle_timeout, lifetime, invalid, lost, "
        "probe_timeout, closed, ...).",
    ),
    "poolscope_leaks_open": (
        "gauge",
        "",
        "Connections held past the leak threshold and not yet returned.",
    ),
    "poolscope_leaks": (
        "counter",
        "",
        "Connections ever reported as leaked (held past the leak threshold or "
        "garbage-collected while held).",
    ),
    "poolscope_heartbeat_failures": (
        "counter",
        "",
        "Health probes of idle connections that failed.",
    ),
    "poolscope_backend_up": (
        "gauge",
        "",
        "1 when the pool's backend is reachable, 0 when its heartbeat says it is down "
        "or its circuit breaker is open.",
    ),
    "poolscope_events_dropped": (
        "counter",
        "",
        "poolscope events lost to full buffers (the application's or this observer's), "
        "process-wide.",
    ),
    "poolscope_internal_errors": (
        "counter",
        "",
        "Internal poolscope errors, counted and swallowed so the application never sees "
        "them, process-wide.",
    ),
}


@dataclass
class Source:
    """One process's state and the labels that tell it apart (none in-app)."""

    state: PoolState
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_errors: int | None = None  # None: use state.internal_errors


def _hist(h: Histogram, labels: dict[str, str]) -> HistSeries:
    cum = h.cumulative(list(BUCKET_EDGES))
    buckets: list[tuple[str, float]] = [
        (format_le(e), float(n)) for e, n in zip(BUCKET_EDGES, cum, strict=True)
    ]
    buckets.append(("+Inf", float(h.count)))
    return HistSeries(labels=labels, buckets=buckets, count=h.count, sum=h.sum)


def _idle_max(p: PoolMetrics) -> int:
    for key in ("max_idle", "idle_max"):
        v = p.config.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return p.max


def _backend_up(p: PoolMetrics) -> int:
    return 0 if p.backend in DOWN_STATES or p.breaker == "open" else 1


def families(sources: Iterable[Source]) -> list[Family]:
    """The metric families for the given processes, one family per name."""
    fams = {name: Family(name, kind, help_, unit) for name, (kind, unit, help_) in SPEC.items()}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        fams[name].series.append(Series(labels, float(value)))

    for src in sources:
        base = dict(src.labels)
        st = src.state
        open_leaks: dict[str, int] = {}
        for lk in list(st.leaks.values()):
            open_leaks[lk.pool] = open_leaks.get(lk.pool, 0) + 1
        for name, p in sorted(st.pools.items()):
            lb = {**base, POOL_LABEL: name}
            add("db_client_connection_count", {**lb, "state": "idle"}, p.idle)
            add("db_client_connection_count", {**lb, "state": "used"}, p.in_use)
            add("db_client_connection_max", lb, p.max)
            add("db_client_connection_idle_max", lb, _idle_max(p))
            add("db_client_connection_idle_min", lb, p.min)
            add("db_client_connection_pending_requests", lb, p.waiting)
            add("db_client_connection_timeouts", lb, p.timeouts)
            add("poolscope_acquire_errors", lb, p.acquire_errors)
            add("poolscope_connect_errors", lb, p.connect_errors)
            for reason, n in sorted(p.closes.items()):
                add("poolscope_connection_closes", {**lb, "reason": reason}, n)
            fams["db_client_connection_create_time_seconds"].hists.append(_hist(p.create, lb))
            fams["db_client_connection_wait_time_seconds"].hists.append(_hist(p.wait, lb))
            fams["db_client_connection_use_time_seconds"].hists.append(_hist(p.hold, lb))
            add("poolscope_leaks_open", lb, open_leaks.get(name, 0))
            add("poolscope_leaks", lb, p.leaks_total)
            add("poolscope_heartbeat_failures", lb, p.heartbeats_failed)
            add("poolscope_backend_up", lb, _backend_up(p))
        errs = st.internal_errors if src.internal_errors is None else src.internal_errors
        add("poolscope_events_dropped", base, st.dropped)
        add("poolscope_internal_errors", base, errs)
    return list(fams.values())


def to_client(fams: Iterable[Family]) -> list[Any]:
    """prometheus_client metric families (imports prometheus_client: observer side,
    or in-app only once Prometheus export was asked for)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    out: list[Any] = []
    for f in fams:
        names = sorted(
            {k for s in f.series for k in s.labels} | {k for h in f.hists for k in h.labels}
        )
        mf: Any
        if f.kind == "gauge":
            mf = GaugeMetricFamily(f.name, f.help, labels=names, unit=f.unit)
        elif f.kind == "counter":
            mf = CounterMetricFamily(f.name, f.help, labels=names, unit=f.unit)
        else:
            mf = HistogramMetricFamily(f.name, f.help, labels=names, unit=f.unit)
        for s in f.series:
            mf.add_metric([s.labels.get(n, "") for n in names], s.value)
        for h in f.hists:
            mf.add_metric([h.labels.get(n, "") for n in names], h.buckets, h.sum)
        out.append(mf)
    return out
