"""A minimal instrumented process for the discovery and argv tests.

    python tests/apps/discovery_app.py [--gate] [--listen EP] [--name N] [ANY ARGS ...]

With ``--gate`` it prints ``{"pid": PID}`` and waits for a line on stdin before it
instruments anything (so a test can plant files named after its pid first). Then it
instruments two reference pools (two discovery writes), prints
``{"pid": PID, "endpoint": EP_OR_NULL}`` and waits for end of input. Unknown
arguments are accepted and ignored: they are the command line under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import poolscope.instrument as ps
from poolscope.instrument.runtime import get_runtime
from poolscope.pool import Pool


class Conn:
    async def close(self) -> None:
        pass


async def factory() -> Conn:
    return Conn()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gate", action="store_true")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--name", default="app")
    args, _ = p.parse_known_args()
    if args.gate:
        print(json.dumps({"pid": os.getpid()}), flush=True)
        sys.stdin.readline()
    first = ps.instrument(Pool(factory, max_size=2), name=args.name, listen=args.listen)
    second = ps.instrument(Pool(factory, max_size=1), name="second")
    async with first, second:
        async with first.acquire():
            pass
        ep = get_runtime().endpoint
        print(json.dumps({"pid": os.getpid(), "endpoint": str(ep) if ep else None}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main())
