"""Leaks, from the open holds the model keeps (``PoolMetrics.holders``).

There is one record of an open hold, the model's :class:`~poolscope.records.Holder`;
in the application it also carries the acquire's monotonic time, raw site and holder
reference, and whether it was reported. This module reads it:

* :func:`check` - the holds past their pool's leak threshold, as ``leak`` events
  (the acquire site and the holder's live stack formatted now, not at acquire);
* :func:`complete` - an adapter's proven leak (collected or unreachable while held)
  names only the connection: the open hold adds its site, task and held time;
* :func:`lost_release` - a connection closed while checked out ends its hold with a
  ``release`` marked ``lost``, so acquires = releases + holds open for every adapter;
* :func:`unleak` - a reported hold given back after all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from poolscope.events import Event
from poolscope.fold import PoolState
from poolscope.records import Holder

from .naming import current_stack, format_site


def _holder(model: PoolState, pool: Any, conn: Any) -> Holder | None:
    p = model.pools.get(str(pool))
    return p.holders.get(str(conn)) if p is not None else None


def check(model: PoolState, thresholds: Mapping[str, float | None]) -> list[Event]:
    """Leak events for the holds past ``thresholds[pool]`` not reported yet (each
    hold is reported once; its release then sends an ``unleak``)."""
    now = time.perf_counter()
    out: list[Event] = []
    for name, p in list(model.pools.items()):
        threshold = thresholds.get(name)
        if not threshold or not p.holders:
            continue
        for h in list(p.holders.values()):
            if h.leak_reported or not h.mono or now - h.mono < threshold:
                continue
            h.leak_reported = True
            out.append(
                {
                    "type": "leak",
                    "t": time.time(),
                    "pool": name,
                    "conn": h.conn,
                    "held": now - h.mono,
                    "stack": format_site(h.raw_site),
                    "current": current_stack(h.ref),
                    "task": h.task,
                    "site": h.site,
                    "tags": h.tags,
                }
            )
    return out


def complete(model: PoolState, ev: Event) -> None:
    """Fill an adapter's proven ``leak`` event in from the open hold (in place)."""
    h = _holder(model, ev.get("pool"), ev.get("conn"))
    if h is None:
        ev.setdefault("held", 0.0)
        ev.update(stack=[], task="", site=None, tags=None)
        return
    ev["held"] = time.perf_counter() - h.mono if h.mono else ev.get("held", 0.0)
    ev.update(stack=format_site(h.raw_site), task=h.task, site=h.site, tags=h.tags)
    h.leak_reported = True


def lost_release(model: PoolState, close: Event, offset: float) -> Event | None:
    """The ``release`` (``lost: true``) that ends a hold whose connection closed while
    checked out; None when it was not held. ``offset``: wall minus perf_counter."""
    h = _holder(model, close.get("pool"), close.get("conn"))
    if h is None:
        return None
    t = close.get("t")
    end = t - offset if isinstance(t, float) else time.perf_counter()
    start = h.mono if h.mono else h.since - offset
    release: Event = {"type": "release", "t": t, "pool": str(close.get("pool")), "conn": h.conn}
    release.update(hold=max(end - start, 0.0), lost=True, reason=close.get("reason"))
    return release


def unleak(pool: str, h: Holder, t: float, hold: float) -> Event:
    """The ``unleak`` of a reported hold given back at ``t`` after ``hold`` seconds."""
    return {
        "type": "unleak",
        "t": t,
        "pool": pool,
        "conn": h.conn,
        "held": hold,
        "stack": format_site(h.raw_site),
        "task": h.task,
        "site": h.site,
        "tags": h.tags,
    }
