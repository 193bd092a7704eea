"""Issue 18's work, before and after, in one session: the tree at :data:`BEFORE` (the
start of the drain/holds/timer work) against this tree's HEAD, in alternating pairs so
both sides see the same load on the shared machine.

Per side and pair, in that side's own ``git worktree``:

* ``python -m bench --quick --only overhead_reference overhead_sqlalchemy stream`` and the
  numbers those benchmarks state (as :mod:`bench.house_ab` reads them);
* the background fold alone: ``Runtime._drain`` over a prefilled recorder of 100,000
  events (acquire/release pairs of an asyncio task over 8 connections, site captured at
  leak-detection depth), CPU per event, untagged and tagged (``bench.fold_cost`` part 1);
* the idle background thread: a reference pool instrumented and left alone for 5 s,
  the poolscope thread's own CPU clock as a share of one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.house_ab import compare, paired_runs

ROOT = Path(__file__).resolve().parent.parent
#: The last commit before the drain split, the model's holders and the single timer.
BEFORE = os.environ.get("POOLSCOPE_AB_BEFORE", "b731c6f")
BENCHES = ("overhead_reference", "overhead_sqlalchemy", "stream")
#: overhead_reference's four added costs (app thread and whole process, leak off/on).
REFERENCE_MEASURES = (
    ("overhead_reference", "added_ns.api_leak_off", "reference pool, leak off, app thread", "ns"),
    ("overhead_reference", "added_ns.api_leak_on", "reference pool, leak on, app thread", "ns"),
    (
        "overhead_reference",
        "added_process_cpu_ns.api_leak_off",
        "reference pool, leak off, whole process",
        "ns",
    ),
    (
        "overhead_reference",
        "added_process_cpu_ns.api_leak_on",
        "reference pool, leak on, whole process",
        "ns",
    ),
)
MEASURES = (
    *REFERENCE_MEASURES,
    (
        "overhead_sqlalchemy",
        "sqlite.configs.poolscope-leak-off.cpu.added_us",
        "SQLAlchemy sqlite, leak off, whole process",
        "us",
    ),
    (
        "overhead_sqlalchemy",
        "sqlite.configs.poolscope-leak-on.cpu.added_us",
        "SQLAlchemy sqlite, leak on, whole process",
        "us",
    ),
    ("stream", "throughput.paced.delivered", "stream: events delivered of 1.6M paced", ""),
    ("micro", "fold_untagged_us", "background fold, untagged, per event", "us"),
    ("micro", "fold_tagged_us", "background fold, tagged, per event", "us"),
    ("micro", "idle_share_pct", "idle background thread, share of a core", "%"),
)

# Run inside each side's tree: the fold alone and the idle thread (stdout: JSON).
_MICRO = r"""
import asyncio, json, sys, threading, time
from bench.fold_cost import _fill
from poolscope.instrument.recorder import PoolHandle
from poolscope.instrument.runtime import Runtime

def fold(tagged):
    rt = Runtime()
    h = PoolHandle(rt.recorder, "p", "reference", leak_threshold=30.0)
    rt.recorder.append({"type": "pool", "t": time.time(), **h.describe()})
    rt._drain()
    _fill(h, 50_000, tagged)
    n = len(rt.recorder.buffer)
    c0 = time.process_time()
    while rt._drain():
        pass
    return (time.process_time() - c0) / n * 1e6

out = {"fold_untagged_us": min(fold(False) for _ in range(3)),
       "fold_tagged_us": min(fold(True) for _ in range(3))}
import poolscope.instrument as ps
from poolscope.instrument.runtime import get_runtime
from poolscope.pool import Pool
ps.instrument(Pool(lambda: object(), max_size=4), name="idle")
rt = get_runtime()
time.sleep(1.0)
clk = time.pthread_getcpuclockid(rt.thread.ident)
c0 = time.clock_gettime(clk)
time.sleep(5.0)
out["idle_share_pct"] = (time.clock_gettime(clk) - c0) / 5.0 * 100
print(json.dumps(out))
"""


def bench_side(
    tree: Path, benches: tuple[str, ...], micro: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """In ``tree``: ``python -m bench --quick --only BENCHES`` (their stated results, from
    the tree's results.json) and the ``micro`` script's JSON line, under ``env``."""
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'instrument'}", **(env or {})}
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", *benches]
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, timeout=1800)
    data: dict[str, Any] = json.loads((tree / "bench" / "results.json").read_text())
    out = {name: data["benches"][name].get("result", {}) for name in benches}
    done = subprocess.run(
        [sys.executable, "-c", micro],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out["micro"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def run(quick: bool) -> dict[str, Any]:
    pairs = 2 if quick else 3
    runs = paired_runs(
        BEFORE, pairs, lambda label, tree: bench_side(tree, BENCHES, _MICRO), swap=True
    )
    rows, table = compare(MEASURES, runs, digits=2)
    md = [
        f"Before: `{BEFORE}`; after: this tree's HEAD. {pairs} alternating pairs (order "
        f"swapped each pair) of `python -m bench --quick --only {' '.join(BENCHES)}` plus "
        "the fold-alone and idle-thread measures described in the module; medians with "
        "the range.",
        "",
        "| measure | before | after | after / before |",
        "|---|---|---|---|",
        *rows,
    ]
    return {
        "title": "Issue 18: the drain split, holds in the model, bulk histograms, one timer",
        "pairs": pairs,
        "before_commit": BEFORE,
        "measures": table,
        "markdown": "\n".join(md),
        "notes": (
            "Run: `python -m bench --only perf_ab` (POOLSCOPE_AB_BEFORE=<commit> to "
            "compare another tree). The fold-alone and idle measures are the least noisy: "
            "one thread, CPU clocks, minimum of three. The benchmark rows inherit their own "
            "benchmarks' spread on this shared 2-core VM."
        ),
    }


if __name__ == "__main__":
    print(run("--full" not in sys.argv)["markdown"])
