"""`poolscope run` with an asyncpg application: the pool the application holds is the
very object asyncpg made (hooked in place, no proxy), its checkouts are counted, and
`ps.uninstrument(pool)` in-process puts asyncpg's class and the pool back exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inject_support import POOLSCOPE, ROOT, app_env

pytestmark = [pytest.mark.timeout(120)]

APP = """
import asyncio, json, sys, threading
import asyncpg
from asyncpg.pool import Pool

ORIGINAL = {name: Pool.__dict__[name] for name in ("_acquire", "release", "close", "terminate")}

async def main():
    pool = await asyncpg.create_pool(sys.argv[1], min_size=1, max_size=2)
    out = {"is_pool": type(pool) is Pool}
    for i in range(5):
        async with pool.acquire() as con:
            await con.fetchval("SELECT 1")
    import poolscope.instrument as ps
    rt = ps.get_runtime()
    await asyncio.sleep(0.3)
    name = next(iter(rt.handles))
    out["pools"] = sorted(rt.handles)
    out["acquires"] = rt.model.pools[name].acquires
    out["hooked"] = Pool.__dict__["_acquire"] is not ORIGINAL["_acquire"]
    connect = pool._connect
    assert ps.uninstrument(pool) is pool
    out["restored"] = all(Pool.__dict__[n] is f for n, f in ORIGINAL.items())
    out["connect_restored"] = not getattr(pool._connect, "_poolscope", False)
    out["threads"] = sorted(t.name for t in threading.enumerate() if t.name.startswith("poolscope"))
    out["handles_after"] = sorted(rt.handles)
    async with pool.acquire() as con:
        out["still_works"] = await con.fetchval("SELECT 7")
    await pool.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_run_asyncpg_in_place_then_uninstrument(pg_dsn: str, tmp_path: Path) -> None:
    env = app_env(tmp_path)
    r = subprocess.run(
        [*POOLSCOPE, "run", "--listen", "127.0.0.1:0", "--", sys.executable, "-c", APP, pg_dsn],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["is_pool"] is True  # no proxy: the object asyncpg made
    assert out["pools"] == ["poolscope"]  # named after the database
    assert out["acquires"] == 5
    assert out["hooked"] is True
    assert out["restored"] is True and out["connect_restored"] is True
    assert out["handles_after"] == [] and out["threads"] == []
    assert out["still_works"] == 7
