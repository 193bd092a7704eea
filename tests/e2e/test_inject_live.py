"""`poolscope inject` into real applications that never import poolscope, on real
PostgreSQL: an asyncpg app, a threaded SQLAlchemy app and a psycopg async app, each with
one connection leaked before the inject.

Checked for each: after inject, `poolscope record` shows the pool with exact
acquire/release counts from then on; the connection leaked before the attach is
reported as a leak at the app's holding line; detach, then a second inject works; and
the app's own output is identical to an uninjected run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.inject_support import (
    LiveApp,
    Recording,
    Watcher,
    app_env,
    detach,
    holds_line,
    inject,
    poolscope,
    wait_for,
)

# lldb-16 now and then fails to resolve the interpreter's symbols when the target's main
# thread sits in a C call (about one inject in five under load here; never twice in a
# row): poolscope retries within one inject, and a test retries the whole inject three times.
pytestmark = [pytest.mark.timeout(240), pytest.mark.flaky(reruns=3, reruns_delay=1)]

APPS = {
    "asyncpg": ("live_asyncpg.py", "asyncpg"),
    "sqlalchemy": ("live_sqlalchemy.py", "sqlalchemy"),
    "psycopg": ("live_psycopg.py", "psycopg_pool"),
}


def _pool_events(events: list[dict[str, Any]], kind: str) -> tuple[str, list[dict[str, Any]]]:
    pools = [e for e in events if e.get("type") == "pool" and e.get("kind") == kind]
    assert pools, f"no {kind} pool in the recording: {[e.get('type') for e in events][:20]}"
    name = str(pools[0]["pool"])
    return name, [e for e in events if e.get("pool") == name]


def _count(events: list[dict[str, Any]], etype: str) -> int:
    return sum(1 for e in events if e.get("type") == etype)


def _totals(events: list[dict[str, Any]], name: str) -> tuple[int, int]:
    """Acquires and releases of pool ``name`` over the whole session: those folded before
    the observer connected (the greeting's ``sync``) plus the live events after it."""
    acquires = releases = 0
    for e in events:
        if e.get("type") == "sync":
            counters = e["state"]["pools"].get(name, {}).get("counters", {})
            acquires, releases = int(counters.get("acquires", 0)), int(counters.get("releases", 0))
        elif e.get("pool") == name and e.get("type") == "acquire":
            acquires += 1
        elif e.get("pool") == name and e.get("type") == "release":
            releases += 1
    return acquires, releases


def _leaks(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Leaks of pool ``name``, live or in a sync's state."""
    out = [e for e in events if e.get("type") == "leak" and e.get("pool") == name]
    for e in events:
        if e.get("type") == "sync":
            out += [lk for lk in e["state"].get("leaks", []) if lk.get("pool") == name]
    return out


@pytest.mark.parametrize("which", list(APPS))
def test_inject_counts_leak_detach_reinject(which: str, pg_dsn: str, tmp_path: Path) -> None:
    app_file, kind = APPS[which]
    env = app_env(tmp_path)
    line = holds_line(app_file)

    # The same session without poolscope: what the app prints on its own.
    plain = LiveApp(app_file, pg_dsn, env)
    try:
        plain.cmd("work 20")
        plain.cmd("work 10")
        baseline = plain.exit()
    finally:
        plain.kill()

    app = LiveApp(app_file, pg_dsn, env)
    try:
        first = inject(app.pid, "--leak-threshold", "1", env=env)
        assert first["ok"] and first["adopted"] == 1, first
        assert first["pools"], first
        rec = Recording(first["endpoint"], tmp_path / "first.ndjson", env=env)
        watch = Watcher(first["endpoint"])
        assert app.cmd("work 20")["done"] == 20

        def settled() -> bool:
            evs = watch.events()
            return any(
                _totals(evs, str(p))[1] >= 20 and _leaks(evs, str(p)) for p in first["pools"]
            )

        assert wait_for(settled, 20), watch.events()[-5:]
        watch.close()
        out = detach(app.pid, env=env)
        assert out["ok"] and out["pools"] >= 1, out
        events = rec.stop()
        name, _ = _pool_events(events, kind)
        # Exact: 20 checkouts and 20 returns by the app, plus the connection already
        # checked out at attach, adopted as one acquire (held at least since then).
        assert _totals(events, name) == (20 + 1, 20)
        leaks = _leaks(events, name)
        assert leaks, "the connection leaked before the attach was not reported"
        stack = leaks[0]["stack"]
        assert stack and stack[0]["file"].endswith(app_file), stack
        assert stack[0]["line"] == line and "HOLDS-LEAK" in stack[0]["code"], stack
        assert leaks[0]["task"] == "leaker"
        # Detached: no discovery entry, nothing listening.
        assert poolscope("ps", "--json", env=env).stdout.strip() in ("[]", "")

        second = inject(app.pid, env=env)
        assert second["ok"] and second["adopted"] == 1, second
        rec2 = Recording(second["endpoint"], tmp_path / "second.ndjson", env=env)
        watch = Watcher(second["endpoint"])
        app.cmd("work 10")
        assert wait_for(lambda: _totals(watch.events(), name)[1] >= 10, 20)
        watch.close()
        detach(app.pid, env=env)
        events2 = rec2.stop()
        assert _pool_events(events2, kind)[0] == name  # the same readable name again
        assert _totals(events2, name) == (10 + 1, 10)
        assert app.exit() == baseline
    finally:
        app.kill()
