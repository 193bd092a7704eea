"""A threaded SQLAlchemy application that never imports poolscope, for `poolscope inject`.

    python tests/apps/live_sqlalchemy.py DSN

A thread checks out one connection before anything else and sits on it (the line
marked HOLDS-LEAK). Prints ``{"ready": true}``, then one command per stdin line:

    work N       N checkouts (each a query) spread over 4 threads; answers the sum
    exit         (or end of input) give the leaked connection back, dispose, exit
"""

import json
import sys
import threading

from sqlalchemy import create_engine, text


def leak(engine, held, stop):
    conn = engine.connect()
    held.set()
    stop.wait()  # HOLDS-LEAK
    conn.close()


def work(engine, n, threads=4):
    totals = [0] * threads

    def run(k):
        for i in range(k, n, threads):
            with engine.connect() as conn:
                totals[k] += conn.execute(text("SELECT CAST(:x AS integer) * 2"), {"x": i}).scalar()

    ts = [threading.Thread(target=run, args=(k,), name=f"worker-{k}") for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(totals)


def main(dsn):
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, pool_size=3, max_overflow=2)
    held, stop = threading.Event(), threading.Event()
    leaker = threading.Thread(target=leak, args=(engine, held, stop), name="leaker")
    leaker.start()
    held.wait()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "work":
            print(json.dumps({"done": int(cmd[1]), "total": work(engine, int(cmd[1]))}), flush=True)
    stop.set()
    leaker.join()
    engine.dispose()
    print(json.dumps({"bye": True}), flush=True)


main(sys.argv[1])
