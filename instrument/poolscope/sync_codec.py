"""The ``sync`` event's state: a folded state as JSON-ready dicts, and back.

A late attacher receives the application's own fold this way (docs/protocol.md).
Decoding trusts nothing: every field is checked and coerced, and every collection
is bounded like the ones events create, so a peer's sync can neither put a string
where a view formats a number nor grow an observer without limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from poolscope.attribution import Attribution
from poolscope.coerce import integer, number, tags_id
from poolscope.histogram import Histogram
from poolscope.records import (
    MAX_CLOSE_REASONS,
    MAX_HOLDERS,
    MAX_OPEN_LEAKS,
    MAX_POOLS,
    MAX_SITES,
    Holder,
    Leak,
    PoolMetrics,
    Sample,
)

if TYPE_CHECKING:  # the fold imports this module
    from poolscope.fold import PoolState

S = TypeVar("S", bound="PoolState")

#: PoolMetrics fields a sync's ``gauges``/``counters`` may set.
INT_FIELDS = frozenset(
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


def leak_to_dict(leak: Leak) -> dict[str, Any]:
    return dict(leak.__dict__)


def leak_from_dict(d: dict[str, Any]) -> Leak:
    stack = d.get("stack")
    site = d.get("site")
    rt, rh, res = d.get("resolved_t"), d.get("resolved_held"), d.get("resolution")
    return Leak(
        pool=str(d.get("pool", "?")),
        conn=str(d.get("conn", "?")),
        t=number(d, "t"),
        held=number(d, "held"),
        stack=[f for f in stack if isinstance(f, dict)] if isinstance(stack, list) else [],
        task=str(d.get("task") or ""),
        site=site if isinstance(site, int) and not isinstance(site, bool) else None,
        proven=bool(d.get("proven")),
        resolved_t=number(d, "resolved_t") if rt is not None else None,
        resolved_held=number(d, "resolved_held") if rh is not None else None,
        resolution=str(res) if res is not None else None,
        tags=tags_id(d),
    )


def pool_to_dict(p: PoolMetrics) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": p.kind,
        "target": p.target,
        "config": p.config,
        "gauges": {
            "size": p.size,
            "idle": p.idle,
            "in_use": p.in_use,
            "waiting": p.waiting,
            "max": p.max,
            "min": p.min,
        },
        "counters": {
            "acquires": p.acquires,
            "releases": p.releases,
            "releases_lost": p.releases_lost,
            "timeouts": p.timeouts,
            "acquire_errors": p.acquire_errors,
            "connects": p.connects,
            "connect_errors": p.connect_errors,
            "heartbeats_ok": p.heartbeats_ok,
            "heartbeats_failed": p.heartbeats_failed,
            "heartbeats_skipped": p.heartbeats_skipped,
            "leaks_total": p.leaks_total,
            "leaks_resolved": p.leaks_resolved,
            "reclaims": p.reclaims,
        },
        "closes": dict(p.closes),
        "histograms": {
            "wait": p.wait.to_dict(),
            "hold": p.hold.to_dict(),
            "create": p.create.to_dict(),
        },
        "backend": p.backend,
        "breaker": p.breaker,
        "heartbeat_latency": [list(x) for x in p.heartbeat_latency],
        "heartbeat_failures": [list(x) for x in p.heartbeat_failures],
        "last_error": p.last_error,
        "holders": [h.wire() for h in p.holders.values()],
        "series": [
            [s.t, s.in_use, s.idle, s.waiting, s.max, s.acquires, s.timeouts] for s in p.series
        ],
        "last_t": p.last_t,
    }


def pool_from_dict(d: dict[str, Any]) -> PoolMetrics:
    p = PoolMetrics(name=str(d.get("name", "?")))
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
                if k in INT_FIELDS and isinstance(v, int) and not isinstance(v, bool):
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
                tags=tags_id(h),
            )
            p.holders[holder.conn] = holder
    for s in d.get("series") or []:
        if isinstance(s, list) and len(s) == 7:
            v = [int(x) for x in s[1:]]
            p.series.append(Sample(float(s[0]), v[0], v[1], v[2], v[3], v[4], v[5]))
    lt = d.get("last_t")
    p.last_t = float(lt) if isinstance(lt, (int, float)) else 0.0
    return p


def state_to_dict(st: PoolState) -> dict[str, Any]:
    """A state as the ``sync`` event carries it."""
    return {
        "process": st.process,
        "pools": {name: pool_to_dict(p) for name, p in st.pools.items()},
        "sites": {str(k): v for k, v in st.sites.items()},
        "leaks": [leak_to_dict(lk) for lk in st.leaks.values()],
        "resolved_leaks": [leak_to_dict(lk) for lk in st.resolved_leaks],
        "dropped": st.dropped,
        "internal_errors": st.internal_errors,
        "events": st.events,
        "first_t": st.first_t,
        "now": st.now,
        "attribution": st.attribution.to_dict(),
    }


def state_from_dict(cls: type[S], d: dict[str, Any]) -> S:
    """A state from a ``sync``'s ``state`` (``cls`` is :class:`~poolscope.fold.PoolState`)."""
    s = cls()
    proc = d.get("process")
    s.process = proc if isinstance(proc, dict) else {}
    pools = d.get("pools")
    if isinstance(pools, dict):
        for name, pd in pools.items():
            if len(s.pools) >= MAX_POOLS:
                break  # the same bound as pools created by events
            if isinstance(pd, dict):
                s.pools[str(name)] = pool_from_dict(pd)
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
            leak = leak_from_dict(lk)
            s.leaks[(leak.pool, leak.conn)] = leak
    for lk in d.get("resolved_leaks") or []:
        if isinstance(lk, dict):
            s.resolved_leaks.append(leak_from_dict(lk))
    s.dropped = integer(d, "dropped")
    s.internal_errors = integer(d, "internal_errors")
    s.events = integer(d, "events")
    s.first_t = number(d, "first_t")
    s.now = number(d, "now")
    s.attribution = Attribution.from_dict(d.get("attribution"))
    return s
