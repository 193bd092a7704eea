"""The aiohttp adapter against a real aiohttp web server on loopback: one pool per host,
keep-alive reuse, waits at limit_per_host, timeouts, closes by reason, an unread
response as a leak at its line, backend down and back, no credentials in the stream."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from typing import Any

import aiohttp
import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from tests.adapter_support import capture, of, until
from tests.fixtures.http_server import HttpServer

pytestmark = pytest.mark.timeout(60)
SOURCE = pathlib.Path(__file__).read_text().splitlines()


def line_of(mark: str) -> int:
    return next(i for i, t in enumerate(SOURCE, 1) if t.strip().endswith(f"# {mark}"))


def session(**kw: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(**kw))


async def get(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        return await r.text()


async def test_per_host_pools_reuse_and_counts(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    s = ps.instrument(session(), listen=False)
    connector = s.connector
    port = http_server.port
    a, b = f"aiohttp 127.0.0.1:{port}", f"aiohttp localhost:{port}"
    try:
        for _ in range(5):
            assert await get(s, http_server.url) == "hello"
        for _ in range(2):
            assert await get(s, f"http://localhost:{port}/") == "hello"
        await until(lambda: len(of(events, "release", a)) == 5 and of(events, "release", b))
        assert len(of(events, "acquire", a)) == 5 == len(of(events, "release", a))
        assert len(of(events, "acquire", b)) == 2 == len(of(events, "release", b))
        # Keep-alive: one new connection per host, reused after.
        assert len(of(events, "connect", a)) == 1 == len(of(events, "connect", b))
        pools = {e["pool"]: e for e in of(events, "pool")}
        assert pools[a]["kind"] == "aiohttp"
        assert pools[a]["target"] == f"http://127.0.0.1:{port}"
        assert pools[b]["target"] == f"http://localhost:{port}"
        await until(lambda: a in fresh_runtime.model.pools and fresh_runtime.model.pools[a].idle)
        assert fresh_runtime.model.pools[a].idle == 1
    finally:
        await s.close()
        ps.uninstrument(s)
    assert not {"connect", "_release", "_get"} & set(connector.__dict__)


async def slow_get(s: aiohttp.ClientSession, url: str, delay: float) -> None:
    """Holds its connection for ``delay`` seconds: the server answers that late (a body
    read to its end gives the connection back by itself)."""
    async with s.get(f"{url}?d={delay}") as r:
        await r.read()


async def test_wait_at_limit_per_host_and_timeouts(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    s = ps.instrument(session(limit_per_host=1), name="api", listen=False)
    name = f"api 127.0.0.1:{http_server.port}"
    try:
        await get(s, http_server.url)
        t_block = time.perf_counter()
        blocker = asyncio.create_task(slow_get(s, http_server.url, 0.3))
        await asyncio.sleep(0.05)
        t_wait = time.perf_counter()
        assert await get(s, http_server.url) == "hello"
        await blocker
        await until(lambda: len(of(events, "release", name)) == 3, what="releases")
        acquires = of(events, "acquire", name)
        assert len(acquires) == 3
        hold = of(events, "release", name)[1]["hold"]  # the blocker's
        # The waiter waited for the rest of the blocker's hold.
        assert acquires[2]["wait"] >= hold - (t_wait - t_block) - 0.005
        assert acquires[2]["wait"] >= 0.2
        # While the one slot is held, requests with a short connect timeout give up.
        blocker = asyncio.create_task(slow_get(s, http_server.url, 0.5))
        await asyncio.sleep(0.05)
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                async with s.get(http_server.url, timeout=aiohttp.ClientTimeout(connect=0.05)):
                    pass
        await blocker
        await until(lambda: len(of(events, "timeout", name)) == 3, what="timeouts")
        await until(lambda: len(of(events, "release", name)) == 4, what="releases")
        assert len(of(events, "acquire", name)) == 4
        assert not of(events, "acquire_error", name)
        await until(lambda: fresh_runtime.model.pools[name].timeouts == 3)
        assert fresh_runtime.model.pools[name].max == 1
    finally:
        await s.close()
        ps.uninstrument(s)


async def test_closes_by_reason(fresh_runtime: Runtime, http_server: HttpServer) -> None:
    events = capture(fresh_runtime)
    s = ps.instrument(session(keepalive_timeout=0.2), name="c", listen=False)
    name = f"c 127.0.0.1:{http_server.port}"

    def reasons() -> list[str]:
        return [e["reason"] for e in of(events, "close", name)]

    try:
        await get(s, http_server.url)
        await asyncio.sleep(0.5)  # past the keep-alive timeout: dropped as idle
        await get(s, http_server.url)
        await until(lambda: "idle_timeout" in reasons(), what="idle_timeout")
        await get(s, http_server.url + "close")  # the server says Connection: close
        await until(lambda: "server_closed" in reasons(), what="server_closed")
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(http_server.url + "abort") as r:
                await r.read()
        await until(lambda: "error" in reasons(), what="error")
        await until(lambda: len(of(events, "release", name)) == 4)
        assert len(of(events, "acquire", name)) == 4
    finally:
        await s.close()
        ps.uninstrument(s)


async def test_unread_response_is_a_leak_at_its_line(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    s = ps.instrument(session(), name="leaky", leak_threshold=0.3, listen=False)
    name = f"leaky 127.0.0.1:{http_server.port}"
    try:
        r = await s.get(http_server.url + "stream")  # UNREAD
        leak = await until(lambda: of(events, "leak", name), what="leak")
        top = leak[0]["stack"][0]
        assert (top["file"], top["line"]) == (__file__, line_of("UNREAD"))
        assert leak[0]["task"]
        r.release()
        await until(lambda: of(events, "unleak", name), what="unleak")
        # Released with its body unread: not reusable, closed as such.
        await until(lambda: of(events, "close", name))
        assert of(events, "close", name)[0]["reason"] == "invalid"
    finally:
        await s.close()
        ps.uninstrument(s)


async def test_backend_down_then_recovered(fresh_runtime: Runtime, http_server: HttpServer) -> None:
    events = capture(fresh_runtime)
    s = ps.instrument(session(), name="b", listen=False)
    name = f"b 127.0.0.1:{http_server.port}"
    try:
        await get(s, http_server.url)
        await asyncio.to_thread(http_server.stop)
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(s, http_server.url)
        await until(lambda: fresh_runtime.model.pools[name].backend == "down", what="down")
        assert [e["state"] for e in of(events, "backend", name)] == ["suspect", "down"]
        assert len(of(events, "connect_error", name)) == 2
        assert len(of(events, "acquire_error", name)) == 2
        # The keep-alive connection the server dropped was found closed.
        assert "server_closed" in [e["reason"] for e in of(events, "close", name)]
        await asyncio.to_thread(http_server.start)
        assert await get(s, http_server.url) == "hello"
        await until(lambda: fresh_runtime.model.pools[name].backend == "healthy", what="up")
    finally:
        await s.close()
        ps.uninstrument(s)


async def test_credentials_in_url_appear_nowhere(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    events = capture(fresh_runtime)
    secret = "http-pw-9dkq2"
    s = ps.instrument(session(), listen=False)
    try:
        url = f"http://user:{secret}@127.0.0.1:{http_server.port}/"
        assert await get(s, url) == "hello"
        await until(lambda: of(events, "release"))
    finally:
        await s.close()
        ps.uninstrument(s)
    assert secret not in json.dumps(events)
    assert secret not in json.dumps(fresh_runtime.model.to_dict())


async def test_observer_side_shows_http_pools(
    fresh_runtime: Runtime, http_server: HttpServer
) -> None:
    """The TUI's rows, detail and OS-socket cross-check, the advisor and the Prometheus
    mapping over the events of live aiohttp and httpx pools (names say what they are)."""
    import os

    import httpx

    from poolscope.advisor import advise, format_advice
    from poolscope.metrics import POOL_LABEL, Source, families
    from poolscope.tui import views
    from poolscope.tui.data import ProcessFeed
    from poolscope.tui.osinfo import ProcessProbe

    events = capture(fresh_runtime)
    port = http_server.port
    s = ps.instrument(session(), listen=False)
    c = ps.instrument(httpx.AsyncClient(), listen=False)
    a, h = f"aiohttp 127.0.0.1:{port}", f"httpx localhost:{port}"
    try:
        for _ in range(30):
            await get(s, http_server.url)
            await c.get(f"http://localhost:{port}/")
        await until(lambda: len(of(events, "release", h)) == 30 and of(events, "state", h))
        n = len(of(events, "state", a))
        await until(lambda: len(of(events, "state", a)) > n, what="fresh gauges")
        feed = ProcessFeed("app", live=False)
        for ev in list(events):
            feed.apply(ev, time.time())
        rows = {r.label: r for r in views.pool_rows([feed])}
        assert set(rows) == {a, h}
        detail = views.pool_detail(rows[a]).plain
        assert f"aiohttp → http://127.0.0.1:{port}" in detail
        assert f"httpx → http://localhost:{port}" in views.pool_detail(rows[h]).plain
        # The OS sees one keep-alive socket per pool, as each pool says.
        targets = [p.target for p in feed.state.pools.values()]
        counts = await asyncio.to_thread(ProcessProbe().connections, os.getpid(), targets)
        assert counts is not None
        checks = dict(views.connection_rows([feed], [counts]))
        for name in (a, h):
            assert checks[f"0:{name}"][2].plain == "1"
            assert checks[f"0:{name}"][4].plain.startswith("ok"), checks[f"0:{name}"][4].plain
        advice = advise(feed.state, a)
        assert format_advice(advice)[0].startswith(f"{a}:")
        fams = {f.name: f for f in families([Source(feed.state)])}
        used = {
            x.labels[POOL_LABEL]: x.value
            for x in fams["db_client_connection_count"].series
            if x.labels.get("state") == "idle"
        }
        assert used == {a: 1.0, h: 1.0}
        ups = {x.labels[POOL_LABEL]: x.value for x in fams["poolscope_backend_up"].series}
        assert ups == {a: 1.0, h: 1.0}
    finally:
        await s.close()
        await c.aclose()
        ps.uninstrument(s)
        ps.uninstrument(c)
