"""Issue 13's "must not regress": the hot-path benchmarks of the tree before the house
restructure (the last commit with the ``poolscope/instrument`` symlink) against this
tree, run in alternating pairs in one session so that both sides see the same load.

Each side runs ``python -m bench --quick --only <benchmarks>`` in its own checkout (a
``git worktree`` of :data:`BEFORE` for the old side), and the numbers compared are the
ones each benchmark states itself: added ns per reference-pool pair (acquiring thread and
whole process), SQLAlchemy's added us per checkout pair, and the stream's delivered rate.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The last commit of the old layout (symlink, one distribution).
BEFORE = "12486ab"
BENCHES = ("overhead_reference", "overhead_sqlalchemy", "stream")
#: (benchmark, path into its result, label, unit) - what the table compares.
MEASURES = (
    ("overhead_reference", "added_ns.api_leak_off", "reference pool, leak off, app thread", "ns"),
    ("overhead_reference", "added_ns.api_leak_on", "reference pool, leak on, app thread", "ns"),
    (
        "overhead_reference",
        "added_process_cpu_ns.api_leak_off",
        "reference pool, leak off, whole process",
        "ns",
    ),
    (
        "overhead_sqlalchemy",
        "sqlite.configs.poolscope-leak-off.added_us",
        "SQLAlchemy sqlite, leak off",
        "us",
    ),
    (
        "overhead_sqlalchemy",
        "sqlite.configs.poolscope-leak-on.added_us",
        "SQLAlchemy sqlite, leak on",
        "us",
    ),
    ("stream", "throughput.paced.achieved_rate", "stream paced rate (events/s)", "/s"),
)


def _dig(result: dict[str, Any], path: str) -> float | None:
    """Follow a dotted path whose keys may themselves hold dots or dashes."""
    parts, cur, i = path.split("."), result, 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if isinstance(cur, dict) and key in cur:
                cur, i = cur[key], j
                break
        else:
            return None
    return float(cur) if isinstance(cur, (int, float)) else None


def _side(tree: Path, pythonpath: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", *BENCHES]
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, timeout=1800)
    data: dict[str, Any] = json.loads((tree / "bench" / "results.json").read_text())
    return {name: data["benches"][name].get("result", {}) for name in BENCHES}


def paired_runs(
    before: str, pairs: int, side: Callable[[str, Path], dict[str, Any]], *, swap: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """``side("before"|"after", tree)`` for ``pairs`` pairs, each side in a git worktree
    of its own (``before`` and HEAD), so that their benchmark runs never rewrite this
    tree's results.json and BENCHMARKS.md. ``swap``: every other pair runs after first."""
    with tempfile.TemporaryDirectory(prefix="poolscope-ab-") as tmp:
        old, new = Path(tmp) / "before", Path(tmp) / "after"
        for where, commit in ((old, before), (new, "HEAD")):
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-f", str(where), commit],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        try:
            runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            for i in range(pairs):
                sides = [("before", old), ("after", new)]
                for label, tree in reversed(sides) if swap and i % 2 else sides:
                    runs[label].append(side(label, tree))
        finally:
            for where in (old, new):
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(where)],
                    cwd=ROOT,
                    capture_output=True,
                )
    return runs


def compare(
    measures: tuple[tuple[str, str, str, str], ...],
    runs: dict[str, list[dict[str, Any]]],
    digits: int = 1,
) -> tuple[list[str], dict[str, Any]]:
    """Table rows (median, range, after/before) of each measure both sides stated."""
    rows, table = [], {}
    for bench, path, label, unit in measures:
        before = [v for r in runs["before"] if (v := _dig(r[bench], path)) is not None]
        after = [v for r in runs["after"] if (v := _dig(r[bench], path)) is not None]
        if not before or not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        table[label] = {"before": before, "after": after, "unit": unit}
        f = f",.{digits}f"
        ratio = f"{a / b:.2f}" if b else "-"
        rows.append(
            f"| {label} | {b:{f}} {unit} ({min(before):{f}} to {max(before):{f}}) "
            f"| {a:{f}} {unit} ({min(after):{f}} to {max(after):{f}}) | {ratio} |"
        )
    return rows, table


def run(quick: bool) -> dict[str, Any]:
    pairs = 2 if quick else 4

    def side(label: str, tree: Path) -> dict[str, Any]:
        # The old tree's own package (a regular one) wins over the installed namespace
        # portions; the new tree is put first on the path the same way.
        return _side(tree, str(tree) if label == "before" else f"{tree}:{tree / 'instrument'}")

    runs = paired_runs(BEFORE, pairs, side)
    rows, table = compare(MEASURES, runs)
    md = [
        f"Old tree: `{BEFORE}` (symlink layout); new: this tree's HEAD. {pairs} alternating "
        f"pairs of `python -m bench --quick --only {' '.join(BENCHES)}`; medians with the range.",
        "",
        "| measure | before | after | after / before |",
        "|---|---|---|---|",
        *rows,
    ]
    return {
        "title": "The house restructure: hot paths before and after (issue 13)",
        "pairs": pairs,
        "before_commit": BEFORE,
        "measures": table,
        "markdown": "\n".join(md),
        "notes": (
            "Within noise means the after/before ratio of a cost sits inside the spread "
            "both sides show on their own. On this 2-core VM shared with other work the "
            "spread of one side is often 30-50%, so only a large, consistent shift would "
            "count as a regression."
        ),
    }


if __name__ == "__main__":
    print(run("--full" not in sys.argv)["markdown"])
