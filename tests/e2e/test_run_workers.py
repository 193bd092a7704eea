"""`poolscope run` on real servers with worker processes: every worker's pools are
discovered by `poolscope ps` - uvicorn with two spawned workers (asyncpg pools made at
start-up) and gunicorn with --preload and two forked workers (a SQLAlchemy engine made
in the master before the fork). The applications never import poolscope."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.inject_support import APPS, POOLSCOPE, ROOT, app_env, poolscope, wait_for
from tests.pgcluster import free_port

pytestmark = [pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent


def _ps(env: dict[str, str]) -> list[dict[str, Any]]:
    r = poolscope("ps", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = json.loads(r.stdout) if r.stdout.strip() else []
    return out


def _serve(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*POOLSCOPE, "run", "--", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    return out or ""


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read().decode()


def _workers(master: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(master).children(recursive=True)}
    except psutil.Error:
        return set()


def _check_workers(proc: subprocess.Popen[str], port: int, env: dict[str, str]) -> None:
    found: dict[int, list[str]] = {}

    def every_worker_listed() -> bool:
        workers = _workers(proc.pid)
        entries = {e["pid"]: e["pools"] for e in _ps(env)}
        found.clear()
        found.update({pid: entries[pid] for pid in workers if pid in entries})
        # Two workers (uvicorn also runs no other Python child; gunicorn's arbiter
        # is the master itself), each listing its pool.
        return len(workers) >= 2 and len(found) >= 2 and all(found.values())

    # Requests make sure each worker ran (and so made its pool, if it makes them lazily).
    for _ in range(4):
        wait_for(lambda: _try_get(port), 30)
    assert wait_for(every_worker_listed, 60), (found, _ps(env), proc.poll())
    for pools in found.values():
        assert pools == ["poolscope"], found  # the database's name


def _try_get(port: int) -> bool:
    try:
        return _get(port) == "42"
    except OSError:
        return False


def test_run_uvicorn_two_workers(pg_dsn: str, tmp_path: Path) -> None:
    env = app_env(tmp_path)
    env["APP_DSN"] = pg_dsn
    port = free_port()
    proc = _serve(
        [
            str(BIN / "uvicorn"),
            "--app-dir",
            str(APPS),
            "run_uvicorn:app",
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
    )
    try:
        _check_workers(proc, port, env)
    finally:
        out = _stop(proc)
    assert "poolscope: not instrumenting" not in out, out


def test_run_gunicorn_preload_forked_workers(pg_dsn: str, tmp_path: Path) -> None:
    env = app_env(tmp_path)
    env["APP_DSN"] = pg_dsn
    port = free_port()
    proc = _serve(
        [
            str(BIN / "gunicorn"),
            "--preload",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(APPS),
            "run_gunicorn:app",
        ],
        env,
    )
    try:
        _check_workers(proc, port, env)
        # The master made the engine before forking: it is instrumented there too.
        masters = [e for e in _ps(env) if e["pid"] == proc.pid]
        assert masters and masters[0]["pools"] == ["poolscope"], _ps(env)
    finally:
        out = _stop(proc)
    assert "poolscope: not instrumenting" not in out, out
