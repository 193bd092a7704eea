"""Pure views of "who holds it": per-route use, who made them wait, and the
server's own view (``--pg``). Folded state in, rows and text out; no Textual.

Labels and routes come from the stream and are shown as given (the table cells
are ``rich.text.Text``, which never interprets markup; ``visible`` makes controls
visible), like every other untrusted text.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from poolscope.attribution import Blame
from poolscope.pgview import Snapshot
from poolscope.textsafe import visible
from poolscope.tui.data import ProcessFeed
from poolscope.tui.views import ALERT, DIM, WARN, Filter, fmt_dur, site_label

ROUTE_COLUMNS = (
    "route",
    "pool",
    "acquires",
    "mean hold",
    "p99 hold",
    "conn-s held",
    "waits",
    "waited",
)
BLAME_COLUMNS = ("made them wait", "pool", "share", "conn-s", "share (window)", "conn-s (window)")
SITE_BLAME_COLUMNS = ("acquire site", *BLAME_COLUMNS[1:])
UNTAGGED = "(no route)"


def _label(feeds: Sequence[ProcessFeed], feed: ProcessFeed, pool: str) -> str:
    return f"{pool}@{feed.state.process.get('pid', '?')}" if len(feeds) > 1 else pool


def route_rows(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None
) -> list[tuple[str, tuple[Text, ...]]]:
    """Per route and pool: acquires, mean and p99 hold, connection-seconds held,
    and the waits its acquires suffered; most connection-seconds first."""
    rows: list[tuple[float, str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        for (pool, route), r in feed.state.attribution.routes.items():
            name = visible(route or UNTAGGED)
            label = _label(feeds, feed, pool)
            if flt and not flt.match(f"{name} {label}", pool=pool):
                continue
            cells = (
                Text(name),
                Text(label),
                Text(str(r.acquires), justify="right"),
                Text(fmt_dur(r.hold.mean if r.hold.count else None), justify="right"),
                Text(fmt_dur(r.hold.p99 if r.hold.count else None), justify="right"),
                Text(f"{r.hold.sum:.1f}", justify="right"),
                Text(str(r.waits), justify="right", style=WARN if r.waits else ""),
                Text(fmt_dur(r.waited), justify="right"),
            )
            rows.append((r.hold.sum, f"{i}:{pool}:{route}", cells))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return [(key, cells) for _, key, cells in rows]


def blame_rows(
    feeds: Sequence[ProcessFeed],
    by: str = "route",
    window: float = 60.0,
    flt: Filter | None = None,
) -> list[tuple[str, tuple[Text, ...]]]:
    """Routes (or sites) by the connection-seconds they held while others waited:
    share and seconds since start, and over the last ``window`` seconds."""
    rows: list[tuple[float, str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        st = feed.state
        attr = st.attribution
        recent = {(b.pool, b.key): b for b in attr.blame(by, since=st.now - window)}
        for b in attr.blame(by):
            name = blame_name(feed, b, by)
            label = _label(feeds, feed, b.pool)
            if flt and not flt.match(f"{name} {label}", pool=b.pool):
                continue
            w = recent.get((b.pool, b.key))
            cells = (
                Text(name, style="bold" if b.share >= 0.5 else ""),
                Text(label),
                Text(
                    f"{b.share * 100:.0f}%", justify="right", style=ALERT if b.share >= 0.5 else ""
                ),
                Text(f"{b.seconds:.1f}", justify="right"),
                Text(f"{w.share * 100:.0f}%" if w else "-", justify="right"),
                Text(f"{w.seconds:.1f}" if w else "-", justify="right"),
            )
            rows.append((b.seconds, f"{i}:{by}:{b.pool}:{b.key}", cells))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return [(key, cells) for _, key, cells in rows]


def blame_name(feed: ProcessFeed, b: Blame, by: str) -> str:
    if by == "route":
        return visible(b.key or UNTAGGED)
    return visible(site_label(feed.state.site_stack(b.site)) if b.site is not None else "?")


def waited_text(feeds: Sequence[ProcessFeed], window: float = 60.0) -> Text:
    """How long someone waited per pool: since start and over the window."""
    out = Text()
    for feed in feeds:
        st = feed.state
        attr = st.attribution
        recent = attr.waited_since(st.now - window)
        for pool, secs in sorted(attr.waited.items()):
            out.append(f"{_label(feeds, feed, pool)}: ", style="bold")
            out.append(
                f"someone waited {fmt_dur(secs)} since start, "
                f"{fmt_dur(recent.get(pool, 0.0))} in the last {window:.0f}s\n"
            )
    if not out:
        out.append("Nobody has waited for a connection.", DIM)
    return out


# -- the server's own view (--pg) ---------------------------------------------------

PG_COLUMNS = (
    "process",
    "pool",
    "conn",
    "backend pid",
    "held",
    "route",
    "server state",
    "wait event",
    "xact age",
    "state age",
    "query",
)


def pg_rows(snap: Snapshot | None) -> list[tuple[str, tuple[Text, ...]]]:
    if snap is None:
        return []
    out: list[tuple[str, tuple[Text, ...]]] = []
    for r in snap.rows:
        b = r.backend
        state = b.state if b else "(gone)"
        style = ALERT if state.startswith("idle in transaction") and r.held else ""
        if b and not r.held and state == "active":
            style = WARN
        wait = f"{b.wait_event_type}/{b.wait_event}" if b and b.wait_event else "-"
        cells = (
            Text(visible(r.process)),
            Text(visible(r.pool)),
            Text(visible(r.conn)),
            Text(str(r.pid), justify="right"),
            Text("yes" if r.held else "idle", style="bold" if r.held else DIM),
            Text(visible(r.route) or "-"),
            Text(visible(state), style=style),
            Text(visible(wait)),
            Text(fmt_dur(b.xact_age) if b and b.xact_age is not None else "-", justify="right"),
            Text(fmt_dur(b.state_age) if b and b.state_age is not None else "-", justify="right"),
            Text(visible(b.query) if b and b.query else ""),
        )
        out.append((f"{r.process}:{r.pool}:{r.conn}", cells))
    return out


def pg_text(snap: Snapshot | None) -> Text:
    """The flags and the fleet budget of the newest sample."""
    out = Text()
    if snap is None:
        out.append("--pg DSN: the server's view of these connections shows here.", DIM)
        return out
    out.append(f"server {visible(snap.server)}\n", style="bold")
    if snap.error:
        out.append(f"{visible(snap.error)}\n", style=ALERT)
    budget = snap.budget_line()
    if budget:
        out.append(budget + "\n", style=ALERT if snap.budget_exceeded else "")
    for flag in snap.flags:
        if flag != budget:
            out.append(f"! {visible(flag)}\n", style=WARN)
    if not snap.flags and not snap.error:
        out.append("no flags\n", style=DIM)
    out.append("end one connection: SELECT pg_terminate_backend(<backend pid>);\n", style=DIM)
    return out
