"""Large recordings stay usable (issue 12, item 8): views draw the top N with a count
of the rest, and ``advise`` folds a large file as it reads it, in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import Static

from poolscope.tui import views
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.widgets import KeyedTable

T0 = 1_700_000_000.0
HOLDERS = 100_000


def holders_file(path: Path) -> Path:
    """100,000 connections acquired and never released (about 12 MB)."""
    with open(path, "w") as f:
        f.write(
            f'{{"type":"hello","t":{T0},"protocol":1,"pid":3,"process":"app","version":"0"}}\n'
            f'{{"type":"pool","t":{T0},"pool":"p","kind":"k","target":"db:5432/x",'
            '"config":{"min":0,"max":100000,"leak_threshold":null}}\n'
        )
        for i in range(HOLDERS):
            t = T0 + i * 0.001
            f.write(
                f'{{"type":"acquire","t":{t:.3f},"pool":"p","conn":"c{i}","wait":0.0,'
                f'"site":null,"task":"task-{i}-with-a-longer-name-like-a-request-path"}}\n'
            )
        f.write(f'{{"type":"state","t":{T0 + 101},"pool":"p","size":{HOLDERS},"idle":0,')
        f.write(f'"in_use":{HOLDERS},"waiting":0,"max":{HOLDERS},"min":0}}\n')
    return path


async def test_holders_view_draws_the_top_n_of_100000(tmp_path: Path) -> None:
    path = holders_file(tmp_path / "holders.ndjson")
    assert path.stat().st_size > 10_000_000
    src = ReplaySource(path, start=1e6)  # the end: every holder checked out
    src.playing = False
    rows, total = views.top_holders(src.feeds)
    assert total == HOLDERS and len(rows) == views.HOLDERS_SHOWN
    assert rows[0][0] == "0:p:c0"  # the longest held first
    app = PoolscopeApp(src)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        table = app.query_one("#holders-table", KeyedTable)
        assert table.row_count == views.HOLDERS_SHOWN
        note = str(app.query_one("#holders-note", Static).render())
        assert "100,000 connections checked out" in note
        assert f"{HOLDERS - views.HOLDERS_SHOWN:,} more" in note
        # A filter selects over all of them, then draws the few that match.
        await pilot.press("slash", *"task-99999-", "enter")
        await pilot.pause()
        assert table.row_count == 1


def _advise_rss(path: Path) -> int:
    code = (
        "import sys; from poolscope.cli import main; "
        f"rc = main(['advise', {str(path)!r}, '--json']); "
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print(hwm.split()[1], file=sys.stderr); "
        "sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stderr.strip().splitlines()[-1])  # KiB


@pytest.mark.slow
def test_advise_on_a_large_recording_uses_bounded_memory(tmp_path: Path) -> None:
    small = tmp_path / "small.ndjson"
    large = tmp_path / "large.ndjson"
    for path, n in ((small, 1_000), (large, 150_000)):
        with open(path, "w") as f:
            f.write(f'{{"type":"pool","t":{T0},"pool":"p","kind":"k","target":"",')
            f.write('"config":{"min":0,"max":8}}\n')
            for i in range(n):
                t = T0 + i * 0.01
                f.write(
                    f'{{"type":"acquire","t":{t:.3f},"pool":"p","conn":"c{i % 8}",'
                    f'"wait":0.0001,"site":null,"task":"worker-{i % 50}"}}\n'
                    f'{{"type":"release","t":{t + 0.004:.3f},"pool":"p","conn":"c{i % 8}",'
                    '"hold":0.004}\n'
                )
                if i % 100 == 0:
                    f.write(
                        f'{{"type":"state","t":{t:.3f},"pool":"p","size":8,"idle":7,'
                        '"in_use":1,"waiting":0,"max":8,"min":0}\n'
                    )
    assert large.stat().st_size > 25_000_000
    grown = _advise_rss(large) - _advise_rss(small)
    # Before: the whole file as a list of dicts (~8x the file). Now: what a fold keeps.
    assert grown < 40 * 1024, f"advise grew by {grown} KiB on a 25 MB recording"


@pytest.mark.fast
async def test_leaks_view_draws_the_first_groups_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "leaks.ndjson"
    with open(path, "w") as f:
        f.write(f'{{"type":"pool","t":{T0},"pool":"p","kind":"k","target":"","config":{{}}}}\n')
        for i in range(600):  # 600 acquire sites, each with one leak
            stack = f'[{{"file":"app.py","line":{i + 1},"func":"f{i}","code":"x"}}]'
            f.write(f'{{"type":"site","t":{T0},"id":{i},"stack":{stack}}}\n')
            f.write(
                f'{{"type":"leak","t":{T0 + 1},"pool":"p","conn":"c{i}","held":31.0,'
                f'"stack":[],"task":"t","site":{i}}}\n'
            )
    src = ReplaySource(path, start=1e6)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        assert app.query_one("#leaks-table", KeyedTable).row_count == 500
        detail = str(app.query_one("#leak-detail", Static).render())
        assert "500 of 600 leak groups shown" in detail and "100 more" in detail
