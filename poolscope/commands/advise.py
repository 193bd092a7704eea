"""``poolscope advise FILE-or-ENDPOINT``: pool sizing advice from what a pool does.

Advice is over a span (``poolscope.span``): a live endpoint watched for
``--duration`` seconds gives the events of those seconds; a recording gives its
own events. Either way the history the stream's ``sync`` carries is left out
unless ``--all`` asks for it, and ``--window S`` narrows to the last S seconds.
Events are folded as they are read, so a large recording costs bounded memory.
The theory is in ``poolscope.advisor``; this module only gathers events and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from poolscope import advisor, pgview
from poolscope.attribution import blocker_lines
from poolscope.cli import CommandError, UsageError
from poolscope.client import (
    CONNECTED,
    DISCONNECTED,
    ConnectError,
    FileFeed,
    StreamClient,
)
from poolscope.commands.common import positive_float, positive_int
from poolscope.endpoint import Endpoint, EndpointError, parse_endpoint
from poolscope.events import Event
from poolscope.follow import StreamFollower, check_reachable
from poolscope.model import PoolState
from poolscope.span import Span

DEFAULT_DURATION = 10.0


def _util(text: str) -> float:
    value = positive_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in (0, 1], e.g. 0.8")
    return value


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="FILE-or-ENDPOINT",
        help="a recording (poolscope record) or :PORT, HOST:PORT, unix:PATH",
    )
    p.add_argument(
        "--p99-target",
        type=positive_float,
        default=advisor.DEFAULT_P99_TARGET,
        metavar="S",
        help=f"p99 wait for a connection to aim for, seconds ({advisor.DEFAULT_P99_TARGET:g})",
    )
    p.add_argument(
        "--util-ceiling",
        type=_util,
        default=advisor.DEFAULT_UTIL_CEILING,
        metavar="U",
        help=f"highest acceptable mean utilization, 0-1 ({advisor.DEFAULT_UTIL_CEILING:g})",
    )
    p.add_argument(
        "--db-max-connections",
        type=positive_int,
        metavar="N",
        help="the database's max_connections: cap the advice at this instance's share",
    )
    p.add_argument(
        "--instances",
        type=positive_int,
        metavar="K",
        help="app instances sharing the database (with --db-max-connections; 1)",
    )
    p.add_argument(
        "--db-cores",
        type=positive_int,
        metavar="N",
        help="the database server's cores, for the cores × 2 rule (default: this machine's)",
    )
    p.add_argument("--pool", metavar="NAME", help="advise on this pool only (default: all)")
    p.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help=f"for a live endpoint: seconds to watch ({DEFAULT_DURATION:g})",
    )
    p.add_argument(
        "--window",
        type=positive_float,
        metavar="S",
        help="advise on the last S seconds only (of the watch, or of the recording)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="add the history the stream's sync carries (the application's state from "
        "before the watch or the recording began)",
    )
    p.add_argument("--token", help="token, if the application requires one")
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    pgview.add_arguments(p)


def _resolve(source: str) -> Path | Endpoint:
    """A path that exists is a recording; otherwise an ENDPOINT; otherwise an error."""
    path = Path(source)
    if path.exists():
        return path
    try:
        return parse_endpoint(source)
    except EndpointError:
        pass
    raise CommandError(f"cannot read {source}: no such file (and not an endpoint)")


class _Folder:
    """The state and the span, folded one event at a time (nothing is kept).

    The state is a :class:`StreamFollower`'s (live: across reconnects, like the TUI);
    the span sees the protocol's events only, not the client's connection events.
    """

    def __init__(self, window: float | None, *, live: bool = False) -> None:
        self.stream = StreamFollower(live=live)
        self.span = Span(window=window)
        self.events = 0

    @property
    def state(self) -> PoolState:
        return self.stream.state

    def apply(self, ev: Event) -> None:
        self.stream.follow(ev, time.time())
        if ev.get("type") in (CONNECTED, DISCONNECTED):
            return
        self.span.apply(ev)
        self.events += 1


def _read_file(path: Path, folder: _Folder) -> None:
    feed = FileFeed(path)
    try:
        for ev in feed:
            folder.apply(ev)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not folder.events:
        if feed.stopped:
            raise CommandError(f"{path}: {feed.stopped}")
        if feed.bad_lines:
            raise CommandError(f"{path}: not a poolscope recording (no readable events)")
        raise CommandError(f"{path}: empty recording")
    if feed.stopped:
        print(
            f"poolscope advise: {path}: {feed.stopped}; advising on what came before",
            file=sys.stderr,
        )
    elif feed.bad_lines:
        print(
            f"poolscope advise: {path}: skipped {feed.bad_lines} unreadable lines "
            f"(first at line {feed.first_bad_line})",
            file=sys.stderr,
        )


async def _watch(endpoint: Endpoint, duration: float, token: str | None, folder: _Folder) -> None:
    """Events from a live endpoint for ``duration`` seconds (fails fast if nothing listens)."""
    try:
        await check_reachable(endpoint, token)
    except ConnectError as exc:
        raise CommandError(f"cannot advise: {exc}") from None
    print(f"poolscope advise: watching {endpoint} for {duration:g}s ...", file=sys.stderr)
    client = StreamClient(endpoint, token=token)

    async def pump() -> None:
        async for ev in client.events():
            folder.apply(ev)
            if folder.stream.refused:
                return

    task = asyncio.ensure_future(pump())
    try:
        await asyncio.wait({task}, timeout=duration)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        client.close()
    if folder.stream.refused:
        raise CommandError(f"cannot advise: {endpoint}: {folder.stream.refused}")
    if not folder.events:
        raise CommandError(f"cannot advise: {endpoint} sent nothing in {duration:g}s")


def _gather(args: argparse.Namespace, folder: _Folder) -> tuple[str, float | None]:
    """Fold the source into ``folder``; (where, seconds watched live or None)."""
    src = _resolve(args.source)
    if isinstance(src, Path):
        if args.duration is not None:
            raise UsageError("poolscope advise: --duration applies to a live endpoint only")
        _read_file(src, folder)
        return str(src), None
    duration = args.duration if args.duration is not None else DEFAULT_DURATION
    asyncio.run(_watch(src, duration, args.token, folder))
    return str(src), duration


def _workload(
    args: argparse.Namespace, folder: _Folder, name: str, live: float | None
) -> advisor.Workload:
    """The span's workload; with --all, the state's (sync history included)."""
    span, state = folder.span, folder.state
    if args.all:
        w = advisor.observe(state, name, window=args.window)
        if w.rate > 0:
            if args.window is not None:
                w.span_note = f"the last {args.window:g} s, with the history the sync carries"
            else:
                w.span_note = "the history the sync carries and the events after it"
            return w
    return span.workload(state, name, span.note(live))


def run(args: argparse.Namespace) -> int:
    if args.instances is not None and args.db_max_connections is None:
        raise UsageError("poolscope advise: --instances needs --db-max-connections")
    folder = _Folder(args.window)
    where, live = _gather(args, folder)
    state = folder.state
    names = sorted(state.pools)
    if args.pool is not None:
        if args.pool not in state.pools:
            known = ", ".join(names) or "none"
            raise CommandError(f"no pool named {args.pool!r} in {where} (pools: {known})")
        names = [args.pool]
    if not names:
        raise CommandError(f"{where}: no pool activity to advise on")
    results = [
        advisor.advise_workload(
            _workload(args, folder, name, live),
            p99_target=args.p99_target,
            util_ceiling=args.util_ceiling,
            db_max_connections=args.db_max_connections,
            instances=args.instances or 1,
            cores=args.db_cores,
        )
        for name in names
    ]
    snap = pgview.snapshot_once(args, [(where, state)])
    if args.json:
        doc: dict[str, Any] = {
            "source": where,
            "generated": time.time(),
            "cores": args.db_cores or os.cpu_count(),
            "pools": [a.to_dict() for a in results],
            "blockers": [b.__dict__ for b in state.attribution.blame("route")[:10]],
        }
        if snap is not None:
            doc["pg"] = pgview.snapshot_lines(snap)
        print(json.dumps(doc, indent=2, allow_nan=False))
        return 0
    for i, a in enumerate(results):
        if i:
            print()
        lines = advisor.format_advice(a)
        # Who made them wait, before any "add connections" (which only moves the wait).
        lines[0:0] = blocker_lines(state.attribution, names[i])
        print("\n".join(lines))
    if snap is not None:
        print()
        print("\n".join(pgview.snapshot_lines(snap)))
    return 0
