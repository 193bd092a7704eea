"""End to end: a workload's throughput on asyncpg, instrumented and observed, against bare.

Two worker processes against the same throwaway PostgreSQL (``tests.pgcluster``):

* bare: ``asyncpg.create_pool(min_size=4, max_size=4)``;
* instrumented: the same pool through ``poolscope.instrument.instrument()`` (leak
  detection on at its default 30 s, so every acquire captures its site), its
  background thread and stream server running, and one observer attached: a real
  ``poolscope record ENDPOINT -o FILE`` subprocess writing every event to disk.

The workload: 16 tasks, each looping ``async with pool.acquire() as conn:
await conn.fetchval("SELECT $1::int", i)``. Rounds of a fixed duration alternate
between the two workers (rotating who goes first); throughput is queries/s. The
observer and PostgreSQL share the machine with the application, as they would.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench._rounds import ROOT, Worker

TARGET = 0.97
TASKS = 16
POOL_SIZE = 4


# -- worker side ---------------------------------------------------------------------
async def _round(pool: Any, seconds: float) -> int:
    stop = time.perf_counter() + seconds
    counts = [0] * TASKS

    async def task(k: int) -> None:
        i = 0
        clock = time.perf_counter
        while clock() < stop:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT $1::int", i)
            i += 1
        counts[k] = i

    await asyncio.gather(*(task(k) for k in range(TASKS)))
    return sum(counts)


def _worker(argv: list[str]) -> None:
    config, dsn = argv
    import asyncpg

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = loop.run_until_complete(asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE))
    ready: dict[str, Any] = {"ready": True}
    rt = None
    if config == "instrumented":
        import poolscope.instrument as ps
        from poolscope.instrument.runtime import get_runtime

        pool = ps.instrument(pool, name="e2e", listen="127.0.0.1:0")
        rt = get_runtime()
        assert rt.endpoint is not None
        ready["endpoint"] = str(rt.endpoint)
    loop.run_until_complete(_round(pool, 0.5))  # warm up
    out = sys.stdout
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "check":
            info: dict[str, Any] = {}
            if rt is not None:
                time.sleep(0.2)
                m = rt.model.pools.get("e2e")
                info = {
                    "observers": len(rt.server.observers) if rt.server else 0,
                    "acquires": m.acquires if m else 0,
                }
            out.write(json.dumps(info) + "\n")
        else:
            seconds = float(cmd[0])
            t0 = time.perf_counter()
            n = loop.run_until_complete(_round(pool, seconds))
            out.write(json.dumps({"s": n / (time.perf_counter() - t0)}) + "\n")
        out.flush()
    loop.run_until_complete(pool.close())


# -- driver side ---------------------------------------------------------------------
def _measure(dsn: str, rounds: int, seconds: float, record_path: str) -> dict[str, Any]:
    argv = ["-m", "bench.end_to_end", "worker"]
    bare = Worker("bare", [*argv, "bare", dsn])
    inst = Worker("instrumented", [*argv, "instrumented", dsn])
    observer: subprocess.Popen[bytes] | None = None
    try:
        bare.wait_ready()
        ready = inst._read()
        observer = subprocess.Popen(
            [sys.executable, "-m", "poolscope", "record", ready["endpoint"], "-o", record_path],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 10
        while inst.ask("check").get("observers", 0) < 1:
            if time.time() > deadline or observer.poll() is not None:
                raise RuntimeError("the observer did not attach")
            time.sleep(0.1)
        workers = [bare, inst]
        for r in range(rounds):
            for w in workers[r % 2 :] + workers[: r % 2]:
                w.samples.append(float(w.ask(f"{seconds}")["s"]))
        check = inst.ask("check")
    finally:
        bare.close()
        inst.close()
        if observer is not None:
            observer.terminate()
            try:
                observer.wait(10)
            except subprocess.TimeoutExpired:
                observer.kill()
                observer.wait()
    recorded = 0
    try:
        with open(record_path, "rb") as f:
            for line in f:
                if b'"type":"acquire"' in line:
                    recorded += 1
    except OSError:
        pass
    ratios = [i / b for b, i in zip(bare.samples, inst.samples, strict=True)]
    return {
        "bare_qps": bare.samples,
        "instrumented_qps": inst.samples,
        "round_ratios": ratios,
        "ratio": statistics.median(inst.samples) / statistics.median(bare.samples),
        "observers_at_end": check.get("observers"),
        "acquires_folded_in_app": check.get("acquires"),
        "acquires_recorded_by_observer": recorded,
    }


def run(quick: bool) -> dict[str, Any]:
    from tests.pgcluster import PgCluster, PgUnavailable

    rounds, seconds = (4, 1.0) if quick else (10, 3.0)
    try:
        with PgCluster() as pg, tempfile.TemporaryDirectory(prefix="poolscope-e2e-") as d:
            res = _measure(pg.dsn, rounds, seconds, os.path.join(d, "rec.ndjson"))
    except PgUnavailable as exc:
        return {"skipped": str(exc), "markdown": f"End to end: skipped ({exc})"}
    b, i = res["bare_qps"], res["instrumented_qps"]
    ratio = res["ratio"]
    verdict = "PASS" if ratio >= TARGET else "MISS"
    rr = res["round_ratios"]
    md = "\n".join(
        [
            f"asyncpg pool ({POOL_SIZE} connections) on a real PostgreSQL, {TASKS} tasks each "
            "looping acquire + `SELECT $1::int` + release; "
            f"{rounds} alternating rounds of {seconds:g} s per configuration. Instrumented = "
            "poolscope leak detection on, background thread, stream server and one "
            "`poolscope record` observer attached.",
            "",
            "| configuration | queries/s, median (min-max) |",
            "|---|---|",
            f"| bare | {statistics.median(b):,.0f} ({min(b):,.0f}-{max(b):,.0f}) |",
            f"| instrumented + observer | {statistics.median(i):,.0f} "
            f"({min(i):,.0f}-{max(i):,.0f}) |",
            "",
            f"Throughput ratio instrumented/bare: **{ratio:.3f}** (per-round ratios "
            f"{min(rr):.3f}-{max(rr):.3f}); target >= {TARGET}: **{verdict}**. "
            f"The observer wrote {res['acquires_recorded_by_observer']:,} acquire events; "
            f"the app folded {res['acquires_folded_in_app']:,}.",
        ]
    )
    targets = [
        {
            "target": f"asyncpg workload throughput instrumented+observer / bare >= {TARGET}",
            "result": f"{ratio:.3f}",
            "verdict": verdict,
        }
    ]
    return {
        **res,
        "title": "End to end: asyncpg workload with poolscope and an attached observer",
        "targets": targets,
        "rounds": rounds,
        "seconds": seconds,
        "verdict": verdict,
        "markdown": md,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker(sys.argv[2:])
    else:
        out = run("--quick" in sys.argv)
        print(out["markdown"])
