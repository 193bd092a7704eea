"""``poolscope advise`` on recordings and on a live process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolscope import advisor
from poolscope.cli import main
from poolscope.events import encode
from tests.fixtures.advisor import synth_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "rec.ndjson"
    with open(path, "wb") as f:
        for ev in synth_events(rate=60.0, hold=0.04, size=4, seconds=60, seed=21):
            f.write(encode(ev))
    return path


def test_advise_a_recording(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", str(recording), "--db-cores", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orders: ")
    assert "recommended size" in out and "(now 4)" in out
    assert "p99 wait: measured" in out and "Little's law" in out
    assert "cores × 2 + spindles = 9 (4 database cores" in out


def test_advise_json_matches_the_library(
    recording: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["advise", str(recording), "--json", "--p99-target", "0.005"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    (pool,) = doc["pools"]
    state, log = advisor.fold_with_arrivals(
        json.loads(line) for line in recording.read_text().splitlines()
    )
    expected = advisor.advise(state, "orders", arrivals=log, p99_target=0.005)
    assert pool["pool"] == "orders" and pool["p99_target"] == 0.005
    assert pool["recommended"] == expected.recommended
    assert pool["predicted_p99_current"] == pytest.approx(expected.predicted_p99_current)
    assert pool["workload"]["rate"] == pytest.approx(60.0, rel=0.08)


def test_advise_with_a_database_share(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["advise", str(recording), "--json", "--db-max-connections", "10", "--instances", "4"]
    )
    assert rc == 0
    (pool,) = json.loads(capsys.readouterr().out)["pools"]
    assert pool["recommended"] == 2  # 10 × 0.8 / 4
    assert any("database allows 2 per instance" in w for w in pool["warnings"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--util-ceiling", "1.5"], "--util-ceiling"),
        (["--util-ceiling", "0"], "--util-ceiling"),
        (["--p99-target", "-1"], "--p99-target"),
        (["--p99-target", "soon"], "--p99-target"),
        (["--instances", "3"], "--instances needs --db-max-connections"),
        (["--duration", "2"], "--duration applies to a live endpoint only"),
        (["--db-max-connections", "0"], "--db-max-connections"),
    ],
)
def test_bad_arguments_exit_2(
    recording: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["advise", str(recording), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_unreadable_sources_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01 not json\n")
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    future = tmp_path / "future.ndjson"
    future.write_bytes(encode({"type": "hello", "t": 1.0, "protocol": 99, "pid": 1}))
    cases = {
        str(tmp_path / "missing.ndjson"): "no such file",
        str(tmp_path): "cannot read",
        str(garbage): "not a poolscope recording",
        str(empty): "empty recording",
        str(future): "protocol version 99 from the future",
        f"127.0.0.1:{_free_port()}": "connection refused",
    }
    for source, message in cases.items():
        assert main(["advise", source]) == 1, source
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_truncated_recording_is_advised_with_a_note(
    recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.ndjson"
    data = recording.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    assert main(["advise", str(cut)]) == 0
    captured = capsys.readouterr()
    assert "recommended size" in captured.out
    assert "truncated at line" in captured.err and "advising on what came before" in captured.err


def test_incompatible_live_stream_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """An application speaking a newer protocol: one line, exit 1, no hang."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    conns: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                conns.append(conn)
                conn.sendall(encode({"type": "hello", "t": 1.0, "protocol": 99, "pid": 1}))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        assert main(["advise", f"127.0.0.1:{port}", "--duration", "20"]) == 1
        assert time.monotonic() - start < 10
        err = capsys.readouterr().err.strip().splitlines()
        assert "protocol version 99 from the future" in err[-1]
    finally:
        server.close()
        for c in conns:
            c.close()
        thread.join(2)


def test_unknown_pool_exits_1(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", str(recording), "--pool", "billing"]) == 1
    assert "no pool named 'billing'" in capsys.readouterr().err


def test_entry_point_in_a_subprocess(recording: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "poolscope", "advise", str(recording), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pools"][0]["pool"] == "orders"


@pytest.fixture
def demo_endpoint(tmp_path: Path) -> Iterator[str]:
    """A real instrumented demo application streaming on a free loopback port."""
    port = _free_port()
    demo = ["demo", "--headless", "--no-trouble", "--seed", "3", "--duration", "30"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolscope", *demo, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "POOLSCOPE_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "the demo exited at start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo never listened"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_advise_a_live_endpoint(demo_endpoint: str) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "poolscope", "advise", demo_endpoint, "--duration", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start >= 2.0
    assert "watching" in proc.stderr
    pools = {p["pool"]: p for p in json.loads(proc.stdout)["pools"]}
    assert "orders" in pools
    orders = pools["orders"]
    assert orders["current_size"] > 0
    assert orders["workload"]["rate"] > 0 and orders["workload"]["hold_mean"] > 0
    assert orders["recommended"] is not None and orders["recommended"] >= 1
