"""`poolscope inject` is safe for the target: 20 inject+detach cycles into an asyncpg
application under load change none of its results and leave no thread or descriptor
behind; a target in time.sleep or in a tight Python loop is injected (directly, or by a
pending call at its next safe point), and the pause is measured and reported."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.inject_support import APPS, LiveApp, app_env, detach, inject, poolscope

# lldb-16 now and then fails to resolve the interpreter's symbols when the target's main
# thread sits in a C call (about one inject in five under load here; never twice in a
# row): poolscope retries within one inject, and a test retries the whole inject three times.
pytestmark = [pytest.mark.timeout(900), pytest.mark.flaky(reruns=3, reruns_delay=1)]


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _db_sockets(pg_port: int) -> set[str]:
    """Socket inodes connected to the database: the pool may grow under load (a new
    checkout while a release is still resetting), which is asyncpg's, not poolscope's."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[2].rpartition(":")[2], 16) == pg_port:
                out.add(f"socket:[{parts[9]}]")
    return out


def _fds(pid: int, pg_port: int) -> int:
    """Open descriptors of ``pid``, its database connections aside."""
    db = _db_sockets(pg_port)
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return sum(1 for t in targets if t not in db)


def test_twenty_injects_and_detaches_under_load_change_nothing(pg_dsn: str, tmp_path: Path) -> None:
    env = app_env(tmp_path)
    app = LiveApp("live_asyncpg.py", pg_dsn, env)
    try:
        expected = app.cmd("work 200")["total"]
        assert expected == 2 * sum(range(200))
        pg_port = int(urlsplit(pg_dsn).port or 5432)
        threads, fds = _threads(app.pid), _fds(app.pid, pg_port)
        results: list[int] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def load() -> None:
            try:
                while not stop.is_set():
                    results.append(app.cmd("work 200")["total"])
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        pauses = []
        for _ in range(20):
            out = inject(app.pid, env=env)
            assert out["ok"] and out["pools"] == ["poolscope"], out
            pauses.append((out["stopped"], out["pause"], out["transport"]))
            assert detach(app.pid, env=env)["ok"]
        stop.set()
        worker.join(60)
        assert not failures, failures
        assert len(results) >= 20 and set(results) == {expected}, results
        # Nothing left: the same threads and descriptors as before the first inject.
        assert _threads(app.pid) == threads
        assert _fds(app.pid, pg_port) == fds
        assert poolscope("ps", "--json", env=env).stdout.strip() in ("[]", "")
        worst = max(p[0] for p in pauses)
        print(
            f"20 cycles: stopped max {worst:.2f}s, bootstrap max "
            f"{max(p[1] for p in pauses) * 1000:.0f}ms; transports {sorted({p[2] for p in pauses})}"
        )
        app.exit()
    finally:
        app.kill()


@pytest.mark.parametrize("mode, transport", [("sleep", "direct call"), ("loop", "pending call")])
def test_target_sleeping_or_spinning_is_injected(mode: str, transport: str, tmp_path: Path) -> None:
    env = app_env(tmp_path)
    p = subprocess.Popen(
        [sys.executable, str(APPS / "live_plain.py"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None and '"ready"' in p.stdout.readline()
        out = inject(p.pid, "--timeout", "30", env=env)
        assert out["ok"] and out["transport"].startswith(transport), out
        assert out["pools"] == [] and out["stopped"] > 0 and out["pause"] > 0
        assert detach(p.pid, env=env)["ok"]
        assert p.poll() is None  # still running, as before
    finally:
        p.kill()
        p.wait(10)
