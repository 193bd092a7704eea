"""An asyncpg application that never imports poolscope, for `poolscope inject` tests.

    python tests/apps/live_asyncpg.py DSN

One connection is leaked before anything else happens: a task acquires it and sits on
it (the line marked HOLDS-LEAK). Prints ``{"ready": true}``, then obeys one command per
stdin line, answering each with one JSON line:

    work N       N acquire+release pairs, each a query; answers the sum of the results
    spin S       keep the loop busy (acquire/release in a tight loop) for S seconds
    exit         (or end of input) release the leaked connection, close, exit
"""

import asyncio
import json
import sys

import asyncpg


async def leak(pool, held, stop):
    con = await pool.acquire()
    held.set()
    try:
        await stop.wait()  # HOLDS-LEAK
    finally:
        await pool.release(con)


async def work(pool, n):
    total = 0
    for i in range(n):
        async with pool.acquire() as con:
            total += await con.fetchval("SELECT $1::int * 2", i)
    return total


async def main(dsn):
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
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
        elif cmd[0] == "spin":
            deadline = loop.time() + float(cmd[1])
            n = 0
            while loop.time() < deadline:
                n += 1
                await work(pool, 1)
            print(json.dumps({"spun": True}), flush=True)
    stop.set()
    await leaker
    await pool.close()
    print(json.dumps({"bye": True}), flush=True)


asyncio.run(main(sys.argv[1]))
