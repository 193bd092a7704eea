"""A bare ASGI application (no poolscope import) that makes an asyncpg pool per worker
at start-up, for `poolscope run -- uvicorn --workers 2` tests. DSN from $APP_DSN."""

import os

import asyncpg

pool = None


async def app(scope, receive, send):
    global pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                pool = await asyncpg.create_pool(os.environ["APP_DSN"], min_size=1, max_size=2)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    async with pool.acquire() as con:
        value = await con.fetchval("SELECT 42")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(value).encode()})
