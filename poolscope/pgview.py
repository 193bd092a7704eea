"""The server's own view: ``pg_stat_activity`` joined to the pools' holders.

``poolscope attach|export|advise --pg DSN`` sample the server once a second with
one connection of the observer's own (asyncpg, else psycopg - whichever is
installed; the application opens nothing), for the backend pids the pools
reported in their ``connect`` events, and say what the database thinks each of
the application's connections is doing:

* server state, ``wait_event_type``/``wait_event``, transaction age, state age,
  and the query (only with ``--show-queries``, cut to 200 characters);
* flags: a connection the application holds that is ``idle in transaction``
  for over N seconds; a connection the pool counts idle that is ``active`` on
  the server; connections from the application's processes that no pool knows;
* the fleet budget: the ``max`` of every attached pool on this server, summed
  across the attached processes, against ``max_connections`` minus the reserved
  connections.

The DSN's password never leaves this module: the DSN is shown only through
:func:`poolscope.instrument.redact.redact`, and a driver's error text too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from poolscope.instrument.redact import redact
from poolscope.model import PoolState
from poolscope.textsafe import visible

#: Longest query text kept (and only with show_queries).
QUERY_CHARS = 200
DEFAULT_IDLE_TX = 5.0
#: A connection the pool counts idle is flagged "active" only after this long in
#: that state on the server (one sample may catch a release a moment early).
ACTIVE_GRACE = 1.0
INTERVAL = 1.0

_ACTIVITY_SQL = """
SELECT pid, state, wait_event_type, wait_event, backend_type, client_addr::text,
       client_port, application_name,
       EXTRACT(EPOCH FROM now() - xact_start)::float8 AS xact_age,
       EXTRACT(EPOCH FROM now() - state_change)::float8 AS state_age,
       left(query, {chars}) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
_BUDGET_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       COALESCE(current_setting('reserved_connections', true), '0')::int
"""


class PgUnavailable(Exception):
    """Neither driver installed, or the server cannot be reached (message redacted)."""


@dataclass
class Backend:
    """One server process, as pg_stat_activity shows it."""

    pid: int
    state: str
    wait_event_type: str
    wait_event: str
    xact_age: float | None
    state_age: float | None
    query: str
    client_port: int | None
    application_name: str


@dataclass
class Row:
    """A connection of an attached pool, joined to its backend."""

    process: str  # "name@pid"
    pool: str
    conn: str
    pid: int
    held: bool  # checked out of the pool now
    route: str
    backend: Backend | None  # None: the server no longer has it


@dataclass
class Snapshot:
    """One sample of the server, joined to the folded states of the attached pools."""

    t: float = 0.0
    server: str = ""  # the redacted DSN
    rows: list[Row] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    max_connections: int = 0
    reserved: int = 0
    fleet_max: int = 0  # sum of max of the pools on this server
    fleet_pools: list[str] = field(default_factory=list)
    error: str = ""
    #: Flags by kind: idle_in_transaction, idle_but_active, unknown_connections, budget.
    kinds: dict[str, int] = field(default_factory=dict)

    def flag(self, kind: str, text: str) -> None:
        self.flags.append(text)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    @property
    def available(self) -> int:
        return max(0, self.max_connections - self.reserved)

    @property
    def budget_exceeded(self) -> bool:
        return self.max_connections > 0 and self.fleet_max > self.available

    def budget_line(self) -> str:
        if not self.max_connections:
            return ""
        line = (
            f"fleet budget: pools' max {self.fleet_max} "
            f"({', '.join(self.fleet_pools) or 'none'}) vs max_connections "
            f"{self.max_connections} - reserved {self.reserved} = {self.available}"
        )
        return (
            ("WARNING " + line + ": the pools could exhaust the server")
            if (self.budget_exceeded)
            else line
        )


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _age(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def join(
    states: Sequence[tuple[str, PoolState]],
    backends: dict[int, Backend],
    *,
    max_connections: int = 0,
    reserved: int = 0,
    idle_tx: float = DEFAULT_IDLE_TX,
    app_ports: dict[str, set[int]] | None = None,
    server: str = "",
) -> Snapshot:
    """Join a server sample to the pools' states (pure: no I/O, unit-testable).

    ``states``: (process label, folded state) of every attached process.
    ``app_ports``: per process label, the local TCP ports of its sockets (to find
    its connections that no pool reported)."""
    snap = Snapshot(t=time.time(), server=server)
    snap.max_connections, snap.reserved = max_connections, reserved
    known: set[int] = set()
    for label, st in states:
        attr = st.attribution
        on_server: set[str] = set()
        for (pool, conn), pid in attr.pids.items():
            known.add(pid)
            p = st.pools.get(pool)
            if p is None:
                continue
            h = p.holders.get(conn)
            b = backends.get(pid)
            if b is not None:
                on_server.add(pool)
            route = attr.route_of(h.tags) if h is not None else ""
            snap.rows.append(Row(label, pool, conn, pid, h is not None, route, b))
            where = f"{label} {pool} conn {conn} (backend {pid}"
            where += f", {route})" if route else ")"
            if b is None:
                continue
            age = b.state_age or 0.0
            if h is not None and b.state.startswith("idle in transaction") and age > idle_tx:
                snap.flag(
                    "idle_in_transaction",
                    f"{where}: held and idle in transaction for {age:.1f}s (over {idle_tx:g}s)",
                )
            if h is None and b.state == "active" and age >= ACTIVE_GRACE:
                snap.flag(
                    "idle_but_active",
                    f"{where}: the pool counts it idle but the server has it active for {age:.1f}s",
                )
        for name, p in st.pools.items():
            if name in on_server or _same_server(p.target, server):
                snap.fleet_max += p.max
                snap.fleet_pools.append(f"{label}:{name}={p.max}")
    for label, ports in (app_ports or {}).items():
        strays = sorted(
            b.pid for b in backends.values() if b.pid not in known and b.client_port in ports
        )
        if strays:
            snap.flag(
                "unknown_connections",
                f"{label}: {len(strays)} connection(s) to the server no pool knows "
                f"(backends {', '.join(map(str, strays[:10]))})",
            )
    if snap.budget_exceeded:
        snap.flag("budget", snap.budget_line())
    snap.rows.sort(key=lambda r: (not r.held, r.process, r.pool, r.conn))
    return snap


def _same_server(target: str, server: str) -> bool:
    """Whether a pool's redacted target (host:port/db) names the DSN's host:port."""
    if not target or not server:
        return False
    hostport = target.split("/", 1)[0]
    return bool(hostport) and (f"@{hostport}" in server or f"//{hostport}" in server)


class _Driver:
    """One observer-side connection: asyncpg if installed, else psycopg (in a thread)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._kind = ""
        try:
            import asyncpg  # noqa: F401

            self._kind = "asyncpg"
        except ImportError:
            try:
                import psycopg  # noqa: F401

                self._kind = "psycopg"
            except ImportError:
                raise PgUnavailable(
                    "--pg needs asyncpg or psycopg on the observer side: "
                    "pip install asyncpg (or psycopg[binary])"
                ) from None

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            if self._kind == "asyncpg":
                import asyncpg

                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self.dsn, timeout=5, server_settings={"application_name": "poolscope"}
                    )
                return [tuple(r) for r in await self._conn.fetch(sql)]
            return await asyncio.to_thread(self._fetch_sync, sql)
        except PgUnavailable:
            raise
        except Exception as exc:
            await self.close()
            raise PgUnavailable(redact(f"{type(exc).__name__}: {exc}").splitlines()[0]) from None

    def _fetch_sync(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.dsn, connect_timeout=5, autocommit=True, application_name="poolscope"
            )
        with self._conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if self._kind == "asyncpg":
                await conn.close()
            else:
                conn.close()


class PgView:
    """Samples the server for the attached processes (call :meth:`sample`)."""

    def __init__(
        self, dsn: str, *, show_queries: bool = False, idle_tx: float = DEFAULT_IDLE_TX
    ) -> None:
        self.server = redact(dsn)
        self.show_queries = show_queries
        self.idle_tx = idle_tx
        self._driver = _Driver(dsn)
        chars = QUERY_CHARS if show_queries else 0
        self._sql = _ACTIVITY_SQL.format(chars=chars)

    async def sample(
        self,
        states: Sequence[tuple[str, PoolState]] | Callable[[], Sequence[tuple[str, PoolState]]],
        app_pids: dict[str, int] | None = None,
        lock: Any = None,
    ) -> Snapshot:
        """One sample joined to ``states`` (or what a callable gives, called under
        ``lock``: the states another thread folds into); ``app_pids``: process label
        -> OS pid, to find the processes' connections no pool reported (local only)."""
        try:
            rows = await self._driver.fetch(self._sql)
            budget = await self._driver.fetch(_BUDGET_SQL)
        except PgUnavailable as exc:
            return Snapshot(t=time.time(), server=self.server, error=str(exc))
        backends: dict[int, Backend] = {}
        for r in rows:
            pid = r[0]
            if not isinstance(pid, int):
                continue
            backends[pid] = Backend(
                pid=pid,
                state=_text(r[1]),
                wait_event_type=_text(r[2]),
                wait_event=_text(r[3]),
                xact_age=_age(r[8]),
                state_age=_age(r[9]),
                query=_text(r[10])[:QUERY_CHARS] if self.show_queries else "",
                client_port=r[6] if isinstance(r[6], int) else None,
                application_name=_text(r[7]),
            )
        max_conn, su_reserved, reserved = (int(x) for x in budget[0]) if budget else (0, 0, 0)
        ports = _local_ports(app_pids or {})
        with lock if lock is not None else contextlib.nullcontext():
            return join(
                states() if callable(states) else states,
                backends,
                max_connections=max_conn,
                reserved=su_reserved + reserved,
                idle_tx=self.idle_tx,
                app_ports=ports,
                server=self.server,
            )

    async def close(self) -> None:
        await self._driver.close()


def _local_ports(app_pids: dict[str, int]) -> dict[str, set[int]]:
    """The local TCP ports of each process's sockets (psutil; same-user processes)."""
    out: dict[str, set[int]] = {}
    try:
        import psutil
    except ImportError:
        return out
    for label, pid in app_pids.items():
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except Exception:  # gone, or not ours to look at
            continue
        out[label] = {c.laddr.port for c in conns if c.laddr}
    return out


class PgSampler:
    """A background thread sampling once a second; ``latest`` is the newest snapshot.
    ``states`` is called (on the sampler's thread) for the processes to join."""

    def __init__(
        self,
        view: PgView,
        states: Any,
        app_pids: Any = None,
        interval: float = INTERVAL,
        lock: Any = None,
    ) -> None:
        self.view = view
        self._states = states
        self._app_pids = app_pids
        self._lock = lock
        self.interval = interval
        self.latest: Snapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poolscope-pg", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(3.0)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                pids = self._app_pids() if self._app_pids is not None else None
                self.latest = await self.view.sample(self._states, pids, self._lock)
                for _ in range(max(1, int(self.interval * 10))):  # stop() answers fast
                    if self._stop.is_set():
                        break
                    await asyncio.sleep(0.1)
        finally:
            await self.view.close()


def add_arguments(p: Any) -> None:
    """``--pg DSN``, ``--show-queries`` and ``--idle-tx S`` for attach, export, advise."""
    p.add_argument(
        "--pg",
        metavar="DSN",
        help="also sample this PostgreSQL's pg_stat_activity (one connection of the "
        "observer's own) and join it to the pools' connections",
    )
    p.add_argument(
        "--show-queries",
        action="store_true",
        help=f"with --pg: show each connection's query (cut to {QUERY_CHARS} characters)",
    )
    from poolscope.commands.common import positive_float

    p.add_argument(
        "--idle-tx",
        type=positive_float,
        default=DEFAULT_IDLE_TX,
        metavar="S",
        help=f"with --pg: flag a held connection idle in transaction > S s ({DEFAULT_IDLE_TX:g})",
    )


def view_for(args: Any, *, queries: bool = True) -> PgView:
    """The view ``--pg`` asks for; no driver installed is one line (CommandError)."""
    from poolscope.cli import CommandError

    try:
        return PgView(args.pg, show_queries=queries and args.show_queries, idle_tx=args.idle_tx)
    except PgUnavailable as exc:
        raise CommandError(str(exc)) from None


def snapshot_once(args: Any, states: Sequence[tuple[str, PoolState]]) -> Snapshot | None:
    """One sample for a command that ends (advise); None without ``--pg``."""
    if not getattr(args, "pg", None):
        return None
    view = view_for(args)

    async def once() -> Snapshot:
        try:
            return await view.sample(states)
        finally:
            await view.close()

    return asyncio.run(once())


def snapshot_lines(snap: Snapshot) -> list[str]:
    """A sample as text lines (flags and budget first, then each connection)."""
    return [visible(line) for line in _lines(snap)]


def _lines(snap: Snapshot) -> list[str]:
    lines = [f"server {snap.server}"]
    if snap.error:
        return [*lines, f"  {snap.error}"]
    budget = snap.budget_line()
    if budget:
        lines.append(f"  {budget}")
    lines += [f"  ! {f}" for f in snap.flags if f != budget]
    for r in snap.rows:
        b = r.backend
        state = b.state if b else "(gone)"
        wait = f" wait {b.wait_event_type}/{b.wait_event}" if b and b.wait_event else ""
        age = f" state {b.state_age:.1f}s" if b and b.state_age is not None else ""
        xact = f" xact {b.xact_age:.1f}s" if b and b.xact_age is not None else ""
        query = f"  {b.query}" if b and b.query else ""
        lines.append(
            f"  backend {r.pid} {r.pool}/{r.conn} {'held' if r.held else 'idle'}"
            f"{' ' + r.route if r.route else ''}: {state}{wait}{xact}{age}{query}"
        )
    lines.append("  end one connection: SELECT pg_terminate_backend(<backend pid>);")
    return lines


#: The Prometheus series ``poolscope export --pg`` adds (name -> help).
METRICS = {
    "poolscope_pg_connections": "Connections of the attached pools by server state "
    "(pg_stat_activity.state; 'gone' when the server no longer has the backend)",
    "poolscope_pg_flags": "Current --pg flags by kind: idle_in_transaction (held, idle in "
    "transaction over --idle-tx), idle_but_active (the pool counts it idle, the server has it "
    "active), unknown_connections (the app's connections no pool reported), budget",
    "poolscope_pg_fleet_max_connections": "Sum of max of every attached pool on this server",
    "poolscope_pg_available_connections": "The server's max_connections minus reserved ones",
}


def metric_values(snap: Snapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A sample as (labels, value) per series name of :data:`METRICS`."""
    states: dict[tuple[str, str, str], int] = {}
    for r in snap.rows:
        key = (r.process, r.pool, r.backend.state if r.backend else "gone")
        states[key] = states.get(key, 0) + 1
    kinds = ("idle_in_transaction", "idle_but_active", "unknown_connections", "budget")
    return {
        "poolscope_pg_connections": [
            ({"process": p, "pool": pool, "state": st or "unknown"}, float(n))
            for (p, pool, st), n in sorted(states.items())
        ],
        "poolscope_pg_flags": [({"kind": k}, float(snap.kinds.get(k, 0))) for k in kinds],
        "poolscope_pg_fleet_max_connections": [({}, float(snap.fleet_max))],
        "poolscope_pg_available_connections": [({}, float(snap.available))],
    }
