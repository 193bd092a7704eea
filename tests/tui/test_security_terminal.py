"""No terminal escape from the stream reaches the operator's terminal (issue 12, item 1).

The real ``poolscope replay`` and ``poolscope attach`` run in a real terminal
(tmux, with ``set-clipboard on`` so an OSC 52 would fill a tmux paste buffer). Pool,
process and task names, error texts and stack files, functions and source lines
carry OSC 52, OSC 2, ``ESC[2J``, a C1 CSI, bidi overrides and isolates, and Rich
markup. Every view is opened; then the raw bytes the program wrote to its pty
(``tmux pipe-pane``) must hold none of those sequences, tmux must have no paste
buffer and no new title, and the screen (``capture-pane``) must show each one as
visible text (``\\x1b``, ``\\u202e``, ``[bold]``) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(
        shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux not installed"
    ),
]

OSC52 = "\x1b]52;c;cG9vbHNjb3BlLXB3bmVk\x07"  # base64 of "poolscope-pwned"
OSC2 = "\x1b]2;PWNED-TITLE\x07"
WIPE = "\x1b[2JWIPE"
C1_CSI = "\x9b2JCSI"
BIDI = "\u202eRLO\u2066LRI\u2069"
MARKUP = "[bold]B[/bold][@click=app.quit]Q[/]"

T0 = 1_750_000_000.0
POOL_A = "ord" + OSC52 + "A"
POOL_B = "rep" + BIDI + MARKUP
STACK = [
    {"file": "/srv/" + WIPE + ".py", "line": 7, "func": "fetch" + OSC2, "code": "q" + C1_CSI},
    {"file": "/srv/web.py", "line": 9, "func": "handle" + BIDI, "code": "x = 1" + WIPE},
]
TASK = "GET /search?q=" + OSC52 + WIPE


def crafted_events() -> list[dict[str, Any]]:
    """A small recording whose every displayed string is hostile."""
    proc = {"t": T0 - 60, "protocol": 1, "pid": 4242, "process": "evil" + OSC2}
    config = {"min": 1, "max": 4, "leak_threshold": 5.0, "heartbeat": 1.0}
    evs: list[dict[str, Any]] = [
        {"type": "hello", "t": T0, "protocol": 1, "pid": 4242, "process": "evil" + OSC2,
         "version": "0.1.0" + WIPE},
        {"type": "sync", "t": T0, "state": {"process": proc, "pools": {}, "sites": {},
         "leaks": [], "resolved_leaks": [], "dropped": 0, "internal_errors": 0,
         "events": 0, "first_t": T0 - 60, "now": T0}},
    ]  # fmt: skip
    for name in (POOL_A, POOL_B):
        evs.append({"type": "pool", "t": T0, "pool": name, "kind": "k" + C1_CSI,
                    "target": "db" + OSC2, "config": config})  # fmt: skip
        evs.append({"type": "state", "t": T0, "pool": name, "size": 2, "idle": 1,
                    "in_use": 1, "waiting": 0, "max": 4, "min": 1})  # fmt: skip
    evs += [
        {"type": "site", "t": T0, "id": 1, "stack": STACK},
        {"type": "acquire", "t": T0 + 0.1, "pool": POOL_A, "conn": "c" + WIPE, "wait": 0.001,
         "site": 1, "task": TASK},
        {"type": "leak", "t": T0 + 6, "pool": POOL_A, "conn": "c" + WIPE, "held": 6.0,
         "stack": STACK, "task": TASK, "site": 1},
        {"type": "connect_error", "t": T0 + 6.1, "pool": POOL_B,
         "error": "refused " + WIPE + C1_CSI},
        {"type": "heartbeat", "t": T0 + 6.2, "pool": POOL_B, "conn": "h" + BIDI, "ok": False,
         "latency": None, "error": "boom" + OSC2 + BIDI},
        {"type": "acquire_error", "t": T0 + 6.3, "pool": POOL_B, "error": "e" + OSC52},
        {"type": "state", "t": T0 + 7, "pool": POOL_B, "size": 2, "idle": 1, "in_use": 1,
         "waiting": 0, "max": 4, "min": 1},
    ]  # fmt: skip
    return evs


def crafted_lines() -> bytes:
    """The events as NDJSON, escaped as poolscope itself writes them (ASCII) for most
    lines, and with the characters raw (valid JSON too) for the rest."""
    out = []
    for i, ev in enumerate(crafted_events()):
        out.append(json.dumps(ev, ensure_ascii=i % 2 == 0).encode() + b"\n")
    return b"".join(out)


# What must never reach the pty as bytes, and how each one shows instead.
FORBIDDEN = {
    b"\x1b]52": r"\x1b]52;c;cG9vbHNjb3BlLXB3bmVk\x07",
    b"\x1b]2;PWNED": r"\x1b]2;PWNED-TITLE\x07",
    b"\x1b[2JWIPE": r"\x1b[2JWIPE",
    "\x9b".encode(): r"\x9b2JCSI",
    "\u202e".encode(): r"\u202eRLO\u2066LRI\u2069",
    "\u2066".encode(): r"\u2066",
    "\u2069".encode(): r"\u2069",
}


class Term:
    """One program in a tmux pane, its raw output piped to a file."""

    def __init__(self, tmp: Path, argv: list[str]) -> None:
        self.sock = f"poolscope-sec-{uuid.uuid4().hex[:8]}"
        self.raw = tmp / "pty.raw"
        self.go = tmp / "go"
        cmd = " ".join(_quote(a) for a in argv)
        env = f"env POOLSCOPE_RUNTIME_DIR={_quote(str(tmp))} TERM=xterm-256color"
        script = (
            f"while [ ! -e {_quote(str(self.go))} ]; do sleep 0.05; done; "
            f"{env} {cmd}; echo EXITED $?; sleep 30"
        )
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "200", "-y", "50")
        self.tmux("set-option", "-s", "set-clipboard", "on")
        self.tmux("set-option", "-g", "allow-rename", "on")
        self.tmux("respawn-pane", "-k", "-t", "t", script)
        self.tmux("pipe-pane", "-t", "t", "-o", f"cat >> {_quote(str(self.raw))}")
        self.go.touch()

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True)
        return r.stdout

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "t")

    def wait_for(self, text: str, timeout: float = 20.0, required: bool = True) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        if required:
            pytest.fail(f"{text!r} never showed:\n{screen}")
        return screen

    def close(self) -> None:
        self.tmux("kill-server")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def poolscope_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "poolscope", *args]


@pytest.fixture
def term_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Term] = []

    def make(argv: list[str]) -> Term:
        t = Term(tmp_path, argv)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def walk_views(term: Term) -> list[str]:
    """Open every view that shows stream text; the screens seen (plain and -e)."""
    screens = [term.wait_for("1 Pools")]
    term.wait_for("ord")  # the pools table has rows
    screens.append(term.screen(escapes=True))
    for key, expect in (
        ("2", "checked out across"),
        ("3", "Traceback of the acquire"),
        ("4", "Recent heartbeat failures"),
        ("6", "connect_error"),
        ("7", "M/M/c"),
    ):
        term.tmux("send-keys", "-t", "t", key)
        # Not required: an escape that wiped the screen is reported below, by what
        # reached the pty, rather than as a view that never showed.
        screens.append(term.wait_for(expect, timeout=5.0, required=False))
        time.sleep(0.3)
        screens.append(term.screen(escapes=True))
    term.tmux("send-keys", "-t", "t", "q")
    screens.append(term.wait_for("EXITED"))
    return screens


def assert_nothing_escaped(term: Term, screens: list[str]) -> None:
    time.sleep(0.3)  # let pipe-pane's cat write its last bytes
    raw = term.raw.read_bytes()
    assert len(raw) > 1000, "pipe-pane saw no output"
    reached = [seq for seq in FORBIDDEN if seq in raw]
    assert not reached, f"reached the terminal: {reached}"
    seen = "\n".join(screens)
    for shown in (
        r"\x1b]52;c;",  # OSC 52 in a pool name, made visible
        r"\x1b[2JWIPE",  # the clear-screen in the task name / stack / error text
        r"\u202eRLO",  # the right-to-left override in a pool name
        r"\x9b2JCSI",  # C1 CSI in a stack's source line / error text
        "[bold]B[/bold]",  # markup stays literal
        "[@click=app.quit]Q[/]",
    ):
        assert shown in seen, f"{shown!r} not shown as text"
    assert "EXITED 0" in seen  # [@click=app.quit] quit nothing; q did
    # tmux took no clipboard write and no title from the stream.
    assert term.tmux("list-buffers").strip() == ""
    assert "PWNED" not in term.tmux("display-message", "-p", "-t", "t", "#{pane_title}")


def test_replay_of_a_crafted_recording_writes_no_escape(term_factory: Any, tmp_path: Path) -> None:
    rec = tmp_path / "crafted.ndjson"
    rec.write_bytes(crafted_lines())
    term = term_factory(poolscope_argv("replay", str(rec), "--paused", "--start", "60"))
    assert_nothing_escaped(term, walk_views(term))


class CraftedServer:
    """A loopback NDJSON server that greets every observer with the crafted stream and
    then keeps the connection open, as a hostile (or unlucky) application would."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.served = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.payload)
                self.served += 1
                conn.settimeout(0.2)
                while not self._stop.is_set():
                    try:
                        if not conn.recv(4096):
                            return
                    except TimeoutError:
                        continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_live_attach_to_a_crafted_stream_writes_no_escape(
    term_factory: Any, tmp_path: Path
) -> None:
    server = CraftedServer(crafted_lines())
    try:
        term = term_factory(poolscope_argv("attach", f"127.0.0.1:{server.port}"))
        screens = walk_views(term)
        assert server.served >= 1
        assert_nothing_escaped(term, screens)
    finally:
        server.close()
