"""ps.track(): the documented home-made pool (docs/track.md, run as written) and an
asyncio one, against a real loopback echo server - counts, waits, timeouts, errors,
leaks at their lines, the probe heartbeat with backend down and back, gauges and
Prometheus."""

from __future__ import annotations

import asyncio
import pathlib
import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, until, wait_sync

pytestmark = pytest.mark.timeout(60)
ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(mark: str) -> int:
    return next(i for i, t in enumerate(SOURCE, 1) if t.strip().endswith(f"# {mark}"))


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


class EchoServer:
    """A threaded TCP echo server on a fixed loopback port that can stop and come back."""

    def __init__(self) -> None:
        self.server: socketserver.ThreadingTCPServer | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _Echo)
        srv.daemon_threads = True
        self.port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.server = srv

    def stop(self) -> None:
        srv, self.server = self.server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def doc_example() -> dict[str, Any]:
    """The first Python block of docs/track.md, executed as it is written."""
    text = (ROOT / "docs" / "track.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = next(b for b in blocks if "class SocketPool" in b)
    assert len(code.strip().splitlines()) <= 40  # "20 lines" of pool, plus imports/blank
    ns: dict[str, Any] = {}
    exec(compile(code, "docs/track.md", "exec"), ns)
    return ns


def roundtrip(conn: socket.socket) -> bytes:
    conn.sendall(b"ping")
    return conn.recv(16)


def test_documented_pool_counts_wait_timeouts_leak_metrics(
    fresh_runtime: Runtime, echo: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLSCOPE_LISTEN", "127.0.0.1:0")
    events = capture(fresh_runtime)
    import queue

    pool = doc_example()["SocketPool"](("127.0.0.1", echo.port), 1)
    name = f"sockets 127.0.0.1:{echo.port}"
    assert pool.tracker.name == name and fresh_runtime.endpoint is not None
    for _ in range(5):
        conn = pool.get()
        assert roundtrip(conn) == b"ping"
        pool.put(conn)
    t_block = time.perf_counter()
    conn = pool.get()
    for _ in range(3):
        with pytest.raises(queue.Empty):
            pool.get(timeout=0.05)

    def blocker() -> None:
        time.sleep(0.3)
        pool.put(conn)

    threading.Thread(target=blocker).start()
    time.sleep(0.02)
    t_wait = time.perf_counter()
    again = pool.get()
    pool.put(again)
    wait_sync(lambda: len(of(events, "release", name)) == 7, what="releases")
    acquires = of(events, "acquire", name)
    assert len(acquires) == 7
    assert len(of(events, "timeout", name)) == 3
    assert len(of(events, "connect", name)) == 1
    hold = of(events, "release", name)[5]["hold"]
    assert acquires[6]["wait"] >= hold - (t_wait - t_block) - 0.005
    assert acquires[6]["wait"] >= 0.25
    assert acquires[6]["task"] == "MainThread"
    # A leak at this file's line, through the decorated get.
    pool.tracker.handle.leak_threshold = 0.3
    leaked = pool.get()  # TRACK-LEAK
    leak = wait_sync(lambda: of(events, "leak", name), what="leak")
    assert (leak[0]["stack"][0]["file"], leak[0]["stack"][0]["line"]) == (
        __file__,
        line_of("TRACK-LEAK"),
    )
    pool.put(leaked)
    wait_sync(lambda: of(events, "unleak", name), what="unleak")
    # Gauges from the pool's own stats(); the rest filled in.
    n = len(of(events, "state", name))
    wait_sync(lambda: len(of(events, "state", name)) > n + 1, what="state")
    p = fresh_runtime.model.pools[name]
    assert (p.kind, p.size, p.idle, p.in_use, p.max) == ("sockets", 1, 1, 0, 1)
    from prometheus_client import CollectorRegistry, generate_latest

    from poolscope.instrument.prometheus import register

    registry = CollectorRegistry()
    register(registry)
    metrics = generate_latest(registry).decode()
    assert f'db_client_connection_max{{db_client_connection_pool_name="{name}"' in metrics
    timeouts = [
        line
        for line in metrics.splitlines()
        if line.startswith("db_client_connection_timeouts_total{") and f'"{name}"' in line
    ]
    assert len(timeouts) == 1 and timeouts[0].endswith(" 3.0"), timeouts
    pool.tracker.close()
    assert name not in fresh_runtime.handles


def test_probe_heartbeat_backend_down_and_back(fresh_runtime: Runtime, echo: EchoServer) -> None:
    events = capture(fresh_runtime)

    def probe() -> None:
        with socket.create_connection(("127.0.0.1", echo.port), timeout=1) as s:
            assert roundtrip(s) == b"ping"

    tracker = ps.track("probed", heartbeat=0.1, probe=probe, listen=False)
    try:
        wait_sync(lambda: any(e["ok"] for e in of(events, "heartbeat", "probed")), what="ok")
        echo.stop()
        wait_sync(lambda: fresh_runtime.model.pools["probed"].backend == "down", what="down")
        assert [e["state"] for e in of(events, "backend", "probed")] == ["suspect", "down"]
        assert "ConnectionRefusedError" in of(events, "heartbeat", "probed")[-1]["error"]
        echo.start()
        wait_sync(lambda: fresh_runtime.model.pools["probed"].backend == "healthy", what="up")
        assert fresh_runtime.model.pools["probed"].heartbeats_failed >= 2
    finally:
        tracker.close()
    # The heartbeat thread stopped with the tracker.
    wait_sync(
        lambda: not [t for t in threading.enumerate() if t.name == "poolscope-heartbeat-probed"]
    )


class AsyncPool:
    """A small asyncio pool of echo streams, tracked with the context-manager helper."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.sem = asyncio.Semaphore(size)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.tracker = ps.track("async", max_size=size, leak_threshold=0.3, listen=False)

    async def get(self) -> Any:
        await asyncio.wait_for(self.sem.acquire(), 0.5)
        if self.idle:
            return self.idle.pop()
        t0 = time.perf_counter()
        conn = await asyncio.open_connection("127.0.0.1", self.port)
        self.tracker.connected(conn, time.perf_counter() - t0)
        return conn

    async def put(self, conn: Any) -> None:
        self.idle.append(conn)
        self.sem.release()


async def use(pool: AsyncPool, hold: float = 0.0) -> bytes:
    async with pool.tracker.acquire(pool.get, pool.put) as (reader, writer):  # ASYNC-SITE
        writer.write(b"hi")
        await writer.drain()
        await asyncio.sleep(hold)
        return await reader.read(2)


async def test_async_pool_with_the_context_manager(
    fresh_runtime: Runtime, echo: EchoServer
) -> None:
    events = capture(fresh_runtime)
    pool = AsyncPool(echo.port, 1)
    try:
        for _ in range(3):
            assert await use(pool) == b"hi"
        results = await asyncio.gather(use(pool, 0.2), use(pool))
        assert results == [b"hi", b"hi"]
        await until(lambda: len(of(events, "release", "async")) == 5, what="releases")
        assert len(of(events, "acquire", "async")) == 5
        assert of(events, "acquire", "async")[-1]["wait"] >= 0.15
        assert fresh_runtime.model.sites  # the acquire sites, resolved
        # A timeout (asyncio.wait_for -> TimeoutError) and a leak at the async with line.
        leaker = asyncio.create_task(use(pool, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await use(pool)
        leak = await until(lambda: of(events, "leak", "async"), what="leak")
        assert leak[0]["stack"][0]["line"] == line_of("ASYNC-SITE")
        assert leak[0]["task"] == leaker.get_name()
        await leaker
        await until(lambda: of(events, "unleak", "async"), what="unleak")
        assert len(of(events, "timeout", "async")) == 1
        # Another failure of get is an acquire error.
        broken = pool.tracker.acquire(lambda: _refuse(), None)
        with pytest.raises(ConnectionRefusedError):
            async with broken:
                pass
        await until(lambda: of(events, "acquire_error", "async"), what="acquire_error")
        assert "ConnectionRefusedError" in of(events, "acquire_error", "async")[0]["error"]
    finally:
        pool.tracker.close()
        for _, writer in pool.idle:
            writer.close()


async def _refuse() -> Any:
    raise ConnectionRefusedError("refused")


@pytest.mark.fast
def test_track_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="leak_threshold"):
        ps.track("x", leak_threshold=0)
    with pytest.raises(ValueError, match="heartbeat"):
        ps.track("x", heartbeat=-1)


@pytest.mark.fast
def test_without_stats_gauges_come_from_what_the_tracker_saw(fresh_runtime: Runtime) -> None:
    tracker = ps.track("plain", max_size=3, listen=False)
    a, b = object(), object()
    tracker.connected(a, 0.01)
    tracker.connected(b, 0.01)
    tracker.acquired(a)
    assert tracker.gauges() == {"size": 2, "idle": 1, "in_use": 1, "waiting": 0, "max": 3, "min": 0}
    assert tracker.conn_id(a) == "c1" and tracker.conn_id(b) == "c2"
    tracker.released(a)
    tracker.released(a)  # a second release of the same connection is ignored
    tracker.closed(b, "lost")
    assert tracker.gauges()["size"] == 1
    assert tracker.backend.state == "suspect"
    tracker.connected(object(), 0.01)
    assert tracker.backend.state == "healthy"
    tracker.close()


@pytest.mark.fast
def test_a_broken_recorder_never_raises_into_the_pool(
    fresh_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from poolscope.instrument import errors

    tracker = ps.track("fragile", listen=False)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("recorder broke")

    monkeypatch.setattr(tracker.handle, "acquired", broken)
    monkeypatch.setattr(tracker.handle, "released", broken)
    monkeypatch.setattr(tracker.handle, "event", broken)
    before = errors.count()
    conn = object()
    tracker.connected(conn, 0.01)
    tracker.acquired(conn, 0.1)
    tracker.released(conn)
    tracker.closed(conn, "lost")
    tracker.connect_error(OSError("refused"))
    tracker.timeout(0.5)
    tracker.acquire_error(ValueError("no"))
    assert errors.count() >= before + 5
    tracker.close()
