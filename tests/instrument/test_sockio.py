"""The stream server's socket calls: the GIL-keeping ones (Linux, ctypes) do exactly
what the socket module's do, on real loopback sockets."""

from __future__ import annotations

import socket
import sys

import pytest

from poolscope.instrument import sockio

IMPLS = [sockio.Plain]
if sys.platform.startswith("linux"):
    IMPLS.append(sockio.KeepGil)


@pytest.mark.fast
@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.name)
def test_accept_send_recv_close(impl: type[sockio.Plain | sockio.KeepGil]) -> None:
    io = impl()
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.setblocking(False)
        with pytest.raises(BlockingIOError):
            io.accept(lsock)  # nobody yet
        client = socket.create_connection(lsock.getsockname(), timeout=5)
        try:
            conn, addr = io.accept(lsock)
            assert addr[:2] == client.getsockname()[:2]
            assert io.local_address(conn)[:2] == lsock.getsockname()[:2]
            with pytest.raises(BlockingIOError):
                io.recv(conn, 100)  # nothing sent yet
            # Several chunks in one call, the first one partly sent already.
            sent = io.send(conn, [b"XXhello ", b"world", b"\n"], 2)
            assert sent == len(b"hello world\n")
            got = b""
            while len(got) < sent:
                got += client.recv(100)
            assert got == b"hello world\n"
            client.sendall(b"from the peer\n")
            client.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                try:
                    chunk = io.recv(conn, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                data += chunk
            assert data == b"from the peer\n"
            fd = conn.fileno()
            io.close(conn)
            assert conn.fileno() == -1
            with pytest.raises(OSError):
                socket.socket(fileno=fd).close()  # the descriptor is really closed
        finally:
            client.close()


@pytest.mark.fast
def test_the_choice_is_made_once_and_can_be_the_plain_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sockio, "_chosen", None)
    monkeypatch.setenv("POOLSCOPE_PLAIN_IO", "1")
    assert isinstance(sockio.choose(), sockio.Plain)
    assert sockio.choose() is sockio.choose()
