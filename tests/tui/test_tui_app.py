"""Pilot tests of the TUI over the committed recording: keys, views, selection, sort,
filter, replay controls, help, screenshots, and rows updated by key."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, Static, TabbedContent

from poolscope.tui import views
from poolscope.tui.app import HelpScreen, PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.keys import KEYS
from poolscope.tui.widgets import Chart, KeyedTable

SIZE = (120, 36)


def make_app(path: Path, start: float = 50.0, **kw: object) -> PoolscopeApp:
    src = ReplaySource(path, start=start)
    src.playing = False
    return PoolscopeApp(src, **kw)  # type: ignore[arg-type]


def static_text(app: PoolscopeApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def test_views_by_number_and_tab(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "pools"
        for key, view in zip(
            "234567891",
            [
                "holders",
                "leaks",
                "heartbeat",
                "connections",
                "events",
                "advice",
                "routes",
                "server",
                "pools",
            ],
            strict=True,
        ):
            await pilot.press(key)
            assert tabs.active == view
        await pilot.press("tab")
        assert tabs.active == "holders"
        await pilot.press("shift+tab", "shift+tab")
        assert tabs.active == "server"
        events = app.query_one("#events-table", KeyedTable)
        await pilot.pause()
        # The events view is the incident log: no acquire/release churn ...
        incidents = events.row_count
        assert incidents >= 1
        types = {str(events.get_row_at(i)[1]) for i in range(incidents)}
        assert types and not types & {"acquire", "release", "state"}, types
        # ... until `e` shows every event.
        await pilot.press("6", "e")
        await pilot.pause()
        assert app.churn
        assert events.row_count > 100
        await pilot.press("7")
        # The mouse works: a click on a tab, then on a pools column header to sort.
        await pilot.click("#--content-tab-leaks")
        assert tabs.active == "leaks"
        await pilot.click("#--content-tab-pools")
        assert tabs.active == "pools"
        table = app.query_one("#pools-table", KeyedTable)
        cols = list(table.columns.values())
        x = sum(c.get_render_width(table) for c in cols[: views.POOL_COLUMNS.index("p99 wait")])
        await pilot.click("#pools-table", offset=(x + 2, 0))
        assert app.sort == "p99 wait"
        assert table.row_keys_in_order == ["0:reports", "0:orders"]


async def test_selection_moves_chart_and_histograms(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.selected_pool == "0:orders"
        draws = app.query_one("#chart", Chart).draws
        assert draws >= 1
        assert "orders utilisation" in str(app.query_one("#chart", Chart).render())
        await pilot.press("down")
        await pilot.pause()
        assert app.selected_pool == "0:reports"
        assert "reports" in static_text(app, "#hists")
        assert "reports utilisation" in str(app.query_one("#chart", Chart).render())
        # The chart is not redrawn when it is not visible.
        await pilot.press("6")
        before = app.query_one("#chart", Chart).draws
        app.refresh_screen(force_chart=True)
        assert app.query_one("#chart", Chart).draws == before


async def test_sort_reorders_rows_in_place(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#pools-table", KeyedTable)
        await pilot.pause()
        assert table.row_keys_in_order == ["0:orders", "0:reports"]
        keys_before = set(table.rows)
        await pilot.press("s", "s")  # name -> util -> p99 wait
        assert app.sort == "p99 wait"
        assert table.row_keys_in_order == ["0:reports", "0:orders"]
        assert [table.get_row_at(i)[0].plain for i in range(2)] == ["reports", "orders"]
        assert set(table.rows) == keys_before  # same rows, reordered, not rebuilt


async def test_rows_update_by_key_without_rebuilding(session_path: Path) -> None:
    app = make_app(session_path, start=10)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#pools-table", KeyedTable)
        await pilot.pause()
        calls: list[str] = []
        orig_clear, orig_add = table.clear, table.add_row
        table.clear = lambda *a, **k: (calls.append("clear"), orig_clear(*a, **k))[1]  # type: ignore[method-assign]
        table.add_row = lambda *a, **k: (calls.append("add"), orig_add(*a, **k))[1]  # type: ignore[method-assign]
        rate = views.POOL_COLUMNS.index("acq/s")
        acquires_before = table.get_row("0:orders")[rate]
        await pilot.press("right_square_bracket")  # seek +10 s
        await pilot.pause()
        assert calls == []
        assert table.get_row("0:orders")[rate] is not acquires_before
        assert app.source.clock() - app.source.t0 == 20  # type: ignore[attr-defined]


async def test_filter_and_escape(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6", "slash")
        box = app.query_one("#filter", Input)
        assert box.has_focus
        await pilot.press(*"type:heartbeat", "enter")
        await pilot.pause()
        events = app.query_one("#events-table", KeyedTable)
        types = {events.get_row_at(i)[1].plain for i in range(events.row_count)}
        assert types == {"heartbeat"}
        assert "filter type:heartbeat" in static_text(app, "#status")
        await pilot.press("1")
        assert app.query_one("#pools-table", KeyedTable).row_count == 2  # type: only filters events
        await pilot.press("escape", "slash", *"pool:rep", "enter")
        await pilot.pause()
        assert app.query_one("#pools-table", KeyedTable).row_keys_in_order == ["0:reports"]
        await pilot.press("escape")
        await pilot.pause()
        assert not box.value and not app.filter
        assert app.query_one("#pools-table", KeyedTable).row_count == 2


async def test_replay_controls(session_path: Path) -> None:
    app = make_app(session_path, start=0, refresh_interval=0.25)
    src = app.source
    assert isinstance(src, ReplaySource)
    async with app.run_test(size=SIZE) as pilot:
        assert not src.playing
        await pilot.press("full_stop")
        assert src.pos - src.t0 == 1
        await pilot.press("right_square_bracket", "right_curly_bracket")
        assert src.pos - src.t0 == 71
        await pilot.press("left_square_bracket")
        assert src.pos - src.t0 == 61
        await pilot.press("greater_than_sign", "greater_than_sign")
        assert src.speed == 4
        await pilot.press("less_than_sign")
        assert src.speed == 2
        await pilot.press("space")
        assert src.playing
        await pilot.pause(0.6)
        await pilot.press("space")
        assert not src.playing
        assert src.pos - src.t0 > 61  # it played
        assert "paused 2x" in static_text(app, "#status")


async def test_refresh_interval_keys(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("plus")
        assert app.refresh_interval == 0.5
        await pilot.press("minus", "minus")
        assert app.refresh_interval == 2.0
        assert "refresh 2s" in static_text(app, "#status")
        assert app.window == 60.0  # the default window of the table and alerts
        await pilot.press("w")
        assert app.window == 300.0
        await pilot.press("w", "w")
        assert app.window == 60.0


async def test_help_lists_every_key(session_path: Path) -> None:
    app = make_app(session_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help", Static).render())
        for k in KEYS:
            assert k.help in text, k.help
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_ctrl_s_saves_svg_and_png(session_path: Path, tmp_path: Path) -> None:
    app = make_app(session_path, screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.last_screenshot is not None
        svg, png = app.last_screenshot
        assert svg.exists() and svg.read_text().startswith("<svg")
        assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_chart_redraws_at_most_once_a_second(session_path: Path) -> None:
    app = make_app(session_path, start=10, refresh_interval=0.25)
    assert isinstance(app.source, ReplaySource)
    app.source.playing = True
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        chart = app.query_one("#chart", Chart)
        before, refreshes = chart.draws, app.refreshes
        await pilot.pause(2.0)
        assert app.refreshes - refreshes >= 5  # the screen refreshed every 0.25 s
        assert chart.draws - before <= 3  # the chart did not


async def test_replay_of_truncated_file_says_where_it_stopped(
    session_path: Path, tmp_path: Path
) -> None:
    data = session_path.read_bytes()
    cut = tmp_path / "cut.ndjson"
    cut.write_bytes(data[: len(data) // 3 - 5])
    app = make_app(cut, start=5)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        status = static_text(app, "#status")
        assert "truncated at line" in status
        assert app.query_one("#pools-table", KeyedTable).row_count == 2  # what it could read


async def test_advice_view_sizes_each_pool(session_path: Path) -> None:
    """The sizing advisor's panel (issue 7): per pool, a recommendation from the folded
    state with predicted against measured p99 wait, and warnings when the model's
    assumptions fail. ``pool:`` in the filter narrows it."""
    app = make_app(session_path, start=85.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await pilot.pause()
        text = static_text(app, "#advice-text")
        assert "orders: shrink — recommended size 6 (now 8)" in text
        assert "reports: grow — recommended size 4 (now 3)" in text
        assert "p99 wait: measured 1.96s" in text
        assert "Heavy-tailed hold times" in text  # a warning, not silence
        await pilot.press("slash", *"pool:reports", "enter")
        await pilot.pause()
        text = static_text(app, "#advice-text")
        assert "reports:" in text and "orders:" not in text
