"""Helpers for the adapter tests: capture what the runtime emits, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from poolscope.instrument.runtime import Runtime


def capture(rt: Runtime) -> list[dict[str, Any]]:
    """Every event the runtime folds and broadcasts, in order (a list that grows)."""
    events: list[dict[str, Any]] = []
    rt.taps.append(events.extend)
    rt.state_interval = 0.1
    return events


def of(events: list[dict[str, Any]], etype: str, pool: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in list(events)
        if e.get("type") == etype and (pool is None or e.get("pool") == pool)
    ]


async def until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``cond`` on the running loop until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def wait_sync(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def terminate_backends(dsn: str) -> int:
    """``pg_terminate_backend`` every other backend of the test database; how many."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0
