"""``poolscope replay FILE``: the TUI over a recording, with play/pause, step, speed, seek."""

from __future__ import annotations

import argparse
from pathlib import Path

from poolscope.cli import CommandError
from poolscope.commands.common import add_window_arg, positive_float
from poolscope.textsafe import visible


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="an NDJSON file from `poolscope record`")
    p.add_argument("--speed", type=positive_float, default=1.0, help="playback speed (1)")
    p.add_argument(
        "--start", type=_non_negative, default=0.0, metavar="S", help="start S seconds in"
    )
    p.add_argument("--paused", action="store_true", help="start paused")
    add_window_arg(p)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise CommandError(f"replay: {path}: no such file")
    if path.is_dir():
        raise CommandError(f"replay: {path}: is a directory")
    from poolscope.tui.data import ReplaySource

    try:
        source = ReplaySource(path, speed=args.speed, start=args.start)
    except OSError as exc:
        raise CommandError(f"replay: {path}: {exc.strerror or exc}") from None
    if not source.events:
        where = f" ({source.stopped_reading})" if source.stopped_reading else ""
        raise CommandError(f"replay: {path}: no readable events{where}")
    source.playing = not args.paused
    from poolscope.tui.app import PoolscopeApp

    title = visible(f"poolscope replay {path.name}")
    return PoolscopeApp(source, title=title, window=args.window).run_tui()
