"""TUI: CPU use and refresh lag while an application streams 5,000 and 20,000 events/s.

A synthetic stream server (``python -m bench.tui serve PORT RATE``, a separate
process) speaks the real wire protocol: ``hello``, ``sync``, three pools, then
acquire/release pairs paced at RATE events/s with ``state`` gauges every second,
each stamped with the wall clock. This process runs the real TUI
(``PoolscopeApp`` over a ``LiveSource``: fold thread + Textual screen) headless
via ``run_test`` at 120x36 on the pools view (chart and histograms visible) and
measures, over the window:

- CPU: this process's CPU time / wall time (fold thread + screen), and the fold
  thread alone (psutil per-thread times);
- refresh lag: at each screen refresh, wall clock minus the newest event's time
  (how far the screen trails the application), median and max;
- render time per refresh, and the screen loop's responsiveness (how late a 10 ms
  sleep on the app's own event loop wakes up: what a key press would wait);
- folded events/s (does the fold keep up?).

The baseline is the same TUI on the same server streaming only gauges (rate 0),
in the same run. Not a timed test: run by ``make bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

RATES = (0, 5_000, 20_000)


# -- the synthetic application -----------------------------------------------------------
def _serve(port: int, rate: float) -> None:
    from poolscope.events import encode

    pools = ("orders", "reports", "sessions")

    def greeting() -> bytes:
        now = time.time()
        lines = [
            {
                "type": "hello",
                "t": now,
                "protocol": 1,
                "pid": os.getpid(),
                "process": "bench",
                "version": "0",
                "python": sys.version.split()[0],
            },
            {"type": "sync", "t": now, "state": {"process": {"t": now, "pid": os.getpid()}}},
        ]
        for p in pools:
            lines.append(
                {
                    "type": "pool",
                    "t": now,
                    "pool": p,
                    "kind": "bench",
                    "target": "127.0.0.1:5432/db",
                    "config": {"min": 2, "max": 20},
                }
            )
        return b"".join(encode(ev) for ev in lines)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting())
        start = time.monotonic()
        sent = 0
        last_state = 0.0
        i = 0
        try:
            while True:
                now = time.monotonic()
                due = int((now - start) * rate)
                chunk = []
                t = time.time()
                while sent < due and len(chunk) < 4000:
                    p = pools[i % 3]
                    conn = str(i % 15)
                    if sent % 2 == 0:
                        chunk.append(
                            {
                                "type": "acquire",
                                "t": t,
                                "pool": p,
                                "conn": conn,
                                "wait": 0.00002 * (1 + i % 50),
                                "site": None,
                                "task": f"T{i % 40}",
                            }
                        )
                    else:
                        chunk.append(
                            {
                                "type": "release",
                                "t": t,
                                "pool": p,
                                "conn": conn,
                                "hold": 0.002 * (1 + i % 30),
                            }
                        )
                        i += 1
                    sent += 1
                if now - last_state >= 1.0:
                    last_state = now
                    for k, p in enumerate(pools):
                        chunk.append(
                            {
                                "type": "state",
                                "t": t,
                                "pool": p,
                                "size": 10 + k,
                                "idle": 4,
                                "in_use": 6 + k,
                                "waiting": k,
                                "max": 20,
                                "min": 2,
                            }
                        )
                if chunk:
                    writer.write(b"".join(encode(ev) for ev in chunk))
                    await writer.drain()
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            pass

    async def main() -> None:
        server = await asyncio.start_server(client, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the measurement ------------------------------------------------------------------
async def _measure(port: int, seconds: float) -> dict[str, Any]:
    import psutil

    from poolscope.endpoint import Endpoint
    from poolscope.tui.app import PoolscopeApp
    from poolscope.tui.data import LiveSource

    source = LiveSource([Endpoint("127.0.0.1", port)])
    app = PoolscopeApp(source, refresh_interval=1.0)
    me = psutil.Process()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.5)  # connect, first sync, warm up
        thread = source._thread
        fold_id = thread.native_id if thread is not None else None

        def fold_cpu() -> float:
            for th in me.threads():
                if th.id == fold_id:
                    return float(th.user_time + th.system_time)
            return 0.0

        feed = source.feeds[0]
        app.lags.clear()
        app.render_seconds.clear()
        seq0, f0 = feed.seq, fold_cpu()
        c0, w0 = time.process_time(), time.monotonic()
        # The screen's event loop is this loop: how late does a 10 ms sleep wake up?
        delays = []
        while time.monotonic() - w0 < seconds:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            delays.append(time.perf_counter() - t - 0.01)
        c1, w1 = time.process_time(), time.monotonic()
        seq1, f1 = feed.seq, fold_cpu()
        wall = w1 - w0
        lags = list(app.lags) or [0.0]
        renders = list(app.render_seconds) or [0.0]
        return {
            "cpu_percent": 100 * (c1 - c0) / wall,
            "fold_cpu_percent": 100 * (f1 - f0) / wall,
            "folded_per_s": (seq1 - seq0) / wall,
            "lag_median_s": statistics.median(lags),
            "lag_max_s": max(lags),
            "render_median_ms": 1000 * statistics.median(renders),
            "render_max_ms": 1000 * max(renders),
            "loop_delay_p50_ms": 1000 * statistics.median(delays),
            "loop_delay_max_ms": 1000 * max(delays),
            "refreshes": len(renders),
        }


def _one(rate: int, seconds: float) -> dict[str, Any]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.tui", "serve", str(port), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return asyncio.run(_measure(port, seconds))
    finally:
        proc.kill()
        proc.wait(10)


def run(quick: bool) -> dict[str, Any]:
    seconds = 5.0 if quick else 15.0
    rounds = 1 if quick else 3
    results: dict[int, list[dict[str, Any]]] = {r: [] for r in RATES}
    for _ in range(rounds):
        for rate in RATES:  # interleaved, so drift hits every rate alike
            results[rate].append(_one(rate, seconds))

    def med(rate: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[rate]))

    def mx(rate: int, key: str) -> float:
        return float(max(r[key] for r in results[rate]))

    base_cpu = med(0, "cpu_percent")
    rows = []
    for rate in RATES:
        label = "gauges only (baseline)" if rate == 0 else f"{rate:,} events/s"
        rows.append(
            f"| {label} | {med(rate, 'folded_per_s'):,.0f} | {med(rate, 'cpu_percent'):.0f}% "
            f"({med(rate, 'cpu_percent') - base_cpu:+.0f} vs baseline) | "
            f"{med(rate, 'fold_cpu_percent'):.0f}% | {med(rate, 'lag_median_s'):.2f} s / "
            f"{mx(rate, 'lag_max_s'):.2f} s | {med(rate, 'render_median_ms'):.1f} / "
            f"{mx(rate, 'render_max_ms'):.1f} ms | {med(rate, 'loop_delay_p50_ms'):.1f} / "
            f"{mx(rate, 'loop_delay_max_ms'):.0f} ms |"
        )
    md = "\n".join(
        [
            f"Real TUI (LiveSource fold thread + Textual app, headless run_test 120x36, pools "
            f"view with chart, refresh 1 s) attached to a synthetic stream server process; "
            f"{seconds:g} s windows, median of {rounds} interleaved round(s). CPU is % of one "
            "core for the whole TUI process. Lag = wall clock minus newest event time at each "
            "refresh (includes up to one refresh interval of event age).",
            "",
            "| stream | folded events/s | TUI CPU | fold thread CPU | refresh lag median / max "
            "| render per refresh median / max | screen loop delay p50 / max |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    return {
        "seconds": seconds,
        "rounds": rounds,
        "results": {str(k): v for k, v in results.items()},
        "markdown": md,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(int(sys.argv[2]), float(sys.argv[3]))
    else:
        out = run("--quick" in sys.argv)
        print(out["markdown"])
        print(json.dumps(out["results"], indent=1)[:2000])
