"""The httpx adapter (the httpcore pool) against a real aiohttp web server on loopback:
Client and AsyncClient, one pool per origin, keep-alive reuse, a blocked waiter's wait,
PoolTimeout as timeout, closes by reason, a streamed response never closed as a leak at
its line, backend down and back."""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
import time
from typing import Any

import httpx
import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, until, wait_sync
from tests.fixtures.http_server import HttpServer

pytestmark = pytest.mark.timeout(60)
SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(mark: str) -> int:
    return next(i for i, t in enumerate(SOURCE, 1) if t.strip().endswith(f"# {mark}"))


def client(**kw: Any) -> httpx.Client:
    return httpx.Client(**kw)


def test_per_origin_pools_reuse_counts_wait_and_timeouts(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    c = ps.instrument(
        httpx.Client(limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5, pool=5)),
        listen=False,
    )
    port = http_server.port
    name, other = f"httpx 127.0.0.1:{port}", f"httpx localhost:{port}"
    try:
        for _ in range(5):
            assert c.get(http_server.url).text == "hello"
        assert c.get(f"http://localhost:{port}/").text == "hello"  # closes the idle one
        assert c.get(http_server.url).text == "hello"
        t_block = time.perf_counter()
        blocker = threading.Thread(target=lambda: c.get(http_server.url + "?d=0.3"))
        blocker.start()
        time.sleep(0.05)
        t_wait = time.perf_counter()
        assert c.get(http_server.url).text == "hello"
        blocker.join()
        wait_sync(lambda: len(of(events, "release", name)) == 8, what="releases")
        acquires = of(events, "acquire", name)
        assert len(acquires) == 8 and len(of(events, "acquire", other)) == 1
        hold = of(events, "release", name)[6]["hold"]  # the blocker's
        assert acquires[7]["wait"] >= hold - (t_wait - t_block) - 0.005
        assert acquires[7]["wait"] >= 0.2
        # 127.0.0.1's connection closed for localhost's (max_connections=1 is shared), and
        # a new one opened after: one connect per socket.
        assert len(of(events, "connect", name)) == 2
        assert [e["reason"] for e in of(events, "close", name)] == ["overflow"]
        pools = {e["pool"]: e for e in of(events, "pool")}
        assert (pools[name]["kind"], pools[name]["target"]) == ("httpx", f"http://127.0.0.1:{port}")
        # PoolTimeout: counted exactly, as timeouts.
        c2 = ps.instrument(
            httpx.Client(
                limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(5, pool=0.05)
            ),
            name="pt",
            listen=False,
        )
        held = c2.send(c2.build_request("GET", http_server.url + "stream"), stream=True)
        for _ in range(3):
            with pytest.raises(httpx.PoolTimeout):
                c2.get(http_server.url)
        held.close()
        pt = f"pt 127.0.0.1:{port}"
        wait_sync(lambda: len(of(events, "timeout", pt)) == 3, what="timeouts")
        wait_sync(lambda: len(of(events, "release", pt)) == 1, what="release")
        assert len(of(events, "acquire", pt)) == 1 and not of(events, "acquire_error", pt)
        wait_sync(lambda: fresh_runtime.model.pools[pt].timeouts == 3)
        c2.close()
        ps.uninstrument(c2)
    finally:
        c.close()
        ps.uninstrument(c)
    pool = c._transport._pool  # type: ignore[attr-defined]
    assert not {"handle_request", "create_connection", "close"} & set(pool.__dict__)


def test_streamed_response_never_closed_is_a_leak(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    c = ps.instrument(httpx.Client(), name="leaky", leak_threshold=0.3, listen=False)
    name = f"leaky 127.0.0.1:{http_server.port}"
    try:
        r = c.send(c.build_request("GET", http_server.url + "stream"), stream=True)  # STREAM
        leak = wait_sync(lambda: of(events, "leak", name), what="leak")
        top = leak[0]["stack"][0]
        assert (top["file"], top["line"]) == (__file__, line_of("STREAM"))
        assert leak[0]["task"] == "MainThread"
        r.close()
        wait_sync(lambda: of(events, "unleak", name), what="unleak")
        wait_sync(lambda: of(events, "close", name), what="close")
        assert of(events, "close", name)[0]["reason"] == "invalid"  # body unread
    finally:
        c.close()
        ps.uninstrument(c)


def test_closes_by_reason_and_backend(fresh_runtime: Runtime, http_server: HttpServer) -> None:
    events = capture(fresh_runtime)
    c = ps.instrument(
        httpx.Client(limits=httpx.Limits(keepalive_expiry=0.2)), name="k", listen=False
    )
    name = f"k 127.0.0.1:{http_server.port}"

    def reasons() -> list[str]:
        return [e["reason"] for e in of(events, "close", name)]

    try:
        c.get(http_server.url)
        time.sleep(0.4)
        c.get(http_server.url)  # the expired keep-alive connection is closed first
        wait_sync(lambda: "idle_timeout" in reasons(), what="idle_timeout")
        c.get(http_server.url + "close")
        wait_sync(lambda: "server_closed" in reasons(), what="server_closed")
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(http_server.url + "abort")
        wait_sync(lambda: "error" in reasons(), what="error")
        n = len(of(events, "acquire", name))
        assert n == 4 == len(of(events, "release", name))
        http_server.stop()
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                c.get(http_server.url)
        wait_sync(lambda: fresh_runtime.model.pools[name].backend == "down", what="down")
        assert [e["state"] for e in of(events, "backend", name)] == ["suspect", "down"]
        assert len(of(events, "connect_error", name)) == 2
        assert len(of(events, "acquire_error", name)) == 2
        assert len(of(events, "acquire", name)) == n  # a failed connect is no acquire
        http_server.start()
        assert c.get(http_server.url).text == "hello"
        wait_sync(lambda: fresh_runtime.model.pools[name].backend == "healthy", what="up")
    finally:
        c.close()
        ps.uninstrument(c)


async def along(c: httpx.AsyncClient, url: str) -> Any:
    return await c.send(c.build_request("GET", url), stream=True)  # ASYNC-STREAM


async def test_async_client(fresh_runtime: Runtime, http_server: HttpServer) -> None:
    events = capture(fresh_runtime)
    c = ps.instrument(
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1)),
        name="ax",
        leak_threshold=0.3,
        listen=False,
    )
    name = f"ax 127.0.0.1:{http_server.port}"
    secret = "httpx-pw-3kx"
    try:
        for _ in range(4):
            assert (await c.get(http_server.url)).text == "hello"
        authed = http_server.url.replace("http://", f"http://u:{secret}@")
        assert (await c.get(authed)).text == "hello"
        t_block = time.perf_counter()
        blocker = asyncio.create_task(c.get(http_server.url + "?d=0.3"))
        await asyncio.sleep(0.05)
        t_wait = time.perf_counter()
        await c.get(http_server.url)
        await blocker
        r = await along(c, http_server.url + "stream")
        leak = await until(lambda: of(events, "leak", name), what="leak")
        assert leak[0]["stack"][0]["line"] == line_of("ASYNC-STREAM")
        await r.aclose()
        await until(lambda: len(of(events, "release", name)) == 8, what="releases")
        acquires = of(events, "acquire", name)
        assert len(acquires) == 8
        hold = of(events, "release", name)[5]["hold"]
        assert acquires[6]["wait"] >= hold - (t_wait - t_block) - 0.005
        assert acquires[6]["wait"] >= 0.2
        assert len(of(events, "connect", name)) == 1  # one keep-alive connection throughout
        await until(lambda: of(events, "close", name), what="close")
        assert of(events, "close", name)[0]["reason"] == "invalid"  # closed with body unread
    finally:
        await c.aclose()
        ps.uninstrument(c)
    assert secret not in json.dumps(events)
