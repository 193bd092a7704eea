"""Pure TUI views and data sources over the committed recording: no terminal needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolscope.client import read_events
from poolscope.tui import views
from poolscope.tui.data import ProcessFeed, ReplaySource
from poolscope.tui.keys import KEYS, help_lines

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses


def feed_at(path: Path, seconds: float) -> ReplaySource:
    src = ReplaySource(path, start=seconds)
    src.playing = False
    return src


def test_fmt_dur_picks_readable_units() -> None:
    assert views.fmt_dur(0.00085) == "850µs"
    assert views.fmt_dur(0.0123) == "12.3ms"
    assert views.fmt_dur(1.2) == "1.2s"
    assert views.fmt_dur(125) == "2min05s"
    assert views.fmt_dur(0.00105) == "1.05ms"
    assert views.fmt_dur(None) == "-"


def test_filter_parses_fields_and_words() -> None:
    f = views.Filter.parse("type:acquire pool=orders task-7")
    assert f.types == {"acquire"} and f.pools == {"orders"} and f.words == ["task-7"]
    assert f.match("acquire orders conn=1 task=Task-7", pool="orders", etype="acquire")
    assert not f.match("acquire orders conn=1 task=Task-8", pool="orders", etype="acquire")
    assert not f.match("x task-7", pool="reports", etype="acquire")
    assert not views.Filter.parse("  ")


def test_pool_rows_alerts_and_sort(session_path: Path) -> None:
    src = feed_at(session_path, 50)
    rows = views.pool_rows(src.feeds, "name")
    assert [r.label for r in rows] == ["orders", "reports"]
    orders, reports = rows
    # 3 timeouts out of ~150 acquires (> 1%) and a p99 wait near 2 s: alert.
    assert any("acquire failures" in a for a in reports.alerts)
    assert any("p99 wait" in a for a in reports.alerts)
    assert any("open leak" in a for a in orders.alerts)
    assert reports.cells()[8].style == views.ALERT
    by_wait = views.pool_rows(src.feeds, "p99 wait")
    assert [r.label for r in by_wait] == ["reports", "orders"]
    only = views.pool_rows(src.feeds, "name", views.Filter.parse("rep"))
    assert [r.label for r in only] == ["reports"]


def test_backend_down_during_outage(session_path: Path) -> None:
    src = feed_at(session_path, 60)
    rows = dict(views.heartbeat_rows(src.feeds))
    assert rows["0:orders"][1].plain == "down"
    text = views.heartbeat_failures_text(src.feeds).plain
    assert "Connection refused" in text
    src.seek_to(src.t0 + 70)
    assert dict(views.heartbeat_rows(src.feeds))["0:orders"][1].plain == "healthy"


def test_leak_group_and_traceback(session_path: Path) -> None:
    src = feed_at(session_path, 50)
    groups = views.leak_groups(src.feeds)
    assert len(groups) == 1
    g = groups[0]
    assert g.site == "fetch_all billing.py:118" and len(g.open) == 1
    assert g.longest == pytest.approx(10.0, abs=0.1)  # taken at 40 s, now 50 s
    detail = views.leak_detail(g).plain
    assert 'billing.py", line 118, in fetch_all' in detail
    # Stacks arrive innermost first; the traceback reads like Python's, most recent
    # call (the acquiring line) last.
    assert detail.index("in run_job") < detail.index("in export_invoices")
    assert detail.index("in export_invoices") < detail.index("in fetch_all")
    assert "never released on the error path" in detail and "Task-7" in detail
    src.seek_to(src.t0 + 80)
    g = views.leak_groups(src.feeds)[0]
    assert not g.open and len(g.resolved) == 1
    assert "resolved (returned)" in views.leak_detail(g).plain


def test_holders_longest_first_with_site(session_path: Path) -> None:
    src = feed_at(session_path, 50)
    rows = views.holder_rows(src.feeds)
    assert rows, "the leaked connection is held"
    first = rows[0][1]
    assert first[4].plain == "fetch_all billing.py:118" and first[3].plain == "Task-7"
    helds = [
        float(r[1][0].plain.rstrip("s"))
        for r in rows
        if r[1][0].plain.endswith("s")
        and not r[1][0].plain.endswith("ms")
        and not r[1][0].plain.endswith("µs")
    ]
    assert helds == sorted(helds, reverse=True)


def test_connection_rows_flag_mismatch(session_path: Path) -> None:
    src = feed_at(session_path, 50)
    target = src.feeds[0].state.pools["orders"].target
    sizes = sum(p.size for p in src.feeds[0].state.pools.values())
    ok = dict(views.connection_rows(src.feeds, [{target: sizes}]))
    assert ok["0:orders"][4].plain.startswith("ok (2 pools share this target")
    bad = dict(views.connection_rows(src.feeds, [{target: sizes + 2}]))
    assert "2 socket(s) outside the pool" in bad["0:orders"][4].plain
    na = dict(views.connection_rows(src.feeds, [None]))
    assert na["0:orders"][3].plain == "n/a"


def test_histogram_text_has_percentiles(session_path: Path) -> None:
    src = feed_at(session_path, 50)
    p = src.feeds[0].state.pools["orders"]
    text = views.histogram_text("wait", p.wait, max_lines=6).plain
    assert "p50" in text and "p99" in text and "max" in text
    assert len([ln for ln in text.splitlines() if ln.strip().startswith("≤")]) <= 6


def test_replay_seek_back_equals_fresh_fold(session_path: Path) -> None:
    src = feed_at(session_path, 70)
    src.seek_to(src.t0 + 30)  # backwards: folds again from the start
    fresh = feed_at(session_path, 30)
    a, b = src.feeds[0].state, fresh.feeds[0].state
    assert a.to_dict() == b.to_dict()
    src.step()
    assert src.pos == pytest.approx(src.t0 + 31) and not src.playing
    src.change_speed(2)
    assert src.speed == 2.0
    src.seek(1000)
    assert src.ended and not src.playing


def test_replay_truncated_file_says_where_it_stopped(tmp_path: Path, session_path: Path) -> None:
    data = session_path.read_bytes()
    cut = tmp_path / "cut.ndjson"
    cut.write_bytes(data[: len(data) // 2 - 7])  # mid-line
    src = ReplaySource(cut)
    assert 0 < len(src.events) < len(read_events(session_path))
    assert "truncated at line" in src.stopped_reading


def test_events_per_second_uses_the_given_clock() -> None:
    feed = ProcessFeed("x", live=False)
    for i in range(100):
        feed.apply(
            {"type": "acquire", "t": 10 + i * 0.1, "pool": "p", "conn": "1", "wait": 0.0},
            10 + i * 0.1,
        )
    assert feed.events_per_second(19.9) == pytest.approx(10, rel=0.1)


def test_every_key_has_help() -> None:
    shown = {s for s, _ in help_lines(replay=True)}
    assert {k.shown for k in KEYS} == shown
    for must in ("q", "?", "space", "/", "escape", "tab", "1", "6", "7", "s", "+", "-", "ctrl+s"):
        assert must in shown


def test_restart_keeps_history_of_a_pool_created_after_sync() -> None:
    feed = ProcessFeed("x", live=False)

    def state(t: float, in_use: int) -> dict[str, object]:
        return {
            "type": "state",
            "t": t,
            "pool": "p",
            "size": 2,
            "idle": 0,
            "in_use": in_use,
            "waiting": 0,
            "max": 4,
            "min": 0,
        }

    for i in range(3):
        feed.apply(state(100.0 + i, i), 100.0 + i)
    feed.apply({"type": "acquire", "t": 102.5, "pool": "p", "conn": "1", "wait": 0.0}, 102.5)
    # The application restarts: its sync knows no pool yet, the pool comes right after.
    feed.apply({"type": "sync", "t": 110.0, "state": {"pools": {}}}, 110.0)
    assert "p" not in feed.state.pools
    feed.apply(
        {"type": "pool", "t": 110.1, "pool": "p", "kind": "k", "target": "", "config": {}}, 110.1
    )
    feed.apply(state(111.0, 1), 111.0)
    p = feed.state.pools["p"]
    assert [s.t for s in p.series] == [100.0, 101.0, 102.0, 111.0]
    assert p.acquires == 0  # counters are the new process's own
