"""Acquire-site stacks: the application's frames, innermost first, ending where an
asyncio task's own logical stack ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument.runtime import Runtime
from poolscope.pool import Pool

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses


class _Conn:
    async def close(self) -> None:
        return None


async def _factory() -> _Conn:
    return _Conn()


async def _inner(pool: Pool[_Conn], hold: float) -> None:
    conn = await pool.acquire()  # the acquiring line
    await asyncio.sleep(hold)
    await pool.release(conn)


async def _outer(pool: Pool[_Conn], hold: float) -> None:
    await _inner(pool, hold)


async def _leak_stack(rt: Runtime, pool_name: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lk in list(rt.model.leaks.values()) + list(rt.model.resolved_leaks):
            if lk.pool == pool_name:
                return lk.stack
        await asyncio.sleep(0.05)
    raise AssertionError("no leak reported")


async def test_task_stack_is_innermost_first_and_stops_at_the_task(fresh_runtime: Runtime) -> None:
    pool: Pool[_Conn] = Pool(_factory, max_size=2, name="sites")
    ps.instrument(pool, leak_threshold=0.2, listen=False)
    async with pool:
        task = asyncio.ensure_future(_outer(pool, 0.6))
        stack = await _leak_stack(fresh_runtime, "sites")
        await task
    funcs = [f["func"] for f in stack]
    # The acquiring frame first, then its caller inside the task - and nothing of the
    # event loop or of whatever started the loop (pytest, asyncio.run, <module>).
    assert funcs == ["_inner", "_outer"]
    assert stack[0]["file"] == __file__
    assert stack[0]["code"] == "conn = await pool.acquire()  # the acquiring line"


async def test_same_name_twice_gets_a_unique_name_that_events_carry(
    fresh_runtime: Runtime,
) -> None:
    """Two pools named alike: the second is renamed, and its own acquires are counted
    under the new name (the hot path carries the name it was renamed to)."""
    a: Pool[_Conn] = Pool(_factory, max_size=2, name="dup")
    b: Pool[_Conn] = Pool(_factory, max_size=2, name="dup")
    ps.instrument(a, listen=False)
    ps.instrument(b, listen=False)
    assert (a.name, b.name) == ("dup", "dup-2")
    async with a, b:
        for _ in range(3):
            async with b.acquire():
                pass
        async with a.acquire():
            pass
        deadline = time.monotonic() + 5
        pools = fresh_runtime.model.pools
        while time.monotonic() < deadline and ("dup-2" not in pools or pools["dup-2"].releases < 3):
            await asyncio.sleep(0.05)
    assert pools["dup-2"].acquires == 3 and pools["dup"].acquires == 1
