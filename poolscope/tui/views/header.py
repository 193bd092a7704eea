"""The header: one line per attached process (connection, rate, drops, uptime, OS
figures)."""

from __future__ import annotations

from rich.text import Text

from poolscope.tui.data import ProcessFeed
from poolscope.tui.osinfo import ProcInfo
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    OK,
    WARN,
    fmt_bytes,
    fmt_clock,
    fmt_dur,
    fmt_rate,
)

# -- header ----------------------------------------------------------------------


def header_line(
    feed: ProcessFeed, events_per_s: float, info: ProcInfo | None, replay_status: str = ""
) -> Text:
    st = feed.state
    proc = st.process
    name = str(proc.get("process", "?"))
    pid = proc.get("pid", "?")
    line = Text()
    if feed.connected:
        line.append("● ", style=OK)
    else:
        line.append("○ ", style=ALERT)
    line.append(f"{name}", style="bold")
    line.append(f" pid {pid}  ")
    line.append(feed.label, style="cyan")
    line.append("  ")
    if replay_status:
        line.append("replay ", style=DIM)
        line.append(replay_status, style="bold")
    elif feed.connected:
        line.append("connected", style=OK)
    elif feed.disconnected_since is not None:
        line.append(f"disconnected since {fmt_clock(feed.disconnected_since)}", style=ALERT)
        if not feed.ever_connected:
            line.append(" (never connected)", style=ALERT)
    else:
        line.append("connecting…", style=WARN)
    line.append(f"  {fmt_rate(events_per_s)} ev/s")
    line.append("  dropped ")
    line.append(str(st.dropped), style=ALERT if st.dropped else "")
    up = feed.uptime()
    if up is not None:
        line.append(f"  up {fmt_dur(up)}")
    if info is not None:
        line.append(
            f"  cpu {info.cpu_percent:.0f}% rss {fmt_bytes(info.rss)} thr {info.threads}",
            style=DIM,
        )
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line
