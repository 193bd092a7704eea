"""Overhead of the asyncpg adapter: acquire+release against a real PostgreSQL.

Two asyncpg pools of the same size on the same throwaway cluster, one bare and one
instrumented (leak detection on, so the acquire site is captured), driven alternately
in rounds by the same loop; the ratio of the median per-operation times is the cost.
Target: at most 1.05.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

ROUNDS_QUICK, ROUNDS_FULL = 7, 21
OPS_QUICK, OPS_FULL = 300, 1500
TARGET = 1.05


async def _round(pool: Any, ops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(ops):
        async with pool.acquire():
            pass
    return (time.perf_counter() - t0) / ops


async def _measure(dsn: str, rounds: int, ops: int) -> dict[str, Any]:
    import asyncpg

    from poolscope.instrument.asyncpg import instrument_asyncpg
    from poolscope.instrument.runtime import Runtime

    runtime = Runtime()
    bare = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    raw = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
    inst = instrument_asyncpg(raw, runtime, name="bench", leak_threshold=30.0, heartbeat=None)
    try:
        for pool in (bare, inst):  # warm up both
            await _round(pool, ops // 3)
        bare_t: list[float] = []
        inst_t: list[float] = []
        for i in range(rounds):
            # Alternate the order so drift in the machine's speed hits both alike.
            order = (
                ((bare, bare_t), (inst, inst_t)) if i % 2 == 0 else ((inst, inst_t), (bare, bare_t))
            )
            for pool, out in order:
                out.append(await _round(pool, ops))
        seen = runtime.model.pools["bench"].acquires if "bench" in runtime.model.pools else 0
    finally:
        await bare.close()
        await inst.close()
        runtime.shutdown(0.2)
        if runtime.loop is not None:
            runtime.loop.call_soon_threadsafe(runtime.loop.stop)
    b, n = statistics.median(bare_t), statistics.median(inst_t)
    return {"bare_us": b * 1e6, "instrumented_us": n * 1e6, "ratio": n / b, "events_seen": seen}


def run(quick: bool) -> dict[str, Any]:
    from tests.pgcluster import PgCluster, PgUnavailable

    rounds, ops = (ROUNDS_QUICK, OPS_QUICK) if quick else (ROUNDS_FULL, OPS_FULL)
    try:
        with PgCluster() as pg:
            res = asyncio.run(_measure(pg.dsn, rounds, ops))
    except PgUnavailable as exc:
        return {"skipped": str(exc), "markdown": f"asyncpg overhead: skipped ({exc})"}
    res.update(rounds=rounds, ops_per_round=ops, target_ratio=TARGET, ok=res["ratio"] <= TARGET)
    res["targets"] = [
        {
            "target": f"asyncpg instrumented (leak detection on) / bare <= {TARGET}",
            "result": f"{res['ratio']:.3f}",
            "verdict": "PASS" if res["ok"] else "MISS",
        }
    ]
    res["markdown"] = "\n".join(
        [
            "| asyncpg acquire+release, real PostgreSQL | bare | instrumented (leaks on) | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| median per op, {rounds} rounds x {ops} | {res['bare_us']:.1f} µs "
            f"| {res['instrumented_us']:.1f} µs | {res['ratio']:.3f} (target <= {TARGET}) |",
        ]
    )
    return res


if __name__ == "__main__":
    import json
    import sys

    out = run("--full" not in sys.argv)
    print(out.pop("markdown"))
    print(json.dumps(out, indent=2))
