"""What local connections may cost the application, and who may connect at all.

- Idle connections never exhaust the application: observers and connections owing
  a token are capped and refused at accept time, the server stops accepting before
  the application's last file descriptors (a reserve of the soft RLIMIT_NOFILE),
  and refusals are logged once a minute with a count - no traceback spam.
- An observer that reads nothing with a full queue is closed after the stall timeout.
- Loopback TCP is same-user: a peer of another uid (``runuser -u nobody``) is refused
  unless ``allow_other_users=True`` / ``POOLSCOPE_ALLOW_OTHER_USERS=1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import poolscope.instrument as ps
from poolscope.instrument import limits
from poolscope.instrument import runtime as runtime_module
from poolscope.instrument import server as server_module
from tests.fixtures.faults import AppThread, make_pool, wait_for

ROOT = Path(__file__).resolve().parents[2]
FDLIMIT_APP = ROOT / "tests" / "apps" / "fdlimit.py"
LOGGED = re.compile(r"poolscope: observer connections.*: (?:refused (\d+))?")

pytestmark = pytest.mark.security


def _hello_from(port: int, wait: float = 3.0) -> bytes:
    """Connect from this process; everything the server says within ``wait`` (or EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        data = b""
        deadline = time.monotonic() + wait
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and b'"type":"hello"' not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


# -- file descriptors under a low RLIMIT_NOFILE ---------------------------------------


def test_idle_connections_never_take_the_applications_descriptors(tmp_path: Path) -> None:
    limit, held, seconds = 200, 100, 8.0
    env = dict(os.environ, POOLSCOPE_RUNTIME_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(FDLIMIT_APP), str(limit), str(held), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = json.loads(proc.stdout.readline())
        host, _, port = ready["ready"].rpartition(":")
        # 300 connections that never send a token or read a byte, opened in a flood.
        for _ in range(300):
            try:
                idle.append(socket.create_connection((host, int(port)), timeout=5))
            except OSError:
                pass  # a full backlog: the server is not accepting, as it should not
        out, err = proc.communicate(timeout=seconds + 30)
    finally:
        for s in idle:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tally = json.loads(out.decode().strip().splitlines()[-1])
    # The application's own socket() and open() calls never failed ...
    assert tally["acquires"] > 1000, tally
    assert tally["connect_errors"] == 0, tally
    assert tally["open_errors"] == 0, tally
    assert tally["socket_errors"] == 0, tally
    # ... because poolscope left it a reserve and served at most its limit of observers.
    assert tally["min_free"] >= 16, tally
    assert tally["most_observers"] <= server_module.MAX_OBSERVERS, tally
    # stderr: a few lines, no asyncio traceback; refusals logged once, then summed up.
    text = err.decode(errors="replace")
    assert len(text) < 4000, text[-2000:]
    assert "Traceback" not in text and "socket.send() raised" not in text, text[-2000:]
    logged = LOGGED.findall(text)
    assert 1 <= len(logged) <= 2, text  # the first at once, the rest at shutdown (< 60 s)


def test_refusals_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="poolscope")
    log = limits.RefusalLog(interval=0.3)
    for _ in range(500):
        log.note("missing or wrong token")
    for _ in range(30):
        log.defer("file descriptor reserve")
    lines = [r.getMessage() for r in caplog.records if "observer connections" in r.getMessage()]
    assert len(lines) == 1 and "refused 1 (1 missing or wrong token)" in lines[0], lines
    time.sleep(0.35)
    log.note("over the observer limit (64)")
    lines = [r.getMessage() for r in caplog.records if "observer connections" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "refused 500 (499 missing or wrong token, 1 over the observer limit" in lines[1]
    assert "stopped accepting 30 times (30 file descriptor reserve)" in lines[1], lines
    assert log.total == 501 and log.deferred == 30


def test_wrong_tokens_are_refused_and_logged_once(
    fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poolscope")
    ep = fresh_runtime.serve("127.0.0.1:0", token="right")
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", ep.port), timeout=2) as s:
            s.sendall(b'{"type":"auth","token":"wrong"}\n')
            s.settimeout(2)
            assert s.recv(100) == b""  # closed, nothing said
    lines = [r.getMessage() for r in caplog.records if "observer connections" in r.getMessage()]
    assert len(lines) == 1, lines
    assert fresh_runtime.server is not None
    assert fresh_runtime.server.refusals.total == 100


def test_observers_beyond_the_limit_are_refused_at_accept(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    ep = fresh_runtime.serve("127.0.0.1:0", max_observers=3)
    server = fresh_runtime.server
    assert server is not None and server.max_observers == 3
    kept = [socket.create_connection(("127.0.0.1", ep.port), timeout=2) for _ in range(3)]
    try:
        wait_for(lambda: len(server.observers) == 3, 5.0)
        assert _hello_from(ep.port) == b""  # the fourth: closed at once
        kept.pop().close()
        wait_for(lambda: len(server.observers) == 2, 5.0)
        assert b'"type":"hello"' in _hello_from(ep.port)  # room again
    finally:
        for s in kept:
            s.close()


def test_max_observers_from_the_environment(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLSCOPE_MAX_OBSERVERS", "5")
    fresh_runtime.serve("127.0.0.1:0")
    assert fresh_runtime.server is not None and fresh_runtime.server.max_observers == 5


def test_an_observer_whose_drops_emptied_its_queue_is_still_stalled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tick's batch larger than the whole queue is dropped at once and leaves the
    queue empty: a peer whose socket takes nothing is stalled all the same."""
    app_end, peer = socket.socketpair()
    app_end.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # the peer reads nothing: fill its socket
        while True:
            app_end.send(b"x" * 65536)
    server = server_module.StreamServer(lambda: [], queue_capacity=500, stall_timeout=1.0)
    ob = server_module.Observer(app_end, "peer", 500, time.monotonic() - 2.0)
    server.observers.add(ob)
    try:
        ob.put([b'{"type":"release"}\n'] * 800)
        assert not ob.queue and ob.dropped == 800  # dropped whole, queue empty
        server.deliver()
        assert ob.closed and ob not in server.observers
        assert server.refusals.total == 1
        assert "read nothing for 1 s" in caplog.text
    finally:
        peer.close()
        app_end.close()


def test_an_observer_reading_nothing_with_a_full_queue_is_closed(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small, so the stalled one fills it soon; above a tick's batch at this rate (8,000
    # events/s at 10 ticks/s), so the healthy one keeps what it is sent.
    monkeypatch.setattr(server_module, "OBSERVER_QUEUE", 3000)
    monkeypatch.setattr(server_module, "STALL_TIMEOUT", 1.0)
    pool = ps.instrument(make_pool(max_size=4), listen="127.0.0.1:0", leak_threshold=None)
    rt = fresh_runtime
    assert rt.endpoint is not None and rt.server is not None
    server = rt.server
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((rt.endpoint.host, rt.endpoint.port))
    healthy = socket.create_connection((rt.endpoint.host, rt.endpoint.port))
    got = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := healthy.recv(1 << 16):
                got.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    thread = AppThread(pool, 4000.0).start()
    try:
        wait_for(lambda: len(server.observers) == 2, 5.0)
        # Dropped first (its queue is full and it is told how much it lost), then closed.
        wait_for(lambda: len(server.observers) == 1, 15.0)
        assert thread.failures == 0
        time.sleep(0.3)
        assert b'"type":"acquire"' in got[-20000:]  # the healthy one is still served
        stalled.settimeout(5)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := stalled.recv(1 << 16):
                data += chunk
        assert b'"type":"hello"' in data  # it was served, then hung up on: EOF
    finally:
        thread.stop()
        stalled.close()
        healthy.close()


# -- same-user access on loopback TCP -------------------------------------------------


def _as_nobody_reads(port: int) -> bytes:
    """Connect from a process of uid ``nobody``; what it received within 3 s."""
    runuser = shutil.which("runuser")
    assert runuser is not None
    code = (
        "import socket, sys, time\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "data = b''\n"
        "end = time.monotonic() + 3\n"
        "try:\n"
        '    while time.monotonic() < end and b\'"type":"hello"\' not in data:\n'
        "        c = s.recv(65536)\n"
        "        if not c: break\n"
        "        data += c\n"
        "except OSError: pass\n"
        "sys.stdout.buffer.write(data)\n"
    )
    out = subprocess.run(
        [runuser, "-u", "nobody", "--", _python_for_nobody(), "-c", code],
        capture_output=True,
        timeout=30,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _python_for_nobody() -> str:
    """A Python another user can run: the system's (the venv may sit in root's home)."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def _need_root() -> None:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        if os.environ.get("CI"):
            pytest.fail("the peer-uid tests need root (runuser) on Linux in CI")
        pytest.skip("needs root (runuser -u nobody) on Linux")


def test_loopback_peer_of_another_user_is_refused(
    fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _need_root()
    caplog.set_level(logging.WARNING, logger="poolscope")
    ep = fresh_runtime.serve("127.0.0.1:0")
    assert _as_nobody_reads(ep.port) == b""
    assert any("from another user" in r.getMessage() for r in caplog.records)
    # The same user (and root, which this is) is served.
    assert b'"type":"hello"' in _hello_from(ep.port)


def test_other_users_with_the_opt_in(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_root()
    ep = fresh_runtime.serve("127.0.0.1:0", allow_other_users=True)
    assert b'"type":"hello"' in _as_nobody_reads(ep.port)


def test_other_users_with_the_environment_opt_in(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_root()
    monkeypatch.setenv("POOLSCOPE_ALLOW_OTHER_USERS", "1")
    ep = fresh_runtime.serve("127.0.0.1:0")
    assert b'"type":"hello"' in _as_nobody_reads(ep.port)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback_peer_of_another_user_is_refused(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    _need_root()
    try:
        ep = fresh_runtime.serve("[::1]:0")
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    runuser = shutil.which("runuser")
    assert runuser is not None
    code = (
        "import socket\n"
        f"s = socket.create_connection(('::1', {ep.port}), timeout=3)\n"
        "s.settimeout(3)\n"
        "print(len(s.recv(100)))\n"
    )
    out = subprocess.run(
        [runuser, "-u", "nobody", "--", _python_for_nobody(), "-c", code],
        capture_output=True,
        timeout=30,
        cwd="/",
        text=True,
    )
    assert out.stdout.strip() == "0", (out.stdout, out.stderr)
    with socket.create_connection(("::1", ep.port), timeout=3) as s:
        s.settimeout(3)
        assert s.recv(100)  # same user: the greeting


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux tells who the peer is")
@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_peer_uid_lookup(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from poolscope.instrument import peers

    if source == "proc":
        monkeypatch.setattr(peers, "_diag_broken", True)
    with socket.create_server(("127.0.0.1", 0)) as srv:
        cli = socket.create_connection(srv.getsockname())
        conn, addr = srv.accept()
        try:
            here = conn.getsockname()
            gone = ("127.0.0.1", 1)  # nobody connected from there
            uids = peers.peer_uids(socket.AF_INET, (here[0], here[1]), [addr[:2], gone])
            assert uids == [os.geteuid(), None]
        finally:
            conn.close()
            cli.close()


def test_serve_takes_the_limits(fresh_runtime: runtime_module.Runtime) -> None:
    ps.serve("127.0.0.1:0", max_observers=2, allow_other_users=True)
    server = fresh_runtime.server
    assert server is not None
    assert server.max_observers == 2 and server.allow_other_users
