"""The state is a fold over the event stream.

``fold(events) -> PoolState`` is the one computation behind every view: it runs
in the application (for late attachers and in-app Prometheus), in the TUI, in
the exporter and over a recorded file, so a live session and a replay agree.
Pure Python, standard library only, never Textual.

Times are the events' own wall-clock ``t``; "now" is the newest ``t`` seen, so
folding a recording gives the same answers whenever it is done. The records it
fills are :mod:`poolscope.records`; a ``sync`` event's state is decoded by
:mod:`poolscope.sync_codec`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from poolscope.attribution import Attribution
from poolscope.coerce import integer, number, tags_id
from poolscope.events import Event
from poolscope.records import (
    MAX_CLOSE_REASONS,
    MAX_HOLDERS,
    MAX_OPEN_LEAKS,
    MAX_POOLS,
    MAX_SITES,
    RESOLVED_LEAKS_KEPT,
    SERIES_MIN_STEP,
    SERIES_SECONDS,
    Holder,
    Leak,
    PoolMetrics,
    Sample,
    let_go,
)
from poolscope.sync_codec import state_from_dict, state_to_dict
from poolscope.window import RecentWindow


class PoolState:
    """The folded state of one application process: its pools, leaks and counters."""

    def __init__(self, *, windowed: bool = False, bulk: bool = False) -> None:
        #: Keep per-second recent windows per pool (the TUI's and the advisor's
        #: choice; the application and the exporter need only totals).
        self.windowed = windowed
        #: Count waits and holds into the histograms in bulk, at ``settle()`` (the
        #: application's drain: it settles at the end of every batch, before anything
        #: reads the state).
        self.bulk = bulk
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
        #: Utilisation history of pools a restarted application's sync did not know
        #: yet, until it creates them (see ``_on_sync``); never in a sync.
        self._parked: dict[str, deque[Sample]] = {}

    # -- queries -----------------------------------------------------------------
    def pool(self, name: str) -> PoolMetrics:
        p = self.pools.get(name)
        if p is None:
            if len(self.pools) >= MAX_POOLS:
                raise ValueError(f"more than {MAX_POOLS} pools")
            p = self.pools[name] = PoolMetrics(name=name)
            if self.windowed:
                p.recent = RecentWindow()
            if self.bulk:
                p.pending_waits, p.pending_holds = [], []
            if self._parked:
                _keep_older(p.series, self._parked.pop(name, None))
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
            t = number(ev, "t", self.now)
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
        # History across an application restart is kept here and nowhere else: a
        # pool of the same name keeps its older samples in front of the new
        # process's; one the new process has not created yet keeps them parked
        # until it does (bounded like the pools themselves).
        parked = self._parked
        for name, gone in self.pools.items():
            room = name in parked or len(parked) < MAX_POOLS
            if name not in fresh.pools and gone.series and room:
                parked[name] = gone.series
        for name, new in fresh.pools.items():
            old = self.pools.get(name)
            _keep_older(new.series, old.series if old is not None else parked.pop(name, None))
            if self.windowed:
                # Recent windows are the observer's own: they go on across a
                # reconnect (a sync carries totals, not slots).
                new.recent = old.recent if old is not None and old.recent else RecentWindow()
        process = self.process
        windowed = self.windowed
        self.__dict__.update(fresh.__dict__)
        self.windowed = windowed
        self._parked = parked
        self.process = process or fresh.process
        self.now = max(self.now, t)

    def _on_pool(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.kind = str(ev.get("kind", p.kind))
        p.target = str(ev.get("target", p.target))
        cfg = ev.get("config")
        if isinstance(cfg, dict):
            p.config = cfg
            p.max = integer(cfg, "max", p.max)
            p.min = integer(cfg, "min", p.min)

    def _on_state(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.size = integer(ev, "size", p.size)
        p.idle = integer(ev, "idle", p.idle)
        p.in_use = integer(ev, "in_use", p.in_use)
        p.waiting = integer(ev, "waiting", p.waiting)
        p.max = integer(ev, "max", p.max)
        p.min = integer(ev, "min", p.min)
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
            number(ev, "wait"),
            site if isinstance(site, int) and not isinstance(site, bool) else None,
            str(ev.get("task") or ""),
            tags_id(ev),
        )

    def _on_release(self, ev: Event, t: float) -> None:
        conn = str(ev["conn"])
        self.fold_release(
            str(ev.get("pool", "?")), conn, t, number(ev, "hold"), lost=ev.get("lost") is True
        )

    # The two most frequent events, with checked arguments: the only fold of an
    # acquire or a release (``apply`` checks a peer's fields, then calls these). The
    # application's drain calls them directly for its own acquires and releases
    # (values it measured itself), skipping ``apply`` and its per-field checks.
    def fold_acquire(
        self,
        pool: str,
        conn: str,
        t: float,
        wait: float,
        site: int | None,
        task: str,
        tags: int | None = None,
        mono: float = 0.0,
        raw_site: Any = None,
        ref: Any = None,
    ) -> None:
        """An acquire. ``mono``, ``raw_site`` and ``ref`` are the application's own (see
        :class:`Holder`): the open hold its leak watch reads is the holder kept here."""
        p = self.pools.get(pool) or self.pool(pool)
        if t > p.last_t:
            p.last_t = t
        p.acquires += 1
        w = wait if wait > 0.0 else 0.0
        pending = p.pending_waits
        if pending is None:
            p.wait.add_trusted(w)
        else:
            pending.append(w)
        if p.recent is not None:
            slot = p.recent.slot(t)
            slot.acquires += 1
            slot.wait.add_trusted(w)
        holders = p.holders
        if len(holders) >= MAX_HOLDERS and conn not in holders:
            self.attribution.on_acquire(pool, t, w, tags, holders)
            return
        replaced = holders.get(conn)
        holder = holders[conn] = Holder(conn, t, site, task, tags, mono, raw_site, ref)
        self.attribution.on_acquire(pool, t, w, tags, holders, holder, replaced)

    def fold_release(
        self, pool: str, conn: str, t: float, hold: float, *, lost: bool = False
    ) -> None:
        """A hold ended: returned, or (``lost``) its connection died while checked
        out. Either way it is a release with its hold time, so acquires = releases
        + connections checked out."""
        p = self.pools.get(pool) or self.pool(pool)
        self.fold_ended(p, p.holders.pop(conn, None), t, hold, lost)

    def fold_ended(
        self, p: PoolMetrics, holder: Holder | None, t: float, hold: float, lost: bool = False
    ) -> None:
        """``fold_release`` once the holder is out of ``p.holders`` (the application's
        drain takes it out itself: it reads the holder first, for the hold time and a
        reported leak)."""
        if t > p.last_t:
            p.last_t = t
        p.releases += 1
        if lost:
            p.releases_lost += 1
        if holder is not None:
            let_go(holder)
        h = hold if hold > 0.0 else 0.0
        pending = p.pending_holds
        if pending is None:
            p.hold.add_trusted(h)
        else:
            pending.append(h)
        if p.recent is not None:
            slot = p.recent.slot(t)
            slot.releases += 1
            slot.hold.add_trusted(h)
        self.attribution.on_release(p.name, holder, t, h)

    def settle(self) -> None:
        """Count the pending waits and holds of a bulk state into their histograms."""
        if not self.bulk:
            return
        for p in self.pools.values():
            waits, holds = p.pending_waits, p.pending_holds
            if waits:
                p.wait.add_many_trusted(waits)
                waits.clear()
            if holds:
                p.hold.add_many_trusted(holds)
                holds.clear()

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
        self.attribution.charge(p.name, t - number(ev, "wait"), t, p.holders)

    def _on_acquire_error(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.acquire_errors += 1
        if p.recent is not None:
            p.recent.slot(t).acquire_errors += 1
        p.last_error = str(ev.get("error", ""))

    def _on_connect(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        p.connects += 1
        p.create.add(number(ev, "duration"))
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
        if held is not None:
            let_go(held)
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
            p.heartbeat_latency.append((t, number(ev, "latency")))
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
            existing.held = number(ev, "held", existing.held)
            return
        if len(self.leaks) >= MAX_OPEN_LEAKS:
            return
        stack = ev.get("stack")
        site = ev.get("site")
        self.leaks[key] = Leak(
            pool=p.name,
            conn=key[1],
            t=t,
            held=number(ev, "held"),
            stack=stack if isinstance(stack, list) else [],
            task=str(ev.get("task") or ""),
            site=site if isinstance(site, int) else None,
            proven=bool(ev.get("proven")),
            tags=tags_id(ev),
        )
        p.leaks_total += 1

    def _on_unleak(self, ev: Event, t: float) -> None:
        p = self._pool_of(ev, t)
        leak = self.leaks.pop((p.name, str(ev["conn"])), None)
        if leak is None:
            return
        leak.resolved_t = t
        leak.resolved_held = number(ev, "held", t - leak.t + leak.held)
        leak.resolution = "returned"
        self.resolved_leaks.append(leak)
        p.leaks_resolved += 1

    def _on_dropped(self, ev: Event, t: float) -> None:
        self.dropped += integer(ev, "count")

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
        p.max = integer(ev, "max", p.max)

    def _on_reclaim(self, ev: Event, t: float) -> None:
        self._pool_of(ev, t).reclaims += 1

    def _on_error(self, ev: Event, t: float) -> None:
        self.internal_errors += integer(ev, "count", 1)

    def _ignore(self, ev: Event, t: float) -> None:
        return

    # -- serialisation (the ``sync`` event): poolscope.sync_codec -----------------
    def to_dict(self) -> dict[str, Any]:
        """The state as the ``sync`` event carries it."""
        self.settle()
        return state_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolState:
        return state_from_dict(cls, d)


def _keep_older(series: deque[Sample], older: deque[Sample] | None) -> None:
    """Put a previous process's samples older than ``series`` in front of it."""
    if not older:
        return
    cutoff = series[0].t if series else float("inf")
    series.extendleft(reversed([s for s in older if s.t < cutoff]))


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
