"""Observer faults cost the application nothing it would notice.

An observer SIGKILLed mid-stream, one SIGSTOPped (5 s here; 30 s with
``POOLSCOPE_LONG_TESTS=1`` and in ``bench/soak.py``), fifty at once, a thousand
connect/disconnect cycles: the application's throughput, memory and file
descriptors stay within bounds; drops are counted and announced to the observer
that lost lines; and every observer's model (the fold of what it received)
agrees with the application's own.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.client import FileFeed
from poolscope.instrument import errors
from poolscope.instrument import runtime as runtime_module
from poolscope.instrument import server as server_module
from poolscope.model import PoolState, fold
from tests.fixtures.faults import (
    POOLSCOPE,
    AppThread,
    RawObserver,
    make_pool,
    proc_usage,
    spawn,
    stop,
    wait_for,
)

MiB = 1 << 20
RATE = 6000.0  # acquire/release pairs a second: 12,000 events a second
QUEUE = 5000  # lines queued per observer before the oldest are dropped (default 20,000)


@pytest.fixture
def app(fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(server_module, "OBSERVER_QUEUE", QUEUE)
    fresh_runtime.state_interval = 0.2
    pool = ps.instrument(make_pool(max_size=4), listen="127.0.0.1:0", leak_threshold=None)
    thread = AppThread(pool, RATE)
    yield fresh_runtime, thread
    thread.stop()


def _quiesce(rt: runtime_module.Runtime, thread: AppThread) -> None:
    """Stop the workload; wait until every event and a final state reached the sockets."""
    thread.stop()
    wait_for(lambda: not rt.recorder.buffer, 10.0)
    time.sleep(3 * rt.state_interval)  # a state event after the last release
    assert rt.server is not None
    wait_for(lambda: all(not ob.queue for ob in list(rt.server.observers)), 10.0)  # type: ignore[union-attr]
    time.sleep(0.3)


def _wait_caught_up(path: Path, want: tuple[int, int], timeout: float = 30.0) -> None:
    """Until the recording accounts for every acquire and release the application
    folded - recorded, or announced dropped - (a recorder catching up on its socket's
    backlog; ``record`` writes what it reads at once). The file may grow meanwhile: the
    application keeps sending its periodic state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            state, drops, _ = _recorded(path)
            if "app" in state.pools:
                got = _counters(state)
                if (want[0] - got[0]) + (want[1] - got[1]) <= drops:
                    return
        time.sleep(0.3)


#: Where a fault of the stream would be reported (see instrument/runtime.py, server.py).
STREAM_PLACES = {"stream server", "broadcast", "encode", "fold", "drain", "normalise"}


class _Seen(list):  # type: ignore[type-arg]
    def append_error(self, where: str, message: str) -> None:
        self.append((where, message))

    def stream(self) -> list[tuple[str, str]]:
        return [e for e in self if e[0] in STREAM_PLACES or e[0] == "recorder"]


def _watch_errors() -> _Seen:
    """Internal errors reported from now on (other tests' leftovers may report too,
    so the tests look at the places, not at the global count)."""
    seen = _Seen()
    errors.listeners.append(seen.append_error)
    return seen


def _counters(state: PoolState) -> tuple[int, int]:
    p = state.pools["app"]
    return p.acquires, p.releases


def _gauges(state: PoolState) -> tuple[int, int, int, int]:
    p = state.pools["app"]
    return p.size, p.idle, p.in_use, p.waiting


def _recorded(path: Path) -> tuple[PoolState, int, list[dict[str, Any]]]:
    evs = list(FileFeed(path))
    dropped = [e for e in evs if e["type"] == "dropped"]
    return fold(evs), sum(int(e["count"]) for e in dropped), dropped


def _stall_seconds() -> list[Any]:
    return [
        5.0,
        pytest.param(
            30.0,
            marks=pytest.mark.skipif(
                not os.environ.get("POOLSCOPE_LONG_TESTS"),
                reason="30 s stall: set POOLSCOPE_LONG_TESTS=1 (also in bench/soak.py)",
            ),
        ),
    ]


@pytest.mark.parametrize("stall", _stall_seconds())
def test_killed_and_stalled_observers(
    app: Any, stall: float, tmp_path: Path, fault_children: list[Any]
) -> None:
    rt, thread = app
    thread.start()
    assert rt.endpoint is not None and rt.server is not None
    paths = {name: tmp_path / f"{name}.ndjson" for name in ("healthy", "killed", "stalled")}
    procs = {
        name: spawn([*POOLSCOPE, "record", str(rt.endpoint), "-o", str(path)])
        for name, path in paths.items()
    }
    fault_children.extend(procs.values())
    wait_for(lambda: len(rt.server.observers) == 3, 15.0)
    time.sleep(0.5)
    seen = _watch_errors()
    baseline = thread.throughput(1.0)
    rss0, fds0 = proc_usage()

    procs["killed"].send_signal(signal.SIGKILL)
    procs["stalled"].send_signal(signal.SIGSTOP)
    during = thread.throughput(stall)
    rss1, fds1 = proc_usage()
    wait_for(lambda: len(rt.server.observers) == 2, 5.0)  # the dead one is gone
    procs["stalled"].send_signal(signal.SIGCONT)
    time.sleep(1.0)
    _quiesce(rt, thread)
    for name in ("healthy", "stalled"):  # let them write out what the kernel still holds
        _wait_caught_up(paths[name], _counters(rt.model))
    for name in ("healthy", "stalled"):
        assert stop(procs[name]) == 0
    app_state = rt.model

    # The application did not notice.
    assert during >= 0.7 * baseline, (baseline, during)
    assert thread.failures == 0
    assert rss1 - rss0 < 40 * MiB, (rss0, rss1)
    # No descriptor kept: a connection being accepted or closed in the tick under way
    # (the server's tick is 10 Hz) may still hold one for a moment.
    if fds1 > fds0 + 2:
        wait_for(lambda: proc_usage()[1] <= fds0 + 2, 5.0)
    errors.listeners.remove(seen.append_error)
    assert not seen.stream(), seen  # a dead or stalled peer is not an internal error

    # The healthy observer has everything: its fold is the application's. (On a
    # machine so loaded that even it fell behind, what it lacks is what it was told.)
    healthy, healthy_drops, _ = _recorded(paths["healthy"])
    acq, rel = _counters(app_state)
    h_acq, h_rel = _counters(healthy)
    assert (acq - h_acq) + (rel - h_rel) <= healthy_drops <= 0.05 * (acq + rel)
    assert _gauges(healthy) == _gauges(app_state)

    # The stalled one lost lines, was told how many, and its model says so exactly:
    # what it is missing is what was announced dropped.
    stalled, stalled_drops, announced = _recorded(paths["stalled"])
    assert announced and all(e["where"] == "observer queue" for e in announced)
    assert stalled.dropped == stalled_drops > 0
    s_acq, s_rel = _counters(stalled)
    missing = (acq - s_acq) + (rel - s_rel)
    assert 0 < missing <= stalled_drops
    # The gauges come from the pool itself, so they agree again after the stall.
    assert _gauges(stalled) == _gauges(app_state)

    # And the dead one's socket was closed.
    assert len(rt.server.observers) == 0 or all(not ob.closed for ob in rt.server.observers)


def test_fifty_observers_at_once(app: Any) -> None:
    rt, thread = app
    assert rt.endpoint is not None and rt.server is not None
    thread.rate = 1000.0
    _, fds0 = proc_usage()
    seen = _watch_errors()
    thread.start()
    observers = [RawObserver(rt.endpoint.host, rt.endpoint.port) for _ in range(50)]
    try:
        wait_for(lambda: len(rt.server.observers) == 50, 10.0)
        during = thread.throughput(2.0)
        _quiesce(rt, thread)
        for ob in observers:
            state = fold(ob.events())
            assert state.dropped == 0
            assert _counters(state) == _counters(rt.model)
            assert _gauges(state) == _gauges(rt.model)
    finally:
        for ob in observers:
            ob.close()
    assert during >= 0.8 * 1000.0
    wait_for(lambda: not rt.server.observers, 10.0)
    wait_for(lambda: proc_usage()[1] <= fds0 + 2, 5.0)
    errors.listeners.remove(seen.append_error)
    assert not seen.stream(), seen


def test_a_thousand_connect_disconnect_cycles(app: Any) -> None:
    rt, thread = app
    assert rt.endpoint is not None and rt.server is not None
    thread.rate = 1000.0
    thread.start()
    time.sleep(0.3)
    seen = _watch_errors()
    rss0, fds0 = proc_usage()
    t0 = time.perf_counter()
    ops0 = thread.ops
    linger_rst = b"\x01\x00\x00\x00\x00\x00\x00\x00"
    # In waves of 25 open at once: a greeting is sent on the server's tick (10 Hz), so
    # one connection at a time waiting for it made this test take half a minute.
    for wave in range(40):
        socks = [
            socket.create_connection((rt.endpoint.host, rt.endpoint.port), timeout=5)
            for _ in range(25)
        ]
        for k, s in enumerate(socks):
            i = 25 * wave + k
            if i % 3 == 0:
                s.recv(64)  # read a little of the greeting
            if i % 5 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)  # abortive close
            s.close()
    elapsed = time.perf_counter() - t0
    rate = (thread.ops - ops0) / elapsed
    wait_for(lambda: not rt.server.observers, 10.0)
    rss1, _ = proc_usage()
    wait_for(lambda: proc_usage()[1] <= fds0 + 2, 5.0)
    assert rate >= 0.7 * 1000.0, rate
    assert rss1 - rss0 < 20 * MiB, (rss0, rss1)
    errors.listeners.remove(seen.append_error)
    assert not seen.stream(), seen
    # A new observer after all that is served normally.
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    try:
        wait_for(lambda: b'"type":"sync"' in ob.data, 5.0)
    finally:
        ob.close()
