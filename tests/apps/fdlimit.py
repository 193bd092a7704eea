"""An instrumented application under a low file limit (tests/instrument/test_security_limits.py).

``python tests/apps/fdlimit.py LIMIT HELD SECONDS``: lowers its own soft
RLIMIT_NOFILE to LIMIT, keeps HELD files open (an application with its own
descriptors), and for SECONDS runs a reference pool whose connections are real
socket pairs (max_lifetime short, so ``socket()`` is called again and again) while
it also opens and closes a file and a socket on every round. Every OSError of its
own calls is counted. Prints ``{"ready": ENDPOINT, "pid": PID}``, then the tally.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import poolscope.instrument as ps
from poolscope.pool import Pool


class Conn:
    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()

    async def close(self) -> None:
        self.a.close()
        self.b.close()


async def main(limit: int, held: int, seconds: float) -> dict[str, int]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    tally = {"acquires": 0, "connect_errors": 0, "open_errors": 0, "socket_errors": 0}
    tmp = tempfile.mkdtemp()
    files = [open(os.path.join(tmp, f"held-{i}"), "w") for i in range(held)]  # noqa: SIM115

    async def factory() -> Conn:
        try:
            return Conn()
        except OSError:
            tally["connect_errors"] += 1
            raise

    pool: Pool[Conn] = Pool(factory, min_size=1, max_size=4, max_lifetime=0.05, name="app")
    pool = ps.instrument(pool, listen="127.0.0.1:0", leak_threshold=None)
    rt = ps.get_runtime()
    print(json.dumps({"ready": str(rt.endpoint), "pid": os.getpid()}), flush=True)
    min_free = limit
    most_observers = 0
    end = time.monotonic() + seconds
    probe = os.path.join(tmp, "probe")
    async with pool:
        while time.monotonic() < end:
            for _ in range(20):
                try:
                    async with pool.acquire():
                        tally["acquires"] += 1
                except OSError:
                    pass  # counted by the factory
            try:
                with open(probe, "w") as f:
                    f.write("x")
            except OSError:
                tally["open_errors"] += 1
            try:
                socket.socket().close()
            except OSError:
                tally["socket_errors"] += 1
            min_free = min(min_free, limit - len(os.listdir("/proc/self/fd")))
            if rt.server is not None:
                most_observers = max(most_observers, len(rt.server.observers))
            await asyncio.sleep(0.005)
    for f in files:
        f.close()
    return {**tally, "min_free": min_free, "most_observers": most_observers}


if __name__ == "__main__":
    limit, held, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    result = asyncio.run(main(limit, held, seconds))
    print(json.dumps(result), flush=True)
    ps.shutdown()
