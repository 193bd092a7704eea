"""The TUI's views compute from copies taken under the data lock (poolscope.tui.snapshot):
a copy shows what the live state showed when it was taken, later folding does not
reach it, and every view draws (advice included) while another thread holds the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from poolscope.tui import views
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.keys import VIEWS
from poolscope.tui.snapshot import snapshot_feeds

pytestmark = pytest.mark.fast


def _plain(rows: Sequence[tuple[str, Sequence[object]]]) -> list[tuple[str, list[str]]]:
    return [(k, [str(c) for c in cells]) for k, cells in rows]


def _source(path: Path, start: float) -> ReplaySource:
    src = ReplaySource(path, start=start)
    src.playing = False
    return src


def test_a_copy_shows_what_the_live_state_shows(session_path: Path) -> None:
    src = _source(session_path, 50.0)
    live = src.feeds
    snap = snapshot_feeds(live, holders=True, events=True, window=60.0)
    assert snap[0].state is not live[0].state
    pools = [(r.key, [str(c) for c in r.cells()]) for r in views.pool_rows(live)]
    assert [(r.key, [str(c) for c in r.cells()]) for r in views.pool_rows(snap)] == pools
    assert str(views.pool_detail(views.pool_rows(snap)[0])) == str(
        views.pool_detail(views.pool_rows(live)[0])
    )
    assert _plain(views.top_holders(snap)[0]) == _plain(views.top_holders(live)[0])
    assert _plain(views.heartbeat_rows(snap)) == _plain(views.heartbeat_rows(live))
    assert [g.key for g in views.leak_groups(snap)] == [g.key for g in views.leak_groups(live)]
    assert str(views.advice_text(snap)) == str(views.advice_text(live))
    assert _plain(views.recent_events(snap, {}, None, 500)) == _plain(
        views.recent_events(live, {}, None, 500)
    )


def test_folding_after_the_copy_does_not_reach_it(session_path: Path) -> None:
    src = _source(session_path, 20.0)
    snap = snapshot_feeds(src.feeds, holders=True, window=60.0)
    before_rows = [(r.key, [str(c) for c in r.cells()]) for r in views.pool_rows(snap)]
    before_advice = str(views.advice_text(snap))
    name = sorted(snap[0].state.pools)[0]
    copied = snap[0].state.pools[name]
    counts = (copied.acquires, copied.wait.count, dict(copied.wait.buckets), len(copied.series))
    src.seek(30.0)  # folds thirty more seconds into the live state
    live = src.feeds[0].state.pools[name]
    assert live.acquires > copied.acquires  # the live state moved on
    assert (copied.acquires, copied.wait.count, dict(copied.wait.buckets), len(copied.series)) == (
        counts
    )
    assert [(r.key, [str(c) for c in r.cells()]) for r in views.pool_rows(snap)] == before_rows
    assert str(views.advice_text(snap)) == before_advice


def _hold(lock: threading.Lock, held: threading.Event, release: threading.Event) -> None:
    with lock:
        held.set()
        release.wait(3.0)


async def test_every_view_draws_while_another_thread_holds_the_lock(
    session_path: Path,
) -> None:
    src = _source(session_path, 50.0)
    app = PoolscopeApp(src, refresh_interval=3600)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert list(app.views) == [v for v, _ in VIEWS]
        for key, view in app.views.items():
            app.action_view(key)
            await pilot.pause()
            with src.lock:
                snap = view.take()
            held = threading.Event()
            release = threading.Event()
            holder = threading.Thread(target=_hold, args=(src.lock, held, release))
            holder.start()
            assert held.wait(3.0)
            started = time.monotonic()
            try:
                view.draw(snap, True)  # would block until the 3 s are up if it took the lock
            finally:
                elapsed = time.monotonic() - started
                release.set()
                holder.join()
            assert elapsed < 2.0, f"{key} waited for the data lock while drawing"
        advice = str(app.query_one("#advice-text").render())
        assert "recommended size" in advice and "Little's law" in advice
        assert app.lock_seconds, "refreshes record how long they held the lock"
