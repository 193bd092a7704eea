"""A Starlette application on asyncpg under uvicorn, instrumented and tagged by
poolscope's ASGI middleware (driven over loopback HTTP by tests/e2e/test_who_holds.py).

argv: DSN HTTP_PORT APP_NAME POOL_MAX. Prints one JSON line {"stream": ENDPOINT}
when the pool is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import poolscope.instrument as ps
from poolscope.instrument.asgi import PoolscopeMiddleware

DSN, PORT, NAME, MAX = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
state: dict[str, Any] = {"leaked": []}


def pool() -> Any:
    return state["pool"]


async def article(request: Request) -> JSONResponse:
    hold = float(request.query_params.get("hold", "0.3"))
    async with pool().acquire() as con:
        await con.execute(f"SELECT pg_sleep({hold})")
    return JSONResponse({"slug": request.path_params["slug"]})


async def fast(request: Request) -> JSONResponse:
    async with pool().acquire() as con:
        return JSONResponse({"one": await con.fetchval("SELECT 1")})


async def leak(request: Request) -> JSONResponse:
    con = await pool().acquire()  # never released: a leak in this route
    await con.fetchval("SELECT 1")
    state["leaked"].append(con)
    return JSONResponse({"leaked": len(state["leaked"])})


async def idle_tx(request: Request) -> JSONResponse:
    secs = float(request.path_params["secs"])
    async with pool().acquire() as con, con.transaction():
        await con.fetchval("SELECT 1")
        await asyncio.sleep(secs)  # idle in transaction, holding the connection
    return JSONResponse({"slept": secs})


async def stray(request: Request) -> JSONResponse:
    con = await asyncpg.connect(DSN, server_settings={"application_name": NAME})
    state["stray"] = con  # a connection of this process that no pool knows
    return JSONResponse({"pid": con.get_server_pid()})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    raw = await asyncpg.create_pool(
        DSN, min_size=1, max_size=MAX, server_settings={"application_name": NAME}
    )
    state["pool"] = ps.instrument(raw, name="db", leak_threshold=1.0, listen="127.0.0.1:0")
    print(json.dumps({"stream": str(ps.get_runtime().endpoint)}), flush=True)
    yield
    await raw.close()


app = Starlette(
    routes=[
        Route("/articles/{slug}", article),
        Route("/fast/{n:int}", fast),
        Route("/leak/{n}", leak),
        Route("/idle-tx/{secs}", idle_tx),
        Route("/stray", stray),
    ],
    middleware=[Middleware(PoolscopeMiddleware)],
    lifespan=lifespan,
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
