"""Generate ``session.ndjson``: a deterministic 90-second recording for the TUI tests.

Run once (``python tests/data/make_session.py``) and commit the output. It is a
small simulation of one process with two pools over a fixed clock, speaking the
real wire protocol: a busy spell where requests wait, a leak that is reported
and later returned, and a backend outage seen by heartbeats (suspect, down,
healthy again) with connect errors and acquire timeouts. A recording of the
real demo would differ run to run; the snapshot tests need the same bytes.
"""

from __future__ import annotations

import heapq
import json
import random
from pathlib import Path
from typing import Any

T0 = 1_750_000_000.0
DURATION = 90.0
PID = 4242
TARGET = "127.0.0.1:5432/shop"

SITES: dict[int, list[dict[str, Any]]] = {
    1: [
        {
            "file": "/srv/shop/app/web.py",
            "line": 88,
            "func": "handle",
            "code": "return await view(request)",
        },
        {
            "file": "/srv/shop/app/orders.py",
            "line": 42,
            "func": "list_orders",
            "code": "async with pool.acquire() as conn:",
        },
    ],
    2: [
        {"file": "/srv/shop/app/jobs.py", "line": 17, "func": "run_job", "code": "await job.run()"},
        {
            "file": "/srv/shop/app/reports.py",
            "line": 64,
            "func": "daily_totals",
            "code": "async with reports.acquire() as conn:",
        },
    ],
    3: [
        {"file": "/srv/shop/app/jobs.py", "line": 17, "func": "run_job", "code": "await job.run()"},
        {
            "file": "/srv/shop/app/billing.py",
            "line": 110,
            "func": "export_invoices",
            "code": "rows = await self.fetch_all()",
        },
        {
            "file": "/srv/shop/app/billing.py",
            "line": 118,
            "func": "fetch_all",
            "code": "conn = await pool.acquire()  # never released on the error path",
        },
    ],
}


# Written outermost first for reading; the protocol carries stacks innermost (the
# acquiring line) first, as poolscope's runtime sends them.
SITES = {sid: list(reversed(stack)) for sid, stack in SITES.items()}


def main() -> None:
    rng = random.Random(20250101)
    out: list[dict[str, Any]] = []

    def emit(t: float, etype: str, **fields: Any) -> None:
        out.append({"type": etype, "t": round(T0 + t, 6), **fields})

    hello = {
        "protocol": 1,
        "pid": PID,
        "process": "shop-api",
        "version": "0.1.0",
        "python": "3.11.7",
    }
    emit(0.0, "hello", **hello)
    process = {"t": T0 - 3600.0, **hello}
    emit(
        0.0,
        "sync",
        state={
            "process": process,
            "pools": {},
            "sites": {},
            "leaks": [],
            "resolved_leaks": [],
            "dropped": 0,
            "internal_errors": 0,
            "events": 0,
            "first_t": T0 - 3600.0,
            "now": T0,
        },
    )
    pools = {
        "orders": {"max": 8, "min": 2, "site": 1, "hb": 2.0},
        "reports": {"max": 3, "min": 1, "site": 2, "hb": 3.0},
    }
    for name, cfg in pools.items():
        emit(
            0.0,
            "pool",
            pool=name,
            kind="poolscope",
            target=TARGET,
            config={
                "min": cfg["min"],
                "max": cfg["max"],
                "acquire_timeout": 2.0,
                "leak_threshold": 8.0,
                "heartbeat": cfg["hb"],
            },
        )
    for sid, stack in SITES.items():
        emit(0.0, "site", id=sid, stack=stack)

    # Simple discrete simulation, 10 ms steps.
    conn_ids = iter(range(1, 1000))
    state: dict[str, dict[str, Any]] = {}
    for name, cfg in pools.items():
        idle = []
        for _ in range(cfg["min"] + 1):
            c = str(next(conn_ids))
            emit(0.0, "connect", pool=name, conn=c, duration=0.0011)
            idle.append(c)
        state[name] = {"idle": idle, "busy": {}, "queue": [], "size": len(idle)}
    releases: list[tuple[float, str, str, float]] = []  # (t, pool, conn, hold)
    task_n = iter(range(100, 100000))
    leak_conn = None
    dt = 0.01
    steps = int(DURATION / dt)
    outage = (55.0, 62.0)
    for step in range(steps):
        t = step * dt
        slow = 20.0 <= t < 32.0
        down = outage[0] <= t < outage[1]
        # Arrivals.
        for name, rate in (("orders", 18.0), ("reports", 3.0)):
            if rng.random() < rate * dt:
                state[name]["queue"].append((t, f"Task-{next(task_n)}"))
        # Releases due.
        while releases and releases[0][0] <= t:
            _, name, c, hold = heapq.heappop(releases)
            st = state[name]
            st["busy"].pop(c, None)
            emit(t, "release", pool=name, conn=c, hold=round(hold, 6))
            st["idle"].append(c)
        # The deliberate leak: a connection taken at 40 s, reported at 48 s, back at 70 s.
        if abs(t - 40.0) < dt / 2 and state["orders"]["idle"]:
            st = state["orders"]
            leak_conn = st["idle"].pop()
            st["busy"][leak_conn] = t
            emit(t, "acquire", pool="orders", conn=leak_conn, wait=0.000021, site=3, task="Task-7")
            heapq.heappush(releases, (70.0, "orders", leak_conn, 30.0))
        if abs(t - 48.0) < dt / 2 and leak_conn:
            emit(
                t,
                "leak",
                pool="orders",
                conn=leak_conn,
                held=8.0,
                stack=SITES[3],
                task="Task-7",
                site=3,
            )
        if abs(t - 70.0) < dt / 2 and leak_conn:
            emit(
                t + 0.001,
                "unleak",
                pool="orders",
                conn=leak_conn,
                held=30.0,
                stack=SITES[3],
                task="Task-7",
            )
        # Serve queues.
        for name, cfg in pools.items():
            st = state[name]
            while st["queue"]:
                since, task = st["queue"][0]
                if t - since >= 2.0:
                    st["queue"].pop(0)
                    emit(
                        t,
                        "timeout",
                        pool=name,
                        wait=2.0,
                        error="PoolTimeout: no connection within 2s",
                        task=task,
                    )
                    continue
                if not st["idle"] and st["size"] < cfg["max"]:
                    if down:
                        if rng.random() < 0.05:
                            emit(
                                t,
                                "connect_error",
                                pool=name,
                                error="ConnectionRefusedError: [Errno 111] Connection refused",
                                duration=0.0004,
                            )
                        break
                    c = str(next(conn_ids))
                    emit(
                        t,
                        "connect",
                        pool=name,
                        conn=c,
                        duration=round(rng.lognormvariate(-6.8, 0.3), 6),
                    )
                    st["idle"].append(c)
                    st["size"] += 1
                if not st["idle"]:
                    break
                st["queue"].pop(0)
                c = st["idle"].pop()
                st["busy"][c] = t
                wait = max(t - since, rng.uniform(0.000008, 0.00004))
                site = cfg["site"]
                emit(t, "acquire", pool=name, conn=c, wait=round(wait, 6), site=site, task=task)
                base = -4.0 if name == "orders" else -2.3
                hold = rng.lognormvariate(base, 0.5) * (10.0 if slow else 1.0)
                if down:
                    hold = 0.3
                heapq.heappush(releases, (t + hold, name, c, hold))
        # Heartbeats.
        for name, cfg in pools.items():
            period = int(cfg["hb"] / dt)
            if step % period == period // 2:
                st = state[name]
                c = st["idle"][0] if st["idle"] else "-"
                if down:
                    emit(
                        t,
                        "heartbeat",
                        pool=name,
                        conn=c,
                        ok=False,
                        latency=None,
                        error="ConnectionRefusedError: [Errno 111] Connection refused",
                    )
                else:
                    emit(
                        t,
                        "heartbeat",
                        pool=name,
                        conn=c,
                        ok=True,
                        latency=round(rng.lognormvariate(-7.6, 0.35) * (4 if slow else 1), 7),
                        error=None,
                    )
        if abs(t - 56.0) < dt / 2:
            for name in pools:
                emit(t, "backend", pool=name, state="suspect", previous="healthy")
        if abs(t - 58.0) < dt / 2:
            for name in pools:
                emit(t, "backend", pool=name, state="down", previous="suspect")
        if abs(t - 63.0) < dt / 2:
            for name in pools:
                emit(t, "backend", pool=name, state="healthy", previous="down")
        # Gauges twice a second.
        if step % 50 == 0:
            for name, cfg in pools.items():
                st = state[name]
                emit(
                    t,
                    "state",
                    pool=name,
                    size=st["size"],
                    idle=len(st["idle"]),
                    in_use=len(st["busy"]),
                    waiting=len(st["queue"]),
                    max=cfg["max"],
                    min=cfg["min"],
                )
    path = Path(__file__).with_name("session.ndjson")
    with open(path, "w") as f:
        for ev in out:
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    print(f"{len(out)} events -> {path}")


if __name__ == "__main__":
    main()
