"""The state is a fold over the event stream.

``fold(events) -> PoolState`` is the one computation behind every view: it runs
in the application (for late attachers and in-app Prometheus), in the TUI, in
the exporter and over a recorded file, so a live session and a replay agree.
Pure Python, standard library only, never Textual.

Times are the events' own wall-clock ``t``; "now" is the newest ``t`` seen, so
folding a recording gives the same answers whenever it is done.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from poolscope.attribution import Attribution
from poolscope.events import Event
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


@dataclass
class Holder:
    """A connection checked out right now."""

    conn: str
    since: float
    site: int | None
    task: str
    tags: int | None = None  # the ps.tag() labels id (see PoolState.attribution)


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leak:
        # Coerced field by field: a peer's sync must not put a string where a
        # view formats a number.
        stack = d.get("stack")
        site = d.get("site")
        rt, rh, res = d.get("resolved_t"), d.get("resolved_held"), d.get("resolution")
        return cls(
            pool=str(d.get("pool", "?")),
            conn=str(d.get("conn", "?")),
            t=_num(d, "t"),
            held=_num(d, "held"),
            stack=[f for f in stack if isinstance(f, dict)] if isinstance(stack, list) else [],
            task=str(d.get("task") or ""),
            site=site if isinstance(site, int) and not isinstance(site, bool) else None,
            proven=bool(d.get("proven")),
            resolved_t=_num(d, "resolved_t") if rt is not None else None,
            resolved_held=_num(d, "resolved_held") if rh is not None else None,
            resolution=str(res) if res is not None else None,
            tags=_tags_id(d),
        )


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

    # -- serialisation (the ``sync`` event) ------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "config": self.config,
            "gauges": {
                "size": self.size,
                "idle": self.idle,
                "in_use": self.in_use,
                "waiting": self.waiting,
                "max": self.max,
                "min": self.min,
            },
            "counters": {
                "acquires": self.acquires,
                "releases": self.releases,
                "releases_lost": self.releases_lost,
                "timeouts": self.timeouts,
                "acquire_errors": self.acquire_errors,
                "connects": self.connects,
                "connect_errors": self.connect_errors,
                "heartbeats_ok": self.heartbeats_ok,
                "heartbeats_failed": self.heartbeats_failed,
                "heartbeats_skipped": self.heartbeats_skipped,
                "leaks_total": self.leaks_total,
                "leaks_resolved": self.leaks_resolved,
                "reclaims": self.reclaims,
            },
            "closes": dict(self.closes),
            "histograms": {
                "wait": self.wait.to_dict(),
                "hold": self.hold.to_dict(),
                "create": self.create.to_dict(),
            },
            "backend": self.backend,
            "breaker": self.breaker,
            "heartbeat_latency": [list(x) for x in self.heartbeat_latency],
            "heartbeat_failures": [list(x) for x in self.heartbeat_failures],
            "last_error": self.last_error,
            "holders": [h.__dict__ for h in self.holders.values()],
            "series": [
                [s.t, s.in_use, s.idle, s.waiting, s.max, s.acquires, s.timeouts]
                for s in self.series
            ],
            "last_t": self.last_t,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolMetrics:
        p = cls(name=str(d.get("name", "?")))
        p.kind = str(d.get("kind", "unknown"))
        p.target = str(d.get("target", ""))
        cfg = d.get("config")
        p.config = cfg if isinstance(cfg, dict) else {}
        for group in ("gauges", "counters"):
            values = d.get(group)
            if isinstance(values, dict):
                for k, v in values.items():
                    # Only the integer fields: a sync must not replace a histogram,
                    # the holders or the name with a number.
                    if k in _INT_FIELDS and isinstance(v, int) and not isinstance(v, bool):
                        setattr(p, k, v)
        closes = d.get("closes")
        if isinstance(closes, dict):
            for k, v in closes.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    if len(p.closes) >= MAX_CLOSE_REASONS:
                        break
                    p.closes[str(k)] = v
        hists = d.get("histograms")
        if isinstance(hists, dict):
            p.wait = Histogram.from_dict(hists.get("wait"))
            p.hold = Histogram.from_dict(hists.get("hold"))
            p.create = Histogram.from_dict(hists.get("create"))
        p.backend = str(d.get("backend", "healthy"))
        p.breaker = str(d.get("breaker", "closed"))
        for x in d.get("heartbeat_latency") or []:
            if isinstance(x, list) and len(x) == 2:
                p.heartbeat_latency.append((float(x[0]), float(x[1])))
        for x in d.get("heartbeat_failures") or []:
            if isinstance(x, list) and len(x) == 3:
                p.heartbeat_failures.append((float(x[0]), str(x[1]), str(x[2])))
        p.last_error = str(d.get("last_error", ""))
        for h in d.get("holders") or []:
            if len(p.holders) >= MAX_HOLDERS:
                break
            if isinstance(h, dict) and "conn" in h:
                holder = Holder(
                    conn=str(h["conn"]),
                    since=float(h.get("since", 0.0)),
                    site=h.get("site") if isinstance(h.get("site"), int) else None,
                    task=str(h.get("task", "")),
                    tags=_tags_id(h),
                )
                p.holders[holder.conn] = holder
        for s in d.get("series") or []:
            if isinstance(s, list) and len(s) == 7:
                v = [int(x) for x in s[1:]]
                p.series.append(Sample(float(s[0]), v[0], v[1], v[2], v[3], v[4], v[5]))
        lt = d.get("last_t")
        p.last_t = float(lt) if isinstance(lt, (int, float)) else 0.0
        return p


def _num(ev: Event, key: str, default: float = 0.0) -> float:
    v = ev.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:  # an int too large for a float
            return default
        # JSON decoders accept 1e999 and NaN; neither is a time or a duration.
        return f if math.isfinite(f) else default
    return default


def _tags_id(d: dict[str, Any]) -> int | None:
    v = d.get("tags")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _int(ev: Event, key: str, default: int = 0) -> int:
    v = ev.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return default


#: PoolMetrics fields a sync's ``gauges``/``counters`` may set.
_INT_FIELDS = frozenset(
    [
        "size",
        "idle",
        "in_use",
        "waiting",
        "max",
        "min",
        "acquires",
        "releases",
        "releases_lost",
        "timeouts",
        "acquire_errors",
        "connects",
        "connect_errors",
        "heartbeats_ok",
        "heartbeats_failed",
        "heartbeats_skipped",
        "leaks_total",
        "leaks_resolved",
        "reclaims",
    ]
)


class PoolState:
    """The folded state of one application process: its pools, leaks and counters."""

    def __init__(self, *, windowed: bool = False) -> None:
        #: Keep per-second recent windows per pool (the TUI's and the advisor's
        #: choice; the application and the exporter need only totals).
        self.windowed = windowed
        self.process: dict[str, Any] = {}
        self.pools: dict[str, PoolMetrics] = {}
        self.sites: dict[int, list[dict[str, Any]]] = {}
        self.leaks: dict[tuple[str, str], Leak] = {}
        self.resolved_leaks: deque[Leak] = deque(maxlen=RESOLVED_LEAKS_KEPT)
        self.dropped = 0
        self.internal_errors = 0
        self.events = 0
        self.skipped = 0
        self.first_t = 0.0
        self.now = 0.0
        #: Labels, backend pids, per-route use and wait blame (poolscope.attribution).
        self.attribution = Attribution()

    # -- queries -----------------------------------------------------------------
    def pool(self, name: str) -> PoolMetrics:
        p = self.pools.get(name)
        if p is None:
            if len(self.pools) >= MAX_POOLS:
                raise ValueError(f"more than {MAX_POOLS} pools")
            p = self.pools[name] = PoolMetrics(name=name)
            if self.windowed:
                p.recent = RecentWindow()
        return p

    def open_leaks(self, pool: str | None = None) -> list[Leak]:
        return [lk for lk in self.leaks.values() if pool is None or lk.pool == pool]

    def holders(self, pool: str) -> list[Holder]:
        """Connections checked out of ``pool`` now, longest held first."""
        p = self.pools.get(pool)
        if p is None:
            return []
        return sorted(p.holders.values(), key=lambda h: h.since)

    def site_stack(self, site: int | None) -> list[dict[str, Any]]:
        return self.sites.get(site, []) if site is not None else []

    # -- the fold ----------------------------------------------------------------
    def apply(self, ev: Event) -> None:
        """Fold one event in. Malformed or unknown events are counted and skipped."""
        try:
            handler = _HANDLERS.get(ev.get("type", ""))
            if handler is None:
                self.skipped += 1
                return
            t = _num(ev, "t", self.now)
            if t > self.now:
                self.now = t
            if not self.first_t:
                self.first_t = t
            handler(self, ev, t)
            self.events += 1
        except Exception:
            # A peer's bad event must not break the fold for everyone else, whatever
            # it holds (1e999 overflows int(), deep nesting recurses, ...).
            self.skipped += 1

    def _pool_of(self, ev: Event, t: float) -> PoolMetrics:
        p = self.pool(str(ev.get("pool", "?")))
        if t > p.last_t:
            p.last_t = t
        return p

    def _on_hello(self, ev: Event, t: float) -> None:
        self.process = {k: v for k, v in ev.items() if k not in ("type",)}

    def _on_sync(self, ev: Event, t: float) -> None:
        state = ev.get("state")
        if not isinstance(state, dict):
            raise ValueError("sync without state")
        fresh = PoolState.from_dict(state)
        # Keep history across an application restart: older samples of a pool
        # of the same name are kept in front of the new process's samples.
        for name, new in fresh.pools.items():
            old = self.pools.get(name)
            if old is not None and old.series:
                cutoff = new.series[0].t if new.series else float("inf")
                kept = [s for s in old.series if s.t < cutoff]
                new.series.extendleft(reversed(kept))
            if self.windowed:
                # Recent windows are the observer's own: they go on across a
                # reconnect (a sync carries totals, not slots).
                new.recent = old.recent if old is not None and old.recent else RecentWindow()
        process = self.process
        windowed = self.windowed
        self.__dict__.update(fresh.__dict__)
        self.windowed = windowed
        self.process = process or fresh.process
        self.now = max(self.now, t)

    def _on_pool(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.kind = str(ev.get("kind", p.kind))
        p.target = str(ev.get("target", p.target))
        cfg = ev.get("config")
        if isinstance(cfg, dict):
            p.config = cfg
            p.max = _int(cfg, "max", p.max)
            p.min = _int(cfg, "min", p.min)

    def _on_state(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.size = _int(ev, "size", p.size)
        p.idle = _int(ev, "idle", p.idle)
        p.in_use = _int(ev, "in_use", p.in_use)
        p.waiting = _int(ev, "waiting", p.waiting)
        p.max = _int(ev, "max", p.max)
        p.min = _int(ev, "min", p.min)
        if p.recent is not None:
            slot = p.recent.slot(t)
            slot.samples += 1
            if p.waiting > 0:
                slot.saturated += 1
            slot.waiting_max = max(slot.waiting_max, p.waiting)
            slot.in_use_max = max(slot.in_use_max, p.in_use)
            slot.in_use_sum += p.in_use
        sample = Sample(t, p.in_use, p.idle, p.waiting, p.max, p.acquires, p.timeouts)
        series = p.series
        if series and t - series[-1].t < SERIES_MIN_STEP:
            series[-1] = sample
        else:
            series.append(sample)
        while series and series[0].t < t - SERIES_SECONDS:
            series.popleft()

    def _on_acquire(self, ev: Event, t: float) -> None:
        conn = str(ev["conn"])  # before any change: a bad event must change nothing
        site = ev.get("site")
        self.fold_acquire(
            str(ev.get("pool", "?")),
            conn,
            t,
            _num(ev, "wait"),
            site if isinstance(site, int) and not isinstance(site, bool) else None,
            str(ev.get("task") or ""),
            _tags_id(ev),
        )

    def _on_release(self, ev: Event, t: float) -> None:
        conn = str(ev["conn"])
        self.fold_release(
            str(ev.get("pool", "?")), conn, t, _num(ev, "hold"), lost=ev.get("lost") is True
        )

    # The two most frequent events, with checked arguments. The application's
    # runtime calls these directly for its own acquires and releases (values it
    # measured itself), skipping the generic ``apply`` and its per-field checks.
    def fold_acquire(
        self,
        pool: str,
        conn: str,
        t: float,
        wait: float,
        site: int | None,
        task: str,
        tags: int | None = None,
    ) -> None:
        p = self.pools.get(pool) or self.pool(pool)
        if t > p.last_t:
            p.last_t = t
        p.acquires += 1
        w = wait if wait > 0.0 else 0.0
        p.wait.add_trusted(w)
        if p.recent is not None:
            slot = p.recent.slot(t)
            slot.acquires += 1
            slot.wait.add_trusted(w)
        holders = p.holders
        if len(holders) >= MAX_HOLDERS and conn not in holders:
            self.attribution.on_acquire(pool, t, w, tags, holders)
            return
        replaced = holders.get(conn)
        holder = holders[conn] = Holder(conn, t, site, task, tags)
        self.attribution.on_acquire(pool, t, w, tags, holders, holder, replaced)

    def fold_release(
        self, pool: str, conn: str, t: float, hold: float, *, lost: bool = False
    ) -> None:
        """A hold ended: returned, or (``lost``) its connection died while checked
        out. Either way it is a release with its hold time, so acquires = releases
        + connections checked out."""
        p = self.pools.get(pool) or self.pool(pool)
        if t > p.last_t:
            p.last_t = t
        p.releases += 1
        if lost:
            p.releases_lost += 1
        h = hold if hold > 0.0 else 0.0
        p.hold.add_trusted(h)
        if p.recent is not None:
            slot = p.recent.slot(t)
            slot.releases += 1
            slot.hold.add_trusted(h)
        self.attribution.on_release(pool, p.holders.pop(conn, None), t, h)

    def advance(self, t: float) -> None:
        """Count one event folded at ``t`` (for callers of the ``fold_*`` methods)."""
        if t > self.now:
            self.now = t
        if not self.first_t:
            self.first_t = t
        self.events += 1

    def advance_many(self, n: int, first: float, last: float) -> None:
        """``advance`` for ``n`` events folded in order, from ``first`` to ``last``."""
        if last > self.now:
            self.now = last
        if not self.first_t:
            self.first_t = first
        self.events += n

    def _on_timeout(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.timeouts += 1
        if p.recent is not None:
            p.recent.slot(t).timeouts += 1
        p.last_error = str(ev.get("error", ""))
        self.attribution.charge(p.name, t - _num(ev, "wait"), t, p.holders)

    def _on_acquire_error(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.acquire_errors += 1
        if p.recent is not None:
            p.recent.slot(t).acquire_errors += 1
        p.last_error = str(ev.get("error", ""))

    def _on_connect(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.connects += 1
        p.create.add(_num(ev, "duration"))
        self.attribution.on_connect(p.name, str(ev.get("conn", "")), ev.get("backend_pid"))

    def _on_connect_error(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.connect_errors += 1
        if p.recent is not None:
            p.recent.slot(t).connect_errors += 1
        p.last_error = str(ev.get("error", ""))

    def _on_close(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        reason = str(ev.get("reason", "closed"))
        if reason not in p.closes and len(p.closes) >= MAX_CLOSE_REASONS:
            reason = "other"  # a peer inventing reasons must not grow the dict (or /metrics)
        p.closes[reason] = p.closes.get(reason, 0) + 1
        if p.recent is not None:
            closes = p.recent.slot(t).closes
            closes[reason] = closes.get(reason, 0) + 1
        conn = str(ev.get("conn", ""))
        held = p.holders.pop(conn, None)
        self.attribution.on_release(p.name, held, t, t - held.since if held else 0.0)
        self.attribution.on_close(p.name, conn)
        leak = self.leaks.pop((p.name, conn), None)
        if leak is not None:
            leak.resolved_t = t
            leak.resolved_held = t - leak.t + leak.held
            leak.resolution = "gc" if reason == "gc_leak" else f"closed:{reason}"
            self.resolved_leaks.append(leak)
            p.leaks_resolved += 1

    def _on_heartbeat(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        ok = ev.get("ok")
        if ev.get("skipped") or ok is None:
            p.heartbeats_skipped += 1
            return
        if ok:
            p.heartbeats_ok += 1
            p.heartbeat_latency.append((t, _num(ev, "latency")))
        else:
            p.heartbeats_failed += 1
            if p.recent is not None:
                p.recent.slot(t).heartbeats_failed += 1
            err = str(ev.get("error") or "failed")
            p.heartbeat_failures.append((t, err, str(ev.get("conn", ""))))
            p.last_error = err

    def _on_leak(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        key = (p.name, str(ev["conn"]))
        existing = self.leaks.get(key)
        if existing is not None:
            # A suspected leak later proven (garbage-collected while held).
            existing.proven = existing.proven or bool(ev.get("proven"))
            existing.held = _num(ev, "held", existing.held)
            return
        if len(self.leaks) >= MAX_OPEN_LEAKS:
            return
        stack = ev.get("stack")
        site = ev.get("site")
        self.leaks[key] = Leak(
            pool=p.name,
            conn=key[1],
            t=t,
            held=_num(ev, "held"),
            stack=stack if isinstance(stack, list) else [],
            task=str(ev.get("task") or ""),
            site=site if isinstance(site, int) else None,
            proven=bool(ev.get("proven")),
            tags=_tags_id(ev),
        )
        p.leaks_total += 1

    def _on_unleak(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        leak = self.leaks.pop((p.name, str(ev["conn"])), None)
        if leak is None:
            return
        leak.resolved_t = t
        leak.resolved_held = _num(ev, "held", t - leak.t + leak.held)
        leak.resolution = "returned"
        self.resolved_leaks.append(leak)
        p.leaks_resolved += 1

    def _on_dropped(self, ev: Event, t: float) -> None:
        self.dropped += _int(ev, "count")

    def _on_site(self, ev: Event, t: float) -> None:
        stack = ev.get("stack")
        sid = int(ev["id"])
        if len(self.sites) >= MAX_SITES and sid not in self.sites:
            return
        self.sites[sid] = stack if isinstance(stack, list) else []

    def _on_tags(self, ev: Event, t: float) -> None:
        self.attribution.on_tags(int(ev["id"]), ev.get("labels"))

    def _on_backend_pid(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        self.attribution.on_connect(p.name, str(ev["conn"]), ev.get("backend_pid"))

    def _on_backend(self, ev: Event, t: float) -> None:
        self._pool_of(ev, t).backend = str(ev.get("state", "healthy"))

    def _on_breaker(self, ev: Event, t: float) -> None:
        self._pool_of(ev, t).breaker = str(ev.get("state", "closed"))

    def _on_resize(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.max = _int(ev, "max", p.max)

    def _on_reclaim(self, ev: Event, t: float) -> None:
        self._pool_of(ev, t).reclaims += 1

    def _on_error(self, ev: Event, t: float) -> None:
        self.internal_errors += _int(ev, "count", 1)

    def _ignore(self, ev: Event, t: float) -> None:
        return

    # -- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The state as the ``sync`` event carries it."""
        return {
            "process": self.process,
            "pools": {name: p.to_dict() for name, p in self.pools.items()},
            "sites": {str(k): v for k, v in self.sites.items()},
            "leaks": [lk.to_dict() for lk in self.leaks.values()],
            "resolved_leaks": [lk.to_dict() for lk in self.resolved_leaks],
            "dropped": self.dropped,
            "internal_errors": self.internal_errors,
            "events": self.events,
            "first_t": self.first_t,
            "now": self.now,
            "attribution": self.attribution.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolState:
        s = cls()
        proc = d.get("process")
        s.process = proc if isinstance(proc, dict) else {}
        pools = d.get("pools")
        if isinstance(pools, dict):
            for name, pd in pools.items():
                if len(s.pools) >= MAX_POOLS:
                    break  # the same bound as pools created by events
                if isinstance(pd, dict):
                    s.pools[str(name)] = PoolMetrics.from_dict(pd)
        sites = d.get("sites")
        if isinstance(sites, dict):
            for k, v in sites.items():
                if len(s.sites) >= MAX_SITES:
                    break
                if isinstance(v, list):
                    s.sites[int(k)] = v
        for lk in d.get("leaks") or []:
            if len(s.leaks) >= MAX_OPEN_LEAKS:
                break
            if isinstance(lk, dict):
                leak = Leak.from_dict(lk)
                s.leaks[(leak.pool, leak.conn)] = leak
        for lk in d.get("resolved_leaks") or []:
            if isinstance(lk, dict):
                s.resolved_leaks.append(Leak.from_dict(lk))
        s.dropped = _int(d, "dropped")
        s.internal_errors = _int(d, "internal_errors")
        s.events = _int(d, "events")
        s.first_t = _num(d, "first_t")
        s.now = _num(d, "now")
        s.attribution = Attribution.from_dict(d.get("attribution"))
        return s


_HANDLERS = {
    "hello": PoolState._on_hello,
    "sync": PoolState._on_sync,
    "pool": PoolState._on_pool,
    "state": PoolState._on_state,
    "acquire": PoolState._on_acquire,
    "release": PoolState._on_release,
    "timeout": PoolState._on_timeout,
    "acquire_error": PoolState._on_acquire_error,
    "connect": PoolState._on_connect,
    "connect_error": PoolState._on_connect_error,
    "close": PoolState._on_close,
    "heartbeat": PoolState._on_heartbeat,
    "leak": PoolState._on_leak,
    "unleak": PoolState._on_unleak,
    "dropped": PoolState._on_dropped,
    "site": PoolState._on_site,
    "tags": PoolState._on_tags,
    "backend_pid": PoolState._on_backend_pid,
    "backend": PoolState._on_backend,
    "breaker": PoolState._on_breaker,
    "resize": PoolState._on_resize,
    "reclaim": PoolState._on_reclaim,
    "error": PoolState._on_error,
    "bye": PoolState._ignore,
    "adopt": PoolState._ignore,  # informational: the acquire that follows is folded
    # Local events of a stream client (never on the wire).
    "connected": PoolState._ignore,
    "disconnected": PoolState._ignore,
}


def fold(events: Iterable[Event], state: PoolState | None = None) -> PoolState:
    """Fold events into a state (a new one, or ``state`` continued)."""
    st = state if state is not None else PoolState()
    for ev in events:
        st.apply(ev)
    return st
