"""Regenerate the TUI screenshots from the committed recording (tests/data/session.ndjson).

``.venv/bin/python screenshots/make_tui_screenshots.py``: SVG via Textual at 120x36,
PNG via cairosvg (the same path as ctrl+s in the TUI).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.shots import svg_to_png

HERE = Path(__file__).resolve().parent
SESSION = HERE.parent / "tests" / "data" / "session.ndjson"

SHOTS = (
    ("tui-dashboard", 31.0, []),
    ("tui-leak-traceback", 50.0, ["3"]),
    ("tui-heartbeat-outage", 61.0, ["4"]),
    ("tui-advice", 85.0, ["7"]),
)


async def shoot(name: str, at: float, keys: list[str]) -> None:
    src = ReplaySource(SESSION, start=at)
    src.playing = False
    app = PoolscopeApp(src, title="poolscope replay session.ndjson")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.3)
        for k in keys:
            await pilot.press(k)
            await pilot.pause(0.2)
        svg = Path(app.save_screenshot(f"{name}.svg", str(HERE)))
    png = svg_to_png(svg)
    svg.unlink()
    print(f"{png or 'no PNG converter; SVG only'}")


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    for name, at, keys in SHOTS:
        asyncio.run(shoot(name, at, keys))


if __name__ == "__main__":
    main()
