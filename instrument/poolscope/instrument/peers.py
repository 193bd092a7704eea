"""Who is on the other end of a loopback TCP connection: the peer socket's owner uid.

Loopback TCP needs no token, so without this any local user could read the stream
(stacks, source lines, task names, argv). On Linux the kernel lists every TCP
socket with its owner in ``/proc/net/tcp`` and ``/proc/net/tcp6``: the peer's
socket is the line whose local address is the peer's address and whose remote
address is ours. Elsewhere the OS does not tell, and :func:`peer_uids` returns
``None`` (the limit is documented in docs/security.md).

One read of the table serves every connection accepted in a tick, and the lines
are found with ``bytes.find`` rather than parsed one by one: with thousands of
sockets in TIME_WAIT the table is large.
"""

from __future__ import annotations

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


def peer_uids(
    family: int, ours: tuple[str, int], peers: list[tuple[str, int]]
) -> list[int | None] | None:
    """The owner uid of each peer connected to our address ``ours`` (None where its
    socket is not found, e.g. it is already closed); None when this OS does not tell."""
    if not sys.platform.startswith("linux") or family not in _TABLES:
        return None
    table = _read_table(_TABLES[family])
    if table is None:
        return None
    try:
        remote = _hex_address(family, ours[0], ours[1])
        return [_uid_in(table, _hex_address(family, p[0], p[1]), remote) for p in peers]
    except (OSError, ValueError, struct.error):
        return [None] * len(peers)
