"""The incident log apart from the churn, and holds that end with the connection
(``release`` with ``lost: true``): acquires = releases + connections checked out."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolscope.model import fold
from poolscope.tui import views
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import INCIDENTS_KEPT, LOG_KEPT, ProcessFeed, ReplaySource
from poolscope.tui.widgets import KeyedTable

T0 = 1_700_000_000.0


@pytest.mark.fast
def test_lost_releases_end_their_holds() -> None:
    evs = [
        {"type": "acquire", "t": T0 + i, "pool": "p", "conn": str(i), "wait": 0.0} for i in range(3)
    ]
    evs += [
        {"type": "release", "t": T0 + 5, "pool": "p", "conn": "0", "hold": 5.0},
        {"type": "release", "t": T0 + 6, "pool": "p", "conn": "1", "hold": 5.0, "lost": True}
        | {"reason": "lost"},
        {"type": "close", "t": T0 + 6, "pool": "p", "conn": "1", "reason": "lost", "age": 9.0},
    ]
    p = fold(evs).pools["p"]
    assert p.acquires == p.releases + len(p.holders) == 3
    assert (p.releases, p.releases_lost, list(p.holders)) == (2, 1, ["2"])
    assert p.hold.count == 2  # the lost hold is in the histogram too
    assert p.closes == {"lost": 1}


def _churn_after_incidents(n: int) -> list[dict[str, object]]:
    evs: list[dict[str, object]] = [
        {"type": "close", "t": T0, "pool": "p", "conn": "9", "reason": "lost", "age": 3.0},
        {"type": "connect_error", "t": T0, "pool": "p", "error": "refused"},
        {"type": "heartbeat", "t": T0, "pool": "p", "conn": "1", "ok": False}
        | {"latency": None, "error": "timeout"},
        {"type": "heartbeat", "t": T0, "pool": "p", "conn": "1", "ok": True}
        | {"latency": 0.001, "error": None},
    ]
    for i in range(n):
        t = T0 + 1 + i / 1000
        evs.append({"type": "acquire", "t": t, "pool": "p", "conn": "1", "wait": 0.0})
        evs.append({"type": "release", "t": t, "pool": "p", "conn": "1", "hold": 0.0005})
    return evs


@pytest.mark.fast
def test_incidents_outlive_the_churn() -> None:
    feed = ProcessFeed("x", live=False)
    for ev in _churn_after_incidents(LOG_KEPT * 5):
        feed.apply(ev, float(ev["t"]))  # type: ignore[arg-type]
    # The churn pushed the close out of the log of every event ...
    assert all(ev["type"] in ("acquire", "release") for _, ev in feed.log)
    # ... but the incident log keeps it (and the failed heartbeat, not the good one).
    assert [ev["type"] for _, ev in feed.incidents] == ["close", "connect_error", "heartbeat"]
    rows = views.recent_events([feed], {}, views.Filter.parse("type:close"), 500)
    assert len(rows) == 1
    churn = views.recent_events([feed], {}, None, 500, churn=True)
    assert len(churn) == 500 and "acquire" in {str(c[1]) for _, c in churn}
    # A type: filter naming a churn type reads the churn by itself.
    assert views.recent_events([feed], {}, views.Filter.parse("type:acquire"), 10)
    assert feed.incidents.maxlen == INCIDENTS_KEPT == 10_000


@pytest.mark.fast
async def test_events_view_filters_the_incident_log(tmp_path: Path) -> None:
    import json

    path = tmp_path / "r.ndjson"
    path.write_text("".join(json.dumps(ev) + "\n" for ev in _churn_after_incidents(3000)))
    src = ReplaySource(path, start=1e6)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("6", "slash", *"type:close", "enter")
        await pilot.pause()
        table = app.query_one("#events-table", KeyedTable)
        assert table.row_count == 1  # 6,000 churn events later, the close is there
        assert str(table.get_row_at(0)[1]) == "close"
