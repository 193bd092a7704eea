"""The TUI's views 8 (Routes) and 9 (Server), driven with Pilot: over a recording
with tagged acquires made here, and with a real --pg sampler on the test cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Static, TabbedContent

from poolscope.pgview import PgView
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.widgets import KeyedTable

SIZE = (140, 40)


def recording(path: Path) -> Path:
    """Two routes on a pool of one: /slow holds [1, 4]; /fast waits [2, 4] for it."""
    lines = [
        {"type": "hello", "t": 0.5, "protocol": 1, "pid": 1, "process": "app", "version": "x"},
        {"type": "pool", "t": 0.5, "pool": "db", "kind": "asyncpg",
         "config": {"min": 0, "max": 1}, "target": "127.0.0.1:5432/app"},
        {"type": "connect", "t": 0.9, "pool": "db", "conn": "c1", "duration": 0.01,
         "backend_pid": 4242},
        {"type": "tags", "t": 1.0, "id": 1, "labels": {"route": "GET /slow/{id}"}},
        {"type": "tags", "t": 1.0, "id": 2, "labels": {"route": "GET /fast"}},
        {"type": "acquire", "t": 1.0, "pool": "db", "conn": "c1", "wait": 0.0, "site": None,
         "task": "GET /slow/{id}", "tags": 1},
        {"type": "release", "t": 4.0, "pool": "db", "conn": "c1", "hold": 3.0},
        {"type": "acquire", "t": 4.0, "pool": "db", "conn": "c1", "wait": 2.0, "site": None,
         "task": "GET /fast", "tags": 2},
        {"type": "state", "t": 4.5, "pool": "db", "size": 1, "idle": 0, "in_use": 1,
         "waiting": 0, "max": 1, "min": 0},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.fast
async def test_routes_view_names_who_made_them_wait(tmp_path: Path) -> None:
    src = ReplaySource(recording(tmp_path / "r.ndjson"), start=10)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "routes"
        app.refresh_screen()
        blame = app.query_one("#blame-table", KeyedTable)
        first = blame.get_row_at(0)
        assert str(first[0]) == "GET /slow/{id}" and str(first[2]) == "100%"
        routes = app.query_one("#routes-table", KeyedTable)
        names = {str(routes.get_row_at(i)[0]) for i in range(routes.row_count)}
        assert names == {"GET /slow/{id}", "GET /fast"}
        note = str(app.query_one("#routes-note", Static).render())
        assert "someone waited 2s since start" in note
        await pilot.press("2")
        await pilot.pause()
        app.refresh_screen()
        holders = app.query_one("#holders-table", KeyedTable)
        row = [str(c) for c in holders.get_row_at(0)]
        assert "GET /fast" in row and "4242" in row
        await pilot.press("9")
        await pilot.pause()
        app.refresh_screen()
        assert "--pg DSN" in str(app.query_one("#server-note", Static).render())


@pytest.mark.pg
async def test_server_view_samples_the_real_server(tmp_path: Path, pg_dsn: str) -> None:
    src = ReplaySource(recording(tmp_path / "r.ndjson"), start=10)
    src.playing = False
    app = PoolscopeApp(src, pg=PgView(pg_dsn))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        assert app.pg is not None
        for _ in range(100):
            await pilot.pause(0.1)
            if app.pg.latest is not None:
                break
        app.refresh_screen()
        note = str(app.query_one("#server-note", Static).render())
        assert "max_connections 100" in note and "pg_terminate_backend" in note
        rows = app.query_one("#server-table", KeyedTable)
        # The recording's backend 4242 is not on this server: shown as gone.
        assert rows.row_count == 1 and "(gone)" in [str(c) for c in rows.get_row_at(0)]
