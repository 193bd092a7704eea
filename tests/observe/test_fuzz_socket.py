"""Both ends of the socket under bad input, and recordings that are corrupt.

The application's stream server facing a hostile observer; an observer's client
facing a hostile (or newer) application; ``FileFeed`` (what ``replay`` and
``advise`` read) facing a damaged file. No crash, bounded memory, one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolscope.instrument as ps
from poolscope.client import DISCONNECTED, LINES, FileFeed, StreamClient
from poolscope.endpoint import Endpoint
from poolscope.events import PROTOCOL_VERSION, encode
from poolscope.instrument import runtime as runtime_module
from poolscope.model import fold
from tests.fixtures.faults import POOLSCOPE, RawObserver, make_pool, proc_usage, wait_for

SOCKET_FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MiB = 1 << 20


def _hello(protocol: Any = PROTOCOL_VERSION) -> bytes:
    return encode({"type": "hello", "t": 1.0, "protocol": protocol, "pid": 1, "process": "x"})


# -- the application's side: a hostile observer ---------------------------------------


def _still_serves(rt: runtime_module.Runtime) -> None:
    assert rt.endpoint is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    try:
        wait_for(lambda: b'"type":"sync"' in ob.data, 5.0)
    finally:
        ob.close()


@pytest.fixture
def streaming(fresh_runtime: runtime_module.Runtime) -> runtime_module.Runtime:
    ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=None)
    return fresh_runtime


@SOCKET_FUZZ
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=5), st.booleans())
def test_server_survives_random_bytes_from_an_observer(
    streaming: runtime_module.Runtime, chunks: list[bytes], reset: bool
) -> None:
    rt = streaming
    assert rt.endpoint is not None
    with socket.create_connection((rt.endpoint.host, rt.endpoint.port), timeout=2) as s:
        for c in chunks:
            with contextlib.suppress(OSError):
                s.sendall(c)
        if reset:  # an abortive close (RST) mid-stream
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert rt.thread is not None and rt.thread.is_alive()


def test_server_closes_a_giant_line_and_keeps_memory(streaming: runtime_module.Runtime) -> None:
    rt = streaming
    assert rt.endpoint is not None and rt.server is not None
    rss0, _ = proc_usage()
    sent = 0
    with socket.create_connection((rt.endpoint.host, rt.endpoint.port), timeout=5) as s:
        block = b"x" * (256 * 1024)
        try:
            while sent < 64 * MiB:  # no newline, ever
                s.sendall(block)
                sent += len(block)
        except OSError:
            pass  # the server hung up on us: what it should do
        wait_for(lambda: not rt.server.observers, 5.0)  # type: ignore[union-attr]
    assert sent < 64 * MiB, "the server kept reading an endless line"
    rss1, _ = proc_usage()
    assert rss1 - rss0 < 32 * MiB
    _still_serves(rt)


def test_server_counts_bad_lines_and_keeps_the_observer(
    streaming: runtime_module.Runtime,
) -> None:
    rt = streaming
    assert rt.endpoint is not None and rt.server is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    try:
        ob.sock.sendall(b"garbage\n\xff\xfe\n[1,2]\n" + _hello(99))
        wait_for(lambda: rt.server.bad_lines >= 3, 5.0)  # type: ignore[union-attr]
        pool = rt.handles["app"]
        pool.event("connect", conn="1", duration=0.001)
        wait_for(lambda: b'"type":"connect"' in ob.data, 5.0)  # still streaming to it
    finally:
        ob.close()


# -- the observer's side: a hostile or newer application --------------------------------


@contextlib.asynccontextmanager
async def fake_app(payload: bytes | list[bytes], *, linger: float = 0.0) -> AsyncIterator[Endpoint]:
    """A server that sends ``payload`` to whoever connects, then closes; a list is sent
    a piece per write, each drained before the next."""
    pieces = [payload] if isinstance(payload, bytes) else payload

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            if linger:
                await asyncio.sleep(linger)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()


async def _read_all(
    ep: Endpoint, batches: bool = False
) -> tuple[list[dict[str, Any]], StreamClient]:
    client = StreamClient(ep, reconnect=False, raw=batches, batches=batches)
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10) if hasattr(asyncio, "timeout") else contextlib.nullcontext():
        async for ev in client.events():
            out.append(ev)
    return out, client


@SOCKET_FUZZ
@given(st.binary(max_size=4000))
async def test_client_survives_random_bytes(data: bytes) -> None:
    async with fake_app(data) as ep:
        evs, _ = await _read_all(ep)
    assert evs[0]["type"] == "connected" and evs[-1]["type"] == DISCONNECTED
    assert "\n" not in evs[-1].get("error", "")
    fold(evs)  # and whatever it yielded folds


@pytest.mark.parametrize("batches", [False, True])
async def test_client_giant_line_is_one_clear_line_and_bounded(batches: bool) -> None:
    rss0, _ = proc_usage()
    async with fake_app(_hello() + b'{"type":"x","t":1,"pad":"' + b"a" * (8 * MiB)) as ep:
        evs, _ = await _read_all(ep, batches)
    assert evs[-1]["type"] == DISCONNECTED
    assert evs[-1]["error"] == "a line over 1 MiB; connection closed"
    assert proc_usage()[0] - rss0 < 48 * MiB


@pytest.mark.parametrize("batches", [False, True])
async def test_client_truncated_stream_says_so(batches: bool) -> None:
    async with fake_app(_hello() + b'{"type":"state","t":1,"pool":"p","si') as ep:
        evs, _ = await _read_all(ep, batches)
    assert [e["type"] for e in evs] == ["connected", "hello", DISCONNECTED]
    assert evs[-1]["error"] == "stream ended mid-line"


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        (PROTOCOL_VERSION + 1, f"protocol version {PROTOCOL_VERSION + 1} from the future; "),
        (99, "protocol version 99 from the future; "),
        ("1", "hello without a valid protocol version; "),
        (None, "hello without a valid protocol version; "),
    ],
)
@pytest.mark.parametrize("batches", [False, True])
async def test_client_refuses_a_protocol_it_does_not_speak(
    protocol: Any, message: str, batches: bool
) -> None:
    later = encode({"type": "acquire", "t": 2.0, "pool": "p", "conn": "1", "wait": 0, "site": 1})
    async with fake_app(_hello(protocol) + later) as ep:
        evs, client = await _read_all(ep, batches)
    expected = message + f"this poolscope speaks {PROTOCOL_VERSION}"
    assert [e["type"] for e in evs] == ["connected", DISCONNECTED]  # nothing of it folded
    assert evs[-1]["error"] == expected and evs[-1]["incompatible"] is True
    assert client.stats.last_error == expected


@SOCKET_FUZZ
@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30),
    st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")),
)
async def test_batches_carry_every_complete_line_as_it_came(
    lines: list[bytes], cuts: list[int], tail: bytes
) -> None:
    """Batch mode (``poolscope record``): after the hello, the complete lines exactly as
    sent, however the writes split them, counted; an unfinished tail is dropped and
    said so."""
    body = b"".join(line + b"\n" for line in lines)
    payload = _hello() + body + tail
    pieces, at = [], 0
    for n in itertools.cycle(cuts):
        if at >= len(payload):
            break
        pieces.append(payload[at : at + n])
        at += n
    async with fake_app(pieces) as ep:
        evs, client = await _read_all(ep, batches=True)
    assert [e["type"] for e in evs[:2]] == ["connected", "hello"]
    batches = [e for e in evs if e["type"] == LINES]
    assert b"".join(e["_lines"] for e in batches) == body
    assert sum(e["count"] for e in batches) == len(lines)
    assert all(e["_lines"].endswith(b"\n") for e in batches)
    assert evs[-1]["type"] == DISCONNECTED
    assert evs[-1]["error"] == ("stream ended mid-line" if tail else "closed by the application")
    assert client.stats.lines == len(lines) + 1


async def test_record_exits_1_with_one_line_on_a_future_protocol(tmp_path: Path) -> None:
    async with fake_app(_hello(PROTOCOL_VERSION + 1), linger=30) as ep:
        proc = await asyncio.create_subprocess_exec(
            *POOLSCOPE,
            "record",
            str(ep),
            "-o",
            str(tmp_path / "x.ndjson"),
            "--duration",
            "20",
            stderr=subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1
    assert lines == [
        f"poolscope: cannot record {ep}: protocol version {PROTOCOL_VERSION + 1} from the "
        f"future; this poolscope speaks {PROTOCOL_VERSION}"
    ]


async def test_sync_contradicted_by_the_live_stream_end_to_end() -> None:
    claim = {
        "pools": {
            "p": {
                "name": "p",
                "gauges": {"size": 9, "in_use": 9, "idle": 0},
                "counters": {"acquires": 100, "releases": 50},
                "holders": [{"conn": "a", "since": 1.0}, {"conn": "b", "since": 1.0}],
            }
        },
        "leaks": [{"pool": "p", "conn": "a", "t": 1.0, "held": "NaN", "stack": "bogus"}],
    }
    stream = b"".join(
        [
            _hello(),
            encode({"type": "sync", "t": 2.0, "state": claim}),
            encode({"type": "release", "t": 3.0, "pool": "p", "conn": "zz", "hold": -5}),
            encode({"type": "close", "t": 3.0, "pool": "p", "conn": "a", "reason": "lost"}),
            encode({"type": "release", "t": 3.0, "pool": "p", "conn": "b", "hold": 1}),
            encode({"type": "state", "t": 4.0, "pool": "p", "size": 2, "idle": 2, "in_use": 0}),
        ]
    )
    async with fake_app(stream) as ep:
        evs, _ = await _read_all(ep)
    state = fold(evs)
    p = state.pools["p"]
    assert (p.size, p.in_use, p.idle) == (2, 0, 2)
    assert p.holders == {} and state.leaks == {}
    assert [lk.resolution for lk in state.resolved_leaks] == ["closed:lost"]
    # The release with hold=-5 is refused at decode (a negative duration is no event's),
    # so only b's release counts on top of the sync's 50.
    assert p.releases == 51


# -- recordings: corrupt, truncated, giant, from the future -----------------------------


def _good(n: int, t0: float = 1.0) -> list[bytes]:
    return [
        encode({"type": "acquire", "t": t0 + i, "pool": "p", "conn": str(i), "wait": 0.0})
        for i in range(n)
    ]


def test_filefeed_reads_past_corrupt_lines_and_says_where_truncation_stopped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rec.ndjson"
    body = [_hello(), *_good(3), b"{not json\n", b"\xff\xfe\xfd\n", *_good(2, 10.0)]
    path.write_bytes(b"".join(body) + b'{"type":"acquire","t":20.0,"po')
    feed = FileFeed(path)
    evs = list(feed)
    assert [e["type"] for e in evs] == ["hello"] + ["acquire"] * 5
    assert feed.bad_lines == 3 and feed.first_bad_line == 5
    assert feed.stopped.startswith("truncated at line 9: ")
    assert "\n" not in feed.stopped


def test_filefeed_skips_a_giant_line_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "giant.ndjson"
    with open(path, "wb") as f:
        f.write(b"".join(_good(2)))
        f.write(b'{"type":"x","t":1,"pad":"')
        for _ in range(64):
            f.write(b"a" * MiB)
        f.write(b'"}\n')
        f.write(b"".join(_good(2, 5.0)))
    rss0, _ = proc_usage()
    feed = FileFeed(path)
    evs = list(feed)
    assert len(evs) == 4 and feed.bad_lines == 1 and feed.first_bad_line == 3
    assert proc_usage()[0] - rss0 < 24 * MiB
    os.unlink(path)


def test_filefeed_stops_at_a_recording_from_the_future(tmp_path: Path) -> None:
    path = tmp_path / "future.ndjson"
    path.write_bytes(b"".join([*_good(2), _hello(PROTOCOL_VERSION + 1), *_good(2, 9.0)]))
    feed = FileFeed(path)
    assert len(list(feed)) == 2
    assert feed.stopped == (
        f"stopped at line 3: protocol version {PROTOCOL_VERSION + 1} from the future; "
        f"this poolscope speaks {PROTOCOL_VERSION}"
    )


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_filefeed_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fz") / "r.ndjson"
    path.write_bytes(data)
    feed = FileFeed(path)
    evs = list(feed)
    fold(evs)
    assert feed.lines <= data.count(b"\n") + 1
    assert "\n" not in feed.stopped


def test_filefeed_on_a_directory_or_missing_file_says_one_line(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.ndjson"):
        feed = FileFeed(path)
        with pytest.raises(OSError):
            list(feed)
        assert feed.stopped and "\n" not in feed.stopped


def test_json_module_is_the_only_parser() -> None:
    """Decoding goes through json (no eval fallback): a Python literal is rejected."""
    from poolscope.events import DecodeError, decode

    with pytest.raises(DecodeError):
        decode(b"{'type': 'hello', 't': 1}")
    assert json.loads(encode({"type": "x", "t": 1})) == {"type": "x", "t": 1}


def test_replay_source_over_a_corrupt_recording_says_where_it_stopped(tmp_path: Path) -> None:
    from poolscope.tui.data import ReplaySource

    path = tmp_path / "rec.ndjson"
    path.write_bytes(
        b"".join([_hello(), *_good(3), b"\x00\x01garbage\n", *_good(2, 9.0)]) + b'{"ty'
    )
    source = ReplaySource(path)
    assert sum(e["type"] == "acquire" for e in source.events) == 5
    assert source.stopped_reading.startswith("read 8 lines; truncated at line 8")
    assert "\n" not in source.stopped_reading


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02 not a recording at all\n\xff\xfe", b'{"type":"hello","t":1,"proto', b""],
)
def test_replay_command_with_nothing_readable_is_one_line_exit_1(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_bytes(content)
    proc = subprocess.run(
        [*POOLSCOPE, "replay", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no readable events" in lines[0], proc.stderr
    if content.startswith(b'{"type":"hello"'):
        assert "truncated at line 1" in lines[0]
