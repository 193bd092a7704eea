"""The real ``poolscope demo`` in a real terminal (tmux, 120x36), read with capture-pane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux not installed"
)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[tuple[str, str]]:
    sock = f"poolscope-test-{uuid.uuid4().hex[:8]}"
    yield sock, "demo"
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def capture(sock: str, target: str) -> str:
    r = subprocess.run(
        ["tmux", "-L", sock, "capture-pane", "-p", "-t", target], capture_output=True, text=True
    )
    return r.stdout


def test_demo_in_tmux_shows_live_pools(tmux: tuple[str, str], tmp_path: Path) -> None:
    sock, name = tmux
    exe = Path(sys.executable).with_name("poolscope")
    cmd = (
        f"env POOLSCOPE_RUNTIME_DIR={tmp_path} TERM=xterm-256color {exe} demo --seed 5; "
        "echo EXITED $?; sleep 30"
    )
    subprocess.run(
        [
            "tmux",
            "-L",
            sock,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "36",
            cmd,
        ],
        check=True,
    )
    screen = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        screen = capture(sock, name)
        if (
            "orders" in screen
            and "reports" in screen
            and "connected" in screen
            and "ev/s" in screen
        ):
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"the demo's pools never showed up:\n{screen}")
    lines = screen.splitlines()
    assert len(lines) <= 36 and max(len(ln) for ln in lines) <= 120
    assert "1 Pools" in screen and "p99 wait" in screen
    # Keys reach the app: 2 opens the holders view.
    subprocess.run(["tmux", "-L", sock, "send-keys", "-t", name, "2"], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "checked out across" not in screen:
        time.sleep(0.3)
        screen = capture(sock, name)
    assert "checked out across 2 pools" in screen
    subprocess.run(["tmux", "-L", sock, "send-keys", "-t", name, "q"], check=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "EXITED" not in screen:
        time.sleep(0.2)
        screen = capture(sock, name)
    assert "EXITED 0" in screen
