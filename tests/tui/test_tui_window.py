"""Recent windows in the TUI: the pools table and alerts follow the last N seconds,
so an alert raised by a burst clears when the window is calm again, while the
totals since start stay in the detail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from poolscope.tui import views
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ProcessFeed, ReplaySource
from poolscope.tui.widgets import KeyedTable

T0 = 1_700_000_000.0
BURST = (30.0, 45.0)  # seconds after T0
END = 150.0


def burst_then_calm() -> list[dict[str, Any]]:
    """A pool of 4: calm traffic, a 15 s burst (everyone waits 400 ms, some time out,
    the backend refuses connections), then calm again until 150 s."""
    evs: list[dict[str, Any]] = [
        {"type": "hello", "t": T0, "protocol": 1, "pid": 7, "process": "app", "version": "0"},
        {
            "type": "pool",
            "t": T0,
            "pool": "orders",
            "kind": "poolscope",
            "config": {"min": 1, "max": 4},
            "target": "db:5432/app",
        },
    ]
    n = 0
    for sec in range(int(END)):
        t = T0 + sec
        burst = BURST[0] <= sec < BURST[1]
        for k in range(10):
            ts = t + k / 10
            n += 1
            wait = 0.4 if burst else 0.0005
            evs.append(
                {"type": "acquire", "t": ts, "pool": "orders", "conn": str(n % 4), "wait": wait}
            )
            evs.append({"type": "release", "t": ts + 0.01, "pool": "orders", "conn": str(n % 4)})
            evs[-1]["hold"] = 0.01
        if burst:
            evs.append({"type": "timeout", "t": t + 0.5, "pool": "orders", "wait": 1.0})
            evs[-1]["error"] = "no connection in 1s"
            evs.append({"type": "connect_error", "t": t + 0.6, "pool": "orders"})
            evs[-1]["error"] = "refused"
        evs.append(
            {
                "type": "state",
                "t": t + 0.9,
                "pool": "orders",
                "size": 4,
                "idle": 0 if burst else 3,
                "in_use": 4 if burst else 1,
                "waiting": 6 if burst else 0,
                "max": 4,
                "min": 1,
            }
        )
    return evs


def feed_until(evs: list[dict[str, Any]], until: float) -> ProcessFeed:
    feed = ProcessFeed("rec", live=False)
    for ev in evs:
        if ev["t"] > T0 + until:
            break
        feed.apply(ev, ev["t"])
    return feed


@pytest.mark.fast
def test_a_burst_raises_alerts_that_clear_when_the_window_is_calm() -> None:
    evs = burst_then_calm()
    during = views.pool_rows([feed_until(evs, 44.0)])[0]
    assert any(a.startswith("p99 wait") for a in during.alerts), during.alerts
    assert any(a.startswith("acquire failures") for a in during.alerts), during.alerts
    assert during.counts == (14, 0, 14)  # timeouts, acquire errors, connect errors apart
    assert during.p99_wait >= 0.1

    # 60 s after the burst the 60 s window is calm: the alerts are gone ...
    after_feed = feed_until(evs, END)
    after = views.pool_rows([after_feed])[0]
    assert not [a for a in after.alerts if a.startswith(("p99 wait", "acquire failures"))]
    assert after.counts == (0, 0, 0)
    assert after.p99_wait < 0.01
    assert after.acq_rate == pytest.approx(10.0, rel=0.05)
    # ... but a 5-minute window still holds the burst,
    wide = views.pool_rows([after_feed], window=300.0)[0]
    assert any(a.startswith("p99 wait") for a in wide.alerts)
    assert wide.counts == (15, 0, 15)
    # and the totals since start stay in the detail.
    pool = after_feed.state.pools["orders"]
    assert (pool.timeouts, pool.acquire_errors, pool.connect_errors) == (15, 0, 15)
    assert pool.wait.p99 >= 0.1  # the all-time histogram keeps the burst
    detail = views.pool_detail(after).plain
    assert "since start: acquires 1500" in detail
    assert "timeouts 15, acquire errors 0, connects 0, connect errors 15" in detail


@pytest.mark.fast
def test_window_memory_is_bounded_by_its_slots_not_the_time_span() -> None:
    feed = ProcessFeed("rec", live=False)
    # One event an hour for ~11 years of data time, then a million seconds later.
    for i in range(100_000):
        feed.apply({"type": "timeout", "t": 1.0 + i * 3600.0, "pool": "p", "wait": 1.0}, 0.0)
    win = feed.state.pools["p"].recent
    assert win is not None
    assert len(win.slots) <= 1  # older slots fall out of the 15-minute ring
    for _ in range(5_000):  # many events in one second: one slot
        feed.apply({"type": "timeout", "t": 4e8, "pool": "p", "wait": 1.0}, 0.0)
    assert len(win.slots) == 1
    assert feed.state.pools["p"].window_stats(60.0).timeouts == 5_000


def _write(path: Path, evs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(ev) + "\n" for ev in evs))
    return path


@pytest.mark.fast
async def test_pilot_alert_clears_after_the_burst(tmp_path: Path) -> None:
    src = ReplaySource(_write(tmp_path / "burst.ndjson", burst_then_calm()), start=44.0)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        detail = str(app.query_one("#hists", Static).render())
        assert "⚠ p99 wait" in detail
        table = app.query_one("#pools-table", KeyedTable)
        cols = list(views.POOL_COLUMNS)
        row = table.get_row("0:orders")
        assert str(row[cols.index("timeouts")]) == "14"
        assert str(row[cols.index("conn err")]) == "14"
        src.seek_to(T0 + END)
        app.refresh_screen()
        await pilot.pause()
        detail = str(app.query_one("#hists", Static).render())
        assert "⚠ p99 wait" not in detail
        assert "⚠ acquire failures" not in detail
        assert "timeouts 15" in detail  # the totals
        row = table.get_row("0:orders")
        assert str(row[cols.index("timeouts")]) == "0"
        # A wider window (w: 60 s -> 5 min) brings the burst back into the table.
        await pilot.press("w")
        await pilot.pause()
        assert app.window == 300.0
        assert "⚠ p99 wait" in str(app.query_one("#hists", Static).render())


@pytest.mark.fast
@pytest.mark.parametrize("command", ["attach", "replay"])
def test_window_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from poolscope.cli import build_parser, main

    target = ":9" if command == "attach" else "rec.ndjson"
    args = build_parser(command).parse_args([target, "--window", "30"])
    assert args.window == 30.0
    assert build_parser(command).parse_args([target]).window == 60.0
    assert main([command, target, "--window", "901"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at most 900" in err, err
