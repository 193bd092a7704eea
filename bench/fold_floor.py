"""The floor of a pure-Python fold (issue 18: is a C accelerator needed?).

A drain that does almost nothing with each hot-path record - unpack it, set or pop the
open hold in a dict, append the wait or the hold to a list - over the same 100,000
acquire/release records the real drain folds in bench/fold_cost.py. No histogram,
counters, names, interning, attribution or encoding: what any pure-Python fold pays
per event before doing its job. Beside it, the real ``Runtime._drain`` on the same
machine in the same run, and the app thread's own floor: two empty closure calls
and two tuple appends to a deque per pair.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any

N = 100_000
ROUNDS = 7


def _records() -> list[tuple[Any, ...]]:
    items: list[tuple[Any, ...]] = []
    for i in range(N // 2):
        c = f"c{i % 8}"
        items.append(("acquire", 1.0 + i, "p", c, 0.0, (3, 10), None, None))
        items.append(("release", 1.5 + i, "p", c, None))
    return items


def _floor(items: list[tuple[Any, ...]]) -> int:
    holders: dict[str, tuple[float, Any]] = {}
    waits: list[float] = []
    holds: list[float] = []
    for item in items:
        if item[0] == "acquire":
            _, mono, _pool, conn, wait, site, _holder, _labels = item
            holders[conn] = (mono, site)
            waits.append(wait)
        else:
            _, mono, _pool, conn, _hold = item
            h = holders.pop(conn, None)
            holds.append(mono - h[0] if h is not None else 0.0)
    return len(waits) + len(holds)


def _cpu(fn: Any, *args: Any) -> float:
    c0 = time.process_time()
    fn(*args)
    return time.process_time() - c0


def _real_drain(c_fold: bool = True, contended: bool = False) -> float:
    from poolscope.instrument import accel

    was = accel.FOLD
    accel.FOLD = was and c_fold  # the drain's folder is made at its first batch
    try:
        return _drain_once(contended)
    finally:
        accel.FOLD = was


def _drain_once(contended: bool = False) -> float:
    from bench.fold_cost import _fill
    from poolscope.instrument.recorder import PoolHandle
    from poolscope.instrument.runtime import Runtime

    rt = Runtime()
    h = PoolHandle(rt.recorder, "p", "reference", leak_threshold=30.0)
    rt.recorder.append({"type": "pool", "t": time.time(), **h.describe()})
    if contended:
        # One acquire that waited 10 ms: for the next minute the pool's holders are
        # counted by site (wait attribution's bookkeeping while a pool has waits).
        h.acquired("cx", 0.01, None, None)
        h.released("cx")
    rt._drain()
    _fill(h, N // 2, False)
    n = len(rt.recorder.buffer)
    c0 = time.process_time()
    while rt._drain():
        pass
    return (time.process_time() - c0) / n


def _saturated_records(handle: Any, pairs: int) -> None:
    """A saturated web app's records, appended as its pool's hot path makes them: 8
    connections, every acquire waited 2-12 ms (32 requests for 8 connections), each
    request its own task and its own labels as the ASGI middleware makes them, holds
    0.5-2 ms."""
    import random

    from bench.fold_cost import _site
    from poolscope.instrument.asgi import AsgiRequestLabels
    from poolscope.instrument.naming import held_by

    rnd = random.Random(18)
    site = _site(handle)
    buf = handle.recorder.buffer
    free = [f"c{k}" for k in range(8)]
    held: list[tuple[float, str]] = []
    mono = time.perf_counter() - 60.0

    class _Task:
        def __init__(self, name: str) -> None:
            self.name = name

        def get_name(self) -> str:
            return self.name

    class _Route:  # what Starlette puts in the scope
        path_format = "/fast/{n:int}"

    route = _Route()
    n = 0
    while n < pairs:
        mono += 0.0002
        if free and (not held or rnd.random() < 0.55):
            c = free.pop()
            held.append((mono + rnd.uniform(0.0005, 0.002), c))
            # A new request: its own task and labels object, as the ASGI middleware
            # makes them, and as they are when the drain comes: the request answered,
            # its route found.
            own = AsgiRequestLabels({"path": f"/fast/{n}", "route": route}, "GET", None)
            own.finish()
            wait = rnd.uniform(0.002, 0.012)
            # The holder as the hot path keeps it: the task's name and a weak reference.
            holder = held_by(_Task(f"Task-{n}"))
            buf.append(("acquire", mono, handle.name, c, wait, site, holder, own))
            n += 1
        else:
            held.sort()
            end, c = held.pop(0)
            free.append(c)
            buf.append(("release", max(end, mono), handle.name, c, None))
    for _, c in held:
        buf.append(("release", mono, handle.name, c, None))


def _saturated_drain(c_fold: bool = True) -> float:
    """The real drain over a saturated web app's records (see _saturated_records)."""
    from poolscope.instrument import accel
    from poolscope.instrument.recorder import PoolHandle
    from poolscope.instrument.runtime import Runtime

    was = accel.FOLD
    accel.FOLD = was and c_fold
    try:
        rt = Runtime()
        h = PoolHandle(rt.recorder, "p", "asyncpg", leak_threshold=30.0)
        rt.recorder.append({"type": "pool", "t": time.time(), **h.describe()})
        rt._drain()
        _saturated_records(h, N // 2)
        n = len(rt.recorder.buffer)
        c0 = time.process_time()
        while rt._drain():
            pass
        return (time.process_time() - c0) / n
    finally:
        accel.FOLD = was


def _app_floor() -> float:
    buf: deque[Any] = deque(maxlen=200_000)
    append = buf.append
    clock = time.perf_counter

    def acquired(conn: Any, wait: float) -> None:
        append(("acquire", clock(), "p", conn, wait, None, None, None))

    def released(conn: Any) -> None:
        append(("release", clock(), "p", conn, None))

    c0 = time.process_time()
    for _ in range(N // 2):
        acquired("c", 0.0)
        released("c")
        if len(buf) > 100_000:
            buf.clear()
    return (time.process_time() - c0) / (N // 2)


def run(quick: bool) -> dict[str, Any]:
    from poolscope.instrument import accel

    items = _records()
    floor, real, py, app, busy, busy_py = [], [], [], [], [], []
    web, web_py = [], []
    for _ in range(3 if quick else ROUNDS):
        floor.append(_cpu(_floor, items) / N)
        real.append(_real_drain())
        py.append(_real_drain(c_fold=False))
        busy.append(_real_drain(contended=True))
        busy_py.append(_real_drain(c_fold=False, contended=True))
        web.append(_saturated_drain())
        web_py.append(_saturated_drain(c_fold=False))
        app.append(_app_floor())
    f, r, p, a = (statistics.median(x) * 1e9 for x in (floor, real, py, app))
    b, bp = (statistics.median(x) * 1e9 for x in (busy, busy_py))
    sw, swp = (statistics.median(x) * 1e9 for x in (web, web_py))
    which = "the C fold (accelerator)" if accel.FOLD else "pure Python (no accelerator)"
    md = "\n".join(
        [
            f"CPU, median of {len(floor)} rounds (min to max), one thread:",
            "",
            "| what | per event | per acquire+release pair |",
            "|---|---|---|",
            f"| pure-Python fold floor (unpack, dict set/pop, list append) | {f:,.0f} ns "
            f"({min(floor) * 1e9:,.0f} to {max(floor) * 1e9:,.0f}) | {2 * f:,.0f} ns |",
            f"| the real drain (`Runtime._drain`, leak-detection sites, untagged), "
            f"{which} | "
            f"{r:,.0f} ns ({min(real) * 1e9:,.0f} to {max(real) * 1e9:,.0f}) | {2 * r:,.0f} ns |",
            f"| the real drain, its pure-Python fold (the reference) | "
            f"{p:,.0f} ns ({min(py) * 1e9:,.0f} to {max(py) * 1e9:,.0f}) | {2 * p:,.0f} ns |",
            f"| the real drain after a wait (holders counted by site for a minute), "
            f"{which} | "
            f"{b:,.0f} ns ({min(busy) * 1e9:,.0f} to {max(busy) * 1e9:,.0f}) | {2 * b:,.0f} ns |",
            f"| the same, its pure-Python fold | "
            f"{bp:,.0f} ns ({min(busy_py) * 1e9:,.0f} to {max(busy_py) * 1e9:,.0f}) "
            f"| {2 * bp:,.0f} ns |",
            f"| a saturated web app: every acquire waited, each request its own task and "
            f"route labels (wait blame and per-route use for every event), {which} | "
            f"{sw:,.0f} ns ({min(web) * 1e9:,.0f} to {max(web) * 1e9:,.0f}) | {2 * sw:,.0f} ns |",
            f"| the same, its pure-Python fold | "
            f"{swp:,.0f} ns ({min(web_py) * 1e9:,.0f} to {max(web_py) * 1e9:,.0f}) "
            f"| {2 * swp:,.0f} ns |",
            f"| app thread floor (two closure calls, clock reads, tuple appends) | - | "
            f"{a:,.0f} ns ({min(app) * 1e9:,.0f} to {max(app) * 1e9:,.0f}) |",
        ]
    )
    return {
        "title": "The floor of a pure-Python fold, beside the real one",
        "floor_ns_per_event": f,
        "drain_ns_per_event": r,
        "drain_python_ns_per_event": p,
        "drain_after_wait_ns_per_event": b,
        "drain_after_wait_python_ns_per_event": bp,
        "saturated_web_ns_per_event": sw,
        "saturated_web_python_ns_per_event": swp,
        "app_floor_ns_per_pair": a,
        "markdown": md,
        "notes": (
            "Issue 18's whole-process target (+1 us per reference-pool pair with leak "
            "detection off) has to hold the app thread's part and the fold's two events. "
            "The app-thread floor and twice the fold floor together are what pure Python "
            "pays before any real work; the real drain's ratio to the floor says how much "
            "folding in bulk could still take out. After a wait the C fold keeps wait "
            "attribution's per-site holder counts itself (until session 5 it called the "
            "Python attribution for every event for a minute after any 1 ms wait, which "
            "made a contended pool's fold cost the pure-Python one; the session-4 tree, built "
            "in a worktree and run against this one on the same machine, quick runs: "
            "1,442 ns per event after a wait, against 788 ns here). A saturated web app "
            "(the asgi_wrk app's situation: every acquire waits, every request tagged) "
            "made the C fold call the Python attribution for every event - its route stats "
            "and the charge of each wait to the holders meanwhile; the C fold does both "
            "since session 6 (Attribution.charge's usual case and the route counts, the "
            "same additions in the same order: the differential test compares the booked "
            "charges), and calls Python only for a pool's first wait in a while, a new "
            "second, a new route. "
            "Run: `python -m bench --only fold_floor`."
        ),
    }
