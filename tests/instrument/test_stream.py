"""End to end over real sockets and real processes: an application instrumented
through the public API, observed by `poolscope record` and by raw observers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from poolscope.events import MAX_LINE_BYTES, PROTOCOL_VERSION, REQUIRED_FIELDS, decode, is_valid
from tests.fixtures.subproc import POOLSCOPE, ROOT, free_port, wait_for

Events = list[dict[str, Any]]


def check_stream(events: Events, pid: int, *, acquires: int, ended: bool = True) -> None:
    """What every observer must see: the greeting, valid events, and - folding the
    sync and the live events together - exactly the acquires the application made."""
    assert events[0]["type"] == "hello"
    assert events[0]["protocol"] == PROTOCOL_VERSION and events[0]["pid"] == pid
    assert events[1]["type"] == "sync"
    assert events[2]["type"] == "pool" and events[2]["pool"] == "app"
    assert events[2]["kind"] == "poolscope" and events[2]["config"]["max"] >= 1
    for ev in events:
        if ev["type"] in REQUIRED_FIELDS:
            assert is_valid(ev), ev
    state = events[1]["state"]
    counters = state["pools"]["app"]["counters"]
    live = [e["type"] for e in events[3:] if e.get("pool") == "app"]
    # Each event is in the sync or on the live stream: never both, never neither.
    assert counters["acquires"] + live.count("acquire") == acquires
    assert counters["releases"] + live.count("release") == acquires
    # Every site id an acquire names was defined before it (in sync or live).
    known = {int(k) for k in state["sites"]}
    for ev in events[3:]:
        if ev["type"] == "site":
            known.add(ev["id"])
        elif ev["type"] == "acquire" and ev["site"] is not None:
            assert ev["site"] in known
    if ended:
        # Flushed at exit: the pool's last closes, a final state and bye, in order.
        assert events[-1]["type"] == "bye"
        tail = [e["type"] for e in events[-6:]]
        assert "close" in tail and "state" in tail


def _stderr_lines(proc: subprocess.Popen[bytes]) -> tuple[list[str], threading.Thread]:
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return lines, t


def test_record_cli_writes_the_protocol_and_discovery_comes_and_goes(
    start_app: Any, tmp_path: Path
) -> None:
    app = start_app("--listen", "127.0.0.1:0")
    entry = tmp_path / "registry" / f"{app.pid}.json"
    assert json.loads(entry.read_text())["endpoint"] == app.endpoint
    out = tmp_path / "rec.ndjson"
    rec = subprocess.Popen(
        [*POOLSCOPE, "record", f":{app.port}", "-o", str(out)],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        err, pump = _stderr_lines(rec)
        # record probes once, then streams: wait for an observer to stay connected.
        assert app.cmd("observers 1")["observers"] == 1
        time.sleep(0.2)
        assert app.cmd("work 300 3")["done"] == 300
        assert app.cmd("timeout")["timeout"] is True  # 4 acquires + 1 timeout
        assert app.cmd("discard")["discarded"] is True  # 1 acquire, closed "invalid"
        assert app.exit() == 0
        # The app's exit ends record's stream; record says so and keeps trying.
        assert wait_for(lambda: any("reconnecting" in line for line in err), 10)
        rec.send_signal(signal.SIGINT)
        assert rec.wait(10) == 0
        pump.join(5)
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait(5)
    assert not entry.exists(), "the discovery entry outlived the process"
    assert any(f"events written to {out}" in line for line in err)
    raw = out.read_bytes().splitlines()
    events = [decode(line) for line in raw]  # every line decodes
    check_stream(events, app.pid, acquires=305)
    types = [e["type"] for e in events]
    assert "timeout" in types
    assert any(e["type"] == "close" and e["reason"] == "invalid" for e in events)
    assert "Traceback" not in app.stderr()


def test_several_observers_each_get_a_consistent_stream(start_app: Any, stream_reader: Any) -> None:
    app = start_app()
    first = stream_reader(app.host, app.port).start()
    app.cmd("work 200 2")  # seen live by the first, in the sync of the later ones
    others = [stream_reader(app.host, app.port).start() for _ in range(2)]
    assert app.cmd("observers 3")["observers"] == 3
    app.cmd("work 400 4")
    assert app.exit() == 0
    streams = []
    for r in (first, *others):
        r.wait_eof()
        events = r.events()
        check_stream(events, app.pid, acquires=600)
        streams.append(events)
    # Live events after everyone was connected are the same lines in the same order.
    last = [(e["t"], e["type"], e.get("conn")) for e in streams[-1][3:]]
    for events in streams[:-1]:
        mine = [(e["t"], e["type"], e.get("conn")) for e in events[3:]]
        assert mine[-len(last) :] == last


def test_a_stalled_observer_is_dropped_and_told_while_the_app_runs_on(
    start_app: Any, stream_reader: Any
) -> None:
    app = start_app("--queue", "2500")
    stalled = stream_reader(app.host, app.port, rcvbuf=4096)  # connected, never read yet
    healthy = stream_reader(app.host, app.port).start()
    assert app.cmd("observers 2")["observers"] == 2
    rss_before = psutil.Process(app.pid).memory_info().rss
    done = app.cmd("work 30000 2", timeout=60)
    # The application was not held up by the stalled observer ...
    assert done["done"] == 30000 and done["elapsed"] < 30
    # ... and its queue for it stays within its bound.
    assert done["capacity"] == 2500
    assert all(q <= 2500 for q in done["queues"]), done
    # Let the background thread catch up, then look at memory.
    settled = app.cmd("settle")
    assert settled["buffered"] == 0
    assert all(q <= 2500 for q in settled["queues"]), settled
    grown = psutil.Process(app.pid).memory_info().rss - rss_before
    assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
    stalled.start()  # now read what is left for it
    assert app.exit() == 0
    healthy.wait_eof()
    stalled.wait_eof()
    check_stream(healthy.events(), app.pid, acquires=30000)
    events = stalled.events()
    drops = [e for e in events if e["type"] == "dropped"]
    assert drops and drops[0]["where"] == "observer queue"
    lost = sum(d["count"] for d in drops)
    live = sum(1 for e in events[3:] if e["type"] in ("acquire", "release"))
    # Nothing hidden: what it got plus what it was told it lost covers the rest.
    assert lost > 0 and live + lost >= 2 * 30000 - 10
    assert events[-1]["type"] == "bye"


def test_malformed_and_oversized_lines_from_observers_do_not_disturb_the_app(
    start_app: Any, stream_reader: Any
) -> None:
    app = start_app()
    chatty = stream_reader(app.host, app.port).start()
    garbage = (
        b"garbage\n[1,2]\n{}\n\xff\xfe\n" + b'{"type":"acquire","t":1}\n' + b"[" * 5000 + b"\n"
    )
    chatty.sock.sendall(garbage)
    big = stream_reader(app.host, app.port).start()
    assert app.cmd("observers 2")["observers"] == 2
    try:
        big.sock.sendall(b"x" * (MAX_LINE_BYTES + 4096))  # no newline: over the limit
    except OSError:
        pass  # the application may already have closed it: that is the point
    big.wait_eof(10)  # the oversized line closed that connection ...
    assert [e["type"] for e in big.events()][:2] == ["hello", "sync"]
    assert app.cmd("observers 1")["observers"] == 1
    assert app.cmd("work 100 2")["done"] == 100  # ... and only that one
    assert app.exit() == 0
    chatty.wait_eof()
    check_stream(chatty.events(), app.pid, acquires=100)
    err = app.stderr()
    assert "over 1 MiB" in err
    assert "Traceback" not in err


def test_token_auth(start_app: Any, stream_reader: Any, tmp_path: Path) -> None:
    app = start_app(env={"POOLSCOPE_TOKEN": "s3cret"})
    wrong = stream_reader(app.host, app.port, first=b'{"type":"auth","token":"nope"}\n').start()
    notjson = stream_reader(app.host, app.port, first=b"hello?\n").start()
    right = stream_reader(app.host, app.port, first=b'{"type":"auth","token":"s3cret"}\n').start()
    wrong.wait_eof(5)
    notjson.wait_eof(5)
    assert bytes(wrong.data) == b"" and bytes(notjson.data) == b""
    assert wait_for(lambda: b"\n" in bytes(right.data), 5)
    assert right.events()[0]["type"] == "hello"
    out = tmp_path / "tok.ndjson"
    rec = subprocess.run(
        [
            *POOLSCOPE,
            "record",
            f":{app.port}",
            "-o",
            str(out),
            "--token",
            "s3cret",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert rec.returncode == 0, rec.stderr
    assert [decode(x)["type"] for x in out.read_bytes().splitlines()][:2] == ["hello", "sync"]
    assert app.exit() == 0


def test_done_when_demo_headless_and_record(tmp_path: Path) -> None:
    """Issue 2's "done when": demo --headless beside record yields the documented lines."""
    port = free_port()
    env = dict(os.environ, POOLSCOPE_RUNTIME_DIR=str(tmp_path / "registry"))
    demo = subprocess.Popen(
        [*POOLSCOPE, "demo", "--headless", "--duration", "8", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out = tmp_path / "x.ndjson"
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_for(listening, 15, 0.05), "the demo did not start listening"
        rec = subprocess.run(
            [*POOLSCOPE, "record", f":{port}", "-o", str(out), "--duration", "4"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            cwd=ROOT,
        )
        assert rec.returncode == 0, rec.stderr
    finally:
        demo.terminate()
        demo.wait(10)
        assert demo.stderr is not None
        demo.stderr.close()
    events = [decode(line) for line in out.read_bytes().splitlines()]
    types = [e["type"] for e in events]
    assert types[:2] == ["hello", "sync"]
    for t in ("pool", "state", "acquire", "release"):
        assert t in types, f"no {t} line in {sorted(set(types))}"
    assert all(is_valid(e) for e in events if e["type"] in REQUIRED_FIELDS)
    assert {e["pool"] for e in events if e["type"] == "state"} >= {"orders"}
