"""3 Leaks: open and resolved leaks grouped by acquire site and route, and the
traceback of a group's latest leak."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from poolscope.model import Leak, PoolState
from poolscope.tui.data import ProcessFeed
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    Filter,
    distinct_site_labels,
    fmt_clock,
    fmt_dur,
    site_label,
)

# -- leaks -----------------------------------------------------------------------

LEAK_COLUMNS = ("acquire site", "route", "pool", "open", "resolved", "longest hold", "last task")


@dataclass
class LeakGroup:
    key: str
    site: str  # the label: what tells this group's acquire site apart from the others
    pool: str
    open: list[Leak]
    resolved: list[Leak]
    state: PoolState
    stack: list[dict[str, Any]] = field(default_factory=list)
    route: str = ""  # the ps.tag()/middleware route of the acquires (groups are per route too)

    def held(self, lk: Leak) -> float:
        if lk.resolved_held is not None:
            return lk.resolved_held
        return lk.held + max(0.0, self.state.now - lk.t)

    @property
    def longest(self) -> float:
        return max((self.held(lk) for lk in self.open + self.resolved), default=0.0)

    @property
    def latest(self) -> Leak:
        return max(self.open + self.resolved, key=lambda lk: lk.t)

    def cells(self) -> tuple[Text, ...]:
        return (
            Text(self.site, style="bold red" if self.open else ""),
            Text(self.route or "-"),
            Text(self.pool),
            Text(str(len(self.open)), justify="right", style=ALERT if self.open else ""),
            Text(str(len(self.resolved)), justify="right"),
            Text(fmt_dur(self.longest), justify="right"),
            Text(self.latest.task or "-"),
        )


def leak_groups(feeds: Sequence[ProcessFeed], flt: Filter | None = None) -> list[LeakGroup]:
    """Open and resolved leaks grouped by acquire site (the whole stack); groups with
    open leaks first. Sites whose innermost frames read the same are labelled by the
    frame that tells them apart (:func:`distinct_site_labels`)."""
    groups: dict[str, LeakGroup] = {}
    for i, feed in enumerate(feeds):
        st = feed.state
        for lk in list(st.leaks.values()) + list(st.resolved_leaks):
            stack = lk.stack or st.site_stack(lk.site)
            site = site_label(stack)
            route = st.attribution.route_of(lk.tags)
            key = f"{i}:{lk.pool}:{lk.site if lk.site is not None else site}:{route}"
            g = groups.get(key)
            if g is None:
                g = groups[key] = LeakGroup(key, site, lk.pool, [], [], st, stack, route)
            (g.resolved if lk.resolved_t is not None else g.open).append(lk)
    # Groups the table can tell apart by another column (pool, route) need no longer label.
    alike: dict[tuple[str, str, str, str], list[LeakGroup]] = {}
    for g in groups.values():
        alike.setdefault((g.key.partition(":")[0], g.pool, g.route, g.site), []).append(g)
    for same in alike.values():
        if len(same) > 1:
            for g, label in zip(same, distinct_site_labels([g.stack for g in same]), strict=True):
                g.site = label
    out = [
        g
        for g in groups.values()
        if not flt or flt.match(f"{g.site} {g.route} {g.pool}", pool=g.pool)
    ]
    out.sort(key=lambda g: (-len(g.open), -g.longest, g.key))
    return out


def leak_detail(group: LeakGroup | None) -> Text:
    """The traceback of a group's latest leak, with source lines, task and held time."""
    out = Text()
    if group is None:
        out.append("No leaks. A connection held past the pool's leak threshold shows here.", DIM)
        return out
    lk = group.latest
    status = "OPEN" if lk.resolved_t is None else f"resolved ({lk.resolution})"
    out.append(f"{'proven' if lk.proven else 'suspected'} leak ", style="bold red")
    out.append(f"{status}  pool {lk.pool}  conn {lk.conn}  task {lk.task or '-'}")
    tags = group.state.attribution.label_text(lk.tags)
    pid = group.state.attribution.pids.get((lk.pool, lk.conn))
    out.append(f"{'  ' + tags if tags else ''}{f'  backend {pid}' if pid else ''}\n")
    out.append(f"held {fmt_dur(group.held(lk))}", style="bold")
    out.append(f"  reported {fmt_clock(lk.t)} after {fmt_dur(lk.held)}")
    if lk.resolved_t is not None:
        out.append(f"  back {fmt_clock(lk.resolved_t)}")
    out.append(f"\n{len(group.open)} open, {len(group.resolved)} resolved at this site\n\n")
    out.append("Traceback of the acquire (most recent call last):\n", style="bold")
    stack = lk.stack or group.state.site_stack(lk.site)
    if not stack:
        out.append("  (no stack captured)\n", style=DIM)
    for f in reversed(stack):  # the wire has innermost first; Python prints it last
        out.append(f'  File "{f.get("file", "?")}", line {f.get("line", "?")}, in ')
        out.append(f"{f.get('func', '?')}\n", style="bold")
        code = f.get("code")
        if code:
            out.append(f"    {code}\n", style="yellow")
    return out
