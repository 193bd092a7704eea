"""The TUI against real headless demo processes: attach, reconnect, several processes,
and the attach/ps/replay commands' one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from textual.widgets import Static

from poolscope.endpoint import Endpoint
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import LiveSource
from poolscope.tui.widgets import KeyedTable
from tests.fixtures.tui import HeadlessDemo, free_port

SIZE = (120, 36)


async def wait_for(pilot, cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not met in time")


def header(app: PoolscopeApp) -> str:
    return str(app.query_one("#header", Static).render())


async def test_attach_live_then_reconnect(headless_demo: HeadlessDemo) -> None:
    ep = Endpoint("127.0.0.1", headless_demo.port)
    app = PoolscopeApp(LiveSource([ep], backoff_cap=0.3), refresh_interval=0.25)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#pools-table", KeyedTable)
        await wait_for(pilot, lambda: set(table.row_keys_in_order) == {"0:orders", "0:reports"})
        await wait_for(
            pilot, lambda: "connected" in header(app) and f"pid {headless_demo.pid}" in header(app)
        )
        feed = app.source.feeds[0]
        await wait_for(pilot, lambda: len(feed.state.pools["orders"].series) >= 2)
        seen = feed.state.pools["orders"].acquires
        old_pid = headless_demo.pid
        # Pause: the screen holds still while the stream keeps being folded.
        await pilot.press("space")
        frozen = header(app)
        seq = feed.seq
        await pilot.pause(0.8)
        assert (
            feed.seq > seq
            and header(app) == frozen
            and "PAUSED" in str(app.query_one("#status", Static).render())
        )
        await pilot.press("space")
        # The application dies: the TUI says so and keeps what it saw.
        killed_at = time.time()
        headless_demo.kill()
        await wait_for(pilot, lambda: "disconnected since" in header(app))
        assert set(table.row_keys_in_order) == {"0:orders", "0:reports"}
        assert feed.state.pools["orders"].acquires >= seen
        # It comes back on the same port: reconnect with backoff, new pid, history kept.
        headless_demo.start()
        await wait_for(
            pilot,
            lambda: (
                f"pid {headless_demo.pid}" in header(app)
                and "connected" in header(app)
                and "disconnected" not in header(app)
            ),
            15,
        )
        assert headless_demo.pid != old_pid
        series = feed.state.pools["orders"].series
        await wait_for(pilot, lambda: series[-1].t > killed_at)
        assert sum(1 for s in series if s.t < killed_at) >= 2  # history from before kept


async def test_attach_two_processes(headless_demo: HeadlessDemo, tmp_path: Path) -> None:
    other = HeadlessDemo(free_port(), tmp_path / "reg2", ["--no-trouble"])
    other.start()
    try:
        eps = [Endpoint("127.0.0.1", headless_demo.port), Endpoint("127.0.0.1", other.port)]
        app = PoolscopeApp(LiveSource(eps), refresh_interval=0.25)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one("#pools-table", KeyedTable)
            await wait_for(pilot, lambda: len(table.row_keys_in_order) == 4)
            labels = {table.get_row(k)[0].plain for k in table.row_keys_in_order}
            assert f"orders@{headless_demo.pid}" in labels and f"orders@{other.pid}" in labels
            await pilot.press("5")
            conns = app.query_one("#connections-table", KeyedTable)
            await wait_for(pilot, lambda: conns.row_count == 4)
            # psutil sees the live local process's sockets to the demo database.
            checks = [conns.get_row(k)[3].plain for k in conns.row_keys_in_order]
            assert all(c.isdigit() for c in checks), checks
    finally:
        other.kill()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolscope", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_ps_and_attach_discovery(headless_demo: HeadlessDemo, tmp_path: Path) -> None:
    env = {"POOLSCOPE_RUNTIME_DIR": str(headless_demo.runtime_dir)}
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline and not rows:
        rows = json.loads(cli("ps", "--json", env=env).stdout)
        time.sleep(0.1)
    assert rows and rows[0]["pid"] == headless_demo.pid
    assert rows[0]["endpoint"] == f"127.0.0.1:{headless_demo.port}"
    assert set(rows[0]["pools"]) >= {"orders"}  # type: ignore[arg-type]
    table = cli("ps", env=env).stdout
    assert str(headless_demo.pid) in table and "ENDPOINT" in table
    empty = cli("attach", env={"POOLSCOPE_RUNTIME_DIR": str(tmp_path / "none")})
    assert empty.returncode == 1 and "no instrumented process found" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1


def test_command_errors_are_one_line(tmp_path: Path) -> None:
    r = cli("replay", str(tmp_path / "missing.ndjson"))
    assert (
        r.returncode == 1
        and r.stderr.strip() == f"poolscope: replay: {tmp_path / 'missing.ndjson'}: no such file"
    )
    junk = tmp_path / "junk.ndjson"
    junk.write_text("not json\n")
    r = cli("replay", str(junk))
    assert (
        r.returncode == 1 and "no readable events" in r.stderr and len(r.stderr.splitlines()) == 1
    )
    r = cli("attach", "nonsense")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    # Nothing listening there: one line and exit 1, as `record` does (not a TUI that
    # waits for ever; `--wait` asks for that).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("attach", f":{port}")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot attach" in r.stderr and "connection refused" in r.stderr
