"""Soak: an instrumented application at ~10,000 events/s for 30 minutes (quick: 60 s)
with ``poolscope record``, ``poolscope export`` and the TUI (headless) attached, plus
one more observer SIGSTOPped for 30 s (quick: 10 s) in the middle.

Measures the RSS of every process over time (flat = no leak), what reached the
healthy observers (nothing dropped), the application's throughput during the
stall against before it, and the stalled observer's announced drops.

Run alone: ``python -m bench --only soak [--quick]``; the app side of it:
``python bench/soak.py app --listen HOST:PORT --rate PAIRS_PER_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RATE = 5000.0  # acquire/release pairs a second: ~10,000 events a second

_TUI = """
import sys
from poolscope.endpoint import parse_endpoint
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import LiveSource
PoolscopeApp(LiveSource([parse_endpoint(sys.argv[1])]), title="soak").run(headless=True)
"""


# -- the application ----------------------------------------------------------------


async def _app(listen: str, rate: float) -> None:
    import poolscope.instrument as ps
    from poolscope.pool import Pool

    class Conn:
        async def close(self) -> None:
            return None

    async def factory() -> Conn:
        return Conn()

    pool: Pool[Conn] = Pool(factory, max_size=8, acquire_timeout=5.0, name="soak")
    ps.instrument(pool, listen=listen, leak_threshold=30.0)
    rt = ps.get_runtime()
    ops = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(json.dumps({"t": time.time(), "ops": ops}), flush=True)

    async with pool:
        print(json.dumps({"ready": str(rt.endpoint), "pid": os.getpid()}), flush=True)
        reporter = asyncio.ensure_future(report())
        batch = max(1, int(rate / 200))
        step = batch / rate
        next_t = time.perf_counter()
        while not stop.is_set():
            for _ in range(batch):
                async with pool.acquire():
                    pass
                ops += 1
            next_t += step
            delay = next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_t = time.perf_counter()
        reporter.cancel()
        p = rt.model.pools["soak"]
        print(
            json.dumps(
                {"final": True, "ops": ops, "acquires": p.acquires, "dropped": rt.model.dropped}
            ),
            flush=True,
        )


# -- the harness ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, **kw)


def _rss(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return float("nan")


def _end(p: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _scan(path: Path) -> dict[str, int]:
    """Count a recording's acquires (the sync's count when it connected plus the live
    lines) and its announced drops, streaming (it may be GBs)."""
    acquires = drops = byes = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b'{"type":"sync"'):
                pools = json.loads(line)["state"].get("pools", {})
                acquires = int(pools.get("soak", {}).get("counters", {}).get("acquires", 0))
            elif b'"type":"acquire"' in line:
                acquires += 1
            elif b'"type":"dropped"' in line:
                drops += int(json.loads(line).get("count", 0))
            elif b'"type":"bye"' in line:
                byes += 1
    return {"acquires": acquires, "dropped": drops, "bye": byes}


def _wait_stable(path: Path, quiet: float = 1.0, timeout: float = 60.0) -> None:
    """Until a recorder has written out what its socket still held."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now == size:
            return
        size = now
        time.sleep(quiet)


def _growth(samples: list[float], warmup: int) -> dict[str, float]:
    """RSS after warm-up, at the end, its max, and the growth between (MiB)."""
    s = [x for x in samples[warmup:] if x == x] or [float("nan")]
    return {
        "start_mib": round(s[0], 1),
        "end_mib": round(s[-1], 1),
        "max_mib": round(max(s), 1),
        "growth_mib": round(s[-1] - s[0], 1),
    }


def run(quick: bool) -> dict[str, Any]:
    duration = 60.0 if quick else 1800.0
    stall = 10.0 if quick else 30.0
    sample_every = 2.0 if quick else 10.0
    tmp = Path(tempfile.mkdtemp(prefix="poolscope-soak-"))
    listen = f"127.0.0.1:{_free_port()}"
    mport = _free_port()
    env_dir = {"POOLSCOPE_RUNTIME_DIR": str(tmp)}
    os.environ.update(env_dir)
    app = _spawn(
        [PY, __file__, "app", "--listen", listen, "--rate", str(RATE)], stdout=subprocess.PIPE
    )
    assert app.stdout is not None
    json.loads(app.stdout.readline())  # {"ready": ENDPOINT, "pid": PID}
    ops_log: list[tuple[float, int]] = []
    final: dict[str, Any] = {}

    def read_app() -> None:
        assert app.stdout is not None
        for line in app.stdout:
            msg = json.loads(line)
            if msg.get("final"):
                final.update(msg)
            elif "ops" in msg:
                ops_log.append((float(msg["t"]), int(msg["ops"])))

    threading.Thread(target=read_app, daemon=True).start()
    rec_path = tmp / "soak.ndjson"
    procs: dict[str, subprocess.Popen[bytes]] = {
        "app": app,
        "record": _spawn([PY, "-m", "poolscope", "record", listen, "-o", str(rec_path)]),
        "export": _spawn(
            [PY, "-m", "poolscope", "export", listen, "--listen", f"127.0.0.1:{mport}"],
            stderr=subprocess.DEVNULL,
        ),
        "tui": _spawn(
            [PY, "-c", _TUI, listen], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ),
    }
    stalled = _spawn(
        [PY, "-m", "poolscope", "record", listen, "-o", str(tmp / "stalled.ndjson")],
        stderr=subprocess.DEVNULL,
    )
    rss: dict[str, list[float]] = {name: [] for name in procs}
    t0 = time.monotonic()
    stall_at = t0 + duration / 2
    stall_window: tuple[float, float] | None = None
    try:
        while time.monotonic() - t0 < duration:
            now = time.monotonic()
            if stall_window is None and now >= stall_at:
                stalled.send_signal(signal.SIGSTOP)
                stall_window = (time.time(), time.time() + stall)
            if (
                stall_window is not None
                and time.time() >= stall_window[1]
                and stalled.poll() is None
            ):
                stalled.send_signal(signal.SIGCONT)
            for name, p in procs.items():
                rss[name].append(_rss(p.pid))
            time.sleep(sample_every)
        metrics = _scrape(mport)
        _end(app)  # prints its final counters, flushes its last events, exits
        _wait_stable(rec_path)
    finally:
        for p in [*procs.values(), stalled]:
            _end(p)
    recording = _scan(rec_path)
    stalled_rec = _scan(tmp / "stalled.ndjson")

    def rate_between(a: float, b: float) -> float:
        pts = [(t, n) for t, n in ops_log if a <= t <= b]
        if len(pts) < 2:
            return float("nan")
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    sw = stall_window or (0.0, 0.0)
    before = rate_between(sw[0] - stall, sw[0])
    during = rate_between(sw[0], sw[1])
    warmup = max(1, int(10.0 / sample_every))
    memory = {name: _growth(samples, warmup) for name, samples in rss.items()}
    events_per_s = 2 * final.get("ops", 0) / duration
    result: dict[str, Any] = {
        "duration_s": duration,
        "target_events_per_s": 2 * RATE,
        "events_per_s": round(events_per_s),
        "app_ops": final.get("ops"),
        "recorded_acquires": recording["acquires"],
        "recorded_dropped": recording["dropped"],
        "recorded_bye": recording["bye"],
        "app_recorder_dropped": final.get("dropped"),
        "exporter_dropped_metric": _metric(metrics, "poolscope_events_dropped"),
        "exporter_internal_errors": _metric(metrics, "poolscope_internal_errors"),
        "stall_s": stall,
        "throughput_before_stall": round(before),
        "throughput_during_stall": round(during),
        "stall_throughput_ratio": round(during / before, 3) if before else None,
        "stalled_observer_dropped": stalled_rec["dropped"],
        "memory": memory,
        "rss_samples_mib": {k: [round(x, 1) for x in v] for k, v in rss.items()},
    }
    rows = [
        "| process | RSS after warm-up (MiB) | at end | max | growth |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in memory.items():
        rows.append(
            f"| {name} | {m['start_mib']} | {m['end_mib']} | {m['max_mib']} | {m['growth_mib']:+} |"
        )
    rows += [
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| duration | {duration:g} s at ~{events_per_s:,.0f} events/s |",
        f"| acquires done / recorded | {final.get('ops')} / {recording['acquires']} |",
        f"| dropped (healthy recorder; exporter metric) | {recording['dropped']}; "
        f"{result['exporter_dropped_metric']:g} |",
        f"| app throughput during a {stall:g} s SIGSTOP of one observer | "
        f"{result['stall_throughput_ratio']} of before |",
        f"| lines dropped for (and announced to) the stopped observer | {stalled_rec['dropped']} |",
    ]
    result["markdown"] = "\n".join(rows)
    with contextlib.suppress(OSError):
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["app"]:
        import argparse

        sys.path.insert(0, str(ROOT))
        ap = argparse.ArgumentParser()
        ap.add_argument("--listen", required=True)
        ap.add_argument("--rate", type=float, default=RATE)
        a = ap.parse_args(sys.argv[2:])
        asyncio.run(_app(a.listen, a.rate))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
