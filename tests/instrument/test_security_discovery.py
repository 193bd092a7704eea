"""Discovery and Unix-socket directories are the user's own (issue 12, item 2), and
``poolscope ps`` forgets processes that are gone (issue 14, item 10).

The attacks are made by a real second user: the tests run as root (as CI does) and
plant files as ``nobody`` through ``runuser``, in a shared sticky temp directory both
can reach - what ``$TMPDIR`` is on most machines.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument import discovery
from poolscope.instrument import runtime as runtime_module
from tests.fixtures.faults import POOLSCOPE, make_pool, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = [sys.executable, str(ROOT / "tests" / "apps" / "discovery_app.py")]
REFUSED = "not using discovery directory"

pytestmark = pytest.mark.security


def _need_root_and_nobody() -> None:
    ok = os.geteuid() == 0 and shutil.which("runuser") is not None
    if ok:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except KeyError:
            ok = False
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root with runuser and a 'nobody' user: these must run")
        pytest.skip("needs root, runuser and a 'nobody' user")


def nobody_uid() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


def as_nobody(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *cmd], check=True, timeout=30)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A sticky, world-writable temp dir (like /tmp) that root and nobody both reach."""
    _need_root_and_nobody()
    d = Path(tempfile.mkdtemp(prefix="poolscope-shared-", dir="/tmp"))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _env(tmpdir: Path) -> dict[str, str]:
    """What a user with no XDG_RUNTIME_DIR has: discovery under $TMPDIR/poolscope-<uid>."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "POOLSCOPE_RUNTIME_DIR")
    }
    env.update(TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*APP, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the app said nothing"
    line = proc.stdout.readline()
    assert line, f"the app exited: {proc.stderr.read() if proc.stderr else ''}"
    out: dict[str, Any] = json.loads(line)
    return out


def _finish(proc: subprocess.Popen[str]) -> str:
    """End the app (end of input) and return its stderr."""
    try:
        _, err = proc.communicate(timeout=20)  # closes its stdin: the app's end of input
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLSCOPE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


class Bait:
    """A listening TCP socket standing for the other user's server: it records whether
    anyone connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


def test_a_discovery_directory_planted_by_another_user_is_refused(shared_tmp: Path) -> None:
    victim = shared_tmp / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    before = victim.stat()
    planted = shared_tmp / f"poolscope-{os.getuid()}"
    bait = Bait()
    env = _env(shared_tmp)
    app = _start(["--gate"], env)
    try:
        pid = _line(app)["pid"]
        # The other user gets there first: the directory root's processes will use,
        # a symlink where root writes its temporary entry and where the entry goes,
        # and an entry of their own pointing at their server (for a live pid).
        as_nobody("mkdir", "-m", "0777", str(planted))
        as_nobody("ln", "-s", str(victim), str(planted / f"{pid}.tmp"))
        as_nobody("ln", "-s", str(victim), str(planted / f"{pid}.json"))
        fake = json.dumps({"pid": os.getpid(), "endpoint": bait.endpoint, "pools": ["bait"]})
        as_nobody("sh", "-c", f"printf '%s' '{fake}' > {planted / 'fake.json'}")
        assert app.stdin is not None
        app.stdin.write("go\n")
        app.stdin.flush()
        ready = _line(app)
        assert ready["endpoint"], "streaming goes on; only discovery is off"
        # Readers apply the same check: nothing listed, nothing connected to.
        listed = _cli("ps", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        assert listed.stderr.count(REFUSED) == 1, listed.stderr
        attached = _cli("attach", env=env)
        assert attached.returncode == 1
        assert "no instrumented process found" in attached.stderr
        assert "Traceback" not in attached.stderr
    finally:
        err = _finish(app)
        bait_hit = bait.connected()
        bait.close()
    assert not bait_hit, "attach connected to the other user's server"
    # The root-owned file is untouched, and root wrote nothing into that directory.
    assert victim.read_text() == "precious\n"
    after = victim.stat()
    assert (after.st_mtime_ns, after.st_uid, after.st_mode) == (
        before.st_mtime_ns,
        before.st_uid,
        before.st_mode,
    )
    assert sorted(p.name for p in planted.iterdir()) == sorted(
        [f"{pid}.tmp", f"{pid}.json", "fake.json"]
    )
    assert all(p.lstat().st_uid == nobody_uid() for p in planted.iterdir())
    # One logged line, though the entry was written twice (two pools).
    assert err.count(REFUSED) == 1, err
    assert f"owned by uid {nobody_uid()}" in err
    assert "Traceback" not in err


def test_a_directory_of_our_uid_with_the_wrong_mode_or_a_symlink_is_refused(
    shared_tmp: Path,
) -> None:
    env = _env(shared_tmp)
    target = shared_tmp / "elsewhere"
    target.mkdir(mode=0o700)  # a perfect directory - but reached through a symlink
    link = shared_tmp / f"poolscope-{os.getuid()}"
    link.symlink_to(target)  # our own symlink: still never followed
    app = _start([], env)
    try:
        assert _line(app)["endpoint"]
        assert _cli("ps", "--json", env=env).stdout.strip() == "[]"
    finally:
        err = _finish(app)
    assert err.count(REFUSED) == 1 and "a symlink" in err, err
    assert list(target.iterdir()) == []
    link.unlink()
    # A real directory of ours, but readable by others: refused too.
    os.chmod(target, 0o755)
    target.rename(link)
    app = _start([], env)
    try:
        assert _line(app)["endpoint"]
    finally:
        err = _finish(app)
    assert err.count(REFUSED) == 1 and "mode 0755, not 0700" in err, err
    assert list(link.iterdir()) == []


def test_discovery_works_in_a_directory_it_creates(shared_tmp: Path) -> None:
    env = _env(shared_tmp)
    app = _start(["--name", "orders"], env)
    try:
        ready = _line(app)
        d = shared_tmp / f"poolscope-{os.getuid()}"
        st = d.lstat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        entry = d / f"{ready['pid']}.json"
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        assert [p.name for p in d.iterdir()] == [entry.name], "no temporary file left"
        listed = json.loads(_cli("ps", "--json", env=env).stdout)
        assert [r["pid"] for r in listed] == [ready["pid"]]
        assert listed[0]["endpoint"] == ready["endpoint"]
    finally:
        err = _finish(app)
    assert REFUSED not in err


def test_readers_trust_only_regular_files_owned_by_the_user(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even inside the user's own directory: an entry owned by someone else, a
    symlink to an entry, and a FIFO (which must not hang the reader) are skipped."""
    d = shared_tmp / "registry"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("POOLSCOPE_RUNTIME_DIR", str(d))
    mine = {"pid": os.getpid(), "endpoint": "127.0.0.1:1", "pools": ["mine"]}
    (d / "1.json").write_text(json.dumps(mine))
    theirs = d / "2.json"
    theirs.write_text(json.dumps({**mine, "pools": ["theirs"]}))
    os.chown(theirs, nobody_uid(), -1)
    outside = shared_tmp / "outside.json"
    outside.write_text(json.dumps({**mine, "pools": ["linked"]}))
    (d / "3.json").symlink_to(outside)
    os.mkfifo(d / "4.json")
    entries = discovery.read_entries()
    assert [e["pools"] for e in entries] == [["mine"]]
    # And the directory check applies to readers: loosen it and nothing is trusted.
    os.chmod(d, 0o755)
    assert discovery.read_entries() == []


def test_ps_removes_entries_of_processes_that_are_gone(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = shared_tmp / "registry"
    env = dict(_env(shared_tmp), POOLSCOPE_RUNTIME_DIR=str(reg))
    live = _start([], env)
    doomed = _start([], env)
    try:
        live_pid = _line(live)["pid"]
        doomed_pid = _line(doomed)["pid"]
        doomed.send_signal(signal.SIGKILL)  # no atexit: its entry stays behind
        doomed.wait(10)
        assert (reg / f"{doomed_pid}.json").exists()
        # Another user's entry of a dead process is not ours to remove.
        dead_pid = doomed_pid
        theirs = reg / "999999.json"
        theirs.write_text(json.dumps({"pid": dead_pid, "endpoint": "127.0.0.1:1"}))
        os.chown(theirs, nobody_uid(), -1)
        # An entry whose pid was reused by a process started after it was written.
        reused = reg / "reused.json"
        reused.write_text(
            json.dumps({"pid": live_pid, "endpoint": "127.0.0.1:2", "started": time.time() - 3600})
        )
        listed = _cli("ps", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [r["pid"] for r in json.loads(listed.stdout)] == [live_pid]
        assert not (reg / f"{doomed_pid}.json").exists(), "the dead process's entry stayed"
        assert not reused.exists(), "an entry of a reused pid stayed"
        assert (reg / f"{live_pid}.json").exists()
        assert theirs.exists()
    finally:
        _finish(live)
        _finish(doomed)


# -- the directory of an explicitly given Unix socket ----------------------------------


def _serve_unix(path: Path, caplog: pytest.LogCaptureFixture) -> runtime_module.Runtime:
    rt = runtime_module.get_runtime()
    with caplog.at_level(logging.WARNING, logger="poolscope"):
        ps.instrument(make_pool(), listen=f"unix:{path}", leak_threshold=None)
    return rt


def test_a_unix_socket_in_another_users_directory_is_refused(
    shared_tmp: Path, fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = shared_tmp / "theirs"
    as_nobody("mkdir", "-m", "0755", str(theirs))
    sock = theirs / "app.sock"
    rt = _serve_unix(sock, caplog)
    assert rt.server is None and rt.endpoint is None
    assert not sock.exists()
    lines = [r.getMessage() for r in caplog.records if "cannot listen" in r.getMessage()]
    assert len(lines) == 1 and f"owned by uid {nobody_uid()}" in lines[0], lines


def test_a_unix_socket_in_a_directory_others_can_write_is_refused(
    shared_tmp: Path, fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    open_dir = shared_tmp / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # no sticky bit: anyone may replace our socket
    rt = _serve_unix(open_dir / "app.sock", caplog)
    assert rt.server is None
    assert any("writable by others" in r.getMessage() for r in caplog.records)


def test_a_unix_socket_in_a_sticky_or_private_directory_is_served(
    shared_tmp: Path, fresh_runtime: runtime_module.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    sock = shared_tmp / "app.sock"  # /tmp-like: sticky, so others cannot swap it
    rt = _serve_unix(sock, caplog)
    assert rt.endpoint is not None and rt.endpoint.path == str(sock)
    st = sock.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(5)
        c.connect(str(sock))
        assert wait_for(lambda: c.recv(1 << 16), 5.0).startswith(b'{"type":"hello"')


def test_check_socket_dir_refuses_a_symlinked_directory(shared_tmp: Path) -> None:
    real = shared_tmp / "real"
    real.mkdir(mode=0o700)
    (shared_tmp / "link").symlink_to(real)
    with pytest.raises(discovery.UntrustedDirectory, match="symlink"):
        discovery.check_socket_dir(str(shared_tmp / "link" / "app.sock"))
    discovery.check_socket_dir(str(real / "app.sock"))
