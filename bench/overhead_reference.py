"""Added cost per acquire+release pair: the reference pool instrumented vs the same
pool uninstrumented, side by side in one run.

Pools of the same class in one process, each driven through ``async with
pool.acquire()`` in a tight loop, in interleaved rounds (the order rotates every
round). The added cost of a configuration is the median over rounds of (its cost
- the uninstrumented pool's cost in the same round), which cancels the drift of
a noisy machine.

The cost is measured as the **CPU time of the acquiring thread** per pair
(``time.thread_time``): what the application's own thread pays, without the
time it is descheduled on a busy machine and without the background thread's
work (reported separately as process CPU per pair, which includes it). Wall
time per pair is reported too.

* ``instrument(listen=False)``: the public API, the real runtime; its
  background thread folds every event while the loop runs.
* ``bare recorder``: the pool with a PoolHandle on a Recorder that nobody
  drains during the round: the hot path with no background thread at all.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

from bench.common import fmt_range, markdown_table, paired_added, summary

TARGET_ADDED = 1e-6  # seconds per pair, leak detection off

LABELS = {
    "plain": "uninstrumented",
    "api_leak_off": "instrument(), leak detection off",
    "api_leak_on": "instrument(), leak detection on (30 s)",
    "api_leak_off_py": "instrument(), leak detection off, pure-Python hot path",
    "bare_leak_off": "bare recorder, leak detection off",
    "bare_leak_off_py": "bare recorder, leak detection off, pure-Python hot path",
    "bare_no_site": "bare recorder, no acquire-site capture (site_depth=0)",
}


class _Conn:
    async def close(self) -> None:
        return None


async def _factory() -> _Conn:
    return _Conn()


async def _round(pool: Any, n: int) -> tuple[float, float]:
    """(acquiring-thread CPU seconds, wall seconds) per pair over ``n`` pairs."""
    acquire = pool.acquire
    c0 = time.thread_time()
    w0 = time.perf_counter()
    for _ in range(n):
        async with acquire():
            pass
    return (time.thread_time() - c0) / n, (time.perf_counter() - w0) / n


def _empty() -> None:
    return None


def _call_cost(n: int = 200_000) -> float:
    """Seconds per empty Python function call: the machine's speed, for scale."""
    f = _empty
    best = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(n):
            f()
        t1 = time.thread_time()
        for _ in range(n):
            pass
        t2 = time.thread_time()
        best = min(best, ((t1 - t0) - (t2 - t1)) / n)
    return best


async def _measure(quick: bool) -> dict[str, Any]:
    import poolscope.instrument as ps
    from poolscope.instrument import accel
    from poolscope.instrument.recorder import PoolHandle, Recorder
    from poolscope.pool import Pool

    rounds, n = (11, 3000) if quick else (31, 10000)
    pools: dict[str, Any] = {}
    bare: list[Recorder] = []
    for name in LABELS:
        pool: Any = Pool(_factory, min_size=1, max_size=1, name=name)
        await pool.open()
        # The "_py" rows: the handle made with the C hot path off (accel.py), the
        # pure-Python closures it replaces, side by side in the same run.
        c_path = accel.ENABLED
        accel.ENABLED = c_path and not name.endswith("_py")
        if name.startswith("bare_"):
            rec = Recorder(capacity=4 * n)
            depth = 0 if name == "bare_no_site" else None
            pool._attach(PoolHandle(rec, name, "poolscope", leak_threshold=None, site_depth=depth))
            bare.append(rec)
        elif name.startswith("api_"):
            threshold = 30.0 if name.endswith("on") else None
            pool = ps.instrument(pool, name=name, leak_threshold=threshold, listen=False)
        accel.ENABLED = c_path
        pools[name] = pool
    runtime = ps.get_runtime()
    # Set at the end of a tick that left the recorder empty: the round's events are
    # folded. Waited on blocking, so the wait costs no CPU (polling with short sleeps
    # cost the measured process ~1 us a pair of wake-ups once the tick became 10 Hz).
    drained = threading.Event()

    def on_tick() -> None:
        if not runtime.recorder.buffer:
            drained.set()

    runtime.tick_hooks.append(on_tick)

    async def settle() -> None:
        # Untimed: the background thread catches up before the next round.
        while runtime.recorder.buffer:
            await asyncio.sleep(0.002)
        for rec in bare:
            rec.buffer.clear()

    for pool in pools.values():  # warm up every path (site cache, code caches)
        await _round(pool, 500)
    await settle()
    cpu: dict[str, list[float]] = {k: [] for k in pools}
    wall: dict[str, list[float]] = {k: [] for k in pools}
    proc: dict[str, list[float]] = {k: [] for k in pools}
    names = list(pools)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            p0 = time.process_time()
            c, w = await _round(pools[name], n)
            drained.clear()
            drained.wait(10.0)  # this round's events, folded by the runtime
            proc[name].append((time.process_time() - p0) / n)
            cpu[name].append(c)
            wall[name].append(w)
            await settle()
    expected = 500 + rounds * n
    for _ in range(500):  # the last chunk may still be folding
        if all(runtime.model.pools[k].acquires >= expected for k in names if k.startswith("api_")):
            break
        await asyncio.sleep(0.01)
    folded = {k: runtime.model.pools[k].acquires for k in names if k in runtime.model.pools}
    for pool in pools.values():
        await pool.close()
    return {
        "rounds": rounds,
        "pairs_per_round": n,
        "thread_cpu": cpu,
        "wall": wall,
        "process_cpu": proc,
        "folded_acquires": folded,
        "empty_call_s": _call_cost(),
    }


def run(quick: bool) -> dict[str, Any]:
    m = asyncio.run(_measure(quick))
    cpu, wall, proc = m["thread_cpu"], m["wall"], m["process_cpu"]
    added = {k: paired_added(cpu[k], cpu["plain"]) for k in cpu if k != "plain"}
    added_proc = {k: paired_added(proc[k], proc["plain"]) for k in proc if k != "plain"}
    med = {k: summary(v)["median"] for k, v in cpu.items()}
    call = m["empty_call_s"]
    a_off = added["api_leak_off"]["median"]
    verdict = "PASS" if a_off <= TARGET_ADDED else "MISS"
    rows = []
    for k in LABELS:
        a = added.get(k)
        ap = added_proc.get(k)
        rows.append(
            [
                LABELS[k],
                fmt_range(cpu[k]),
                "-" if a is None else f"{a['median'] * 1e9:+,.0f} ns",
                "-" if k == "plain" else f"{med[k] / med['plain']:.2f}x",
                f"{summary(wall[k])['median'] * 1e9:,.0f} ns",
                "-" if ap is None else f"{ap['median'] * 1e9:+,.0f} ns",
            ]
        )
    table = markdown_table(
        [
            "configuration",
            "acquiring-thread CPU per pair: median (min to max)",
            "added (paired median)",
            "ratio",
            "wall per pair (median)",
            "added process CPU incl. background thread",
        ],
        rows,
    )
    markdown = (
        f"Reference pool, `async with pool.acquire()` in a loop; {m['rounds']} interleaved "
        f"rounds of {m['pairs_per_round']:,} pairs each.\n\n"
        f"{table}\n\n"
        f"Target: at most 1 us added per pair with leak detection off: "
        f"**{a_off * 1e9:,.0f} ns added - {verdict}** "
        f"(= {a_off / call:.0f} empty Python function calls on this machine, where one "
        f"costs {call * 1e9:.0f} ns; the uninstrumented pair costs {med['plain'] * 1e9:,.0f} "
        f"ns = {med['plain'] / call:.0f} calls)."
    )
    from poolscope.instrument import accel

    notes = (
        "What the added cost is made of, per pair: with leak detection off one call into "
        "the recorder at acquire (a one-frame acquire-site capture as (code index, "
        "instruction offset) read at the frame depth the pool states, the task looked up "
        "in the pool's loop's current-task table, a tuple appended to a deque) and one at "
        "release (a tuple appended); the pool passes its own clock readings. "
        + (
            "Those calls are the optional C accelerator's (`_accel.c`); the rows marked "
            "pure-Python hot path make the same records with the Python closures it "
            "replaces, side by side in this run (the background fold is C for every row: "
            "`python -m bench --only accel_ab` compares the whole process with and "
            "without the accelerator). "
            if accel.ENABLED
            else f"The accelerator is not in use ({accel.REASON}): every row runs the "
            "pure-Python closures. "
        )
        + "The site is kept for every acquire because the holders view shows it; "
        "`site_depth=0` turns it off. The instrument() rows also pay the GIL handoffs to "
        "the background thread that folds concurrently. Leak "
        "detection on keeps 8 frames of the acquire site instead of 1. The "
        "bare-recorder rows let their buffer grow through the round (nobody drains it). "
        "The last column is "
        "the whole process's extra CPU per pair once the runtime's background thread has "
        "folded the round's events (no observer connected: no JSON encoding or socket "
        "I/O; `bench/stream.py` measures streaming). Acquires folded by the runtime "
        f"(sanity check, {500 + m['rounds'] * m['pairs_per_round']:,} expected): "
        f"{m['folded_acquires']}."
    )
    return {
        "title": "Added cost per acquire+release pair, reference pool",
        "markdown": markdown,
        "notes": notes,
        "targets": [
            {
                "target": "reference pool: <= 1 us added per acquire+release, leak detection off",
                "result": f"{a_off * 1e9:,.0f} ns (acquiring-thread CPU, paired median)",
                "verdict": verdict,
            },
            *(
                {
                    "target": f"reference pool: <= {limit * 1e6:.0f} us added per pair, "
                    f"leak detection {side}, whole-process CPU (issue 18)",
                    "result": f"{value * 1e9:,.0f} ns (paired median)",
                    "verdict": "PASS" if value <= limit else "MISS",
                }
                for side, limit, value in (
                    ("off", TARGET_ADDED, added_proc["api_leak_off"]["median"]),
                    ("on", 2 * TARGET_ADDED, added_proc["api_leak_on"]["median"]),
                )
            ),
        ],
        "target_ns": TARGET_ADDED * 1e9,
        "added_ns": {k: v["median"] * 1e9 for k, v in added.items()},
        "added_process_cpu_ns": {k: v["median"] * 1e9 for k, v in added_proc.items()},
        "median_ns": {k: v * 1e9 for k, v in med.items()},
        "empty_call_ns": call * 1e9,
        "verdict": verdict,
        "raw": m,
    }


if __name__ == "__main__":
    import sys

    out = run("--quick" in sys.argv)
    print(out["markdown"])
    print(out["notes"])
