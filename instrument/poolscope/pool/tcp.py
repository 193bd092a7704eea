"""TCP connections for the reference pool, over asyncio streams with keep-alive.

The wire format is the demo database's: a request is one line, the answer is one
line. ``factory(host, port)`` makes connections; ``ping`` checks one.

A request that fails or times out leaves the line protocol out of step (an
answer may still arrive), so the connection marks itself broken and ``ping``
fails on it at once: the pool then closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable


class TcpConnection:
    """One TCP connection speaking a line-per-request protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.opened = time.monotonic()
        self.broken = False

    async def request(self, line: str, timeout: float | None = 30.0) -> str:
        """Send one request line and wait for its one-line answer (all within ``timeout``)."""
        try:
            answer = await asyncio.wait_for(self._exchange(line.encode() + b"\n"), timeout)
        except BaseException:
            self.broken = True
            raise
        if not answer:
            self.broken = True
            raise ConnectionResetError("the server closed the connection")
        return answer.decode().rstrip("\n")

    async def _exchange(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reader.readline()

    @property
    def is_closed(self) -> bool:
        return self.broken or self.writer.is_closing() or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass

    def __del__(self) -> None:
        # Dropped without close() (e.g. leaked and garbage-collected while checked
        # out of a pool): do not keep the socket open until the loop notices.
        with contextlib.suppress(Exception):
            transport = self.writer.transport
            if not transport.is_closing():
                transport.abort()


def factory(
    host: str,
    port: int,
    *,
    connect_timeout: float = 5.0,
    keepalive: bool = True,
) -> Callable[[], Awaitable[TcpConnection]]:
    """A factory of :class:`TcpConnection` to ``host:port`` for ``Pool(factory, ...)``.

    With ``keepalive`` the kernel probes a silent peer (after 10 s idle, every 5 s,
    3 probes), so a connection to a vanished host errors instead of hanging.
    """
    if connect_timeout <= 0:
        raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")

    async def connect() -> TcpConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout
        )
        sock = writer.get_extra_info("socket")
        if keepalive and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        return TcpConnection(reader, writer)

    return connect


async def ping(conn: TcpConnection, timeout: float = 1.0) -> None:
    """Raise if the peer has closed or does not answer ``PING`` within ``timeout``.

    Never blocks longer than ``timeout``, also when the peer stopped reading.
    """
    if conn.is_closed:
        raise ConnectionResetError("connection closed by the peer")
    answer = await conn.request("PING", timeout=timeout)
    if answer != "PONG":
        conn.broken = True
        raise ConnectionError(f"unexpected answer to PING: {answer[:40]!r}")
