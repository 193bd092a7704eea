"""What the in-app background fold costs per event (issue 18, "fold in bulk").

Measurement only: the Runtime's own ``_drain`` (the per-tick step that folds the
hot-path acquire/release tuples into the model, interns sites, tags and holder
names, and formats NDJSON lines for observers) on a synthetic stream of the tuples
a pool's ``acquired``/``released`` closures append - the same closures, so the
tuples are the real ones (acquire site captured at depth 8 as with leak detection
on, the holder an asyncio task, optionally a ``ps.tag(route=...)`` label set).

Two parts:

1. **The fold alone**, on this thread, no background thread, no observer: a
   prefilled recorder of N events drained by ``_drain`` until empty. Events/s and
   CPU per event (``time.process_time``: there is only this thread).
2. **The background thread as it runs**, with and without one real observer
   attached (``poolscope record ENDPOINT -o /dev/null``): this thread appends
   events at a fixed rate in 5 ms bursts, poolscope's thread drains them on its
   own tick. Its CPU per event is read from its own thread clock
   (``pthread_getcpuclockid``), so the producer's cost is not in it; the whole
   process's CPU per event is given too. At a low rate (like the ASGI app of
   bench/asgi_wrk.py) a tick's fixed cost is spread over few events; at a high one
   the per-event cost shows. The rounds alternate with and without the observer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNS = 8
ROUTE = "GET /fast/{n}"
NULL = os.devnull


def _site(handle: Any) -> Any:
    return handle.capture_site(1)


def _fill(handle: Any, pairs: int, tagged: bool) -> None:
    """Append ``pairs`` acquire/release pairs through the handle's hot path, from an
    asyncio task (the holder), with a leak-detection-depth site."""
    import poolscope.instrument as ps

    acquired, released = handle.acquired, handle.released

    async def producer() -> None:
        task = asyncio.current_task()
        site = _site(handle)
        conns = [f"c{k}" for k in range(CONNS)]
        for i in range(pairs):
            c = conns[i % CONNS]
            acquired(c, 0.0, site, task)
            released(c)

    async def main() -> None:
        if tagged:
            with ps.tag(route=ROUTE):
                await asyncio.create_task(producer())
        else:
            await asyncio.create_task(producer())

    asyncio.run(main())


def _fold_alone(pairs: int, rounds: int) -> dict[str, list[float]]:
    from poolscope.instrument.recorder import PoolHandle
    from poolscope.instrument.runtime import Runtime

    out: dict[str, list[float]] = {"untagged": [], "tagged": []}
    for r in range(rounds):
        for case in ["untagged", "tagged"] if r % 2 == 0 else ["tagged", "untagged"]:
            rt = Runtime()  # no pool registered: no background thread
            h = PoolHandle(rt.recorder, "bench", "reference", leak_threshold=30.0)
            rt.recorder.append({"type": "pool", "t": time.time(), **h.describe()})
            rt._drain()
            _fill(h, pairs, case == "tagged")
            n = len(rt.recorder.buffer)
            c0 = time.process_time()
            while rt._drain():
                pass
            cpu = time.process_time() - c0
            m = rt.model.pools.get("bench")
            if m is None or m.acquires != pairs:
                raise RuntimeError(f"folded {m and m.acquires} acquires, expected {pairs}")
            out[case].append(cpu / n)
    return out


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _background(rates: list[int], seconds: float, rounds: int) -> dict[str, Any]:
    import poolscope.instrument as ps
    from poolscope.instrument.runtime import get_runtime
    from poolscope.pool import Pool

    pool = ps.instrument(Pool(lambda: object(), max_size=CONNS), name="bench", listen="127.0.0.1:0")
    rt = get_runtime()
    assert rt.thread is not None and rt.server is not None
    handle = rt.handles["bench"]
    acquired, released = handle.acquired, handle.released
    site = _site(handle)
    holder = threading.get_ident()
    conns = [f"c{k}" for k in range(CONNS)]
    results: dict[str, list[dict[str, float]]] = {}

    def produce(rate: int) -> dict[str, float]:
        burst = rate // 400  # pairs per 5 ms
        m = rt.model.pools["bench"]
        a0 = m.acquires
        b0, p0 = _thread_cpu(rt.thread), time.process_time()  # type: ignore[arg-type]
        t0 = time.perf_counter()
        nxt = t0
        i = 0
        while nxt - t0 < seconds:
            for _ in range(burst):
                c = conns[i % CONNS]
                acquired(c, 0.0, site, holder)
                released(c)
                i += 1
            nxt += 0.005
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + 10
        while m.acquires - a0 < i and time.monotonic() < deadline:
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        time.sleep(0.05)  # the tick that folded the last ones has written them
        b1, p1 = _thread_cpu(rt.thread), time.process_time()  # type: ignore[arg-type]
        events = 2 * (m.acquires - a0)
        if not rate:  # idle: no per-event figure, only the tick's share of a core
            events = 0
        return {
            "events": float(events),
            "offered": 2.0 * i,
            "rate": events / wall,
            "background_cpu_per_event": (b1 - b0) / max(events, 1),
            "process_cpu_per_event": (p1 - p0) / max(events, 1),
            "background_cpu_share": (b1 - b0) / wall,
        }

    with tempfile.TemporaryDirectory(prefix="poolscope-fold-"):
        for r in range(rounds):
            for observed in (False, True) if r % 2 == 0 else (True, False):
                observer = None
                if observed:
                    observer = subprocess.Popen(
                        [sys.executable, "-m", "poolscope", "record", str(rt.endpoint), "-o", NULL],
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    deadline = time.monotonic() + 10
                    while not rt.server.observers:
                        if time.monotonic() > deadline or observer.poll() is not None:
                            raise RuntimeError("the observer did not attach")
                        time.sleep(0.05)
                    time.sleep(0.3)  # its greeting is sent
                try:
                    for rate in rates:
                        key = f"{rate}/{'observer' if observed else 'none'}"
                        results.setdefault(key, []).append(produce(rate))
                finally:
                    if observer is not None:
                        observer.terminate()
                        observer.wait(10)
                        deadline = time.monotonic() + 5
                        while rt.server.observers and time.monotonic() < deadline:
                            time.sleep(0.05)
    ps.uninstrument(pool)
    return results


def _us(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e6:.2f} "
        f"({min(values) * 1e6:.2f} to {max(values) * 1e6:.2f})"
    )


def _accel_in_use() -> bool:
    from poolscope.instrument import accel

    return accel.FOLD


def run(quick: bool) -> dict[str, Any]:
    pairs, rounds_a = (20_000, 3) if quick else (50_000, 7)
    rates = [0, 4_000, 40_000]  # 0: an idle process (the tick alone)
    seconds, rounds_b = (2.0, 2) if quick else (5.0, 4)
    alone = _fold_alone(pairs, rounds_a)
    bg = _background(rates, seconds, rounds_b)
    lines = [
        f"Part 1, the fold alone: `Runtime._drain` on a prefilled recorder of "
        f"{2 * pairs:,} events (acquire/release pairs over {CONNS} connections, from an "
        f"asyncio task, site captured at depth 8), one thread, {rounds_a} rounds "
        f"alternating. CPU per event, median (min to max):",
        "",
        "| stream | CPU us/event | events/s (one core) |",
        "|---|---|---|",
    ]
    for case, vals in alone.items():
        label = "untagged" if case == "untagged" else f"tagged `route={ROUTE}`"
        lines.append(f"| {label} | {_us(vals)} | {1 / statistics.median(vals):,.0f} |")
    lines += [
        "",
        f"Part 2, poolscope's background thread as it runs (`ps.instrument` on a "
        f"reference pool, stream server on loopback): events appended at a fixed rate in "
        f"5 ms bursts for {seconds:g} s, {rounds_b} rounds alternating with and without "
        f"one `poolscope record -o /dev/null` observer. Background = the thread's own "
        f"CPU clock; process = every thread, the producer's appends included. "
        f"Median (min to max):",
        "",
        "| events/s offered | achieved | observer | background CPU us/event "
        "| process CPU us/event | background thread's share of a core |",
        "|---|---|---|---|---|---|",
    ]
    for key, runs in bg.items():
        rate, who = key.split("/")
        share = [r["background_cpu_share"] for r in runs]
        idle = rate == "0"
        lines.append(
            f"| {'0 (idle)' if idle else f'{int(rate):,}'} "
            f"| {statistics.median(r['rate'] for r in runs):,.0f} "
            f"| {'one' if who == 'observer' else 'none'} "
            f"| {'-' if idle else _us([r['background_cpu_per_event'] for r in runs])} "
            f"| {'-' if idle else _us([r['process_cpu_per_event'] for r in runs])} "
            f"| {statistics.median(share) * 100:.2f}% |"
        )
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    notes = (
        "Measurement only (no target of its own). Since issue 18 the drain folds waits "
        "and holds into the histograms in bulk, one 10 Hz timer drives it, and where "
        "the optional C accelerator was built (here: "
        + ("yes" if _accel_in_use() else "no")
        + ") the usual records are folded and formatted in C, the rest by the Python "
        "loop (bench/accel_ab.py compares the two in one run; bench/perf_ab.py the trees "
        "before and after the first round). Tagged records still call the Python "
        "attribution per event (routes), which is why they cost more. Each "
        "acquire+release pair is two events, so an ASGI request pays "
        "twice the per-event number on the background thread (bench/asgi_wrk.py). "
        f"Machine: 2 shared cores with other agents' work running (load average {load})."
    )
    return {
        "title": "The background fold's cost per event",
        "fold_alone_cpu_per_event": alone,
        "background": bg,
        "markdown": "\n".join(lines),
        "notes": notes,
    }


if __name__ == "__main__":
    res = run("--quick" in sys.argv)
    print(res["markdown"])
    print()
    print(res["notes"])
