"""A psycopg (async) application that never imports poolscope, for `poolscope inject`.

    python tests/apps/live_psycopg.py DSN

A task takes one connection before anything else and sits on it (the line marked
HOLDS-LEAK). Prints ``{"ready": true}``, then one command per stdin line:

    work N       N connection() blocks, each a query; answers the sum
    exit         (or end of input) give the leaked connection back, close, exit
"""

import asyncio
import json
import sys

from psycopg_pool import AsyncConnectionPool


async def leak(pool, held, stop):
    conn = await pool.getconn()
    held.set()
    try:
        await stop.wait()  # HOLDS-LEAK
    finally:
        await pool.putconn(conn)


async def work(pool, n):
    total = 0
    for i in range(n):
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT %s::int * 2", (i,))
            total += (await cur.fetchone())[0]
    return total


async def main(dsn):
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=4, open=False, name="orders")
    await pool.open(wait=True)
    held, stop = asyncio.Event(), asyncio.Event()
    leaker = asyncio.create_task(leak(pool, held, stop), name="leaker")
    await held.wait()
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "work":
            total = await work(pool, int(cmd[1]))
            print(json.dumps({"done": int(cmd[1]), "total": total}), flush=True)
    stop.set()
    await leaker
    await pool.close()
    print(json.dumps({"bye": True}), flush=True)


asyncio.run(main(sys.argv[1]))
