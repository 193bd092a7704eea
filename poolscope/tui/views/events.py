"""6 Events: the incident log (or every recent event), newest appended."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from poolscope.events import Event
from poolscope.tui.data import INCIDENT_TYPES, ProcessFeed
from poolscope.tui.views.common import (
    DIM,
    Filter,
    fmt_clock,
    fmt_dur,
)

# -- events log ------------------------------------------------------------------

EVENT_COLUMNS = ("time", "type", "pool", "details")
_EVENT_HIDE = frozenset({"type", "t", "pool", "stack", "current", "state"})
_EVENT_STYLE = {
    "timeout": "red",
    "acquire_error": "red",
    "connect_error": "red",
    "leak": "bold red",
    "unleak": "green",
    "backend": "yellow",
    "dropped": "red",
    "disconnected": "bold red",
    "connected": "green",
}


def event_summary(ev: Event) -> str:
    parts = []
    for k, v in ev.items():
        if k in _EVENT_HIDE or k.startswith("_") or v is None:
            continue
        if isinstance(v, float):
            v = (
                fmt_dur(v)
                if k in ("wait", "hold", "held", "latency", "duration", "age")
                else f"{v:g}"
            )
        elif isinstance(v, (list, dict)):
            continue
        parts.append(f"{k}={v}")
    return " ".join(parts)


def event_cells(ev: Event) -> tuple[Text, ...]:
    etype = str(ev.get("type", "?"))
    return (
        Text(fmt_clock(float(ev.get("t", 0.0)), millis=True), style=DIM),
        Text(etype, style=_EVENT_STYLE.get(etype, "")),
        Text(str(ev.get("pool", ""))),
        Text(event_summary(ev), no_wrap=True, overflow="ellipsis"),
    )


def event_matches(ev: Event, flt: Filter | None) -> bool:
    if not flt:
        return True
    etype = str(ev.get("type", ""))
    pool = str(ev.get("pool", ""))
    return flt.match(f"{etype} {pool} {event_summary(ev)}", pool=pool, etype=etype)


def recent_events(
    feeds: Iterable[ProcessFeed],
    after: dict[int, int],
    flt: Filter | None,
    limit: int,
    *,
    churn: bool = False,
) -> list[tuple[str, tuple[Text, ...]]]:
    """Events newer than ``after[feed index]`` (a seq), matching the filter, oldest first,
    at most ``limit`` (the newest). From each feed's incident log, or with ``churn``
    (or a ``type:`` filter naming a churn type such as ``acquire``) from its log of
    every recent event."""
    if flt and any(t not in INCIDENT_TYPES for t in flt.types):
        churn = True
    out: list[tuple[float, str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        last = after.get(i, 0)
        log = feed.events(churn)
        picked: list[tuple[float, str, tuple[Text, ...]]] = []
        for seq, ev in reversed(log):
            if seq <= last or len(picked) >= limit:
                break
            if event_matches(ev, flt):
                picked.append((float(ev.get("t", 0.0)), f"{i}:{seq}", event_cells(ev)))
        out.extend(picked)
        if log:
            after[i] = log[-1][0]
    out.sort(key=lambda r: r[0])
    return [(k, c) for _, k, c in out[-limit:]]
