"""What the optional C accelerator buys: the same tree with it and without it
(``POOLSCOPE_ACCEL=0``), in alternating pairs so both sides see the same load.

One ``git worktree`` of HEAD with the extension built as an install builds it (pip, then
put next to the sources), then per side and pair:

* ``python -m bench --quick --only overhead_reference adapter_hotpath stream`` and the
  numbers those benchmarks state (as :mod:`bench.house_ab` reads them);
* the background fold alone: ``Runtime._drain`` over a prefilled recorder of 100,000
  events (acquire/release pairs of an asyncio task over 8 connections, site captured at
  leak-detection depth), CPU per event, untagged and tagged, minimum of three, with and
  without an observer's lines to format (:data:`bench.perf_ab._MICRO`'s fold).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.house_ab import compare
from bench.perf_ab import REFERENCE_MEASURES, bench_side

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ("overhead_reference", "adapter_hotpath", "stream")
MEASURES = (
    *REFERENCE_MEASURES,
    (
        "adapter_hotpath",
        "added_us.poolscope-leak-off.wall",
        "SQLAlchemy leak off, inline (min of rounds)",
        "us",
    ),
    (
        "adapter_hotpath",
        "added_us.poolscope-leak-off.cpu",
        "SQLAlchemy leak off, whole process (min of rounds)",
        "us",
    ),
    (
        "adapter_hotpath",
        "added_us.poolscope-leak-on.cpu",
        "SQLAlchemy leak on, whole process (min of rounds)",
        "us",
    ),
    ("adapter_hotpath", "leak_on_vs_otel.cpu", "SQLAlchemy leak on / OpenTelemetry, process", ""),
    ("stream", "throughput.median_rate", "stream: events/s to one observer (saturation)", ""),
    ("stream", "throughput.paced.delivered", "stream: events delivered of 1.6M paced", ""),
    ("micro", "fold_untagged_us", "background fold, untagged, per event", "us"),
    ("micro", "fold_tagged_us", "background fold, tagged, per event", "us"),
    ("micro", "fold_lines_us", "background fold + observer lines, tagged, per event", "us"),
)

_MICRO = r"""
import json, time
from bench.fold_cost import _fill
from poolscope.instrument.recorder import PoolHandle
from poolscope.instrument.runtime import Runtime

def fold(tagged, lines):
    rt = Runtime()
    h = PoolHandle(rt.recorder, "p", "reference", leak_threshold=30.0)
    rt.recorder.append({"type": "pool", "t": time.time(), **h.describe()})
    rt._drain()
    _fill(h, 50_000, tagged)
    n = len(rt.recorder.buffer)
    out = []
    c0 = time.process_time()
    while True:
        items = rt.recorder.drain(20_000)
        if not items:
            break
        ls, _ = rt.drain.run(items, [], time.time() - time.perf_counter(), lines, False)
        out.append(len(ls))
    return (time.process_time() - c0) / n * 1e6

print(json.dumps({
    "fold_untagged_us": min(fold(False, False) for _ in range(3)),
    "fold_tagged_us": min(fold(True, False) for _ in range(3)),
    "fold_lines_us": min(fold(True, True) for _ in range(3)),
}))
"""


def _side(tree: Path, accel: bool) -> dict[str, Any]:
    env = {"PYTHONPATH": f"{tree}:{tree / 'instrument'}", "POOLSCOPE_ACCEL": str(int(accel))}
    check = "from poolscope.instrument import accel; print(accel.ENABLED)"
    used = subprocess.run(
        [sys.executable, "-c", check],
        cwd=tree,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if used.stdout.strip() != str(accel):  # a side that would not run as labelled
        raise RuntimeError(f"accelerator {accel} side runs with ENABLED={used.stdout.strip()}")
    return bench_side(tree, BENCHES, _MICRO, {"POOLSCOPE_ACCEL": env["POOLSCOPE_ACCEL"]})


def _build_in_place(tree: Path, out: Path) -> None:
    """The extension, built as an install builds it (pip, in build isolation), put next
    to the worktree's sources: the worktree then runs it from PYTHONPATH."""
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    subprocess.run([*pip, str(tree / "instrument")], check=True, capture_output=True)
    (wheel,) = out.glob("poolscope_instrument-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.startswith("poolscope/instrument/_accel.")]
        (tree / "instrument" / name).write_bytes(zf.read(name))


def run(quick: bool) -> dict[str, Any]:
    pairs = 2 if quick else 3
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="poolscope-accel-ab-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(tree), "HEAD"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            _build_in_place(tree, Path(tmp) / "wheel")
            for i in range(pairs):
                order = [False, True] if i % 2 == 0 else [True, False]
                for accel in order:
                    runs["after" if accel else "before"].append(_side(tree, accel))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True
            )
    rows, table = compare(MEASURES, runs, digits=2)
    md = [
        f"HEAD, one worktree with the extension built by pip; {pairs} alternating pairs "
        f"(order swapped each pair) of `python -m bench --quick --only {' '.join(BENCHES)}` "
        "plus the fold alone (module docstring), with `POOLSCOPE_ACCEL=0` (pure Python) "
        "and with the accelerator; medians with the range.",
        "",
        "| measure | pure Python | with the C accelerator | C / Python |",
        "|---|---|---|---|",
        *rows,
    ]
    return {
        "title": "What the optional C accelerator buys (same tree, POOLSCOPE_ACCEL=0 vs on)",
        "pairs": pairs,
        "measures": table,
        "markdown": "\n".join(md),
        "notes": (
            "Run: `python -m bench --only accel_ab`. The fold-alone rows are the least "
            "noisy (one thread, CPU clock, minimum of three); the benchmark rows inherit "
            "their own benchmarks' spread on this shared 2-core VM. The accelerator covers "
            "the pools' hot path (the handles' calls and their site walk), the drain's fold "
            "of usual acquire and release records, their NDJSON lines and the histograms' "
            "bucket counts; the Python code it replaces stays the reference (tests/"
            "instrument/test_accel*.py drive both)."
        ),
    }


if __name__ == "__main__":
    print(run("--full" not in sys.argv)["markdown"])
