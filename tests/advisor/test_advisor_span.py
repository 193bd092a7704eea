"""``poolscope advise`` over the right span: a recording's own events (not the history
its ``sync`` carries) unless ``--all``; ``--window S`` the last S seconds; a live
``--duration S`` the events of those S seconds; and a headline that never says
"shrink" while the pool queued or waited far above target in the span."""

from __future__ import annotations

import heapq
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from poolscope.cli import main
from poolscope.events import encode
from poolscope.model import fold
from tests.fixtures.advisor import T0, synth_events

SIZE = 4
CALM_SECONDS = 300
SAT_SECONDS = 40


def saturated_stretch(start: float, seconds: int, rate: float, hold: float) -> list[dict[str, Any]]:
    """A FIFO pool of SIZE offered more than it can carry (rate × hold > SIZE): the
    queue grows, waits reach seconds; ``state`` events say how many wait."""
    rng = random.Random(5)
    t, arrivals = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        arrivals.append(t)
    free = [0.0] * SIZE
    spans = []
    for a in arrivals:
        begin = max(a, heapq.heappop(free))
        end = begin + rng.expovariate(1.0 / hold)
        heapq.heappush(free, end)
        spans.append((a, begin, end))
    evs: list[dict[str, Any]] = []
    for i, (a, begin, end) in enumerate(spans):
        if begin >= seconds:
            continue  # still queued at the end of the recording
        conn = f"s{i}"
        evs.append(
            {"type": "acquire", "t": start + begin, "pool": "orders", "conn": conn}
            | {"wait": begin - a, "site": None, "task": "w"}
        )
        if end < seconds:
            evs.append(
                {"type": "release", "t": start + end, "pool": "orders", "conn": conn}
                | {"hold": end - begin}
            )
    for s in range(1, seconds + 1):
        in_use = sum(1 for _, b, e in spans if b <= s < e)
        waiting = sum(1 for a, b, _ in spans if a <= s < b)
        evs.append(
            {"type": "state", "t": start + s, "pool": "orders", "size": SIZE}
            | {"idle": SIZE - in_use, "in_use": in_use, "waiting": waiting, "max": SIZE, "min": 0}
        )
    evs.sort(key=lambda e: float(e["t"]))
    return evs


@pytest.fixture(scope="module")
def saturated_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """5 calm minutes summarised in the sync (the history), then 40 s saturated.
    Returns the file and how many acquires the file itself holds."""
    calm = fold(synth_events(rate=100.0, hold=0.004, size=SIZE, seconds=CALM_SECONDS, seed=3))
    start = T0 + CALM_SECONDS
    head = [
        {"type": "hello", "t": start, "protocol": 1, "pid": 9, "process": "app", "version": "0"},
        {"type": "sync", "t": start, "state": calm.to_dict()},
    ]
    body = saturated_stretch(start, SAT_SECONDS, rate=140.0, hold=0.04)
    path = tmp_path_factory.mktemp("span") / "saturated.ndjson"
    with open(path, "wb") as f:
        for ev in head + body:
            f.write(encode(ev))
    return path, sum(1 for ev in body if ev["type"] == "acquire")


def _advise(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["advise", *argv, "--json"]) == 0
    (pool,) = json.loads(capsys.readouterr().out)["pools"]
    assert isinstance(pool, dict)
    return pool


def _headline_agrees(pool: dict[str, Any]) -> None:
    warned = [w for w in pool["warnings"] if "saturated" in w or "far above" in w]
    measured, target = pool["measured_p99"], pool["p99_target"]
    if warned or (measured is not None and measured > 3 * target):
        assert pool["verdict"] != "shrink", pool


@pytest.mark.fast
def test_a_recording_is_advised_on_its_own_events(
    saturated_recording: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    path, acquires = saturated_recording
    pool = _advise(capsys, str(path))
    w = pool["workload"]
    assert w["rate_source"] == "acquire events"
    assert w["attempts"] == acquires  # the file's acquires, not the 30,000 of the sync
    assert w["span"] == pytest.approx(SAT_SECONDS, abs=1.0)
    assert w["rate"] == pytest.approx(acquires / SAT_SECONDS, rel=0.05)
    assert w["wait_p99"] > 0.3  # the saturated stretch's waits, not the calm history's
    assert w["saturated"] > 0.5 and w["waiting_max"] >= 10
    assert "after its sync" in w["span_note"]
    assert pool["verdict"] == "grow", pool
    assert pool["recommended"] > SIZE
    assert any("saturated" in warn for warn in pool["warnings"])
    _headline_agrees(pool)


@pytest.mark.fast
def test_all_adds_the_sync_history_and_the_headline_still_agrees(
    saturated_recording: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    path, acquires = saturated_recording
    pool = _advise(capsys, str(path), "--all")
    w = pool["workload"]
    # The calm minutes the sync carries weigh in: 30,000 acquires of 4 ms holds.
    assert w["attempts"] > acquires * 3
    assert "history the sync carries" in w["span_note"]
    # Calm history alone would say "shrink": the queueing in the window forbids it.
    _headline_agrees(pool)
    assert pool["verdict"] != "shrink"
    assert any("Not shrinking" in r for r in pool["reasoning"]) or pool["verdict"] == "grow"


@pytest.mark.fast
def test_window_takes_the_last_seconds(
    saturated_recording: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = saturated_recording
    whole = _advise(capsys, str(path))["workload"]
    last = _advise(capsys, str(path), "--window", "10")
    w = last["workload"]
    assert w["span"] == pytest.approx(10.0, abs=0.01)
    assert w["attempts"] < whole["attempts"] / 2
    assert w["rate"] == pytest.approx(whole["rate"], rel=0.3)
    # The queue grew through the stretch: the last 10 s waited longer than the average.
    assert w["wait_mean"] > whole["wait_mean"]
    assert "the last 10 s" in w["span_note"]
    _headline_agrees(last)


@pytest.mark.fast
def test_calm_history_with_a_calm_recording_may_shrink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guard holds back only what the span contradicts: an idle pool of 20 shrinks."""
    path = tmp_path / "calm.ndjson"
    with open(path, "wb") as f:
        for ev in synth_events(rate=50.0, hold=0.004, size=20, seconds=60, seed=2):
            f.write(encode(ev))
    pool = _advise(capsys, str(path))
    assert pool["verdict"] == "shrink", pool
    assert not any("Not shrinking" in r for r in pool["reasoning"])


APP = r"""
import asyncio, sys
import poolscope.instrument as ps
from poolscope.pool import Pool

class Conn:
    async def close(self):
        pass

async def factory():
    return Conn()

async def main(listen):
    ps.get_runtime().state_interval = 0.2
    pool = Pool(factory, max_size=2, acquire_timeout=30.0, name="orders")
    ps.instrument(pool, name="orders", leak_threshold=None, listen=listen)
    for _ in range(4000):  # the calm history: short holds, never waiting
        async with pool.acquire():
            pass
    async def worker():
        while True:
            async with pool.acquire():
                await asyncio.sleep(0.05)
    workers = [asyncio.ensure_future(worker()) for _ in range(12)]
    await asyncio.sleep(0.5)
    print("SATURATED", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


def test_live_duration_advises_on_the_watch_only(tmp_path: Path) -> None:
    """A real app: 4,000 calm acquires, then 12 workers on a pool of 2. ``advise
    --duration 3`` during the saturation advises on those 3 seconds."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    sock = tmp_path / "app.sock"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), f"unix:{sock}"], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while b"SATURATED" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        argv = ["advise", f"unix:{sock}", "--duration", "3", "--json"]
        out = subprocess.run(
            [sys.executable, "-m", "poolscope", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 0, out.stderr
    (pool,) = json.loads(out.stdout)["pools"]
    w = pool["workload"]
    # About 2 connections / 50 ms = 40 acquires a second for 3 s; never the 4,000.
    assert 40 <= w["attempts"] <= 200, w
    assert w["span"] == pytest.approx(3.0, abs=1.0)
    assert w["hold_p50"] > 0.03  # the 50 ms holds of the watch, not the calm ones
    assert w["waiting_max"] >= 5
    assert "3 s watched" in w["span_note"]
    assert pool["verdict"] != "shrink"
    _headline_agrees(pool)


@pytest.mark.fast
def test_a_second_sync_does_not_restart_the_span() -> None:
    """A recording that reconnected carries a second sync: what came before it counts."""
    from poolscope.span import fold_span

    evs = synth_events(rate=50.0, hold=0.004, size=4, seconds=60, seed=4)
    half = len(evs) // 2
    resync = {"type": "sync", "t": float(evs[half]["t"]), "state": fold(evs[:half]).to_dict()}
    _, span = fold_span([*evs[:half], resync, *evs[half:]])
    _, plain = fold_span(evs)
    assert span.syncs == 2
    ws, wp = span.workload(fold(evs), "orders"), plain.workload(fold(evs), "orders")
    assert ws.attempts == wp.attempts == sum(1 for e in evs if e["type"] == "acquire")
