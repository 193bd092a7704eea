"""The shim never raises, for the third-party adapters too: with a failure injected into
the recorder (hot path and events), the fold, site capture or the heartbeat, asyncpg,
SQLAlchemy and psycopg_pool pools answer queries exactly as they do uninstrumented,
and the failure is counted and logged once per place."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument import errors, sites
from poolscope.instrument import runtime as runtime_module
from tests.fixtures.faults import await_for

pytestmark = [pytest.mark.pg, pytest.mark.timeout(90)]
N = 15
HEARTBEATS = 0.3  # time for a few heartbeats (every 0.05 s) before the pool closes


class Injected(RuntimeError):
    pass


def boom(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected fault")


class FailingDeque(deque):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        raise Injected("injected fault in append")


def _asyncpg_probe(mp: pytest.MonkeyPatch) -> None:
    from poolscope.instrument import asyncpg as adapter

    mp.setattr(adapter._State, "probe", boom)


def _sqlalchemy_probe(mp: pytest.MonkeyPatch) -> None:
    from poolscope.instrument import sqlalchemy as adapter

    mp.setattr(adapter._State, "probe", boom)


FAULTS: dict[str, Callable[[pytest.MonkeyPatch, runtime_module.Runtime], None]] = {
    "recorder": lambda mp, rt: mp.setattr(
        rt.recorder, "buffer", FailingDeque(maxlen=rt.recorder.capacity)
    ),
    "fold": lambda mp, rt: mp.setattr(rt.model, "apply", boom),
    "site capture": lambda mp, rt: mp.setattr(sites, "capture", boom),
}


async def _asyncpg(dsn: str, instrumented: bool) -> list[Any]:
    import asyncpg

    raw = asyncpg.create_pool(dsn, min_size=1, max_size=2)
    pool = ps.instrument(raw, name="a", listen=False, heartbeat=0.05) if instrumented else raw
    async with pool:
        out = [await pool.fetchval("select $1::int * 2", i) for i in range(N)]
        async with pool.acquire() as conn:
            out.append(await conn.fetchval("select 'x'"))
        out.append(pool.get_size() <= 2)
        await asyncio.sleep(HEARTBEATS)
    return out


async def _sqlalchemy(dsn: str, instrumented: bool) -> list[Any]:
    import sqlalchemy as sa

    eng = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    if instrumented:
        eng = ps.instrument(eng, name="s", listen=False, heartbeat=0.05)
    out: list[Any] = []
    try:
        for i in range(N):
            with eng.connect() as c:
                out.append(c.execute(sa.text("select :x * 2"), {"x": i}).scalar())
        time.sleep(HEARTBEATS)
    finally:
        eng.dispose()
    return out


async def _psycopg(dsn: str, instrumented: bool) -> list[Any]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)
    if instrumented:
        pool = ps.instrument(pool, name="p", listen=False, heartbeat=0.05)
    out: list[Any] = []
    try:
        for i in range(N):
            with pool.connection() as c:
                row = c.execute("select %s::int * 2", (i,)).fetchone()
                out.append(row[0] if row else None)
        time.sleep(HEARTBEATS)
    finally:
        pool.close()
    return out


APPS = {"asyncpg": _asyncpg, "sqlalchemy": _sqlalchemy, "psycopg": _psycopg}
PROBES = {"asyncpg": _asyncpg_probe, "sqlalchemy": _sqlalchemy_probe}


def _cases() -> list[Any]:
    out = [pytest.param(a, f, id=f"{a}-{f}") for a in APPS for f in FAULTS]
    out += [pytest.param(a, "heartbeat", id=f"{a}-heartbeat") for a in PROBES]
    return out


@pytest.mark.parametrize(("adapter", "fault"), _cases())
async def test_adapter_calls_unaffected_by_injected_faults(
    adapter: str,
    fault: str,
    pg_dsn: str,
    fresh_runtime: runtime_module.Runtime,
    fresh_errors: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = APPS[adapter]
    expected = await app(pg_dsn, False)
    caplog.set_level(logging.WARNING, logger="poolscope")
    if fault == "heartbeat":
        PROBES[adapter](monkeypatch)
    else:
        FAULTS[fault](monkeypatch, fresh_runtime)
    got = await app(pg_dsn, True)
    assert got == expected
    await await_for(lambda: errors.count() > fresh_errors, 5.0)
    logged = [
        r.getMessage() for r in caplog.records if "poolscope internal error" in r.getMessage()
    ]
    places = [m.split(" in ", 1)[1].split(" (")[0] for m in logged]
    assert places and len(places) == len(set(places)), logged
