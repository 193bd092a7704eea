"""SVG snapshots of the TUI at 120x36 over the committed recording.

Everything on screen comes from the data's own clock (``state.now``), and clock
times are shown in UTC here, so the pictures are the same on every machine.
Update after a deliberate change with ``pytest tests/tui/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource

SIZE = (120, 36)


def app_at(path: Path, seconds: float) -> PoolscopeApp:
    src = ReplaySource(path, start=seconds)
    src.playing = False
    return PoolscopeApp(src, title="poolscope replay session.ndjson")


@pytest.mark.usefixtures("utc")
def test_dashboard(snap_compare: Callable[..., bool], session_path: Path) -> None:
    assert snap_compare(app_at(session_path, 50), terminal_size=SIZE)


@pytest.mark.usefixtures("utc")
def test_leak_traceback(snap_compare: Callable[..., bool], session_path: Path) -> None:
    assert snap_compare(app_at(session_path, 50), press=["3"], terminal_size=SIZE)


@pytest.mark.usefixtures("utc")
def test_heartbeat_outage(snap_compare: Callable[..., bool], session_path: Path) -> None:
    assert snap_compare(app_at(session_path, 61), press=["4"], terminal_size=SIZE)


@pytest.mark.usefixtures("utc")
def test_events_filtered_and_help(snap_compare: Callable[..., bool], session_path: Path) -> None:
    press = ["6", "slash", *"type:timeout", "enter", "question_mark"]
    assert snap_compare(app_at(session_path, 62), press=press, terminal_size=SIZE)
