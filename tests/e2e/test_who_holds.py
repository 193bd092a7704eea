"""Who holds it, and who made them wait: a real Starlette app under uvicorn (asyncpg),
and real Flask and Django apps under a threading wsgiref server (psycopg_pool), on a
real PostgreSQL, instrumented and tagged by poolscope's middleware, driven over
loopback HTTP; their streams read over the real socket and folded as every observer
does."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from poolscope.attribution import WAIT_MIN
from poolscope.events import Event, decode
from poolscope.model import PoolState, fold
from poolscope.pgview import PgView
from poolscope.tui import who
from poolscope.tui.data import ProcessFeed
from tests.pgcluster import PgCluster, free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.pg]

APPS = Path(__file__).resolve().parents[1] / "apps"
SLOW = "GET /articles/{slug}"
FAST = "GET /fast/{n}"
LEAK = "GET /leak/{n}"
IDLE_TX = "GET /idle-tx/{secs}"


class WebApp:
    """A web application subprocess and its event stream, read from the start."""

    def __init__(self, kind: str, dsn: str, name: str, pool_max: int) -> None:
        self.port = free_port()
        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(APPS / f"web_{kind}.py"),
                dsn,
                str(self.port),
                name,
                str(pool_max),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"{kind} app did not start: {self.proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        self.stream = json.loads(line)["stream"]
        host, _, port = self.stream.rpartition(":")
        self.events: list[Event] = []
        self._sock = socket.create_connection((host, int(port)), timeout=5)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_http()
        # Until the greeting, events go into the sync: the truth needs every line.
        deadline = time.monotonic() + 10
        while not any(e["type"] == "sync" for e in list(self.events)):
            assert time.monotonic() < deadline, "no sync from the application"
            time.sleep(0.02)

    def _read(self) -> None:
        buf = b""
        self._sock.settimeout(None)
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            self.events.extend(decode(x) for x in lines if x.strip())

    def _wait_http(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=60) as resp:
            return json.loads(resp.read())

    def state(self) -> PoolState:
        return fold(list(self.events))

    def until(self, cond: Any, what: str, timeout: float = 15.0) -> PoolState:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if cond(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        self._sock.close()
        self.proc.terminate()
        try:
            # uvicorn's graceful shutdown waits for the requests the test left holding
            # connections; that wait is not what these tests are about.
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def web_app(request: pytest.FixtureRequest, pg_dsn: str) -> Iterator[WebApp]:
    app = WebApp(request.param, pg_dsn, f"who-{request.param}-{time.monotonic_ns()}", 2)
    try:
        yield app
    finally:
        app.close()


def in_parallel(app: WebApp, paths: list[str]) -> None:
    errors: list[BaseException] = []

    def one(p: str) -> None:
        try:
            app.get(p)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def truth_shares(events: list[Event]) -> dict[str, float]:
    """Wait blame from the events' own timestamps, computed independently: the union of
    waiting intervals, and each hold's overlap with it, by the hold's route."""
    labels: dict[int, dict[str, str]] = {}
    waits: list[tuple[float, float]] = []
    open_: dict[str, tuple[float, str]] = {}
    holds: list[tuple[float, float, str]] = []
    for ev in events:
        etype = ev["type"]
        if etype == "tags":
            labels[ev["id"]] = ev["labels"]
        elif etype == "acquire":
            if ev["wait"] >= WAIT_MIN:
                waits.append((ev["t"] - ev["wait"], ev["t"]))
            route = labels.get(ev.get("tags") or -1, {}).get("route", "")
            open_[ev["conn"]] = (ev["t"], route)
        elif etype == "timeout":
            waits.append((ev["t"] - ev["wait"], ev["t"]))
        elif etype in ("release", "close") and ev.get("conn") in open_:
            start, route = open_.pop(ev["conn"])
            holds.append((start, ev["t"], route))
    end = max(ev["t"] for ev in events)
    holds += [(start, end, route) for start, route in open_.values()]
    union: list[list[float]] = []
    for a, b in sorted(waits):
        if union and a <= union[-1][1]:
            union[-1][1] = max(union[-1][1], b)
        else:
            union.append([a, b])
    charged: dict[str, float] = {}
    for s, e, route in holds:
        for a, b in union:
            overlap = min(e, b) - max(s, a)
            if overlap > 0:
                charged[route] = charged.get(route, 0.0) + overlap
    total = sum(charged.values())
    return {r: v / total for r, v in charged.items()}


def app_pids(dsn: str, name: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("web_app", ["starlette", "flask", "django"], indirect=True)
def test_routes_blame_backends_and_the_server_view(web_app: WebApp, pg_dsn: str) -> None:
    app = web_app
    # Contention: slow holds in one route, quick ones in another, on a pool of 2.
    for _ in range(2):
        in_parallel(
            app, [f"/articles/a{i}?hold=0.4" for i in range(3)] + [f"/fast/{i}" for i in range(8)]
        )
    st = app.until(
        lambda s: sum(r.acquires for r in s.attribution.routes.values()) >= 22, "acquires"
    )

    # Per-route table: templates, never raw paths.
    routes = {route: r for (_, route), r in st.attribution.routes.items()}
    assert set(routes) == {SLOW, FAST}, routes
    assert routes[SLOW].acquires == 6 and routes[FAST].acquires == 16
    assert 0.35 < routes[SLOW].hold.mean < 1.0 and routes[FAST].hold.mean < 0.2
    assert routes[FAST].waits > 0  # the quick route suffered the waits
    feed = ProcessFeed("app", live=False)
    feed.state = st
    names = [cells[0].plain for _, cells in who.route_rows([feed])]
    assert names[0] == SLOW

    # Who made them wait: the slow route, with its share close to the truth.
    truth = truth_shares(app.events)
    blame = st.attribution.blame("route")
    assert blame[0].key == SLOW, blame
    assert abs(blame[0].share - truth[SLOW]) <= 0.10, (truth, blame[0].share)
    top = who.blame_rows([feed])[0][1]
    assert top[0].plain == SLOW and top[2].plain == f"{blame[0].share * 100:.0f}%"
    assert st.attribution.blame("site")[0].seconds > 0

    # advise names the top blocker (from the sync's fold) before its recommendation.
    host, port = app._sock.getpeername()[:2]
    out = subprocess.run(
        [sys.executable, "-m", "poolscope", "advise", f"{host}:{port}", "--duration", "1",
         "--pg", pg_dsn],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "who made them wait" in out.stdout and SLOW in out.stdout, out.stdout
    assert out.stdout.index(SLOW) < out.stdout.index("recommend"), out.stdout
    assert "fleet budget" in out.stdout and "pg_terminate_backend" in out.stdout

    # A leak in another route, reported and grouped under its template.
    app.get("/leak/1")
    st = app.until(lambda s: bool(s.leaks), "the leak")
    (leak,) = st.leaks.values()
    assert st.attribution.route_of(leak.tags) == LEAK
    holder = st.pools["db"].holders[leak.conn]
    assert st.attribution.route_of(holder.tags) == LEAK
    assert holder.task == LEAK  # the task / thread is named after the route

    # The server's own view: an idle-in-transaction holder flagged, pids joined.
    background = threading.Thread(target=app.get, args=("/idle-tx/4",))
    background.start()
    try:
        st = app.until(
            lambda s: any(
                s.attribution.route_of(h.tags) == IDLE_TX for h in s.pools["db"].holders.values()
            ),
            "the idle-in-transaction holder",
        )
        time.sleep(1.6)
        st = app.state()
        pids = {pid for (_, _), pid in st.attribution.pids.items()}
        assert pids and pids == app_pids(pg_dsn, app.name)

        async def sample() -> Any:
            view = PgView(pg_dsn, idle_tx=1.0, show_queries=True)
            try:
                return await view.sample([("app", st)], {"app": app.proc.pid})
            finally:
                await view.close()

        snap = asyncio.run(sample())
        assert not snap.error, snap.error
        flagged = [f for f in snap.flags if "idle in transaction" in f]
        assert len(flagged) == 1 and IDLE_TX in flagged[0], snap.flags
        held = {r.route: r for r in snap.rows if r.held}
        assert held[IDLE_TX].backend is not None
        assert held[IDLE_TX].backend.state == "idle in transaction"
        assert held[LEAK].backend is not None and held[LEAK].backend.state == "idle"
        assert not any("no pool knows" in f for f in snap.flags), snap.flags
        # A connection the process opened outside its pool: flagged, by its backend.
        stray = app.get("/stray")["pid"]
        again = asyncio.run(sample())
        unknown = [f for f in again.flags if "no pool knows" in f]
        assert len(unknown) == 1 and f"backends {stray})" in unknown[0], again.flags
        assert again.kinds.get("unknown_connections") == 1
        assert snap.max_connections == 100 and not snap.budget_exceeded
        text = who.pg_text(snap).plain
        assert "idle in transaction" in text and "pg_terminate_backend" in text
    finally:
        background.join(30)


def test_budget_warning_when_two_processes_could_exhaust_the_server() -> None:
    cluster = PgCluster(max_connections=10, use_env=False)
    try:
        cluster.start()
    except Exception as exc:  # the pg_dsn fixture's rules: fail under CI, else skip
        import os

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL required under CI=true: {exc}")
        pytest.skip(str(exc))
    apps: list[WebApp] = []
    try:
        apps = [WebApp("starlette", cluster.dsn, f"budget-{i}", 5) for i in range(2)]
        for a in apps:
            a.get("/fast/1")
        states = [
            (f"app{i}", a.until(lambda s: bool(s.attribution.pids), "a connect"))
            for i, a in enumerate(apps)
        ]

        async def sample() -> Any:
            view = PgView(cluster.dsn)
            try:
                return await view.sample(states)
            finally:
                await view.close()

        snap = asyncio.run(sample())
        assert not snap.error, snap.error
        assert snap.max_connections == 10 and snap.reserved == 3
        assert snap.fleet_max == 10 and snap.budget_exceeded
        assert any(f.startswith("WARNING fleet budget") for f in snap.flags), snap.flags
        # One process alone fits.
        assert not asyncio.run(_one(cluster.dsn, states[:1])).budget_exceeded
        # export --pg: the same budget and flags as series on /metrics.
        text = asyncio.run(_exported([a.stream for a in apps], cluster.dsn))
        assert 'poolscope_pg_flags{kind="budget"} 1.0' in text, text
        assert "poolscope_pg_fleet_max_connections 10.0" in text
        assert "poolscope_pg_available_connections 7.0" in text
        assert 'state="idle"' in text
    finally:
        for a in apps:
            a.close()
        cluster.cleanup()


async def _one(dsn: str, states: Any) -> Any:
    view = PgView(dsn)
    try:
        return await view.sample(states)
    finally:
        await view.close()


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_backend_pid_through_sqlalchemy(fresh_runtime: Any, pg_dsn: str, driver: str) -> None:
    """Every connect event carries the DBAPI connection's own backend pid, equal to
    what pg_stat_activity shows for the application's connections."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    import poolscope.instrument as ps
    from tests.adapter_support import capture, of, wait_sync

    events = capture(fresh_runtime)
    name = f"who-sa-{driver}-{time.monotonic_ns()}"
    url = pg_dsn.replace("postgresql://", f"postgresql+{driver}://", 1)
    if driver == "psycopg":
        eng = ps.instrument(
            sa.create_engine(url, pool_size=2, connect_args={"application_name": name}),
            name="sa",
            listen=False,
        )
        with eng.connect() as a, eng.connect() as b:
            a.execute(sa.text("SELECT 1"))
            b.execute(sa.text("SELECT 1"))
            server = app_pids(pg_dsn, name)
        eng.dispose()
    else:
        args = {"server_settings": {"application_name": name}}

        async def main() -> set[int]:
            eng = ps.instrument(
                create_async_engine(url, pool_size=2, connect_args=args), name="sa", listen=False
            )
            async with eng.connect() as a, eng.connect() as b:
                await a.execute(sa.text("SELECT 1"))
                await b.execute(sa.text("SELECT 1"))
                pids = app_pids(pg_dsn, name)
            await eng.dispose()
            return pids

        server = asyncio.run(main())
    connects = wait_sync(lambda: of(events, "connect", "sa")[:2], what="two connects")
    wait_sync(lambda: len(of(events, "connect", "sa")) == 2, what="two connects")
    assert len(server) == 2 and {e["backend_pid"] for e in connects} == server


def test_the_dsn_password_never_appears(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """--pg DSN with a password: not in the view, its errors, or advise's output."""
    secret = "s3cr3t-Pw"
    good = f"postgresql://{pg_cluster.user}:{secret}@{pg_cluster.host}:{pg_cluster.port}/{pg_cluster.database}"
    bad = f"postgresql://{pg_cluster.user}:{secret}@127.0.0.1:{free_port()}/nowhere"

    async def sample(dsn: str) -> Any:
        view = PgView(dsn, show_queries=True)
        try:
            return await view.sample([])
        finally:
            await view.close()

    ok = asyncio.run(sample(good))  # trust auth: the password is ignored, not refused
    assert not ok.error and ok.max_connections > 0
    failed = asyncio.run(sample(bad))
    assert failed.error
    for snap in (ok, failed):
        text = who.pg_text(snap).plain + repr(snap)
        assert secret not in text and "***" in snap.server
    session = Path(__file__).resolve().parents[1] / "data" / "session.ndjson"
    for dsn in (good, bad):
        out = subprocess.run(
            [sys.executable, "-m", "poolscope", "advise", str(session), "--pg", dsn],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "server postgresql://" in out.stdout
        assert secret not in out.stdout + out.stderr


async def _exported(streams: list[str], dsn: str) -> str:
    from poolscope.endpoint import parse_endpoint
    from poolscope.export import Exporter

    exporter = Exporter([parse_endpoint(s) for s in streams], pg=PgView(dsn))
    exporter.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            snap = exporter.pg_snapshot
            if snap is not None and snap.fleet_max == 10:
                return exporter.render()[0].decode()
            assert time.monotonic() < deadline, "export never sampled both processes"
            await asyncio.sleep(0.1)
    finally:
        await exporter.close()


@pytest.mark.parametrize("command", ["advise", "attach", "export"])
def test_pg_without_a_driver_is_one_line(command: str, tmp_path: Path) -> None:
    """--pg on an observer with neither asyncpg nor psycopg: one line, exit 1."""
    session = Path(__file__).resolve().parents[1] / "data" / "session.ndjson"
    source = {"advise": [str(session)], "attach": [":1", "--wait"], "export": [":1"]}[command]
    code = (
        "import sys; sys.modules['asyncpg'] = None; sys.modules['psycopg'] = None\n"
        "from poolscope.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))"
    )
    dsn = "postgresql://me:pw-secret@127.0.0.1:1/db"
    out = subprocess.run(
        [sys.executable, "-c", code, command, *source, "--pg", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "asyncpg or psycopg" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "pw-secret" not in out.stderr + out.stdout


def test_middleware_modules_import_only_the_standard_library() -> None:
    from tests.instrument.test_import_hygiene import _foreign, _loaded_by

    new, stdlib = _loaded_by(
        "poolscope.instrument", "poolscope.instrument.asgi", "poolscope.instrument.wsgi"
    )
    assert _foreign(new, stdlib) == {}
    assert not {"starlette", "flask", "werkzeug", "django", "fastapi"} & {
        n.split(".")[0] for n in new
    }
