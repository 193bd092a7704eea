"""Non-blocking socket calls for the stream server, made without releasing the GIL.

Why: CPython releases the GIL around every socket call. When the application's
thread is CPU-bound it takes the GIL at once, and the background thread waits up to
a switch interval (5 ms) to get it back - after *every* accept, send, recv and
close. A storm of connections then costs seconds per tick. These calls never
block (the sockets are non-blocking, ``MSG_DONTWAIT``, no ``SO_LINGER``), so on
Linux they are made through ``ctypes.PyDLL``, which keeps the GIL: a few
microseconds each, whatever the application does.

:func:`choose` gives the implementation in use: :class:`KeepGil` on Linux with ctypes,
:class:`Plain` (the ``socket`` methods) elsewhere or when ``POOLSCOPE_PLAIN_IO=1``.
Both raise ``BlockingIOError`` for "would block" and ``OSError`` for the rest.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
#: Buffers handed to one ``sendmsg`` (Plain) or sent in a row (KeepGil).
MAX_IOV = 64

Address = Any


class Plain:
    """The socket module's own calls (they release the GIL)."""

    name = "plain"

    def accept(self, lsock: socket.socket) -> tuple[socket.socket, Address]:
        conn, addr = lsock.accept()
        conn.setblocking(False)
        return conn, addr

    def recv(self, sock: socket.socket, n: int) -> bytes:
        return sock.recv(n)

    def send(self, sock: socket.socket, chunks: list[bytes], offset: int) -> int:
        bufs: list[bytes | memoryview] = [memoryview(chunks[0])[offset:] if offset else chunks[0]]
        bufs += chunks[1:MAX_IOV]
        if len(bufs) == 1 or not hasattr(sock, "sendmsg"):
            return sock.send(bufs[0], _NOSIGNAL)
        return sock.sendmsg(bufs, [], _NOSIGNAL)

    def local_address(self, sock: socket.socket) -> Address:
        return sock.getsockname()

    def close(self, sock: socket.socket) -> None:
        sock.close()


class KeepGil:
    """libc's accept4/recv/send/getsockname/close through ctypes.PyDLL (Linux)."""

    name = "keep-gil"

    def __init__(self) -> None:
        import ctypes

        self._ct = ctypes
        libc = ctypes.PyDLL(None, use_errno=True)
        c_int, c_void_p, c_size_t, c_ssize_t = (
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_ssize_t,
        )
        self._accept4 = libc.accept4
        self._accept4.argtypes = [c_int, c_void_p, c_void_p, c_int]
        self._accept4.restype = c_int
        self._recv = libc.recv
        self._recv.argtypes = [c_int, c_void_p, c_size_t, c_int]
        self._recv.restype = c_ssize_t
        self._send = libc.send
        self._send.argtypes = [c_int, c_void_p, c_size_t, c_int]
        self._send.restype = c_ssize_t
        self._getsockname = libc.getsockname
        self._getsockname.argtypes = [c_int, c_void_p, c_void_p]
        self._getsockname.restype = c_int
        self._close = libc.close
        self._close.argtypes = [c_int]
        self._close.restype = c_int
        self._buf = ctypes.create_string_buffer(1 << 16)
        self._addr = ctypes.create_string_buffer(128)
        self._addrlen = ctypes.c_uint32(0)
        self._flags = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC

    def _fail(self) -> OSError:
        err = self._ct.get_errno()
        if err in (11, 115):  # EAGAIN/EWOULDBLOCK, EINPROGRESS
            return BlockingIOError(err, os.strerror(err))
        if err == 4:  # EINTR
            return InterruptedError(err, os.strerror(err))
        return OSError(err, os.strerror(err))

    def _sockaddr(self) -> Address:
        raw = self._addr.raw[: self._addrlen.value]
        family = struct.unpack_from("=H", raw)[0] if len(raw) >= 2 else 0
        if family == socket.AF_INET and len(raw) >= 8:
            port = struct.unpack_from("!H", raw, 2)[0]
            return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
        if family == socket.AF_INET6 and len(raw) >= 28:
            port, flow = struct.unpack_from("!HI", raw, 2)
            scope = struct.unpack_from("=I", raw, 24)[0]
            return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
        return ""  # AF_UNIX: no name worth showing

    def accept(self, lsock: socket.socket) -> tuple[socket.socket, Address]:
        ct = self._ct
        self._addrlen.value = len(self._addr)
        fd = self._accept4(
            lsock.fileno(), ct.addressof(self._addr), ct.addressof(self._addrlen), self._flags
        )
        if fd < 0:
            raise self._fail()
        addr = self._sockaddr()
        try:
            # Family, type and protocol given: the constructor asks the kernel nothing.
            conn = socket.socket(lsock.family, socket.SOCK_STREAM, lsock.proto, fileno=fd)
        except BaseException:
            self._close(fd)
            raise
        return conn, addr

    def recv(self, sock: socket.socket, n: int) -> bytes:
        ct = self._ct
        buf = self._buf
        got = self._recv(sock.fileno(), ct.addressof(buf), min(n, len(buf)), _DONTWAIT)
        if got < 0:
            raise self._fail()
        data: bytes = ct.string_at(ct.addressof(buf), got)
        return data

    def send(self, sock: socket.socket, chunks: list[bytes], offset: int) -> int:
        ct = self._ct
        fd = sock.fileno()
        total = 0
        for i, data in enumerate(chunks[:MAX_IOV]):
            start = offset if i == 0 else 0
            size = len(data) - start
            if size <= 0:
                continue
            # The bytes object's own buffer (CPython never moves it); it stays referenced
            # by the caller's queue for the duration of the call.
            base = ct.cast(data, ct.c_void_p).value
            assert base is not None
            sent = self._send(fd, base + start, size, _DONTWAIT | _NOSIGNAL)
            if sent < 0:
                if total:
                    return total
                raise self._fail()
            total += sent
            if sent < size:
                break
        return total

    def local_address(self, sock: socket.socket) -> Address:
        ct = self._ct
        self._addrlen.value = len(self._addr)
        if self._getsockname(sock.fileno(), ct.addressof(self._addr), ct.addressof(self._addrlen)):
            raise self._fail()
        return self._sockaddr()

    def close(self, sock: socket.socket) -> None:
        try:
            fd = sock.detach()
        except OSError:
            return
        if fd >= 0:
            self._close(fd)


_chosen: Plain | KeepGil | None = None


def choose() -> Plain | KeepGil:
    """The implementation for this process (chosen once, when a server first starts:
    ``import poolscope.instrument`` does not import ctypes)."""
    global _chosen
    if _chosen is None:
        if os.environ.get("POOLSCOPE_PLAIN_IO") == "1" or not sys.platform.startswith("linux"):
            _chosen = Plain()
        else:
            try:
                _chosen = KeepGil()
            except Exception:  # no ctypes, no libc symbol: the portable calls
                _chosen = Plain()
    return _chosen
