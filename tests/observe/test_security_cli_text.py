"""What the command line prints is made visible too (issue 12, item 1): ``poolscope ps``
(discovery entries and other processes' command lines), ``advise`` (pool names from
the stream) and the one-line errors, run as real processes, read as raw bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.security

ESC_TITLE = "\x1b]2;PWNED\x07"
WIPE = "\x1b[2J"
RLO = "\u202e"
C1 = "\x9b"
RAW_FORBIDDEN = (b"\x1b", "\u202e".encode(), "\x9b".encode(), b"\x07")


def poolscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "poolscope", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def assert_clean(out: bytes) -> None:
    found = [seq for seq in RAW_FORBIDDEN if seq in out]
    assert not found, f"{found} printed raw in {out!r}"


@pytest.fixture
def evil_process(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A live process whose command line and discovery entry carry escapes."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [f"--title={ESC_TITLE}{RLO}", "-c", "import time; time.sleep(60)"],
        executable=sys.executable,
    )
    entry = {
        "pid": proc.pid,
        "endpoint": f"127.0.0.1:1{WIPE}",
        "process": f"evil{ESC_TITLE}",
        "argv": ["evil", ESC_TITLE],
        "pools": [f"orders{WIPE}", f"{RLO}reports{C1}"],
        "started": time.time(),
    }
    path = runtime / f"{proc.pid}.json"
    path.write_text(json.dumps(entry, ensure_ascii=False))
    path.chmod(0o600)
    try:
        yield runtime, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_ps_text_shows_escapes_as_text(evil_process: tuple[Path, int]) -> None:
    runtime, pid = evil_process
    r = poolscope("ps", env={"POOLSCOPE_RUNTIME_DIR": str(runtime)})
    assert r.returncode == 0, r.stderr
    assert str(pid).encode() in r.stdout
    assert_clean(r.stdout)
    text = r.stdout.decode()
    assert r"orders\x1b[2J" in text and r"\u202ereports\x9b" in text
    assert r"127.0.0.1:1\x1b[2J" in text
    assert r"--title=\x1b]2;PWNED\x07\u202e" in text


def test_ps_json_is_json(evil_process: tuple[Path, int]) -> None:
    """--json escapes by JSON's own rules (ASCII only), and keeps the values exact."""
    runtime, pid = evil_process
    r = poolscope("ps", "--json", env={"POOLSCOPE_RUNTIME_DIR": str(runtime)})
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout)
    (row,) = [x for x in json.loads(r.stdout) if x["pid"] == pid]
    assert row["pools"] == [f"orders{WIPE}", f"{RLO}reports{C1}"]


def crafted_recording(path: Path) -> Path:
    t = 1_750_000_000.0
    name = f"orders{ESC_TITLE}{WIPE}{RLO}"
    evs = [
        {"type": "hello", "t": t, "protocol": 1, "pid": 1, "process": f"p{ESC_TITLE}",
         "version": "x"},
        {"type": "pool", "t": t, "pool": name, "kind": "k", "target": f"db{WIPE}",
         "config": {"min": 1, "max": 4}},
    ]  # fmt: skip
    for i in range(200):
        ts = t + i * 0.05
        evs.append({"type": "state", "t": ts, "pool": name, "size": 2, "idle": 1, "in_use": 1,
                    "waiting": 0, "max": 4, "min": 1})  # fmt: skip
        evs.append({"type": "acquire", "t": ts, "pool": name, "conn": "1", "wait": 0.0001,
                    "site": None, "task": f"t{WIPE}"})  # fmt: skip
        evs.append({"type": "release", "t": ts + 0.01, "pool": name, "conn": "1",
                    "hold": 0.01})  # fmt: skip
    evs.append({"type": "connect_error", "t": t + 11, "pool": name, "error": f"e{WIPE}{C1}"})
    lines = [json.dumps(e, ensure_ascii=i % 2 == 0) for i, e in enumerate(evs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_advise_text_shows_escapes_as_text(tmp_path: Path) -> None:
    rec = crafted_recording(tmp_path / "r.ndjson")
    r = poolscope("advise", str(rec))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr)
    assert r"orders\x1b]2;PWNED\x07\x1b[2J\u202e" in r.stdout.decode()


def test_advise_json_is_json(tmp_path: Path) -> None:
    rec = crafted_recording(tmp_path / "r.ndjson")
    r = poolscope("advise", str(rec), "--json")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout)
    doc = json.loads(r.stdout)
    assert doc["pools"][0]["pool"] == r"orders\x1b]2;PWNED\x07\x1b[2J\u202e"


def test_error_lines_are_made_visible(tmp_path: Path) -> None:
    rec = crafted_recording(tmp_path / "r.ndjson")
    # An unknown pool: the error lists the pools the stream named.
    r = poolscope("advise", str(rec), "--pool", f"nope{WIPE}")
    assert r.returncode == 1
    assert_clean(r.stderr)
    assert r.stderr.count(b"\n") == 1 and rb"orders\x1b]2;PWNED" in r.stderr
    # A recording that stops at a line quoting the stream (its event type).
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b'{"type":"x\\u001b]2;PWNED\\u0007","t":"no"}')
    r = poolscope("advise", str(bad))
    assert r.returncode == 1
    assert_clean(r.stderr)
    assert r.stderr.count(b"\n") == 1
    # An endpoint given on the command line, quoted back in the error.
    r = poolscope("record", f"unix:{tmp_path}/no{WIPE}such", "-o", str(tmp_path / "o"))
    assert r.returncode == 1
    assert_clean(r.stderr)
    assert rb"no\x1b[2Jsuch" in r.stderr
