"""A small application instrumented through the public API, driven by tests over stdin.

    python tests/apps/instrumented.py --listen 127.0.0.1:0 [--leak S]

Prints one JSON line when it is streaming (``{"ready": ENDPOINT, "pid": PID}``), then
obeys one command per stdin line, answering each with one JSON line:

    observers N    wait until N observers are connected
    work N C       N acquire+release pairs spread over C tasks
    settle         wait until the background thread has caught up
    timeout        one acquire that times out (every connection held)
    discard        one connection given back as broken (closed as ``invalid``)
    exit           (or end of input) close the pool and exit normally

Standard library and poolscope only, so what it measures is poolscope's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import poolscope.instrument as ps
from poolscope.instrument import server as server_module
from poolscope.pool import Pool, PoolTimeout


class Conn:
    """A stand-in connection: nothing to talk to, so the pool is all there is."""

    closed = False

    async def close(self) -> None:
        self.closed = True


async def factory() -> Conn:
    return Conn()


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def observer_queues() -> list[int]:
    server = ps.get_runtime().server
    if server is None:
        return []
    try:
        return [len(ob.queue) for ob in list(server.observers)]
    except RuntimeError:  # the set changed under us (another thread); ask again later
        return []


async def work(pool: Pool[Conn], n: int, tasks: int) -> None:
    async def one(count: int) -> None:
        for i in range(count):
            async with pool.acquire():
                if i % 64 == 0:
                    await asyncio.sleep(0)  # let the others in now and then

    share, extra = divmod(n, tasks)
    await asyncio.gather(*(one(share + (1 if i < extra else 0)) for i in range(tasks)))


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--leak", type=float, default=None, help="leak threshold (s)")
    ap.add_argument("--max", type=int, default=4)
    ap.add_argument("--queue", type=int, help="lines queued per observer before dropping")
    args = ap.parse_args()
    if args.queue:
        server_module.OBSERVER_QUEUE = args.queue
    pool: Pool[Conn] = Pool(factory, min_size=1, max_size=args.max, name="app")
    pool = ps.instrument(pool, listen=args.listen, leak_threshold=args.leak)
    loop = asyncio.get_running_loop()
    async with pool:
        say(ready=str(ps.get_runtime().endpoint), pid=os.getpid())
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not cmd or cmd[0] == "exit":
                break
            if cmd[0] == "observers":
                want = int(cmd[1])
                deadline = time.monotonic() + 10
                while len(observer_queues()) < want and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                say(observers=len(observer_queues()))
            elif cmd[0] == "work":
                n, tasks = int(cmd[1]), int(cmd[2]) if len(cmd) > 2 else 1
                start = time.perf_counter()
                await work(pool, n, tasks)
                elapsed = time.perf_counter() - start
                say(
                    done=n,
                    elapsed=elapsed,
                    queues=observer_queues(),
                    capacity=server_module.OBSERVER_QUEUE,
                    buffered=len(ps.get_runtime().recorder.buffer),
                )
            elif cmd[0] == "settle":
                # Wait until the background thread has processed everything so far.
                buf = ps.get_runtime().recorder.buffer
                deadline = time.monotonic() + 30
                while buf and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                say(buffered=len(buf), queues=observer_queues())
            elif cmd[0] == "timeout":
                held = [await pool.acquire() for _ in range(args.max)]
                try:
                    await pool.acquire(timeout=0.05)
                    say(timeout=False)
                except PoolTimeout:
                    say(timeout=True)
                for c in held:
                    await pool.release(c)
            elif cmd[0] == "discard":
                conn = await pool.acquire()
                await pool.discard(conn)
                say(discarded=True)
            else:
                say(error=f"unknown command {cmd[0]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
