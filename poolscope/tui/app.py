"""The poolscope TUI (Textual): live on attached processes, or over a recording.

Data and screen are decoupled: a source folds events continuously (a background
thread live, the data's own clock in replay) and this app redraws on a timer
(1 s by default; ``+``/``-``), so a burst of events costs one redraw. Each view
is a widget (:mod:`poolscope.tui.panes`) and only the visible one is asked: it
copies what it shows holding the data lock, then computes and draws from the
copy with the lock released. Tables are updated row by row by key; the chart
redraws at most once a second and only when it is on screen. Pause holds the
screen still while folding goes on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent

from poolscope.endpoint import Endpoint
from poolscope.model import PoolState
from poolscope.pgview import PgSampler, PgView
from poolscope.textsafe import visible
from poolscope.tui import views
from poolscope.tui.data import LOG_KEPT, LiveSource, ReplaySource, Source
from poolscope.tui.keys import KEYS, REFRESH_STEPS, VIEWS, WINDOWS, help_lines
from poolscope.tui.osinfo import ProcessProbe, ProcInfo
from poolscope.tui.panes import (
    EVENTS_SHOWN,
    LEAK_GROUPS_SHOWN,
    EventsView,
    LeaksView,
    View,
    make_views,
)
from poolscope.tui.shots import svg_to_png
from poolscope.tui.widgets import KeyedTable
from poolscope.window import DEFAULT_WINDOW

#: Refreshes whose render time, lock time and lag the app keeps.
MEASURES_KEPT = 10_000

__all__ = ["EVENTS_SHOWN", "LEAK_GROUPS_SHOWN", "HelpScreen", "PoolscopeApp", "run_tui"]


def _bindings() -> list[BindingType]:
    return [
        Binding(
            k.keys,
            k.action,
            k.short or k.help,
            show=k.footer,
            key_display=k.shown,
            priority=k.priority,
        )
        for k in KEYS
    ]


class HelpScreen(ModalScreen[None]):
    """``?``: every key, from the same table the bindings come from."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "close"),
    ]

    def __init__(self, replay: bool) -> None:
        super().__init__()
        self._replay = replay

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("poolscope keys\n", style="bold")
        for shown, desc in help_lines(self._replay):
            text.append(f"{shown:>10}  ", style="bold cyan")
            text.append(f"{desc}\n")
        text.append("\nViews: ", style="bold")
        text.append("  ".join(f"{i} {title}" for i, (_, title) in enumerate(VIEWS, start=1)))
        text.append("\nThe mouse works too: click tabs, rows and column headers.", style="dim")
        yield Static(text, id="help")


class PoolscopeApp(App[None]):
    CSS_PATH = "poolscope.tcss"
    BINDINGS: ClassVar[list[BindingType]] = _bindings()
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        source: Source,
        *,
        title: str = "poolscope",
        refresh_interval: float = 1.0,
        screenshot_dir: str | Path | None = None,
        window: float = DEFAULT_WINDOW,
        pg: PgView | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        #: --pg: the server's own view, sampled once a second on its own thread.
        self.pg = (
            PgSampler(pg, self._pg_states, self._pg_pids, lock=source.lock)
            if pg is not None
            else None
        )
        self.title = title
        self.refresh_interval = refresh_interval
        self.screenshot_dir = Path(
            screenshot_dir or os.environ.get("POOLSCOPE_SCREENSHOT_DIR") or "."
        )
        self.paused = False
        self.sort = views.SORTS[0]
        #: Seconds of data the pools table, its alerts and the chart cover (``w``).
        self.window = window
        #: The events view shows the incident log; ``e`` adds the acquire/release churn.
        self.churn = False
        #: One line saying why the TUI stopped on an unexpected error ("" if it did not).
        self.crash = ""
        self.filter = views.Filter()
        self.selected_pool: str | None = None
        self.selected_leak: str | None = None
        self._timer: Timer | None = None
        self._last_tick = time.monotonic()
        self._probe = ProcessProbe()
        #: Each view is a widget that draws itself; a refresh asks the visible one.
        self.views: dict[str, View[Any]] = make_views(self)
        # Measured by the app itself (bench/tui.py and bench/tui_lock.py read these); the
        # last MEASURES_KEPT refreshes, so a TUI left open for days stays bounded.
        self.refreshes = 0
        self.render_seconds: deque[float] = deque(maxlen=MEASURES_KEPT)
        #: Seconds each refresh held the data lock (the copy, not the drawing).
        self.lock_seconds: deque[float] = deque(maxlen=MEASURES_KEPT)
        self.lags: deque[float] = deque(maxlen=MEASURES_KEPT)
        self.last_screenshot: tuple[Path, Path | None] | None = None

    # -- layout ------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with TabbedContent(initial="pools", id="tabs"):
            yield from self.views.values()
        yield Input(
            placeholder="filter: words, type:acquire, pool:orders (escape clears)", id="filter"
        )
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._main.query_one("#filter", Input).disabled = True  # no focus while hidden
        self._focus_view()
        self.source.start()
        if self.pg is not None:
            self.pg.start()
        self._start_timer()
        self.call_after_refresh(self.refresh_screen, True)

    def on_unmount(self) -> None:
        self.source.stop()
        if self.pg is not None:
            self.pg.stop()

    @property
    def probe(self) -> ProcessProbe:
        return self._probe

    def _pg_states(self) -> list[tuple[str, PoolState]]:
        return [(f.label, f.state) for f in self.source.feeds]

    def _pg_pids(self) -> dict[str, int]:
        """OS pids of the attached local processes (to find connections no pool knows)."""
        out: dict[str, int] = {}
        for f in self.source.feeds:
            pid = f.state.process.get("pid")
            if (
                f.live
                and f.endpoint is not None
                and f.endpoint.is_loopback
                and isinstance(pid, int)
            ):
                out[f.label] = pid
        return out

    # -- an unexpected error ---------------------------------------------------------
    def _handle_exception(self, error: Exception) -> None:
        # Textual would print a traceback with the frames' locals: events from the
        # stream, untrusted and maybe secret. One line instead, and exit code 1.
        self.crash = visible(
            f"poolscope: the TUI stopped on an internal error: {type(error).__name__}: {error}"
        )[:300]
        self._return_code = 1
        if self._exception is None:  # Pilot re-raises it in tests
            self._exception = error
            self._exception_event.set()
        self._close_messages_no_wait()

    def run_tui(self, *, headless: bool = False) -> int:
        """``run()``, then the exit code: 0, or 1 with one line on stderr after a crash."""
        self.run(headless=headless)
        if self.crash:
            print(self.crash, file=sys.stderr)
            return 1
        return self.return_code or 0

    def _start_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.refresh_interval, self._tick)

    def _tick(self) -> None:
        if not self.screen_stack:
            return  # shutting down
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        self.source.tick(dt)
        if self.paused and self.source.live:
            self._update_status()
            return
        self.refresh_screen()

    @property
    def _main(self) -> Screen[object]:
        # The views live on the first screen; help may be on top of it.
        return self.screen_stack[0] if self.screen_stack else self.screen

    @property
    def active_view(self) -> str:
        return self._main.query_one(TabbedContent).active or "pools"

    # -- drawing -------------------------------------------------------------------
    def refresh_screen(self, force_chart: bool = False) -> None:
        """Compute the visible view from the folded state and update its widgets."""
        try:
            self._refresh_screen(force_chart)
        except NoMatches:
            pass  # widgets not mounted yet, or already gone at exit: next tick

    def _refresh_screen(self, force_chart: bool) -> None:
        started = time.perf_counter()
        view = self.views.get(self.active_view)
        feeds = self.source.feeds
        infos = [self._proc_info(i) for i in range(len(feeds))]
        # Holding the lock: the header's few lines and the visible view's copy only.
        with self.source.lock:
            locked = time.perf_counter()
            clock = self.source.clock()
            replay = self.source.status() if isinstance(self.source, ReplaySource) else ""
            header = Text("\n").join(
                views.header_line(f, f.events_per_second(clock), infos[i], replay)
                for i, f in enumerate(feeds[:4])
            )
            if len(feeds) > 4:
                header.append(f"\n… and {len(feeds) - 4} more processes", style="dim")
            snap = view.take() if view is not None else None
            newest = max((f.state.now for f in feeds), default=0.0)
            self.lock_seconds.append(time.perf_counter() - locked)
        if view is not None:
            view.draw(snap, force_chart)
        self._main.query_one("#header", Static).update(header)
        self._update_status()
        self.refreshes += 1
        self.render_seconds.append(time.perf_counter() - started)
        if self.source.live and newest:
            self.lags.append(max(0.0, time.time() - newest))

    def _proc_info(self, i: int) -> ProcInfo | None:
        feed = self.source.feeds[i]
        pid = feed.state.process.get("pid")
        if not feed.live or not feed.connected or not isinstance(pid, int):
            return None
        if feed.endpoint is None or not feed.endpoint.is_loopback:
            return None
        return self._probe.info(pid)

    def _reset_events(self) -> None:
        events = self.views["events"]
        assert isinstance(events, EventsView)
        events.reset()

    def _update_status(self) -> None:
        parts = Text()
        if self.paused and self.source.live:
            parts.append(" PAUSED ", style="bold reverse yellow")
            parts.append("  ")
        if isinstance(self.source, ReplaySource):
            parts.append(self.source.status(), style="bold")
            parts.append("  ")
            note = self.source.stopped_reading
            if note:
                parts.append(note + "  ", style="bold red")
        parts.append(f"refresh {self.refresh_interval:g}s  sort {self.sort}  ")
        parts.append(f"window {views.fmt_dur(self.window)}")
        if self.filter:
            parts.append("  filter ", style="dim")
            parts.append(self._main.query_one("#filter", Input).value, style="bold")
        self._main.query_one("#status", Static).update(parts)

    # -- events from widgets ---------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if event.data_table.id == "pools-table" and key != self.selected_pool:
            self.selected_pool = key
            if not self.paused or not self.source.live:
                self.refresh_screen(force_chart=True)
        elif event.data_table.id == "leaks-table" and key != self.selected_leak:
            self.selected_leak = key
            leaks = self.views["leaks"]
            assert isinstance(leaks, LeaksView)
            leaks.show_group(key)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        # Clicking a pools column header sorts by it (where that column sorts).
        label = str(event.column_key.value)
        if event.data_table.id == "pools-table":
            self.sort = label if label in views.SORTS else "name"
            self.refresh_screen()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_screen(force_chart=True)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = views.Filter.parse(event.value)
        self._reset_events()
        self.refresh_screen(force_chart=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._focus_view()

    # -- actions -----------------------------------------------------------------
    def action_help(self) -> None:
        self.push_screen(HelpScreen(isinstance(self.source, ReplaySource)))

    def action_pause(self) -> None:
        if isinstance(self.source, ReplaySource):
            self.source.toggle()
            self._last_tick = time.monotonic()
        else:
            self.paused = not self.paused
        self.refresh_screen() if not self.paused else self._update_status()

    def action_filter(self) -> None:
        box = self._main.query_one("#filter", Input)
        box.add_class("shown")
        box.disabled = False
        box.focus()

    def action_clear(self) -> None:
        box = self._main.query_one("#filter", Input)
        had = bool(box.value)
        box.remove_class("shown")
        box.disabled = True
        if had:
            box.value = ""  # fires Input.Changed, which refreshes
        self._focus_view()

    def _focus_view(self) -> None:
        view = self.active_view
        try:
            self._main.query_one(f"#{view}-table", KeyedTable).focus()
        except Exception:
            self.set_focus(None)

    def action_view(self, view: str) -> None:
        self._main.query_one(TabbedContent).active = view
        self._focus_view()

    def _move_view(self, step: int) -> None:
        ids = [v for v, _ in VIEWS]
        i = ids.index(self.active_view) if self.active_view in ids else 0
        self.action_view(ids[(i + step) % len(ids)])

    def action_next_view(self) -> None:
        self._move_view(1)

    def action_prev_view(self) -> None:
        self._move_view(-1)

    def action_sort(self) -> None:
        self.sort = views.SORTS[(views.SORTS.index(self.sort) + 1) % len(views.SORTS)]
        self.refresh_screen()

    def action_window(self) -> None:
        self.window = next((w for w in WINDOWS if w > self.window), WINDOWS[0])
        self.refresh_screen(force_chart=True)

    def action_churn(self) -> None:
        self.churn = not self.churn
        self._reset_events()
        self.notify(
            f"events: every event, acquires and releases too (the last {LOG_KEPT:,})"
            if self.churn
            else "events: the incident log only"
        )
        self.refresh_screen()

    def action_refresh(self, direction: int) -> None:
        steps = REFRESH_STEPS
        i = min(range(len(steps)), key=lambda j: abs(steps[j] - self.refresh_interval))
        self.refresh_interval = steps[max(0, min(len(steps) - 1, i + direction))]
        self._start_timer()
        self._update_status()

    def action_save_screenshot(self) -> None:
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        svg = Path(self.save_screenshot(path=str(self.screenshot_dir)))
        png = svg_to_png(svg)
        self.last_screenshot = (svg, png)
        if png is not None:
            self.notify(f"saved {svg} and {png.name}")
        else:
            self.notify(f"saved {svg} (SVG only: no PNG converter; pip install cairosvg)")

    def _replay(self) -> ReplaySource | None:
        if isinstance(self.source, ReplaySource):
            return self.source
        self.notify("replay controls work in `poolscope replay` only", severity="warning")
        return None

    def action_step(self) -> None:
        src = self._replay()
        if src is not None:
            src.step()
            self.refresh_screen(force_chart=True)

    def action_seek(self, delta: float) -> None:
        src = self._replay()
        if src is not None:
            src.seek(delta)
            self._reset_events()
            self.refresh_screen(force_chart=True)

    def action_speed(self, factor: float) -> None:
        src = self._replay()
        if src is not None:
            src.change_speed(factor)
            self._update_status()


def run_tui(
    endpoints: list[Endpoint],
    *,
    title: str = "poolscope",
    token: str | None = None,
    window: float = DEFAULT_WINDOW,
    pg: PgView | None = None,
) -> int:
    """Attach the TUI to live endpoints until the user quits; the exit code."""
    return PoolscopeApp(
        LiveSource(endpoints, token=token), title=title, window=window, pg=pg
    ).run_tui()
