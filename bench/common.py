"""Helpers shared by the benchmarks: repeated interleaved rounds, summaries, ratio
formatting, a CPU-time/RSS sampler, the machine description and markdown tables.

Benchmarks compare against a baseline measured in the same run, as ratios or
paired differences of medians over interleaved rounds, because a noisy machine's
speed drifts and that drift must hit every configuration alike.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Packages whose versions are worth stating next to the numbers.
KEY_PACKAGES = (
    "poolscope",
    "textual",
    "asyncpg",
    "SQLAlchemy",
    "psycopg",
    "psycopg-pool",
    "prometheus-client",
    "aiohttp",
    "opentelemetry-sdk",
    "psutil",
)


def interleaved(
    cases: dict[str, Callable[[], float]], rounds: int, *, between: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Run each case once per round, rotating which goes first; returns the samples.

    Each case callable does one timed round and returns its measurement (for
    example seconds per operation). ``between`` runs after every case, untimed
    (to let background work settle).
    """
    names = list(cases)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(float(cases[name]()))
            if between is not None:
                between()
    return samples


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of a sample."""
    vals = list(values)
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": float(len(vals)),
    }


def paired_added(case: Sequence[float], base: Sequence[float]) -> dict[str, float]:
    """The added cost per round (case - base of the same round), summarised.

    Pairing rounds cancels drift that a difference of two medians would keep.
    """
    return summary([c - b for c, b in zip(case, base, strict=True)])


def ratio(value: float, base: float) -> str:
    """``1.23x`` (or ``n/a`` against a zero baseline)."""
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def fmt_time(seconds: float) -> str:
    """A duration with a unit that suits it: ``850 ns``, ``1.25 us``, ``3.4 ms``, ``2.1 s``."""
    a = abs(seconds)
    if a < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if a < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if a < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_range(values: Sequence[float], scale: float = 1e9, unit: str = "ns") -> str:
    """``median (min-max) unit`` of a sample, scaled (default: seconds to ns)."""
    s = summary(values)
    return f"{s['median'] * scale:,.0f} ({s['min'] * scale:,.0f} to {s['max'] * scale:,.0f}) {unit}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


class Sampler:
    """Samples a process's CPU time and RSS on a thread (psutil; bench-only dependency).

    >>> with Sampler(pid) as s: ...
    >>> s.result()  # {"cpu_seconds", "cpu_percent", "rss_start", "rss_max", "rss_end", ...}
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0
        self._t1 = 0.0
        self._cpu0 = 0.0
        self._cpu1 = 0.0

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.rss.append(int(self.proc.memory_info().rss))
            except Exception:
                return

    def start(self) -> Sampler:
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu()
        self.rss.append(int(self.proc.memory_info().rss))
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._t1 = time.perf_counter()
        try:
            self._cpu1 = self._cpu()
            self.rss.append(int(self.proc.memory_info().rss))
        except Exception:
            self._cpu1 = self._cpu0
        return self.result()

    def result(self) -> dict[str, float]:
        wall = max(self._t1 - self._t0, 1e-9)
        cpu = self._cpu1 - self._cpu0
        return {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "cpu_percent": 100.0 * cpu / wall,
            "rss_start": float(self.rss[0]) if self.rss else 0.0,
            "rss_max": float(max(self.rss)) if self.rss else 0.0,
            "rss_end": float(self.rss[-1]) if self.rss else 0.0,
        }

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        physical = None
    versions: dict[str, str] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "platform": platform.platform(),
        "packages": versions,
    }
