"""A real ASGI app under a real HTTP load generator: Starlette + asyncpg under uvicorn,
driven by ``wrk``, bare against poolscope with its middleware and one observer.

Five uvicorn processes (one worker each, loopback), running the same code, each
with its own asyncpg pool on the same throwaway PostgreSQL (``tests.pgcluster``):

* bare: no poolscope import at all; and bare + a do-nothing pure-ASGI middleware
  (the floor: what any middleware layer costs in this stack);
* instrument only: ``ps.instrument`` alone (no middleware, no observer), and
  instrument + middleware (no observer), to show where the cost goes;
* poolscope: ``ps.instrument(pool, listen=...)`` (leak detection on at its default,
  so every acquire captures its site), ``poolscope.instrument.asgi.PoolscopeMiddleware``
  (every acquire tagged with its route template), the background thread and stream
  server running, and one observer attached reading everything: a real
  ``poolscope record ENDPOINT -o FILE`` subprocess.

The route is the one the who-holds tests use for a short hold
(``tests/apps/web_starlette.py``'s ``/fast/{n:int}``): acquire, ``SELECT 1``,
release, a JSON response. ``wrk`` (Debian's; ``apt-get install wrk``) runs with
fixed threads, connections and duration against each server in turn, rotating which
goes first in each round, so a noisy machine's drift hits both alike. Per pair:
throughput ratio, p50 and p99 latency deltas (wrk ``--latency``), and the whole
uvicorn process's CPU per request (psutil, user + system over the run and a short
settle after it, every thread included: poolscope's background thread shares the
GIL, so the application pays for it), split into the event loop's thread and the
rest (poolscope's background thread). Target (issue 18): throughput >= 0.99x, p99
<= +3%.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 0.99
TARGET_P99 = 0.03
POOL_SIZE = 8
WRK_THREADS = 2
WRK_CONNECTIONS = 32
SETTLE = 0.3  # seconds after each run inside the CPU window: the fold catches up
PATH = "/fast/1"
#: bare; bare + a do-nothing ASGI middleware (the floor any middleware costs);
#: ``ps.instrument`` alone; plus the middleware (no observer yet); poolscope in full
#: (instrument + middleware + one observer) - bare and poolscope are the measured
#: pair, the three between say where the cost goes.
CONFIGS = ("bare", "floor", "instrument", "middleware", "poolscope")


class _PassThrough:
    """An ASGI middleware that does nothing: what any middleware layer costs here."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


# -- the application (runs in the child: python -m bench.asgi_wrk app CONFIG DSN PORT) --
def _app(argv: list[str]) -> None:
    import contextlib
    import gc
    from collections.abc import AsyncIterator

    import asyncpg
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    config, dsn, port = argv[0], argv[1], int(argv[2])
    state: dict[str, Any] = {}
    gc_runs = [0, 0, 0]
    gc_cpu = [0.0, 0.0]  # the running collection's start, the total (thread CPU)

    def counted(phase: str, info: dict[str, Any]) -> None:
        # The cyclic collector's runs and their CPU, whichever thread they ran on:
        # what keeping objects alive longer costs the application (bench's GC column).
        if phase == "start":
            gc_cpu[0] = time.thread_time()
        else:
            gc_runs[info["generation"]] += 1
            gc_cpu[1] += time.thread_time() - gc_cpu[0]

    gc.callbacks.append(counted)

    async def gc_stats(request: Request) -> JSONResponse:
        return JSONResponse({"runs": gc_runs, "seconds": gc_cpu[1]})

    async def fast(request: Request) -> JSONResponse:
        async with state["pool"].acquire() as con:
            return JSONResponse({"one": await con.fetchval("SELECT 1")})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raw = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        ready: dict[str, Any] = {"pid": os.getpid()}
        if config not in ("bare", "floor"):
            import poolscope.instrument as ps

            leak = None if config == "leak-off" else 30.0
            state["pool"] = ps.instrument(raw, name="db", leak_threshold=leak, listen="127.0.0.1:0")
            ready["stream"] = str(ps.get_runtime().endpoint)
        else:
            state["pool"] = raw
        print(json.dumps(ready), flush=True)
        yield
        await raw.close()

    middleware = []
    if config in ("poolscope", "middleware"):
        from poolscope.instrument.asgi import PoolscopeMiddleware

        middleware.append(Middleware(PoolscopeMiddleware))
    elif config == "floor":
        middleware.append(Middleware(_PassThrough))
    routes = [Route("/fast/{n:int}", fast), Route("/_gc", gc_stats)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


# -- driver side -----------------------------------------------------------------------
class Server:
    def __init__(self, config: str, dsn: str) -> None:
        from tests.pgcluster import free_port

        self.config = config
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.asgi_wrk", "app", config, dsn, str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{config} app died at start (exit {self.proc.wait()})")
        self.ready: dict[str, Any] = json.loads(line)
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{config} app does not answer on {self.url}") from None
                time.sleep(0.1)
        import psutil

        self.ps = psutil.Process(self.proc.pid)
        self.runs: list[dict[str, float]] = []
        self.requests_sent = 1
        #: The observer reading this server's stream, if any: its CPU is measured too
        #: (on a small machine it competes with the application for the same cores).
        self.observer: Any = None

    def cpu(self) -> tuple[float, float]:
        """The whole process's CPU seconds (user + system), and the event loop's
        thread's share of it (the rest is poolscope's background thread, when there)."""
        t = self.ps.cpu_times()
        main = 0.0
        for th in self.ps.threads():
            if th.id == self.proc.pid:
                main = th.user_time + th.system_time
        return float(t.user + t.system), float(main)

    def gc(self) -> tuple[list[int], float]:
        """The app's cyclic-collector runs per generation so far, and their CPU."""
        with urllib.request.urlopen(self.url.replace(PATH, "/_gc"), timeout=5) as r:
            got = json.loads(r.read())
        return [int(x) for x in got["runs"]], float(got["seconds"])

    def load(self, seconds: float, record: bool = True) -> dict[str, float]:
        g0, gs0 = self.gc()
        o0 = _cpu(self.observer)
        c0, m0 = self.cpu()
        res = wrk(self.url, seconds)
        time.sleep(SETTLE)
        c1, m1 = self.cpu()
        g1, gs1 = self.gc()
        n = max(res["requests"], 1.0)
        for gen in range(3):
            res[f"gc{gen}_per_1k"] = (g1[gen] - g0[gen]) * 1000 / n
        res["gc_cpu_per_request"] = (gs1 - gs0) / n
        res["observer_cpu_per_request"] = (_cpu(self.observer) - o0) / n
        res["cpu_per_request"] = (c1 - c0) / n
        res["loop_thread_cpu_per_request"] = (m1 - m0) / n
        self.requests_sent += int(res["requests"])
        if record:
            self.runs.append(res)
        return res

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _cpu(proc: Any) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return float(t.user + t.system)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, seconds: float) -> dict[str, float]:
    """One wrk run; throughput, p50/p99 latency, request and error counts."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", "--latency"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and n and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "requests": float(n.group(1)),
        "p50": _seconds(p50.group(1)),
        "p99": _seconds(p99.group(1)),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def _count(path: str) -> dict[str, int]:
    acquires = dropped = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if b'"type":"acquire"' in line:
                    acquires += 1
                elif b'"type":"dropped"' in line:
                    dropped += int(json.loads(line).get("count", 0))
    except (OSError, ValueError):
        pass
    return {"acquires": acquires, "dropped": dropped}


def _measure(dsn: str, pairs: int, seconds: float, record_path: str) -> dict[str, Any]:
    servers: dict[str, Server] = {}
    observer: subprocess.Popen[bytes] | None = None
    try:
        for config in CONFIGS:
            servers[config] = Server(config, dsn)
        inst = servers["poolscope"]
        observer = subprocess.Popen(
            [sys.executable, "-m", "poolscope", "record", inst.ready["stream"], "-o", record_path],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not (os.path.exists(record_path) and os.path.getsize(record_path) > 0):
            if time.monotonic() > deadline or observer.poll() is not None:
                raise RuntimeError("the observer did not attach")
            time.sleep(0.1)
        import psutil

        inst.observer = psutil.Process(observer.pid)
        order = list(servers.values())
        for s in order:  # warm up: connections, code paths, interning
            s.load(min(2.0, seconds), record=False)
        for p in range(pairs):
            k = p % len(order)
            for s in order[k:] + order[:k]:
                s.load(seconds)
            print(
                f"round {p + 1}/{pairs}: "
                + ", ".join(f"{c} {s.runs[-1]['rps']:,.0f} req/s" for c, s in servers.items()),
                flush=True,
            )
        time.sleep(1.0)  # the observer writes what is in flight
        sent = inst.requests_sent
    finally:
        if observer is not None:
            observer.terminate()
            try:
                observer.wait(10)
            except subprocess.TimeoutExpired:
                observer.kill()
                observer.wait()
        for s in servers.values():
            s.close()
    return {**{c: s.runs for c, s in servers.items()}, "sent": sent, **_count(record_path)}


def _spread(values: list[float], fmt: str) -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))} to {fmt.format(max(values))})"
    )


def _load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run(quick: bool) -> dict[str, Any]:
    from tests.pgcluster import PgCluster, PgUnavailable

    if shutil.which("wrk") is None:
        return {
            "skipped": "wrk not installed (apt-get install wrk)",
            "markdown": "Skipped: `wrk` is not installed (`apt-get install wrk`).",
        }
    pairs, seconds = (4, 3.0) if quick else (12, 8.0)
    load_before = _load_average()
    try:
        with PgCluster() as pg, tempfile.TemporaryDirectory(prefix="poolscope-wrk-") as d:
            res = _measure(pg.dsn, pairs, seconds, os.path.join(d, "rec.ndjson"))
    except PgUnavailable as exc:
        return {"skipped": str(exc), "markdown": f"Skipped: {exc}"}
    load_after = _load_average()
    b, f, m, w, i = (res[c] for c in CONFIGS)
    ratios = [y["rps"] / x["rps"] for x, y in zip(b, i, strict=True)]
    p50d = [y["p50"] / x["p50"] - 1 for x, y in zip(b, i, strict=True)]
    p99d = [y["p99"] / x["p99"] - 1 for x, y in zip(b, i, strict=True)]
    cpud = [y["cpu_per_request"] - x["cpu_per_request"] for x, y in zip(b, i, strict=True)]
    loopd = [
        y["loop_thread_cpu_per_request"] - x["loop_thread_cpu_per_request"]
        for x, y in zip(b, i, strict=True)
    ]
    bgd = [y["cpu_per_request"] - y["loop_thread_cpu_per_request"] for y in i]
    m_ratios = [y["rps"] / x["rps"] for x, y in zip(b, m, strict=True)]
    m_cpud = [y["cpu_per_request"] - x["cpu_per_request"] for x, y in zip(b, m, strict=True)]
    f_cpud = [y["cpu_per_request"] - x["cpu_per_request"] for x, y in zip(b, f, strict=True)]
    w_ratios = [y["rps"] / x["rps"] for x, y in zip(b, w, strict=True)]
    w_cpud = [y["cpu_per_request"] - x["cpu_per_request"] for x, y in zip(b, w, strict=True)]
    ratio, p99 = statistics.median(ratios), statistics.median(p99d)
    v_ratio = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    v_p99 = "PASS" if p99 <= TARGET_P99 else "FAIL"
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in b + f + m + w + i)

    def row(name: str, runs: list[dict[str, float]]) -> list[str]:
        return [
            name,
            _spread([r["rps"] for r in runs], "{:,.0f}"),
            _spread([r["p50"] * 1e3 for r in runs], "{:.2f}"),
            _spread([r["p99"] * 1e3 for r in runs], "{:.2f}"),
            _spread([r["cpu_per_request"] * 1e6 for r in runs], "{:.0f}"),
            _spread([r["loop_thread_cpu_per_request"] * 1e6 for r in runs], "{:.0f}"),
            "/".join(
                f"{statistics.median(r[f'gc{g}_per_1k'] for r in runs):.2f}" for g in range(3)
            ),
            _spread([r["gc_cpu_per_request"] * 1e6 for r in runs], "{:.1f}"),
        ]

    header = (
        "| configuration | req/s | p50 ms | p99 ms | process CPU us/request "
        "| of which the loop's thread | GC runs per 1k requests (gen 0/1/2) "
        "| GC CPU us/request |"
    )
    lines = [
        f"Starlette + asyncpg (pool {POOL_SIZE}) under uvicorn (one worker, loopback, "
        f"asyncio loop, h11), route `/fast/{{n:int}}`: acquire, `SELECT 1`, release. "
        f"`wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds:g}s --latency` against each "
        f"server in turn, {pairs} interleaved rounds (who goes first rotates). poolscope = "
        f"`ps.instrument` (leak detection on, 30 s), `PoolscopeMiddleware`, stream server, "
        f"one `poolscope record` observer attached; instrument only = `ps.instrument` "
        f"alone, + middleware = with `PoolscopeMiddleware` too (neither has an observer); "
        f"floor = bare with a do-nothing ASGI middleware, what any middleware layer costs; "
        f"to show where the cost goes. "
        f"Values: median (min to max) over the runs.",
        "",
        header,
        "|---|---|---|---|---|---|---|---|",
        "| " + " | ".join(row("bare", b)) + " |",
        "| " + " | ".join(row("bare + do-nothing middleware (floor)", f)) + " |",
        "| " + " | ".join(row("instrument only", m)) + " |",
        "| " + " | ".join(row("instrument + middleware", w)) + " |",
        "| " + " | ".join(row("poolscope + middleware + observer", i)) + " |",
        "",
        "GC: the cyclic collector's runs in the app (a `gc.callbacks` counter, read "
        "through a `/_gc` route before and after each run) and their CPU, any thread. "
        "Objects allocated on the loop's thread and freed later on poolscope's count "
        "towards its next young-generation run; until session 7 every acquire record "
        "kept its finished task alive until the drain (naming.held_by).",
        "",
        "Paired per round (poolscope vs bare of the same round), median (min to max):",
        "",
        f"- throughput ratio: **{_spread(ratios, '{:.3f}')}**; "
        f"target >= {TARGET_RATIO}: **{v_ratio}** "
        f"(instrument only: {_spread(m_ratios, '{:.3f}')}; + middleware: "
        f"{_spread(w_ratios, '{:.3f}')})",
        f"- p50 latency: {_spread([d * 100 for d in p50d], '{:+.1f}%')}",
        f"- p99 latency: **{_spread([d * 100 for d in p99d], '{:+.1f}%')}**; "
        f"target <= +{TARGET_P99 * 100:.0f}%: **{v_p99}**",
        f"- whole-process CPU per request: {_spread([d * 1e6 for d in cpud], '{:+.1f} us')} "
        f"(instrument only: {_spread([d * 1e6 for d in m_cpud], '{:+.1f} us')}; "
        f"+ middleware: {_spread([d * 1e6 for d in w_cpud], '{:+.1f} us')}; floor: "
        f"{_spread([d * 1e6 for d in f_cpud], '{:+.1f} us')}); of it, "
        f"the loop's thread {_spread([d * 1e6 for d in loopd], '{:+.1f} us')} and "
        f"poolscope's background thread {_spread([d * 1e6 for d in bgd], '{:.1f} us')}; "
        f"the observer process, on the same cores, "
        f"{_spread([r['observer_cpu_per_request'] * 1e6 for r in i], '{:.1f} us')}",
        "",
        f"The observer recorded {res['acquires']:,} acquire events for {res['sent']:,} "
        f"requests wrk counted as answered by the poolscope server (runs cut at the end "
        f"leave a few in flight, so acquires >= requests); dropped events told: "
        f"{res['dropped']:,}. Non-2xx responses and socket errors, all servers: "
        f"{errors:,.0f}.",
    ]
    notes = (
        f"Machine: 2 shared cores with other agents' work running (load average "
        f"{load_before} before, {load_after} after); PostgreSQL, the five uvicorn "
        f"processes (idle ones tick too), wrk and the observer all share those two "
        f"cores, so one run's throughput moves by several percent and the paired "
        f"ratios' spread is the honest error bar."
    )
    targets = [
        {
            "target": f"ASGI app under wrk: throughput poolscope+observer / bare >= {TARGET_RATIO}",
            "result": f"{ratio:.3f} (paired {min(ratios):.3f}-{max(ratios):.3f})",
            "verdict": v_ratio,
        },
        {
            "target": f"ASGI app under wrk: p99 latency <= +{TARGET_P99 * 100:.0f}%",
            "result": f"{p99 * 100:+.1f}% (paired {min(p99d) * 100:+.1f}% to "
            f"{max(p99d) * 100:+.1f}%)",
            "verdict": v_p99,
        },
    ]
    return {
        **res,
        "title": "A real ASGI app under wrk: Starlette + asyncpg, poolscope, middleware, observer",
        "pairs": pairs,
        "seconds": seconds,
        "ratios": ratios,
        "p50_deltas": p50d,
        "p99_deltas": p99d,
        "cpu_per_request_deltas": cpud,
        "loop_thread_cpu_deltas": loopd,
        "background_thread_cpu_per_request": bgd,
        "instrument_only_ratios": m_ratios,
        "middleware_ratios": w_ratios,
        "floor_cpu_per_request_deltas": f_cpud,
        "load_average": [load_before, load_after],
        "targets": targets,
        "markdown": "\n".join(lines),
        "notes": notes,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "app":
        _app(sys.argv[2:])
    else:
        out = run("--quick" in sys.argv)
        print(out["markdown"])
        print()
        print(out.get("notes", ""))
