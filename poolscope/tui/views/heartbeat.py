"""4 Heartbeat: backend health per pool and the recent heartbeat failures."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from poolscope.tui.data import ProcessFeed
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    OK,
    WARN,
    Filter,
    clip,
    fmt_clock,
    fmt_dur,
    sparkline,
)

# -- heartbeat -------------------------------------------------------------------

HEARTBEAT_COLUMNS = ("pool", "backend", "ok", "failed", "skipped", "last", "latency", "last error")


def heartbeat_rows(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None
) -> list[tuple[str, tuple[Text, ...]]]:
    many = len(feeds) > 1
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        st = feed.state
        for name, p in sorted(st.pools.items()):
            label = f"{name}@{st.process.get('pid', '?')}" if many else name
            if flt and not flt.match(f"{label} {p.backend}", pool=name):
                continue
            lat = [v for _, v in p.heartbeat_latency]
            last = fmt_dur(lat[-1]) if lat else "-"
            err = p.heartbeat_failures[-1][1] if p.heartbeat_failures else ""
            style = {"healthy": OK, "suspect": WARN}.get(p.backend, ALERT)
            cells = (
                Text(label, style="bold"),
                Text(p.backend, style=style),
                Text(str(p.heartbeats_ok), justify="right"),
                Text(
                    str(p.heartbeats_failed),
                    justify="right",
                    style=ALERT if p.heartbeats_failed else "",
                ),
                Text(str(p.heartbeats_skipped), justify="right"),
                Text(last, justify="right"),
                Text(sparkline(lat) or "-", style="cyan"),
                Text(clip(err, 40), style=ALERT if err else DIM),
            )
            rows.append((f"{i}:{name}", cells))
    return rows


def heartbeat_failures_text(feeds: Sequence[ProcessFeed], limit: int = 12) -> Text:
    items: list[tuple[float, str, str, str]] = []
    for feed in feeds:
        for name, p in feed.state.pools.items():
            items.extend((t, name, conn, err) for t, err, conn in p.heartbeat_failures)
    out = Text()
    out.append("Recent heartbeat failures\n", style="bold")
    if not items:
        out.append("  none\n", style=DIM)
        return out
    for t, name, conn, err in sorted(items, reverse=True)[:limit]:
        out.append(f"  {fmt_clock(t)}  ", style=DIM)
        out.append(f"{name:<10} conn {conn:<5} ")
        out.append(f"{err}\n", style="red")
    return out
