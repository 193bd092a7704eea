"""Helpers for the `poolscope inject` / `poolscope run` tests: applications that never
import poolscope (tests/apps/live_*.py), driven over stdin, and `poolscope` itself run
as a subprocess, as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
POOLSCOPE = [sys.executable, "-m", "poolscope"]


def holds_line(app: str) -> int:
    """The line number of the HOLDS-LEAK marker in tests/apps/<app>."""
    for n, line in enumerate((APPS / app).read_text().splitlines(), 1):
        if "# HOLDS-LEAK" in line:
            return n
    raise AssertionError(f"no HOLDS-LEAK line in {app}")


class LiveApp:
    """A tests/apps/live_*.py application in a subprocess; its stdout lines are kept."""

    def __init__(self, app: str, dsn: str, env: dict[str, str], python: str = sys.executable):
        self.proc = subprocess.Popen(
            [python, str(APPS / app), dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._drain_err, daemon=True).start()
        ready = self.read(60)
        assert ready == {"ready": True}, ready

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self.err.append(line)

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            raise AssertionError(
                f"no answer from pid {self.pid} in {timeout}s (rc={self.proc.poll()}, "
                f"stderr={''.join(self.err)[-2000:]!r})"
            )
        self.lines.append(box[0])
        out: dict[str, Any] = json.loads(box[0])
        return out

    def cmd(self, line: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def exit(self) -> list[str]:
        """Ask it to exit; its whole stdout."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        self.read(60)
        assert self.proc.wait(30) == 0, "".join(self.err)
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()


def poolscope(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLSCOPE, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def inject(pid: int, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = poolscope("inject", str(pid), "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def detach(pid: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = poolscope("detach", str(pid), "--json", env=env)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


class Recording:
    """`poolscope record ENDPOINT -o FILE` running until ``stop()``."""

    def __init__(self, endpoint: str, path: Path, env: dict[str, str] | None = None):
        self.path = path
        self.proc = subprocess.Popen(
            [*POOLSCOPE, "record", endpoint, "-o", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert wait_for(lambda: self.events_now(), 20), "record wrote nothing"

    def events_now(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        out = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=20)
        return self.events_now()


def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def app_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an application under test: the test's registry directory,
    and no poolscope settings leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLSCOPE_")}
    env["POOLSCOPE_RUNTIME_DIR"] = str(tmp_path / "registry")
    env.pop("PYTHONPATH", None)
    return env


class Watcher:
    """A raw observer of an endpoint (HOST:PORT), reading on a thread: to know when the
    stream has caught up while `poolscope record` (which flushes in batches) writes."""

    def __init__(self, endpoint: str):
        import socket

        host, _, port = endpoint.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=10)
        self.sock.settimeout(None)
        self.data = bytearray()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                self.data += chunk

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.data).splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
