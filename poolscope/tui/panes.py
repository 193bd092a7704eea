"""The views as widgets: each tab is one :class:`View` that draws itself.

A refresh is two steps. :meth:`View.take` runs holding the data lock and only
copies what the view shows (:mod:`poolscope.tui.snapshot`); :meth:`View.draw`
runs after the lock is released and computes the rows, the text, the chart and
the sizing advice from that copy, then updates the widgets. So folding never
waits while a view sorts 100,000 holders or solves Erlang C. The app keeps the
user's choices (filter, sort, window, selection) and asks only the visible view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static, TabPane

from poolscope.pgview import PgSampler, Snapshot
from poolscope.tui import views, who
from poolscope.tui.data import ProcessFeed, Source
from poolscope.tui.osinfo import ProcessProbe
from poolscope.tui.snapshot import snapshot_feeds
from poolscope.tui.widgets import Chart, KeyedTable

#: Rows the events view keeps on screen.
EVENTS_SHOWN = 500
#: Leak groups the leaks view draws (a crafted stream can make thousands).
LEAK_GROUPS_SHOWN = 500

S = TypeVar("S")


class Controls(Protocol):
    """What a view reads from the app: the data source and the user's choices."""

    source: Source
    pg: PgSampler | None
    filter: views.Filter
    sort: str
    window: float
    churn: bool
    selected_pool: str | None
    selected_leak: str | None

    @property
    def probe(self) -> ProcessProbe: ...


class View(TabPane, Generic[S]):
    """One tab. ``take`` (under the data lock, quick) copies what ``draw`` (lock
    released) computes from."""

    def __init__(self, title: str, view_id: str, ctl: Controls) -> None:
        super().__init__(title, id=view_id)
        self.ctl = ctl

    def take(self) -> S:
        raise NotImplementedError

    def draw(self, snap: S, force: bool) -> None:
        raise NotImplementedError


class FeedsView(View[list[ProcessFeed]]):
    """A view computed from copies of the feeds."""

    #: Copy the checked-out connections / the event logs (only the views showing them).
    HOLDERS: ClassVar[bool] = False
    EVENTS: ClassVar[bool] = False

    def take(self) -> list[ProcessFeed]:
        return snapshot_feeds(
            self.ctl.source.feeds, holders=self.HOLDERS, events=self.EVENTS, window=self.ctl.window
        )


class PoolsView(FeedsView):
    def __init__(self, ctl: Controls) -> None:
        super().__init__("1 Pools", "pools", ctl)
        self._feeds: list[ProcessFeed] = []

    def compose(self) -> ComposeResult:
        yield KeyedTable(views.POOL_COLUMNS, id="pools-table")
        with Horizontal(id="pool-detail"):
            yield Chart(self._draw_chart, id="chart")
            with VerticalScroll(id="hists-box"):
                yield Static(id="hists")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        ctl = self.ctl
        self._feeds = snap
        table = self.query_one("#pools-table", KeyedTable)
        rows = views.pool_rows(snap, ctl.sort, ctl.filter, ctl.window)
        table.sync([(r.key, r.cells()) for r in rows])
        if ctl.selected_pool not in {r.key for r in rows}:
            ctl.selected_pool = table.selected_key or (rows[0].key if rows else None)
        row = next((r for r in rows if r.key == ctl.selected_pool), None)
        hists = views.pool_detail(row) if row is not None else Text("no pool selected", "dim")
        self.query_one("#hists", Static).update(hists)
        self.query_one("#chart", Chart).redraw(force=force)

    def _draw_chart(self, width: int, height: int) -> Text:
        # From the last copy: a resize redraws without the lock too.
        found = views.find_pool(self._feeds, self.ctl.selected_pool)
        if found is None:
            return Text("no pool selected", style="dim")
        return views.chart_text(found[1], self.ctl.window, width, height)


class HoldersView(FeedsView):
    HOLDERS = True

    def __init__(self, ctl: Controls) -> None:
        super().__init__("2 Holders", "holders", ctl)

    def compose(self) -> ComposeResult:
        yield Static(classes="note", id="holders-note")
        yield KeyedTable(views.HOLDER_COLUMNS, id="holders-table")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        rows, total = views.top_holders(snap, self.ctl.filter)
        self.query_one("#holders-table", KeyedTable).sync(rows)
        pools = sum(len(f.state.pools) for f in snap)
        waiting = sum(p.waiting for f in snap for p in f.state.pools.values())
        rest = (
            f" (the {len(rows):,} longest shown; {total - len(rows):,} more)"
            if total > len(rows)
            else ""
        )
        self.query_one("#holders-note", Static).update(
            f"{total:,} connections checked out across {pools} pools, {waiting} waiting; "
            f"longest held first{rest}"
        )


class LeaksView(FeedsView):
    def __init__(self, ctl: Controls) -> None:
        super().__init__("3 Leaks", "leaks", ctl)
        self._groups: dict[str, views.LeakGroup] = {}
        #: "N of M leak groups shown" when the list is cut, kept above any group's detail.
        self._shown_note: Text | None = None

    def compose(self) -> ComposeResult:
        yield KeyedTable(views.LEAK_COLUMNS, id="leaks-table")
        with VerticalScroll(id="leak-detail-box"):
            yield Static(id="leak-detail")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        # Groups with open leaks first: beyond the first LEAK_GROUPS_SHOWN, counted only.
        everything = views.leak_groups(snap, self.ctl.filter)
        groups = everything[:LEAK_GROUPS_SHOWN]
        self._groups = {g.key: g for g in groups}
        table = self.query_one("#leaks-table", KeyedTable)
        table.sync([(g.key, g.cells()) for g in groups])
        selected = self.ctl.selected_leak
        key = selected if selected in self._groups else None
        key = key or table.selected_key
        self._shown_note = None
        if len(everything) > len(groups):
            rest = len(everything) - len(groups)
            self._shown_note = Text.assemble(
                (f"{len(groups):,} of {len(everything):,} leak groups shown ", "bold"),
                (f"(open first, then longest held; {rest:,} more)\n\n", "dim"),
            )
        self.show_group(key)

    def show_group(self, key: str | None) -> None:
        """The detail of a highlighted group (its leaks are in the last copy), under the
        note of how many groups are shown when the list is cut."""
        detail = views.leak_detail(self._groups.get(key or "") if key else None)
        if self._shown_note is not None:
            detail = Text.assemble(self._shown_note, detail)
        self.query_one("#leak-detail", Static).update(detail)


class HeartbeatView(FeedsView):
    def __init__(self, ctl: Controls) -> None:
        super().__init__("4 Heartbeat", "heartbeat", ctl)

    def compose(self) -> ComposeResult:
        yield KeyedTable(views.HEARTBEAT_COLUMNS, id="heartbeat-table")
        with VerticalScroll(id="hb-failures-box"):
            yield Static(id="hb-failures")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        self.query_one("#heartbeat-table", KeyedTable).sync(
            views.heartbeat_rows(snap, self.ctl.filter)
        )
        self.query_one("#hb-failures", Static).update(views.heartbeat_failures_text(snap))


CONNECTIONS_NOTE = (
    "Established TCP connections the OS sees from the process to each pool's target, "
    "against the pools' own size. More sockets than pool connections means "
    "connections are held outside the pool."
)


class ConnectionsView(FeedsView):
    def __init__(self, ctl: Controls) -> None:
        super().__init__("5 Connections", "connections", ctl)

    def compose(self) -> ComposeResult:
        yield KeyedTable(views.CONN_COLUMNS, id="connections-table")
        yield Static(classes="note", id="connections-note")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        # The OS is asked after the lock is released: psutil walks /proc.
        counts: list[dict[str, int] | None] = []
        for f in snap:
            pid = f.state.process.get("pid")
            local = f.live and f.connected and f.endpoint is not None and f.endpoint.is_loopback
            if local and isinstance(pid, int):
                targets = [p.target for p in f.state.pools.values()]
                counts.append(self.ctl.probe.connections(pid, targets))
            else:
                counts.append(None)
        self.query_one("#connections-table", KeyedTable).sync(views.connection_rows(snap, counts))
        self.query_one("#connections-note", Static).update(CONNECTIONS_NOTE)


class EventsView(FeedsView):
    EVENTS = True

    def __init__(self, ctl: Controls) -> None:
        super().__init__("6 Events", "events", ctl)
        self._after: dict[int, int] = {}

    def compose(self) -> ComposeResult:
        yield KeyedTable(views.EVENT_COLUMNS, id="events-table")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        table = self.query_one("#events-table", KeyedTable)
        rows = views.recent_events(
            snap, self._after, self.ctl.filter, EVENTS_SHOWN, churn=self.ctl.churn
        )
        if rows:
            table.append(rows, keep=EVENTS_SHOWN)
            table.move_cursor(row=table.row_count - 1, animate=False)

    def reset(self) -> None:
        """Start over (a new filter, a seek, the churn toggled)."""
        self._after = {}
        self.query_one("#events-table", KeyedTable).reset()


class AdviceView(FeedsView):
    """The sizing advice, from a copy and only while shown; computed again only
    when events arrived or the filter changed."""

    def __init__(self, ctl: Controls) -> None:
        super().__init__("7 Advice", "advice", ctl)
        self._key: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="advice-box"):
            yield Static(id="advice-text")

    def draw(self, snap: list[ProcessFeed], force: bool) -> None:
        key = (repr(self.ctl.filter), tuple((f.label, f.seq, f.state.now) for f in snap))
        if key == self._key:
            return
        self._key = key
        self.query_one("#advice-text", Static).update(views.advice_text(snap, self.ctl.filter))


@dataclass
class RoutesRows:
    note: Text
    blame: list[tuple[str, tuple[Text, ...]]]
    routes: list[tuple[str, tuple[Text, ...]]]
    sites: list[tuple[str, tuple[Text, ...]]]


class RoutesView(View[RoutesRows]):
    """Who made them wait: the blame aggregates are not in the feed copies (they are
    bounded but many), so this view builds its rows holding the lock."""

    def __init__(self, ctl: Controls) -> None:
        super().__init__("8 Routes", "routes", ctl)

    def compose(self) -> ComposeResult:
        yield Static(classes="note", id="routes-note")
        yield KeyedTable(who.BLAME_COLUMNS, id="blame-table")
        yield KeyedTable(who.ROUTE_COLUMNS, id="routes-table")
        yield KeyedTable(who.SITE_BLAME_COLUMNS, id="site-blame-table")

    def take(self) -> RoutesRows:
        feeds, window, flt = self.ctl.source.feeds, self.ctl.window, self.ctl.filter
        return RoutesRows(
            note=who.waited_text(feeds, window),
            blame=who.blame_rows(feeds, "route", window, flt),
            routes=who.route_rows(feeds, flt),
            sites=who.blame_rows(feeds, "site", window, flt),
        )

    def draw(self, snap: RoutesRows, force: bool) -> None:
        self.query_one("#routes-note", Static).update(snap.note)
        self.query_one("#blame-table", KeyedTable).sync(snap.blame)
        self.query_one("#routes-table", KeyedTable).sync(snap.routes)
        self.query_one("#site-blame-table", KeyedTable).sync(snap.sites)


class ServerView(View["Snapshot | None"]):
    """``--pg``: the sampler's latest snapshot (its own copy, taken on its thread)."""

    def __init__(self, ctl: Controls) -> None:
        super().__init__("9 Server", "server", ctl)

    def compose(self) -> ComposeResult:
        yield Static(classes="note", id="server-note")
        yield KeyedTable(who.PG_COLUMNS, id="server-table")

    def take(self) -> Snapshot | None:
        return self.ctl.pg.latest if self.ctl.pg is not None else None

    def draw(self, snap: Snapshot | None, force: bool) -> None:
        self.query_one("#server-note", Static).update(who.pg_text(snap))
        self.query_one("#server-table", KeyedTable).sync(who.pg_rows(snap))


def make_views(ctl: Controls) -> dict[str, View[Any]]:
    """Every view by its id (the names keys.VIEWS and ``action_view`` use), in tab order."""
    made: list[View[Any]] = [
        PoolsView(ctl),
        HoldersView(ctl),
        LeaksView(ctl),
        HeartbeatView(ctl),
        ConnectionsView(ctl),
        EventsView(ctl),
        AdviceView(ctl),
        RoutesView(ctl),
        ServerView(ctl),
    ]
    return {v.id or "": v for v in made}
