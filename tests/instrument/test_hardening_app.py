"""Application faults: the observers carry on when the application restarts, get its
last events when it exits, and a PostgreSQL restart mid-load shows as heartbeat
failures and recovery with every connection accounted for."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.client import FileFeed
from poolscope.instrument import runtime as runtime_module
from poolscope.model import fold
from tests.fixtures.faults import (
    POOLSCOPE,
    AppProcess,
    RawObserver,
    await_for,
    free_port,
    spawn,
    stop,
    wait_for,
)


def _events(path: Path) -> list[dict[str, Any]]:
    return list(FileFeed(path)) if path.exists() else []


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def _acquires_metric(text: str) -> float | None:
    """The exporter's acquire count for the ``app`` pool (the wait histogram's count)."""
    for line in text.splitlines():
        if line.startswith("db_client_connection_wait_time_seconds_count") and '"app"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_record_and_export_carry_on_across_an_application_restart(
    tmp_path: Path, fault_apps: list[AppProcess], fault_children: list[Any]
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    first = AppProcess(listen)
    fault_apps.append(first)
    out = tmp_path / "rec.ndjson"
    mport = free_port()
    recorder = spawn([*POOLSCOPE, "record", listen, "-o", str(out)])
    exporter = spawn([*POOLSCOPE, "export", listen, "--listen", f"127.0.0.1:{mport}"])
    fault_children += [recorder, exporter]
    wait_for(lambda: first.cmd("model")["observers"] == 2, 15.0, 0.2)
    first.cmd("work 200")
    wait_for(lambda: _acquires_metric(_scrape(mport)) == 200.0, 15.0, 0.2)
    first.kill()  # no goodbye: SIGKILL

    second = AppProcess(listen)  # the same address, a new process
    fault_apps.append(second)
    wait_for(lambda: second.cmd("model")["observers"] == 2, 20.0, 0.2)
    second.cmd("work 300")
    wait_for(lambda: _acquires_metric(_scrape(mport)) == 300.0, 15.0, 0.2)
    wait_for(lambda: sum(e["type"] == "acquire" for e in _events(out)) >= 500 or None, 15.0, 0.2)
    assert stop(recorder) == 0
    evs = _events(out)
    hellos = [e["pid"] for e in evs if e["type"] == "hello"]
    assert hellos == [first.pid, second.pid]
    state = fold(evs)  # the second process's sync replaces the first's numbers
    assert state.pools["app"].acquires == 300 and state.process["pid"] == second.pid
    assert sum(e["type"] == "acquire" for e in evs) == 500
    assert second.exit() == 0


def test_the_last_events_reach_observers_when_the_application_exits(
    tmp_path: Path, fault_apps: list[AppProcess], fault_children: list[Any]
) -> None:
    app = AppProcess("127.0.0.1:0")
    fault_apps.append(app)
    out = tmp_path / "rec.ndjson"
    recorder = spawn([*POOLSCOPE, "record", app.endpoint, "-o", str(out)])
    fault_children.append(recorder)
    raw = RawObserver(app.host, app.port)
    try:
        wait_for(lambda: app.cmd("model")["observers"] == 2, 15.0, 0.2)
        assert app.proc.stdin is not None
        app.proc.stdin.write(b"burst 5000\n")  # then exit at once, events still buffered
        app.proc.stdin.flush()
        assert app.proc.wait(20) == 0
        raw.eof.wait(10)
        # Everything, up to the goodbye, reached both observers.
        evs = raw.events()
        assert sum(e["type"] == "acquire" for e in evs) == 5000
        assert sum(e["type"] == "release" for e in evs) == 5000
        assert evs[-1]["type"] == "bye"
        # The recorder wrote it to disk when the application went away (before stopping).
        wait_for(lambda: any(e["type"] == "bye" for e in _events(out)), 10.0, 0.2)
        rec = _events(out)
        assert sum(e["type"] == "release" for e in rec) == 5000
    finally:
        raw.close()
    assert stop(recorder) == 0


@pytest.mark.pg
async def test_postgresql_restart_mid_load(
    fresh_runtime: runtime_module.Runtime, pg_cluster: Any
) -> None:
    import asyncpg

    if pg_cluster.external:
        pytest.skip("cannot restart an external PostgreSQL ($POOLSCOPE_TEST_DSN)")
    rt = fresh_runtime
    rt.state_interval = 0.1
    pool = ps.instrument(
        asyncpg.create_pool(pg_cluster.dsn, min_size=2, max_size=4),
        name="pg",
        listen="127.0.0.1:0",
        heartbeat=0.2,
        leak_threshold=None,
    )
    assert rt.endpoint is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    ok = failed = 0
    running = True

    async def load() -> None:
        nonlocal ok, failed
        while running:
            try:
                assert await pool.fetchval("select 1", timeout=2) == 1
                ok += 1
            # InternalClientError ("cannot switch to state N; another operation is in
            # progress"): raised by asyncpg itself around a server restart - bare,
            # uninstrumented pools raise it too (measured) - so the workload survives it.
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                TimeoutError,
            ):
                failed += 1
                await asyncio.sleep(0.05)
            except asyncio.TimeoutError:
                failed += 1
            await asyncio.sleep(0.005)

    def heartbeats(ok_value: bool) -> int:
        return sum(1 for e in ob.events() if e["type"] == "heartbeat" and e.get("ok") is ok_value)

    try:
        async with pool:
            tasks = [asyncio.ensure_future(load()) for _ in range(4)]
            await await_for(lambda: heartbeats(True) >= 2 and ok > 50, 10.0)
            restarted = threading.Event()
            thread = threading.Thread(target=lambda: (pg_cluster.restart(), restarted.set()))
            thread.start()
            await await_for(restarted.is_set, 60.0)
            thread.join()
            ok_after_restart = ok
            beats_ok = heartbeats(True)
            # Recovery: queries succeed again and probes pass again.
            await await_for(lambda: ok > ok_after_restart + 50, 20.0)
            await await_for(lambda: heartbeats(True) > beats_ok, 10.0)
            running = False
            for t in tasks:
                with contextlib.suppress(Exception):
                    await t
            # At rest: opened minus closed is exactly what the pool has open.
            p = rt.model.pools["pg"]
            size = pool.get_size()
            # Nobody holds a connection: each acquire ended in a release, or in a
            # close of the connection it held (lost with the server). The last
            # releases may still be on their way to the fold: wait, don't sample.
            await await_for(
                lambda: p.size == size and p.connects - p.closes_total == size and not p.holders,
                5.0,
            )
            assert p.holders == {} and p.acquires >= p.releases
            assert p.acquires - p.releases <= sum(n for r, n in p.closes.items() if r != "closed")
        evs = ob.events()
    finally:
        running = False
        ob.close()
    await await_for(lambda: p.connects == p.closes_total, 5.0)  # and after close(), none
    assert failed > 0  # the restart was felt by the application ...
    assert p.heartbeats_failed > 0 or any(  # ... and seen by poolscope
        e["type"] == "close" and e["reason"] in ("lost", "invalid") for e in evs
    )
    lost = sum(n for r, n in p.closes.items() if r != "closed")
    assert lost >= 2, p.closes  # the connections PostgreSQL dropped
    # The observer saw the same story.
    observed = fold(evs).pools["pg"]
    assert observed.heartbeats_failed == p.heartbeats_failed
    assert observed.connects >= size and observed.holders == {}


def test_attach_source_carries_on_across_an_application_restart(
    fault_apps: list[AppProcess],
) -> None:
    """What ``poolscope attach`` reads through: the TUI's live source reconnects to
    the new process and shows its numbers, having said it was disconnected."""
    from poolscope.endpoint import parse_endpoint
    from poolscope.tui.data import LiveSource

    listen = f"127.0.0.1:{free_port()}"
    first = AppProcess(listen)
    fault_apps.append(first)
    source = LiveSource([parse_endpoint(listen)], backoff_cap=0.5)
    source.start()
    feed = source.feeds[0]

    def acquires() -> int:
        with source.lock:
            p = feed.state.pools.get("app")
            return p.acquires if p else -1

    try:
        wait_for(lambda: feed.connected, 15.0)
        first.cmd("work 120")
        wait_for(lambda: acquires() == 120, 15.0)
        first.kill()
        wait_for(lambda: not feed.connected and feed.last_error, 10.0)
        second = AppProcess(listen)
        fault_apps.append(second)
        wait_for(lambda: feed.connected, 15.0)
        second.cmd("work 70")
        wait_for(lambda: acquires() == 70, 15.0)
        with source.lock:
            assert feed.state.process.get("pid") == second.pid
    finally:
        source.stop()
