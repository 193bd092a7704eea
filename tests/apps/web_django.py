"""A Django application on psycopg_pool under a threading wsgiref server, instrumented
and tagged by poolscope's WSGI middleware (driven over loopback HTTP by
tests/e2e/test_who_holds.py). The routes are those of web_flask.py.

argv: DSN HTTP_PORT APP_NAME POOL_MAX. Prints one JSON line {"stream": ENDPOINT}
when the pool is up and the server listens.
"""

from __future__ import annotations

import json
import socketserver
import sys
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from psycopg_pool import ConnectionPool

import poolscope.instrument as ps
from poolscope.instrument.wsgi import PoolscopeMiddleware

DSN, PORT, NAME, MAX = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], DEBUG=False, SECRET_KEY="t")
django.setup()

raw = ConnectionPool(
    DSN, min_size=1, max_size=MAX, kwargs={"application_name": NAME}, open=True, timeout=30
)
raw.wait(10)
pool: Any = ps.instrument(raw, name="db", leak_threshold=1.0, listen="127.0.0.1:0")
leaked: list[Any] = []


def article(request: HttpRequest, slug: str) -> JsonResponse:
    hold = float(request.GET.get("hold", "0.3"))
    with pool.connection() as con:
        con.execute(f"SELECT pg_sleep({hold})")
    return JsonResponse({"slug": slug})


def fast(request: HttpRequest, n: int) -> JsonResponse:
    with pool.connection() as con:
        return JsonResponse({"one": con.execute("SELECT 1").fetchone()[0]})


def leak(request: HttpRequest, n: str) -> JsonResponse:
    con = pool.getconn()  # never given back: a leak in this route
    con.execute("SELECT 1")
    con.commit()  # held, but not in a transaction
    leaked.append(con)
    return JsonResponse({"leaked": len(leaked)})


def idle_tx(request: HttpRequest, secs: str) -> JsonResponse:
    with pool.connection() as con:
        con.execute("SELECT 1")  # psycopg opens a transaction: idle in transaction now
        time.sleep(float(secs))
    return JsonResponse({"slept": secs})


def stray(request: HttpRequest) -> JsonResponse:
    import psycopg

    con = psycopg.connect(DSN, application_name=NAME)  # no pool knows this one
    leaked.append(con)
    return JsonResponse({"pid": con.info.backend_pid})


urlpatterns = [
    path("articles/<slug:slug>", article),
    path("fast/<int:n>", fast),
    path("leak/<n>", leak),
    path("idle-tx/<secs>", idle_tx),
    path("stray", stray),
]


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


if __name__ == "__main__":
    from django.core.wsgi import get_wsgi_application

    application = PoolscopeMiddleware(get_wsgi_application())
    httpd = make_server(
        "127.0.0.1", PORT, application, server_class=Server, handler_class=QuietHandler
    )
    print(json.dumps({"stream": str(ps.get_runtime().endpoint)}), flush=True)
    httpd.serve_forever()
