"""Interleaved rounds across long-lived worker subprocesses (helper for the peer benchmarks).

Each configuration lives in its own fresh interpreter (so class-wide patching by
one tool cannot leak into another's numbers); the driver asks the workers in
turn - rotating who goes first - for one timed round each, so slow drift in a
noisy machine's speed hits every configuration alike.

Worker side: ``serve(setup)`` where ``setup()`` returns ``(pair, check)``:
``pair()`` is one operation and ``check()`` a JSON-able dict saying whether the
instrumentation really recorded anything. Protocol on stdin/stdout, one JSON
line each: the worker says ``{"ready": true}``; then ``N`` -> seconds per op over
N ops (``s``) and the whole process's CPU seconds per op (``cpu``:
``time.process_time`` around the round, every thread included - the background
thread shares the GIL, so the application pays for it too); ``check`` -> the check
dict; EOF -> exit. ``thread`` is the acquiring thread's own CPU per op (``time.thread_time``
over the timed loop): what the instrumentation costs inline, without its background
thread.

``setup()`` may return a fifth element, ``settle()``: called after each timed round,
before the CPU clock is read again, to wait (sleeping, not spinning) until the
instrumentation's background thread has folded that round's events, so their cost
is counted in the round that made them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Setup = Callable[[], "tuple[Any, ...]"]


def _nothing() -> None:
    return None


def serve(setup: Setup, warmup: int = 500) -> None:
    """The worker loop (runs in the child)."""
    parts = setup()
    pair, check = parts[0], parts[1]
    # Optional hooks around each timed round (outside the timed region).
    before: Callable[[], Any] = parts[2] if len(parts) > 2 else _nothing  # type: ignore[misc]
    after: Callable[[], Any] = parts[3] if len(parts) > 3 else _nothing  # type: ignore[misc]
    settle: Callable[[], Any] = parts[4] if len(parts) > 4 else _nothing  # type: ignore[misc]
    for _ in range(warmup):
        pair()
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    clock = time.perf_counter
    cpu = time.process_time
    thread_cpu = time.thread_time
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            out.write(json.dumps(check()) + "\n")
        else:
            n = int(cmd)
            rng = range(n)
            before()
            c0 = cpu()
            a0 = thread_cpu()
            t0 = clock()
            for _ in rng:
                pair()
            t1 = clock()
            a1 = thread_cpu()
            after()
            settle()
            c1 = cpu()
            answer = {"s": (t1 - t0) / n, "cpu": (c1 - c0) / n, "thread": (a1 - a0) / n}
            out.write(json.dumps(answer) + "\n")
        out.flush()


class Worker:
    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.samples: list[float] = []
        self.cpu: list[float] = []
        self.thread: list[float] = []

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def wait_ready(self) -> None:
        self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def interleave(
    configs: Sequence[tuple[str, Sequence[str]]], rounds: int, ops: int
) -> dict[str, dict[str, Any]]:
    """Run ``rounds`` rounds of ``ops`` operations in each config's worker, interleaved.

    Returns per config: ``samples`` (seconds per op, one per round), ``cpu`` (whole
    process CPU seconds per op, one per round, when the worker reports it), ``thread``
    (the acquiring thread's CPU seconds per op, likewise) and ``check``.
    """
    workers = [Worker(name, argv) for name, argv in configs]
    try:
        for w in workers:
            w.wait_ready()
        for r in range(rounds):
            k = r % len(workers)
            for w in workers[k:] + workers[:k]:
                answer = w.ask(str(ops))
                w.samples.append(float(answer["s"]))
                if "cpu" in answer:
                    w.cpu.append(float(answer["cpu"]))
                if "thread" in answer:
                    w.thread.append(float(answer["thread"]))
        return {
            w.name: {
                "samples": w.samples,
                "cpu": w.cpu,
                "thread": w.thread,
                "check": w.ask("check"),
            }
            for w in workers
        }
    finally:
        for w in workers:
            w.close()


def summary(samples: list[float], base: list[float] | None = None) -> dict[str, float]:
    """Median and range in microseconds; with ``base``, the paired per-round added cost."""
    us = [s * 1e6 for s in samples]
    out = {"median_us": statistics.median(us), "min_us": min(us), "max_us": max(us)}
    if base is not None:
        diffs = [(s - b) * 1e6 for s, b in zip(samples, base, strict=True)]
        out.update(
            added_us=statistics.median(diffs),
            added_min_us=min(diffs),
            added_max_us=max(diffs),
            ratio=statistics.median(samples) / statistics.median(base),
        )
    return out
