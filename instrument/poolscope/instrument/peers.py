"""Who is on the other end of a loopback TCP connection: the peer socket's owner uid.

Loopback TCP needs no token, so without this any local user could read the stream
(stacks, source lines, task names, argv). On Linux the kernel knows every TCP
socket's owner. It is asked through ``NETLINK_SOCK_DIAG`` (what ``ss`` uses; no
privilege needed): one exact lookup per peer, by its address and ours, all the
connections of a tick in one send - microseconds, however many sockets the machine
has. If netlink is not there, ``/proc/net/tcp{,6}`` is read instead (the peer's
socket is the line whose local address is the peer's and whose remote address is
ours). Elsewhere the OS does not tell, and :func:`peer_uids` returns ``None`` (the
limit is documented in docs/security.md).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

_TABLES: dict[int, str] = {
    int(socket.AF_INET): "/proc/net/tcp",
    int(socket.AF_INET6): "/proc/net/tcp6",
}
#: Most of the table read per lookup (a machine with a million sockets is not read whole).
MAX_TABLE_BYTES = 64 << 20


def _hex_address(family: int, host: str, port: int) -> bytes:
    """The kernel's spelling of an address in /proc/net/tcp{,6}: each 32-bit word of
    the address in host byte order as %08X, then ``:%04X`` of the port."""
    if family == socket.AF_INET:
        words: tuple[int, ...] = struct.unpack("=I", socket.inet_pton(socket.AF_INET, host))
    else:
        words = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, host.split("%")[0]))
    return ("".join(f"{w:08X}" for w in words) + f":{port:04X}").encode()


def _read_table(path: str) -> bytes | None:
    try:
        with open(path, "rb", buffering=0) as f:
            chunks: list[bytes] = []
            total = 0
            while total < MAX_TABLE_BYTES:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            return b"".join(chunks)
    except OSError:
        return None


def _uid_in(table: bytes, local: bytes, remote: bytes) -> int | None:
    """The uid on the line ``<sl>: LOCAL REMOTE st tx:rx tr:when retrnsmt uid timeout
    inode ...`` of a live socket (inode not 0: TIME_WAIT entries belong to nobody)."""
    needle = b" " + local + b" " + remote + b" "
    at = table.find(needle)
    while at >= 0:
        end = table.find(b"\n", at)
        fields = table[at : end if end >= 0 else len(table)].split()
        # fields: local remote st tx:rx tr:when retrnsmt uid timeout inode
        if len(fields) >= 9 and fields[8] != b"0":
            try:
                return int(fields[6])
            except ValueError:
                return None
        at = table.find(needle, at + 1)
    return None


# -- netlink sock_diag ------------------------------------------------------------------
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NOCOOKIE = 0xFFFFFFFF
#: Requests per send: their answers must fit the netlink socket's receive buffer.
_BATCH = 32


class _Diag:
    """A netlink socket asking the kernel for TCP sockets by their exact addresses."""

    def __init__(self) -> None:
        from . import sockio

        self.pid = os.getpid()
        self.io = sockio.choose()
        self.sock = socket.socket(
            socket.AF_NETLINK,  # type: ignore[attr-defined,unused-ignore]
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            _NETLINK_SOCK_DIAG,
        )
        self.sock.bind((0, 0))
        self.seq = 0

    def uids(
        self, family: int, ours: tuple[str, int], peers: list[tuple[str, int]]
    ) -> list[int | None]:
        out: list[int | None] = []
        for at in range(0, len(peers), _BATCH):
            out += self._batch(family, ours, peers[at : at + _BATCH])
        return out

    def _batch(
        self, family: int, ours: tuple[str, int], peers: list[tuple[str, int]]
    ) -> list[int | None]:
        dst = socket.inet_pton(family, ours[0].split("%")[0]).ljust(16, b"\0")
        first = self.seq + 1
        reqs = []
        for host, port in peers:
            self.seq += 1
            src = socket.inet_pton(family, host.split("%")[0]).ljust(16, b"\0")
            # inet_diag_sockid of the peer's socket: its local end is the peer, its
            # remote end is us.
            sockid = struct.pack("!HH", port, ours[1]) + src + dst
            sockid += struct.pack("=III", 0, _NOCOOKIE, _NOCOOKIE)
            body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
            head = struct.pack(
                "=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, self.seq, 0
            )
            reqs.append(head + body)
        found: list[int | None] = [None] * len(peers)
        self.io.send(self.sock, [b"".join(reqs)], 0)
        answered = 0
        # The kernel answers while handling the send: every reply is queued already.
        while answered < len(peers):
            try:
                data = self.io.recv(self.sock, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            off = 0
            while off + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                i = seq - first
                if 0 <= i < len(peers) and kind in (_SOCK_DIAG_BY_FAMILY, _NLMSG_ERROR):
                    answered += 1
                    # inet_diag_msg: 4 bytes, the 48-byte sockid, expires, rqueue, wqueue,
                    # then uid and inode (0 for a socket no process owns any more).
                    if kind == _SOCK_DIAG_BY_FAMILY and length >= 16 + 72:
                        uid, inode = struct.unpack_from("=II", data, off + 16 + 64)
                        found[i] = uid if inode else None
                off += (length + 3) & ~3
        return found


_diag: _Diag | None = None
_diag_broken = False


def _netlink_uids(
    family: int, ours: tuple[str, int], peers: list[tuple[str, int]]
) -> list[int | None] | None:
    global _diag, _diag_broken
    if _diag_broken or not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        if _diag is None or _diag.pid != os.getpid():  # a forked child asks on its own
            _diag = _Diag()
        return _diag.uids(family, ours, peers)
    except (OSError, ValueError, struct.error):
        _diag_broken = True  # no netlink here (a sandbox, an old kernel): /proc then
        return None


def peer_uids(
    family: int, ours: tuple[str, int], peers: list[tuple[str, int]]
) -> list[int | None] | None:
    """The owner uid of each peer connected to our address ``ours`` (None where its
    socket is not found, e.g. it is already closed); None when this OS does not tell."""
    if not sys.platform.startswith("linux") or family not in _TABLES:
        return None
    found = _netlink_uids(family, ours, peers)
    if found is not None:
        return found
    table = _read_table(_TABLES[family])
    if table is None:
        return None
    try:
        remote = _hex_address(family, ours[0], ours[1])
        return [_uid_in(table, _hex_address(family, p[0], p[1]), remote) for p in peers]
    except (OSError, ValueError, struct.error):
        return [None] * len(peers)
