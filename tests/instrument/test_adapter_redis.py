"""The redis-py adapter against a real redis-server (loopback, requirepass): sync and
redis.asyncio pools and clients, waits, timeouts, "Too many connections", leaks (pub/sub
and pipelines) at their lines, backend down and back, the password nowhere."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import subprocess
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

import poolscope.instrument as ps
from poolscope.instrument import discovery
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, until, wait_sync
from tests.fixtures.faults import POOLSCOPE, RawObserver, wait_for
from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)
SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(mark: str) -> int:
    return next(i for i, t in enumerate(SOURCE, 1) if t.strip().endswith(f"# {mark}"))


def name_of(server: RedisServer) -> str:
    return f"redis 127.0.0.1:{server.port}/0"


def test_blocking_pool_counts_wait_timeouts_gauges(
    fresh_runtime: Runtime, redis_server: RedisServer
) -> None:
    events = capture(fresh_runtime)
    pool = redis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0.1)
    client = ps.instrument(redis.Redis(connection_pool=pool), listen=False)
    name = name_of(redis_server)
    try:
        for i in range(5):
            client.set("k", i)
        assert client.get("k") == b"4"
        held = pool.get_connection()
        for _ in range(3):
            with pytest.raises(redis.ConnectionError, match="No connection available"):
                client.ping()
        marks: dict[str, float] = {}

        def blocker() -> None:
            time.sleep(0.3)
            marks["released"] = time.perf_counter()
            pool.release(held)

        pool.timeout = 5
        marks["started"] = time.perf_counter()
        threading.Thread(target=blocker).start()
        assert client.ping() is True
        # 6 commands, the held connection, the waiter: 8 acquires, all given back.
        wait_sync(lambda: len(of(events, "release", name)) >= 8, what="releases")
        assert len(of(events, "acquire", name)) == 8 == len(of(events, "release", name))
        assert len(of(events, "timeout", name)) == 3
        assert (
            of(events, "acquire", name)[-1]["wait"] >= marks["released"] - marks["started"] - 0.01
        )
        assert of(events, "acquire", name)[-1]["wait"] >= 0.29
        assert len(of(events, "connect", name)) == 1  # one socket, reused
        n = len(of(events, "state", name))
        wait_sync(lambda: len(of(events, "state", name)) > n + 1, what="state")
        p = fresh_runtime.model.pools[name]
        assert (p.kind, p.target, p.size, p.idle, p.in_use, p.max) == (
            "redis",
            f"127.0.0.1:{redis_server.port}/0",
            1,
            1,
            0,
            1,
        )
    finally:
        ps.uninstrument(client)
        pool.disconnect()
    # Detached exactly: no instance attribute left on the pool.
    assert not {"get_connection", "release", "make_connection", "disconnect"} & set(pool.__dict__)


def test_too_many_connections_is_an_acquire_error(
    fresh_runtime: Runtime, redis_server: RedisServer
) -> None:
    events = capture(fresh_runtime)
    client = ps.instrument(
        redis.Redis.from_url(redis_server.url, max_connections=2), name="r2", listen=False
    )
    pool = client.connection_pool
    try:
        a, b = pool.get_connection(), pool.get_connection()
        for _ in range(4):
            with pytest.raises(redis.ConnectionError, match="Too many connections"):
                client.ping()
        pool.release(a)
        pool.release(b)
        wait_sync(lambda: len(of(events, "acquire_error", "r2")) == 4, what="acquire errors")
        wait_sync(lambda: len(of(events, "release", "r2")) == 2, what="releases")
        assert len(of(events, "acquire", "r2")) == 2
        assert not of(events, "timeout", "r2")
        assert "Too many connections" in of(events, "acquire_error", "r2")[0]["error"]
    finally:
        ps.uninstrument(client)
        pool.disconnect()


def subscribe(client: Any) -> Any:
    p = client.pubsub()
    p.subscribe("news")  # PUBSUB-LEAK
    return p


def watch(client: Any) -> Any:
    pipe = client.pipeline()
    pipe.watch("balance")  # PIPELINE-LEAK
    return pipe


def test_pubsub_and_pipeline_leaks_at_their_lines(
    fresh_runtime: Runtime, redis_server: RedisServer
) -> None:
    events = capture(fresh_runtime)
    client = ps.instrument(
        redis.Redis.from_url(redis_server.url), name="leaky", leak_threshold=0.3, listen=False
    )
    try:
        sub = subscribe(client)
        pipe = watch(client)
        with client.pipeline() as ok:  # a pipeline that executes gives its connection back
            ok.set("a", 1).get("a").execute()
        leaks = wait_sync(lambda: len(of(events, "leak", "leaky")) >= 2 and of(events, "leak"))
        tops = {(e["stack"][0]["file"], e["stack"][0]["line"]) for e in leaks}
        assert tops == {(__file__, line_of("PUBSUB-LEAK")), (__file__, line_of("PIPELINE-LEAK"))}
        assert all(e["task"] == "MainThread" for e in leaks)
        sub.close()
        pipe.reset()
        wait_sync(lambda: len(of(events, "unleak", "leaky")) == 2, what="unleaks")
        assert not fresh_runtime.model.leaks
    finally:
        ps.uninstrument(client)
        client.connection_pool.disconnect()


def test_backend_down_then_recovered_by_heartbeat(
    fresh_runtime: Runtime, redis_server: RedisServer
) -> None:
    events = capture(fresh_runtime)
    client = ps.instrument(
        redis.Redis.from_url(redis_server.url), name="hb", heartbeat=0.1, listen=False
    )
    try:
        assert client.ping()
        wait_sync(lambda: any(e["ok"] for e in of(events, "heartbeat", "hb")), what="a PING")
        redis_server.stop()
        wait_sync(lambda: fresh_runtime.model.pools["hb"].backend == "down", what="down")
        states = [e["state"] for e in of(events, "backend", "hb")]
        assert states == ["suspect", "down"]
        assert of(events, "heartbeat", "hb")[-1]["ok"] is False
        redis_server.start()
        wait_sync(lambda: fresh_runtime.model.pools["hb"].backend == "healthy", what="healthy")
        assert [e["state"] for e in of(events, "backend", "hb")][-1] == "healthy"
        assert client.ping()
        closes = {e["reason"] for e in of(events, "close", "hb")}
        assert "lost" in closes
    finally:
        ps.uninstrument(client)
        client.connection_pool.disconnect()


async def agather_hold(pool: Any, hold: float, marks: dict[str, float]) -> None:
    conn = await pool.get_connection()
    await asyncio.sleep(hold)
    marks["released"] = time.perf_counter()
    await pool.release(conn)


async def aleak(client: Any) -> Any:
    p = client.pubsub()
    await p.subscribe("news")  # ASYNC-LEAK
    return p


async def test_asyncio_blocking_pool(fresh_runtime: Runtime, redis_server: RedisServer) -> None:
    events = capture(fresh_runtime)
    pool = aredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0.1)
    client = ps.instrument(
        aredis.Redis(connection_pool=pool), name="ar", leak_threshold=0.6, listen=False
    )
    try:
        for i in range(4):
            await client.set("k", i)
        held = await pool.get_connection()
        for _ in range(2):
            with pytest.raises(redis.ConnectionError, match="No connection available"):
                await client.ping()
        await pool.release(held)
        pool.timeout = 5
        marks: dict[str, float] = {}
        marks["started"] = time.perf_counter()
        hold = asyncio.create_task(agather_hold(pool, 0.3, marks))
        await asyncio.sleep(0.01)
        assert await client.ping() is True
        await hold
        await until(lambda: len(of(events, "release", "ar")) >= 7, what="releases")
        assert len(of(events, "acquire", "ar")) == 7 == len(of(events, "release", "ar"))
        assert len(of(events, "timeout", "ar")) == 2
        waiter = of(events, "acquire", "ar")[-1]
        assert waiter["wait"] >= marks["released"] - marks["started"] - 0.02
        assert waiter["wait"] >= 0.28
        sub = await aleak(client)
        leak = await until(lambda: of(events, "leak", "ar"), what="leak")
        assert leak[0]["stack"][0]["line"] == line_of("ASYNC-LEAK")
        await sub.aclose()
        await until(lambda: of(events, "unleak", "ar"), what="unleak")
    finally:
        ps.uninstrument(client)
        await pool.aclose()
    assert "get_connection" not in pool.__dict__


def test_password_appears_nowhere(
    fresh_runtime: Runtime, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt = fresh_runtime
    secret = redis_server.password
    wrong = redis_server.url.replace(secret, secret + "-wrong")
    client = ps.instrument(
        redis.Redis.from_url(redis_server.url), name=None, heartbeat=0.1, listen="127.0.0.1:0"
    )
    bad = ps.instrument(redis.Redis.from_url(wrong), name="bad", listen=False)
    assert rt.endpoint is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    # Events folded before the greeting travel in its sync: wait for it, then act.
    wait_for(lambda: b'"type":"sync"' in ob.data, 5.0)
    try:
        assert client.ping()
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
        wait_for(lambda: b'"heartbeat"' in ob.data and b'"acquire_error"' in ob.data, 5.0)
        from prometheus_client import CollectorRegistry, generate_latest

        from poolscope.instrument.prometheus import register

        registry = CollectorRegistry()
        register(registry)
        metrics = generate_latest(registry).decode()
        listed = subprocess.run(
            [*POOLSCOPE, "ps"], capture_output=True, text=True, timeout=30, check=False
        )
        outputs = {
            "stream": ob.data.decode("utf-8", "replace"),
            "model": json.dumps(rt.model.to_dict()),
            "logs": caplog.text,
            "metrics": metrics,
            "discovery": "".join(p.read_text() for p in discovery.registry_dir().glob("*.json")),
            "poolscope ps": listed.stdout + listed.stderr,
        }
    finally:
        ob.close()
        ps.uninstrument(bad)
        ps.uninstrument(client)
        client.connection_pool.disconnect()
    assert f"redis 127.0.0.1:{redis_server.port}/0" in outputs["stream"]
    assert f"redis 127.0.0.1:{redis_server.port}/0" in outputs["poolscope ps"]
    assert "db_client_connection_count" in outputs["metrics"]
    for where, text in outputs.items():
        assert secret not in text, f"password leaked into {where}"


def test_os_sockets_match_the_pool(fresh_runtime: Runtime, redis_server: RedisServer) -> None:
    """The TUI's OS cross-check: the process's established sockets to the pool's target
    are the pool's own size."""
    import os

    from poolscope.tui.osinfo import ProcessProbe

    events = capture(fresh_runtime)
    client = ps.instrument(redis.Redis.from_url(redis_server.url), name="os", listen=False)
    pool = client.connection_pool
    try:
        held = [pool.get_connection() for _ in range(3)]
        for conn in held:
            pool.release(conn)
        assert client.ping()
        wait_sync(lambda: of(events, "state", "os") and of(events, "state", "os")[-1]["size"] == 3)
        target = fresh_runtime.model.pools["os"].target
        assert ProcessProbe().connections(os.getpid(), [target]) == {target: 3}
    finally:
        ps.uninstrument(client)
        pool.disconnect()
