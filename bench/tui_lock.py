"""TUI: how long a refresh holds the data lock, per view, against the whole refresh.

The fold (a background thread live) waits while the screen holds the source's
lock, so the lock is held only to copy what the visible view shows
(``View.take``); rows, text, chart and the Erlang C advice are computed after it
is released (``View.draw``). This runs the real app headless (``run_test`` at
120x36) over ``tests/data/session.ndjson`` and over a recording of 100,000
connections checked out, shows each view, refreshes it ``N`` times and reads
``PoolscopeApp.lock_seconds`` (lock held) and ``render_seconds`` (whole refresh,
lock included) of those refreshes. The baseline is the refresh itself: the share
of it spent holding the lock. Not a timed test: run by ``make bench``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "tests" / "data" / "session.ndjson"
HOLDERS = 100_000
T0 = 1_700_000_000.0


def _holders_file(path: Path) -> Path:
    """``HOLDERS`` connections acquired and never released (about 12 MB)."""
    with open(path, "w") as f:
        f.write(
            f'{{"type":"hello","t":{T0},"protocol":1,"pid":3,"process":"app","version":"0"}}\n'
            f'{{"type":"pool","t":{T0},"pool":"p","kind":"k","target":"db:5432/x",'
            f'"config":{{"min":0,"max":{HOLDERS},"leak_threshold":null}}}}\n'
        )
        for i in range(HOLDERS):
            f.write(
                f'{{"type":"acquire","t":{T0 + i * 0.001:.3f},"pool":"p","conn":"c{i}",'
                f'"wait":0.0,"site":null,"task":"task-{i}"}}\n'
            )
    return path


async def _measure(path: Path, refreshes: int) -> dict[str, dict[str, float]]:
    from poolscope.tui.app import PoolscopeApp
    from poolscope.tui.data import ReplaySource

    src = ReplaySource(path, start=1e12)  # the end of the recording: everything folded
    src.playing = False
    app = PoolscopeApp(src, refresh_interval=3600.0)
    out: dict[str, dict[str, float]] = {}
    async with app.run_test(size=(120, 36)) as pilot:
        for view in list(app.views):
            app.action_view(view)
            await pilot.pause()
            app.lock_seconds.clear()
            app.render_seconds.clear()
            for _ in range(refreshes):
                app.refresh_screen(True)
            out[view] = {
                "lock_median_ms": 1000 * statistics.median(app.lock_seconds),
                "lock_max_ms": 1000 * max(app.lock_seconds),
                "refresh_median_ms": 1000 * statistics.median(app.render_seconds),
            }
    return out


def run(quick: bool) -> dict[str, Any]:
    refreshes = 5 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        data = {
            "session.ndjson": asyncio.run(_measure(SESSION, refreshes)),
            f"{HOLDERS:,} holders": asyncio.run(
                _measure(_holders_file(Path(tmp) / "holders.ndjson"), refreshes)
            ),
        }
    rows = []
    for name, per_view in data.items():
        for view, r in per_view.items():
            share = r["lock_median_ms"] / r["refresh_median_ms"] if r["refresh_median_ms"] else 0
            rows.append(
                f"| {name} | {view} | {r['lock_median_ms']:.2f} / {r['lock_max_ms']:.2f} ms "
                f"| {r['refresh_median_ms']:.1f} ms | {share:.0%} |"
            )
    md = "\n".join(
        [
            f"Real TUI over a recording (headless, 120x36), each view refreshed {refreshes} "
            "times at the end of the file. Lock = time a refresh holds the source's data lock "
            "(the header and the view's copy); refresh = the whole refresh, drawing included.",
            "",
            "| recording | view | lock held median / max | refresh median | lock share |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    return {"refreshes": refreshes, "results": data, "markdown": md}


if __name__ == "__main__":
    print(run("--quick" in sys.argv)["markdown"])
