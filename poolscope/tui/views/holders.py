"""2 Holders: connections checked out now, longest held first."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from rich.text import Text

from poolscope.model import Holder, PoolState
from poolscope.tui.data import ProcessFeed
from poolscope.tui.views.common import (
    ALERT,
    Filter,
    fmt_dur,
    site_label,
)

# -- holders ---------------------------------------------------------------------

HOLDER_COLUMNS = ("held for", "pool", "conn", "task / thread", "acquire site", "tags", "backend")


#: Rows the holders view draws: the longest held; the rest are counted, not drawn.
HOLDERS_SHOWN = 500


def holder_rows(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None, limit: int | None = None
) -> list[tuple[str, tuple[Text, ...]]]:
    """Connections checked out now, longest held first (the ``limit`` longest)."""
    return top_holders(feeds, flt, limit)[0]


def top_holders(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None, limit: int | None = HOLDERS_SHOWN
) -> tuple[list[tuple[str, tuple[Text, ...]]], int]:
    """(the ``limit`` longest-held connections' rows, how many match in all). Rows are
    built for those shown only: 100,000 holders cost a selection, not 100,000 rows."""
    many = len(feeds) > 1
    found: list[tuple[float, int, str, str, Holder]] = []  # (held, feed, pool, label, h)
    for i, feed in enumerate(feeds):
        st = feed.state
        for name, p in st.pools.items():
            label = f"{name}@{st.process.get('pid', '?')}" if many else name
            for h in p.holders.values():
                if flt and not flt.match(_holder_text(st, name, label, h), pool=name):
                    continue
                found.append((max(0.0, st.now - h.since), i, name, label, h))
    total = len(found)
    if limit is not None and total > limit:
        found = heapq.nlargest(limit, found, key=lambda r: r[0])
    else:
        found.sort(key=lambda r: -r[0])
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for held, i, name, label, h in found:
        st = feeds[i].state
        p = st.pools[name]
        site = site_label(st.site_stack(h.site))
        tags = st.attribution.label_text(h.tags)  # ps.tag() labels, the route first
        pid = st.attribution.pids.get((name, h.conn))
        threshold = p.config.get("leak_threshold")
        style = ALERT if isinstance(threshold, (int, float)) and held > threshold else ""
        cells = (
            Text(fmt_dur(held), justify="right", style=style),
            Text(label),
            Text(h.conn),
            Text(h.task or "-"),
            Text(site),
            Text(tags or "-"),
            Text(str(pid) if pid else "-", justify="right"),
        )
        rows.append((f"{i}:{name}:{h.conn}", cells))
    return rows, total


def _holder_text(st: PoolState, name: str, label: str, h: Holder) -> str:
    site = site_label(st.site_stack(h.site))
    tags = st.attribution.label_text(h.tags)
    pid = st.attribution.pids.get((name, h.conn))
    return f"{label} {h.conn} {h.task} {tags} {pid or ''} {site}"
