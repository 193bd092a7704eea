"""Who may connect: loopback by default, remote only with opt-in and a token checked in
constant time before anything is sent, Unix sockets 0600 in a 0700 directory."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.client import StreamClient
from poolscope.endpoint import Endpoint, parse_endpoint
from poolscope.events import encode
from poolscope.instrument import runtime as runtime_module
from poolscope.instrument import server as server_module
from tests.fixtures.faults import make_pool

TOKEN = "s3cret-token-\u00e9"


def _bound_host(rt: runtime_module.Runtime) -> str:
    assert rt.server is not None and rt.server.sockets
    return str(rt.server.sockets[0].getsockname()[0])


def _exchange(port: int, first: bytes | None, wait: float = 1.0) -> bytes:
    """Connect, send ``first`` (if any), and return everything the server sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        if first is not None:
            s.sendall(first)
        data = b""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b'"type":"hello"' in data:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return data


def test_default_listen_is_loopback(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOLSCOPE_LISTEN", raising=False)
    ep = fresh_runtime.serve()
    assert ep.is_loopback and ep.host == "127.0.0.1"
    assert _bound_host(fresh_runtime) == "127.0.0.1"


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:0", "[::]:0", "192.0.2.7:0", "127.attacker.example:0", "localhost.x:0"]
)
def test_non_loopback_is_refused_without_opt_in_and_token(
    listen: str, fresh_runtime: runtime_module.Runtime
) -> None:
    for kwargs in ({}, {"allow_remote": True}, {"token": TOKEN}):
        with pytest.raises(ValueError, match="non-loopback"):
            fresh_runtime.serve(listen, **kwargs)  # type: ignore[arg-type]
    assert fresh_runtime.server is None


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:0", "[::1]:0", "127.0.0.9:0"])
def test_loopback_spellings_are_loopback(listen: str) -> None:
    assert parse_endpoint(listen).is_loopback


def test_instrument_with_refused_listen_keeps_the_app_running(
    fresh_runtime: runtime_module.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """$POOLSCOPE_LISTEN=0.0.0.0:... must not crash an application at start."""
    monkeypatch.setenv("POOLSCOPE_LISTEN", "0.0.0.0:0")
    monkeypatch.delenv("POOLSCOPE_TOKEN", raising=False)
    caplog.set_level(logging.WARNING, logger="poolscope")
    pool = ps.instrument(make_pool())
    assert pool is not None and fresh_runtime.server is None
    assert any("non-loopback" in r.getMessage() for r in caplog.records)


def test_remote_listen_with_token_requires_the_token_first(
    fresh_runtime: runtime_module.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_module.hmac, "compare_digest", spy)
    ep = fresh_runtime.serve("0.0.0.0:0", allow_remote=True, token=TOKEN)
    assert _bound_host(fresh_runtime) == "0.0.0.0"
    auth = {"type": "auth", "token": TOKEN}
    cases: list[tuple[bytes | None, bool]] = [
        (encode(auth), True),
        (encode({**auth, "token": TOKEN + "x"}), False),
        (encode({**auth, "token": ""}), False),
        (encode({**auth, "token": 12345}), False),
        (encode({"type": "hello", "t": 1.0, "token": TOKEN}), False),  # not an auth line
        (b"not json at all\n", False),
        (b"\xff\xfe\x00garbage\n", False),
        (b'{"type":"auth","token":"' + b"x" * (2 << 20) + b'"}\n', False),  # over the line limit
    ]
    for first, ok in cases:
        data = _exchange(ep.port, first)
        if ok:
            assert b'"type":"hello"' in data
        else:
            # Refused before anything is said: no hello, no state.
            assert data == b"", (first or b"")[:60]
    assert compared, "the token was not compared with hmac.compare_digest"
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in compared)


def test_token_holder_waiting_sees_nothing_before_auth(
    fresh_runtime: runtime_module.Runtime,
) -> None:
    ep = fresh_runtime.serve("127.0.0.1:0", token=TOKEN)
    with (
        socket.create_connection(("127.0.0.1", ep.port), timeout=0.5) as s,
        pytest.raises(TimeoutError),
    ):
        s.recv(1)  # silence until the first line arrives


async def test_stream_client_authenticates(fresh_runtime: runtime_module.Runtime) -> None:
    ep = fresh_runtime.serve("127.0.0.1:0", token=TOKEN)
    client = StreamClient(Endpoint("127.0.0.1", ep.port), token=TOKEN, reconnect=False)
    types = []
    async for ev in client.events():
        types.append(ev["type"])
        if ev["type"] == "sync":
            break
    client.close()
    assert types == ["connected", "hello", "sync"]


def test_unix_socket_is_0600_in_a_0700_directory(
    fresh_runtime: runtime_module.Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "new" / "dir" / "poolscope.sock"
    # A stale socket of a dead process at that path is replaced.
    path.parent.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    ep = fresh_runtime.serve(f"unix:{path}")
    assert ep.path == str(path)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700

    async def first_two() -> list[str]:
        client = StreamClient(ep, reconnect=False)
        out = []
        async for ev in client.events():
            out.append(ev["type"])
            if len(out) == 3:
                break
        client.close()
        return out

    assert asyncio.run(first_two()) == ["connected", "hello", "sync"]


def test_unix_socket_directory_is_created_0700(
    fresh_runtime: runtime_module.Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "made" / "by" / "poolscope" / "s.sock"
    old = os.umask(0o022)
    try:
        fresh_runtime.serve(f"unix:{path}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
