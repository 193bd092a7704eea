"""A Flask application on psycopg_pool under a threading wsgiref server, instrumented
and tagged by poolscope's WSGI middleware (driven over loopback HTTP by
tests/e2e/test_who_holds.py).

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

from flask import Flask, jsonify
from psycopg_pool import ConnectionPool

import poolscope.instrument as ps
from poolscope.instrument.wsgi import PoolscopeMiddleware

DSN, PORT, NAME, MAX = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
raw = ConnectionPool(
    DSN, min_size=1, max_size=MAX, kwargs={"application_name": NAME}, open=True, timeout=30
)
raw.wait(10)
pool: Any = ps.instrument(raw, name="db", leak_threshold=1.0, listen="127.0.0.1:0")
leaked: list[Any] = []

app = Flask(__name__)
app.wsgi_app = PoolscopeMiddleware(app.wsgi_app)  # type: ignore[method-assign]


@app.route("/articles/<slug>")
def article(slug: str) -> Any:
    from flask import request

    hold = float(request.args.get("hold", "0.3"))
    with pool.connection() as con:
        con.execute(f"SELECT pg_sleep({hold})")
    return jsonify(slug=slug)


@app.route("/fast/<int:n>")
def fast(n: int) -> Any:
    with pool.connection() as con:
        return jsonify(one=con.execute("SELECT 1").fetchone()[0])


@app.route("/leak/<n>")
def leak(n: str) -> Any:
    con = pool.getconn()  # never given back: a leak in this route
    con.execute("SELECT 1")
    con.commit()  # held, but not in a transaction
    leaked.append(con)
    return jsonify(leaked=len(leaked))


@app.route("/idle-tx/<secs>")
def idle_tx(secs: str) -> Any:
    with pool.connection() as con:
        con.execute("SELECT 1")  # psycopg opens a transaction: idle in transaction now
        time.sleep(float(secs))
    return jsonify(slept=secs)


@app.route("/stray")
def stray() -> Any:
    import psycopg

    con = psycopg.connect(DSN, application_name=NAME)  # no pool knows this one
    leaked.append(con)
    return jsonify(pid=con.info.backend_pid)


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


if __name__ == "__main__":
    httpd = make_server("127.0.0.1", PORT, app, server_class=Server, handler_class=QuietHandler)
    print(json.dumps({"stream": str(ps.get_runtime().endpoint)}), flush=True)
    httpd.serve_forever()
