"""The TUI never cuts a value off silently and never mixes up units (issue 14, items 7
and 8): a column grows with its widest value, durations use exactly ``µs ms s min h``
from one formatter, and leak groups are labelled by what tells them apart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from poolscope import advisor
from poolscope.tui import views
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ProcessFeed, ReplaySource
from poolscope.tui.widgets import KeyedTable
from poolscope.units import fmt_duration

T0 = 1_750_000_000.0
FAST = pytest.mark.fast


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def state(t: float, n: int) -> dict[str, Any]:
    return {"type": "state", "t": t, "pool": "p", "size": n, "idle": n, "in_use": n,
            "waiting": n, "max": n, "min": 1}  # fmt: skip


def row_text(table: KeyedTable, row: int) -> str:
    """The row as drawn on screen (y 0 is the header)."""
    return "".join(seg.text for seg in table.render_line(row + 1))


async def test_a_value_growing_from_1_to_10000_stays_whole(tmp_path: Path) -> None:
    hello = {"type": "hello", "t": T0, "protocol": 1, "pid": 1, "process": "app", "version": "x"}
    pool = {"type": "pool", "t": T0, "pool": "p", "kind": "k", "target": "db",
            "config": {"min": 1, "max": 1}}  # fmt: skip
    # One timeout at first, 10,000 by the end; every gauge goes from 1 to 10,000.
    timeouts = [
        {"type": "timeout", "t": T0 + 1 + i * 1e-4, "pool": "p", "wait": 1.0, "error": "t"}
        for i in range(9_999)
    ]
    first = {"type": "timeout", "t": T0 + 0.5, "pool": "p", "wait": 1.0, "error": "t"}
    rec = write(
        tmp_path / "grow.ndjson",
        [hello, pool, state(T0, 1), first, *timeouts, state(T0 + 3, 10_000)],
    )
    src = ReplaySource(rec, start=0.6)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=(200, 20)) as pilot:
        await pilot.pause()
        table = app.query_one("#pools-table", KeyedTable)
        before = row_text(table, 0)
        assert "1/1" in before
        src.seek_to(src.t_end)
        app.refresh_screen()
        await pilot.pause()
        after = row_text(table, 0)
        assert "10000/10000" in after
        # size/max, in use, idle, waiting, timeouts: every one of them whole.
        assert len(re.findall(r"(?<![\d/])10000(?![\d/])", after)) >= 4, after
        assert "…" not in after


@FAST
def test_durations_use_exactly_us_ms_s_min_h() -> None:
    cases = {
        8.5e-4: "850µs",
        0.00105: "1.05ms",  # never "1.05m" (minutes), however narrow the column
        0.0123: "12.3ms",
        1.2: "1.2s",
        59.96: "1min",
        125: "2min05s",
        5400: "1h30min",
    }
    for seconds, shown in cases.items():
        assert fmt_duration(seconds) == shown
    for exp in range(-6, 6):
        for mant in (1.0, 1.049, 2.5, 9.996):
            text = fmt_duration(mant * 10.0**exp)
            # Numbers, then only whole unit names: 2min05s is "min" and "s".
            assert set(re.findall(r"[^\d.<]+", text)) <= {"µs", "ms", "s", "min", "h"}, text


@FAST
def test_one_formatter_on_the_advice_screen() -> None:
    """The advisor and the TUI format durations with the same function."""
    for s in (None, 0.0, 3.12e-5, 0.0032, 0.041, 1.25, 300.0, float("inf")):
        expected = fmt_duration(s, missing="n/a")
        assert advisor.fmt_seconds(s) == expected
        if s is not None:
            assert views.fmt_dur(s) == expected
    assert views.fmt_dur is fmt_duration


@FAST
def test_long_texts_end_in_an_ellipsis() -> None:
    assert views.clip("connection refused by the server", 10) == "connectio…"
    assert views.clip("short", 10) == "short"


def frame(func: str, file: str, line: int) -> dict[str, Any]:
    return {"file": file, "line": line, "func": func, "code": "x"}


def leak_feed(stacks: list[list[dict[str, Any]]]) -> ProcessFeed:
    feed = ProcessFeed("rec", live=False)
    evs: list[dict[str, Any]] = [
        {"type": "pool", "t": T0, "pool": "p", "kind": "k", "target": "db",
         "config": {"leak_threshold": 1.0}},
    ]  # fmt: skip
    for i, stack in enumerate(stacks, start=1):
        evs.append({"type": "site", "t": T0, "id": i, "stack": stack})
        evs.append({"type": "leak", "t": T0 + i, "pool": "p", "conn": str(i), "held": 2.0,
                    "stack": [], "task": f"t{i}", "site": i})  # fmt: skip
    for ev in evs:
        feed.apply(ev, float(ev["t"]))
    return feed


@FAST
def test_leak_groups_with_the_same_top_frame_are_told_apart() -> None:
    top = frame("_get_connection_from_pool", "/app/database.py", 18)
    feed = leak_feed(
        [
            [top, frame("get_user", "/app/users.py", 40), frame("handle", "/app/web.py", 9)],
            [top, frame("list_orders", "/app/orders.py", 7), frame("handle", "/app/web.py", 9)],
            [top, frame("list_orders", "/app/orders.py", 7), frame("cron", "/app/jobs.py", 3)],
            [frame("_get_connection_from_pool", "/vendor/database.py", 18)],
            [frame("other", "/app/x.py", 1)],
        ]
    )
    groups = views.leak_groups([feed])
    labels = {g.latest.conn: g.site for g in groups}  # conn i leaked at site i
    assert len(groups) == 5 and len(set(labels.values())) == 5, labels
    assert labels["1"] == "_get_connection_from_pool database.py:18 ← get_user users.py:40"
    assert labels["2"] == (
        "_get_connection_from_pool database.py:18 ← … ← handle web.py:9"
    )  # the first frame that differs from site 3, two calls out
    assert labels["3"] == "_get_connection_from_pool database.py:18 ← … ← cron jobs.py:3"
    # Only the directory differs from the others' top frame: the full path says so.
    assert labels["4"] == "_get_connection_from_pool /vendor/database.py:18"
    assert labels["5"] == "other x.py:1"  # alone with its label: left as it was
    # The label is what the leaks table shows.
    assert {str(g.cells()[0]) for g in groups} == set(labels.values())


@FAST
def test_identical_looking_sites_still_get_distinct_labels() -> None:
    same = [frame("f", "/a.py", 1), frame("g", "/b.py", 2)]
    groups = views.leak_groups([leak_feed([same, list(same)])])
    assert sorted(g.site for g in groups) == ["f a.py:1 [1]", "f a.py:1 [2]"]


@FAST
def test_groups_told_apart_by_their_route_keep_the_plain_label() -> None:
    """The same site under two routes is two rows; the route column tells them apart."""
    site = [frame("fetch", "/app/db.py", 3), frame("handle", "/app/web.py", 9)]
    feed = ProcessFeed("rec", live=False)
    evs: list[dict[str, Any]] = [
        {"type": "pool", "t": T0, "pool": "p", "kind": "k", "target": "db", "config": {}},
        {"type": "site", "t": T0, "id": 1, "stack": site},
        {"type": "tags", "t": T0, "id": 1, "labels": {"route": "GET /a"}},
        {"type": "tags", "t": T0, "id": 2, "labels": {"route": "GET /b"}},
    ]
    for conn, tags in (("1", 1), ("2", 2)):
        evs.append({"type": "leak", "t": T0 + 1, "pool": "p", "conn": conn, "held": 2.0,
                    "stack": [], "task": "t", "site": 1, "tags": tags})  # fmt: skip
    for ev in evs:
        feed.apply(ev, float(ev["t"]))
    groups = views.leak_groups([feed])
    assert sorted((g.route, g.site) for g in groups) == [
        ("GET /a", "fetch db.py:3"),
        ("GET /b", "fetch db.py:3"),
    ]
