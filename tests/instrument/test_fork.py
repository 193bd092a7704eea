"""A forked worker (gunicorn --preload, multiprocessing's fork) keeps reporting: its own
background thread, stream server and discovery entry, while the parent keeps its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

APP = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import poolscope.instrument as ps
    from poolscope.pool import Pool

    class Conn:
        async def close(self): pass

    async def factory(): return Conn()

    pool = Pool(factory, max_size=2, name="forked")
    ps.instrument(pool, listen="127.0.0.1:0", leak_threshold=None)
    parent_ep = str(ps.get_runtime().endpoint)

    async def work(n):
        for _ in range(n):
            async with pool.acquire():
                pass

    pid = os.fork()
    if pid == 0:
        rt = ps.get_runtime()
        asyncio.run(work(7))
        deadline = time.time() + 5
        while time.time() < deadline and rt.model.pools["forked"].acquires < 7:
            time.sleep(0.05)
        print(json.dumps({"who": "child", "pid": os.getpid(), "endpoint": str(rt.endpoint),
                          "acquires": rt.model.pools["forked"].acquires,
                          "alive": rt.thread is not None and rt.thread.is_alive()}), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    asyncio.run(work(3))
    rt = ps.get_runtime()
    deadline = time.time() + 5
    while time.time() < deadline and rt.model.pools["forked"].acquires < 3:
        time.sleep(0.05)
    print(json.dumps({"who": "parent", "pid": os.getpid(), "endpoint": parent_ep,
                      "acquires": rt.model.pools["forked"].acquires}), flush=True)
    """
)


def test_forked_child_reports_on_its_own_endpoint(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = dict(os.environ, POOLSCOPE_RUNTIME_DIR=str(tmp_path / "registry"))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    lines = {d["who"]: d for d in map(json.loads, out.stdout.splitlines())}
    child, parent = lines["child"], lines["parent"]
    # Each process counts only its own acquires: nothing of the parent leaks into the
    # child's model and the child's work never shows up in the parent's.
    assert child["acquires"] == 7
    assert parent["acquires"] == 3
    assert child["alive"] is True
    assert child["endpoint"] != parent["endpoint"]
    assert child["endpoint"].startswith("127.0.0.1:")
