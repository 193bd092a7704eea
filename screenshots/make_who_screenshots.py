"""Regenerate the "who holds it" screenshots from tests/data/who_session.ndjson (a
recording of tests/apps/web_starlette.py under contention, a leak and an
idle-in-transaction holder): ``.venv/bin/python screenshots/make_who_screenshots.py``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource
from poolscope.tui.shots import svg_to_png

HERE = Path(__file__).resolve().parent
SESSION = HERE.parent / "tests" / "data" / "who_session.ndjson"
SHOTS = (("tui-routes", 13.0, ["8"]), ("tui-holders-routes", 11.0, ["2"]))


async def shoot(name: str, at: float, keys: list[str]) -> None:
    src = ReplaySource(SESSION, start=at)
    src.playing = False
    app = PoolscopeApp(src, title="poolscope replay who_session.ndjson")
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
