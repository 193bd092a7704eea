"""Secrets stay in the application: a DSN's password is in no event, log line, metric,
discovery entry or model; stack events carry no local variables; and the observer
never evaluates what it is sent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.events import decode
from poolscope.instrument import discovery, errors
from poolscope.instrument import runtime as runtime_module
from poolscope.model import fold
from tests.fixtures.faults import (
    POOLSCOPE,
    Conn,
    RawObserver,
    await_for,
    free_port,
    make_pool,
    spawn,
    stop,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Pw-" + secrets.token_hex(8)


def _dsn(host_port: str = "127.0.0.1:1", db: str = "orders") -> str:
    return f"postgresql://app:{PASSWORD}@{host_port}/{db}"


def _greeted(rt: runtime_module.Runtime) -> RawObserver:
    """An observer that has had its greeting: what happens from now on reaches it live
    (events before the greeting are in its ``sync``, not sent one by one)."""
    assert rt.endpoint is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    wait_for(lambda: b'"type":"sync"' in ob.data, 10.0)
    return ob


def _everything(rt: runtime_module.Runtime, ob: RawObserver, caplog: Any) -> dict[str, str]:
    """Every output a secret could leak into, as text."""
    late = RawObserver(rt.endpoint.host, rt.endpoint.port)  # type: ignore[union-attr]
    try:
        wait_for(lambda: b'"type":"sync"' in late.data, 5.0)
    finally:
        late.close()
    from prometheus_client import CollectorRegistry, generate_latest

    from poolscope.instrument.prometheus import register

    registry = CollectorRegistry()
    register(registry)
    entries = "".join(p.read_text() for p in discovery.registry_dir().glob("*.json"))
    return {
        "stream": ob.data.decode("utf-8", "replace"),
        "late sync": late.data.decode("utf-8", "replace"),
        "model": json.dumps(rt.model.to_dict()),
        "logs": caplog.text,
        "metrics": generate_latest(registry).decode(),
        "discovery": entries,
    }


async def test_dsn_password_appears_nowhere_reference_pool(
    fresh_runtime: runtime_module.Runtime,
    fresh_errors: int,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    rt = fresh_runtime
    caplog.set_level(logging.DEBUG)
    failures = 2

    async def factory() -> Conn:
        nonlocal failures
        if failures:
            failures -= 1
            # What drivers do: quote the connection string in the error.
            raise ConnectionError(f"could not connect to {_dsn()}: connection refused")
        return Conn()

    from poolscope.pool import Pool

    pool = Pool(factory, max_size=2, acquire_timeout=1.0, name="orders", target=_dsn())
    pool = ps.instrument(pool, listen="127.0.0.1:0", leak_threshold=None)
    assert rt.endpoint is not None
    ob = _greeted(rt)
    try:
        async with pool:
            for _ in range(3):
                try:
                    async with pool.acquire():
                        pass
                except Exception:
                    pass
        # An internal error whose message quotes the DSN, as a driver's exception might.
        errors.report("test", ValueError(f"bad dsn {_dsn()} and password={PASSWORD}"))
        await await_for(lambda: b'"type":"error"' in ob.data and b"connect_error" in ob.data)
        outputs = _everything(rt, ob, caplog)
    finally:
        ob.close()
    # The failures are there - with the secret masked.
    assert "connect_error" in outputs["stream"] and "***" in outputs["stream"]
    assert "poolscope internal error in test" in outputs["logs"]
    for where, text in outputs.items():
        assert PASSWORD not in text, f"password leaked into {where}"
    # And the TUI, replaying that stream, shows no password on any view.
    rec = tmp_path / "secret.ndjson"
    rec.write_bytes(bytes(ob.data))
    for name, svg in (await _tui_screens(rec)).items():
        assert PASSWORD not in svg, f"password on the TUI's {name} view"


async def _tui_screens(path: Path) -> dict[str, str]:
    from poolscope.tui.app import PoolscopeApp
    from poolscope.tui.data import ReplaySource

    src = ReplaySource(path)
    src.seek_to(src.t_end)
    src.playing = False
    app = PoolscopeApp(src)
    shots: dict[str, str] = {}
    async with app.run_test(size=(140, 40)) as pilot:
        for key in "123456":
            await pilot.press(key)
            await pilot.pause()
            shots[key] = app.export_screenshot()
    assert any("orders" in svg for svg in shots.values())
    return shots


@pytest.mark.pg
async def test_dsn_password_appears_nowhere_asyncpg_and_exporter(
    fresh_runtime: runtime_module.Runtime,
    pg_dsn: str,
    caplog: pytest.LogCaptureFixture,
    fault_children: list[Any],
) -> None:
    import asyncpg

    rt = fresh_runtime
    caplog.set_level(logging.DEBUG)
    # PgCluster trusts 127.0.0.1, so a password in the DSN is accepted and ignored.
    m = re.match(r"postgresql://([^@/:]+)@([^/]+)/(.+)", pg_dsn)
    assert m, pg_dsn
    dsn = f"postgresql://{m.group(1)}:{PASSWORD}@{m.group(2)}/{m.group(3)}"
    dead = f"postgresql://{m.group(1)}:{PASSWORD}@127.0.0.1:{free_port()}/{m.group(3)}"
    good = ps.instrument(
        asyncpg.create_pool(dsn, min_size=1, max_size=2),
        name="good",
        listen="127.0.0.1:0",
        heartbeat=0.1,
    )
    bad = ps.instrument(asyncpg.create_pool(dead, min_size=0, max_size=1), name="bad")
    assert rt.endpoint is not None
    ob = _greeted(rt)
    mport = free_port()
    exporter = spawn([*POOLSCOPE, "export", str(rt.endpoint), "--listen", f"127.0.0.1:{mport}"])
    fault_children.append(exporter)
    try:
        async with good, bad:
            for _ in range(5):
                assert await good.fetchval("select 1") == 1
            with pytest.raises(OSError):
                await bad.fetchval("select 1")
            await await_for(lambda: b'"heartbeat"' in ob.data and b"connect_error" in ob.data)

            def scrape() -> str:
                try:
                    url = f"http://127.0.0.1:{mport}/metrics"
                    with urllib.request.urlopen(url, timeout=2) as r:
                        text = str(r.read().decode())
                except OSError:
                    return ""
                return text if 'pool_name="good"' in text else ""

            metrics = await asyncio.to_thread(wait_for, scrape, 15.0, 0.2)
            outputs = _everything(rt, ob, caplog)
    finally:
        ob.close()
        stop(exporter)
    outputs["exporter /metrics"] = metrics
    assert '"target":"127.0.0.1:' in outputs["stream"]
    for where, text in outputs.items():
        assert PASSWORD not in text, f"password leaked into {where}"


async def _hold_with_a_secret(pool: Any, secret: str) -> None:
    token = secret  # a local variable of the acquiring frame
    async with pool.acquire() as conn:
        assert token and conn
        await asyncio.sleep(0.5)


async def test_stack_events_carry_no_local_variables(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    rt = fresh_runtime
    pool = ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=0.05)
    assert rt.endpoint is not None
    ob = _greeted(rt)
    secret = "local-" + secrets.token_hex(12)
    try:
        async with pool:
            await _hold_with_a_secret(pool, secret)
        await await_for(lambda: b'"type":"unleak"' in ob.data)
    finally:
        ob.close()
    evs = ob.events()
    leak = next(e for e in evs if e["type"] == "leak")
    frames = leak["stack"] + leak.get("current", [])
    assert any(f["func"].endswith("_hold_with_a_secret") for f in frames)
    for f in frames:
        assert set(f) <= {"file", "line", "func", "code"}, f
    assert secret.encode() not in bytes(ob.data)


# What an observer must never run: code, pickles, attribute paths.
HOSTILE_PAYLOADS = [
    "__import__('os').system('touch {flag}')",
    "open('{flag}', 'w')",
    "{{{{ ''.__class__.__mro__[1].__subclasses__() }}}}",
    "${{touch {flag}}}",
    "$(touch {flag})",
]


def test_observer_never_evaluates_what_it_receives(tmp_path: Path) -> None:
    import pickle

    flag = tmp_path / "pwned"
    lines: list[bytes] = []
    for p in HOSTILE_PAYLOADS:
        s = p.format(flag=flag)
        lines.append(json.dumps({"type": s, "t": 1.0, "pool": s}).encode())
        lines.append(
            json.dumps(
                {
                    "type": "pool",
                    "t": 1.0,
                    "pool": s,
                    "kind": s,
                    "target": s,
                    "config": {"max": s, "__class__": s},
                }
            ).encode()
        )
        lines.append(
            json.dumps({"type": "sync", "t": 1.0, "state": {"pools": {s: {"name": s}}}}).encode()
        )
        lines.append(json.dumps({"type": "error", "t": 1.0, "error": s, "where": s}).encode())

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(flag), "w"))

    lines.append(pickle.dumps(Exploit()))
    lines.append(b"\x80\x04" + pickle.dumps(Exploit()))
    decoded = []
    for line in lines:
        try:
            decoded.append(decode(line))
        except ValueError:
            pass
    state = fold(decoded)
    json.dumps(state.to_dict())
    assert not flag.exists()


FORBIDDEN = re.compile(
    r"\b(eval|exec|compile)\s*\(|\bpickle\b|\bmarshal\b|\bshelve\b|yaml\.(unsafe_)?load|"
    r"__import__\s*\(|\bast\.literal_eval\b"
)


# `poolscope inject` makes its target run poolscope's own bootstrap file, by path: the
# one statement that does it (remote.py builds it, bootstrap.py documents it). Nothing
# else may exec or compile, and that statement only ever names the bootstrap file.
EXEC_OF_THE_BOOTSTRAP_FILE = {"poolscope/remote.py", "instrument/poolscope/instrument/bootstrap.py"}


def test_no_evaluating_calls_in_the_package_source() -> None:
    """A grep over both sides' source: nothing that turns data into code."""
    offenders = []
    for base in (ROOT / "poolscope", ROOT / "instrument" / "poolscope"):  # not build/
        for path in base.rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if not FORBIDDEN.search(code) or "re.compile" in code:
                    continue
                if rel in EXEC_OF_THE_BOOTSTRAP_FILE and re.search(
                    r"exec\(compile\(open\((BOOTSTRAP|\{boot!r\})\)", code
                ):
                    continue
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_import_module_only_with_names_from_fixed_tables() -> None:
    """Dynamic imports take names from poolscope's own tables, never from the wire."""
    allowed = {
        "poolscope/cli.py",  # the command table
        "instrument/poolscope/instrument/adapter.py",  # the adapter registry's modules
        "instrument/poolscope/instrument/httpx.py",  # _optional(<a literal>)
        "instrument/poolscope/instrument/bootstrap.py",  # "poolscope.instrument.live"
        "instrument/poolscope/instrument/_site/sitecustomize.py",  # the next sitecustomize
    }
    found = set()
    for base in (ROOT / "poolscope", ROOT / "instrument" / "poolscope"):  # not build/
        for path in base.rglob("*.py"):
            if "import_module(" in path.read_text():
                found.add(str(path.relative_to(ROOT)))
    assert found <= allowed, found - allowed


def test_unknown_event_type_is_not_looked_up_as_a_method() -> None:
    state = fold(
        [
            {"type": "_on_sync", "t": 1.0, "state": {}},
            {"type": "__init__", "t": 1.0},
            {"type": "apply", "t": 1.0},
            {"type": "to_dict", "t": 1.0},
        ]
    )
    assert state.skipped == 4 and state.events == 0


# -- secrets in argv, names and error texts (issue 12, items 3 and 4) -------------------


def _secret(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(6)}"


def test_argv_secrets_are_redacted_in_hello_sync_discovery_and_ps(tmp_path: Path) -> None:
    import subprocess
    import sys

    pw = {k: _secret(k) for k in ("url", "flag", "eq", "env", "kw", "tok", "late")}
    argv = [
        "--dsn",
        f"postgresql://app:{pw['url']} x@db/orders",  # a space in the URL password
        "--password",
        pw["flag"],
        f"--api-key={pw['eq']}",
        f"PGPASSWORD={pw['env']}",
        f"host=db password='{pw['kw']} y'",
        "--token",
        pw["tok"],
        "--secret",
        pw["late"],  # past the 8 arguments sent: ps still shows the live command line
    ]
    reg = tmp_path / "reg"
    env = dict(os.environ, POOLSCOPE_RUNTIME_DIR=str(reg), PYTHONUNBUFFERED="1")
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "apps" / "discovery_app.py"), *argv],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        ready = json.loads(app.stdout.readline())
        host, port = ready["endpoint"].rsplit(":", 1)
        ob = RawObserver(host, int(port))
        try:
            wait_for(lambda: b'"type":"sync"' in ob.data, 10.0)
        finally:
            ob.close()
        evs = ob.events()
        hello = next(e for e in evs if e["type"] == "hello")
        sync = next(e for e in evs if e["type"] == "sync")
        entry = (reg / f"{ready['pid']}.json").read_text()
        ps_json = subprocess.run(
            [*POOLSCOPE, "ps", "--json"], env=env, capture_output=True, text=True, cwd=ROOT
        )
        ps_text = subprocess.run(
            [*POOLSCOPE, "ps"], env=env, capture_output=True, text=True, cwd=ROOT
        )
    finally:
        app.communicate(timeout=20)
    assert hello["argv"][1:4] == ["--dsn", "postgresql://app:***@db/orders", "--password"]
    assert hello["argv"][4:] == ["***", "--api-key=***", "PGPASSWORD=***", "host=db password='***'"]
    assert sync["state"]["process"]["argv"] == hello["argv"]
    assert json.loads(entry)["argv"] == hello["argv"]
    [row] = json.loads(ps_json.stdout)
    assert "--token ***" in row["command"] and "--secret ***" in row["command"]
    outputs = {
        "stream": bytes(ob.data).decode(),
        "discovery": entry,
        "ps --json": ps_json.stdout,
        "ps": ps_text.stdout,
    }
    for where, text in outputs.items():
        for p in pw.values():
            assert p not in text, f"{p} leaked into {where}"


async def test_a_dsn_given_as_the_pool_name_is_redacted_everywhere(
    fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = fresh_runtime
    caplog.set_level(logging.DEBUG)
    pool = ps.instrument(make_pool(), name=_dsn(), listen="127.0.0.1:0", leak_threshold=None)
    assert rt.endpoint is not None
    ob = _greeted(rt)
    try:
        async with pool, pool.acquire():
            pass
        await await_for(lambda: b'"type":"release"' in ob.data)
        outputs = _everything(rt, ob, caplog)
    finally:
        ob.close()
    assert "postgresql://app:***@127.0.0.1:1/orders" in outputs["stream"]
    assert 'db_client_connection_pool_name="postgresql://app:***@' in outputs["metrics"]
    for where, text in outputs.items():
        assert PASSWORD not in text, f"password leaked into {where}"


# Each of these leaked into connect_error and the sync's last error before.
LEAKY_ERRORS = [
    "could not connect to postgresql://app:{pw} with space@db/orders",
    "bad options {{'host': 'db', 'password': '{pw}'}}",
    "PGPASSWORD={pw} psql -h db failed",
    'config {{"user": "app", "password": "{pw}"}} rejected',
    "password: {pw}",
    "driver said pass={pw}",
    "{pad} postgresql://app:{pw}@db/orders",  # straddles any cut at 300 characters
]


async def test_error_texts_that_leaked_are_redacted(
    fresh_runtime: runtime_module.Runtime,
    fresh_errors: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = fresh_runtime
    caplog.set_level(logging.DEBUG)
    messages = [m.format(pw=PASSWORD, pad="x" * 280) for m in LEAKY_ERRORS]
    pending = list(messages)

    async def factory() -> Conn:
        if pending:
            raise ConnectionError(pending.pop(0))
        return Conn()

    from poolscope.pool import Pool

    pool = Pool(factory, max_size=1, acquire_timeout=0.5, name="orders", breaker_threshold=None)
    pool = ps.instrument(pool, listen="127.0.0.1:0", leak_threshold=None)
    assert rt.endpoint is not None
    ob = _greeted(rt)
    try:
        async with pool:
            while pending:
                try:
                    async with pool.acquire():
                        pass
                except Exception:
                    pass
        for m in messages:
            errors.report(f"test {m[:10]}", ValueError(m))
        await await_for(lambda: ob.data.count(b'"type":"connect_error"') >= len(messages))
        outputs = _everything(rt, ob, caplog)
    finally:
        ob.close()
    errs = [e["error"] for e in ob.events() if e["type"] == "connect_error"]
    assert len(errs) >= len(messages) and all("***" in e for e in errs), errs
    for where, text in outputs.items():
        assert PASSWORD not in text, f"password leaked into {where}"
        assert PASSWORD[:8] not in text, f"the password's start leaked into {where}"


# -- poolscope's own frames hold no credentials (issue 12, item 4) ---------------------

OURS = str(ROOT / "instrument")


def _poolscope_frames_holding(exc: BaseException, secret: str) -> list[str]:
    """What a locals-capturing tool (Sentry, loguru's diagnose) would print from
    poolscope's frames of this exception and the ones chained to it."""
    hits: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename.startswith(OURS):
                for name, value in frame.f_locals.items():
                    try:
                        text = repr(value)
                    except Exception:
                        continue
                    if secret in text:
                        hits.append(f"{getattr(frame.f_code, 'co_qualname', '?')} ({name})")
            tb = tb.tb_next
        todo += [e.__cause__, e.__context__]
    return hits


async def test_asyncpg_connect_failure_leaves_no_password_in_poolscope_frames(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    import asyncpg

    dsn = _dsn(f"127.0.0.1:{free_port()}")
    pool = ps.instrument(asyncpg.create_pool(dsn, min_size=0, max_size=1), listen=False)
    async with pool:
        with pytest.raises(OSError) as info:
            await pool.acquire(timeout=5)
    assert _poolscope_frames_holding(info.value, PASSWORD) == []


def test_sqlalchemy_connect_failure_leaves_no_password_in_poolscope_frames(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    import sqlalchemy

    url = _dsn(f"127.0.0.1:{free_port()}").replace("postgresql://", "postgresql+psycopg://")
    engine = ps.instrument(sqlalchemy.create_engine(url), listen=False)
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            engine.connect()
    finally:
        engine.dispose()
    assert _poolscope_frames_holding(info.value, PASSWORD) == []


def test_psycopg_pool_connect_failure_leaves_no_password_in_poolscope_frames(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    import psycopg
    from psycopg_pool import ConnectionPool

    conninfo = f"host=127.0.0.1 port={free_port()} dbname=orders user=app password={PASSWORD}"
    pool = ConnectionPool(conninfo, min_size=0, max_size=1, open=False)
    pool = ps.instrument(pool, listen=False)
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            pool._connect()  # the connect poolscope wraps, as the pool's workers call it
    finally:
        pool.close()
    assert _poolscope_frames_holding(info.value, PASSWORD) == []


LITERAL = "Lit3ral-" + "Pw"  # the source line below holds it whole; this line does not


async def _hold_at_a_line_quoting_a_dsn(pool: Any) -> None:
    async with pool.acquire() as conn:  # connect("postgresql://app:Lit3ral-Pw@db/orders")
        assert conn
        await asyncio.sleep(0.4)


async def test_source_lines_in_stacks_are_redacted(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    rt = fresh_runtime
    pool = ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=0.05)
    assert rt.endpoint is not None
    ob = _greeted(rt)
    try:
        async with pool:
            await _hold_at_a_line_quoting_a_dsn(pool)
        await await_for(lambda: b'"type":"unleak"' in ob.data)
    finally:
        ob.close()
    leak = next(e for e in ob.events() if e["type"] == "leak")
    [frame] = [f for f in leak["stack"] if f["func"].endswith("_hold_at_a_line_quoting_a_dsn")]
    assert "postgresql://app:***@db/orders" in frame["code"], frame
    assert LITERAL.encode() not in bytes(ob.data)


async def test_task_and_thread_names_are_redacted(
    fresh_runtime: runtime_module.Runtime,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A task named after its request (query string and all) and a thread named with a
    DSN hold connections past the leak threshold: acquire, leak, unleak and the
    holders in the sync and model carry their names with the secrets masked."""
    import threading

    import sqlalchemy as sa

    rt = fresh_runtime
    caplog.set_level(logging.DEBUG)
    pool = ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=0.05)
    engine = ps.instrument(
        sa.create_engine(f"sqlite:///{tmp_path / 'names.db'}", poolclass=sa.pool.QueuePool),
        name="sqlite",
        leak_threshold=0.05,
    )
    ob = _greeted(rt)

    def hold_in_thread() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            threading.Event().wait(0.4)

    async def hold_in_task() -> None:
        async with pool.acquire():
            await asyncio.sleep(0.4)

    worker = threading.Thread(target=hold_in_thread, name=f"sync {_dsn()}")
    try:
        async with pool:
            worker.start()
            task = asyncio.create_task(hold_in_task(), name=f"GET /login?password={PASSWORD}")
            await await_for(lambda: ob.data.count(b'"type":"leak"') >= 2)
            # Both still held: a late observer's sync and the model list the holders.
            held = await asyncio.to_thread(_everything, rt, ob, caplog)
            await task
            await asyncio.to_thread(worker.join, 10)
            await await_for(lambda: ob.data.count(b'"type":"unleak"') >= 2)
            outputs = _everything(rt, ob, caplog)
    finally:
        ob.close()
        engine.dispose()
    names = {e.get("task") for e in ob.events() if e["type"] in ("acquire", "leak", "unleak")}
    assert "GET /login?password=***" in names, names
    assert "sync postgresql://app:***@127.0.0.1:1/orders" in names, names
    assert "GET /login?password=***" in held["late sync"] and "app:***@" in held["model"]
    outputs.update({f"{where} while held": text for where, text in held.items()})
    for where, text in outputs.items():
        assert PASSWORD not in text, f"password leaked into {where}"


def test_inject_failure_text_is_redacted_before_it_is_cut() -> None:
    """An attach that fails inside the target reports its exception text to the
    injector: a DSN in it is masked, and masked before the 300-character cut."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from poolscope.instrument import live\n"
        "print(json.dumps(live.attach({'id': 'r', 'listen': sys.argv[1]})))\n"
    )
    listen = f"postgresql://app:{PASSWORD}@db/orders"
    r = subprocess.run(
        [sys.executable, "-c", script, listen],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["ok"] is False
    assert "attach failed inside the target" in result["error"], result
    assert "postgresql://app:***@db/orders" in result["error"], result
    assert len(result["error"]) <= 300 and PASSWORD not in r.stdout + r.stderr
