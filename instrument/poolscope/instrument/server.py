"""The stream server: NDJSON to any number of observers, each with a bounded queue.

Runs inside the runtime's tick on the background thread, with no task, future or
event per connection: the runtime calls :meth:`StreamServer.service` (accept, read
what observers sent, close the ones that left, greet this tick's arrivals with one
shared greeting) before it drains and folds, and :meth:`StreamServer.deliver` (one
send per observer) after. One ``poll`` tells which sockets need attention. When the
application's thread is CPU-bound every call that releases the GIL can cost the
background thread a full switch interval, so the server makes few such calls (one
``poll`` a tick) and makes its socket calls through :mod:`.sockio`, which on Linux
keeps the GIL for calls that cannot block.

A slow observer loses its oldest lines, never the application's memory or time; the
loss is counted and announced to that observer as a ``dropped`` event. One that
reads nothing for ``stall_timeout`` seconds with a full queue is closed. Observers
are capped (``max_observers``), so are connections still owing their token
(``max_pending``), and the server never takes the application's last file
descriptors (:class:`~.limits.FdBudget`). Loopback TCP peers of another user are
refused where the OS tells who they are (:mod:`.peers`).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import os
import select
import socket
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from poolscope.endpoint import Endpoint
from poolscope.events import MAX_LINE_BYTES, DecodeError, decode, encode

from . import discovery, errors, peers, sockio
from .limits import FdBudget, RefusalLog

log = logging.getLogger("poolscope")

#: Lines queued for one observer before its oldest are dropped (~ a few MiB).
OBSERVER_QUEUE = 20_000
#: Observers served at once; more are refused at accept time ($POOLSCOPE_MAX_OBSERVERS).
MAX_OBSERVERS = 64
#: Connections still owing their token; more are refused at accept time.
MAX_PENDING = 16
#: Seconds an observer with a full queue may read nothing before it is closed.
STALL_TIMEOUT = 60.0
#: Seconds an observer may take nothing and still hold the drain back for it.
LAG_GRACE = 5.0
#: Seconds a connection has to send its token line.
AUTH_TIMEOUT = 5.0
#: Most bytes an auth line may have.
MAX_AUTH_BYTES = 64 << 10
#: Connections accepted (or refused) per tick; the rest wait in the listen backlog.
MAX_ACCEPT_PER_TICK = 256
#: Bytes read from one observer per tick (observers send next to nothing).
READ_PER_TICK = 256 << 10
#: Chunks handed to one send.
MAX_IOV = sockio.MAX_IOV
LISTEN_BACKLOG = 128

_DROPPED_PREFIX = b'{"type":"dropped"'
# accept() failures that mean "out of descriptors or memory": stop for this tick.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _dropped_count(line: bytes) -> int:
    try:
        count = json.loads(line).get("count")
    except Exception:
        return 1
    return count if isinstance(count, int) and count > 0 else 1


def _cost(lines: list[bytes], blob: bytes) -> int:
    """What losing these lines costs in the ``dropped`` tally: one per line, except a
    ``dropped`` line (the recorder's own losses), which carries its count along."""
    n = len(lines)
    if _DROPPED_PREFIX not in blob:
        return n
    for line in lines:
        if line.startswith(_DROPPED_PREFIX):
            n += _dropped_count(line) - 1
    return n


class _Queue:
    """Chunks of NDJSON waiting for one observer, oldest first. Each chunk is a whole
    number of lines, shared by every observer it was broadcast to:
    ``(data, lines, cost if dropped, keep)``. ``len()`` is the number of lines."""

    __slots__ = ("chunks", "lines", "offset")

    def __init__(self) -> None:
        self.chunks: deque[tuple[bytes, int, int, bool]] = deque()
        self.lines = 0
        self.offset = 0  # bytes of the first chunk already sent

    def __len__(self) -> int:
        return self.lines

    def __bool__(self) -> bool:
        return bool(self.chunks)


class Observer:
    """One connected observer: its socket, its queue, what it owes and has sent us."""

    def __init__(self, sock: socket.socket, peer: str, capacity: int, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.queue = _Queue()
        self.capacity = capacity
        self.dropped = 0
        self.closed = False
        self.inbuf = bytearray()
        #: Last time the peer took bytes (or had nothing waiting): a stall is measured from it.
        self.progress = now
        #: Lines were dropped for it since it last took bytes: it is behind even when
        #: the drops emptied its queue (a tick's batch can outsize a small queue).
        self.behind = False

    def put(self, lines: list[bytes], blob: bytes | None = None, *, keep: bool = False) -> None:
        """Queue ``lines`` (``blob`` is their concatenation when the caller has it);
        beyond the capacity, whole chunks are dropped oldest first and counted."""
        data = b"".join(lines) if blob is None else blob
        n = len(lines)
        q = self.queue
        q.chunks.append((data, n, _cost(lines, data), keep))
        q.lines += n
        if q.lines > self.capacity:
            self._drop()

    def _drop(self) -> None:
        q = self.queue
        chunks = q.chunks
        kept: list[tuple[bytes, int, int, bool]] = []
        if q.offset and chunks:  # partly sent: the rest of it ends a line already begun
            kept.append(chunks.popleft())
        while q.lines > self.capacity and chunks:
            chunk = chunks.popleft()
            if chunk[3]:  # the greeting: without it the stream means nothing
                kept.append(chunk)
                continue
            q.lines -= chunk[1]
            self.dropped += chunk[2]
            self.behind = True
        chunks.extendleft(reversed(kept))


class _Waiting:
    """A connection that has not sent its token line yet."""

    __slots__ = ("deadline", "inbuf", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.inbuf = bytearray()


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        log.warning("poolscope: ignoring %s=%r (not an integer)", name, raw)
        return None
    return value if value > 0 else None


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class StreamServer:
    def __init__(
        self,
        greeting: Callable[[], list[bytes]],
        *,
        token: str | None = None,
        queue_capacity: int | None = None,
        max_observers: int | None = None,
        max_pending: int | None = None,
        allow_other_users: bool | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        self._greeting = greeting
        self._token = token
        # Read at construction, not at import, so they can be tuned before serving.
        self._capacity = queue_capacity if queue_capacity is not None else OBSERVER_QUEUE
        self.max_observers = max_observers or _env_int("POOLSCOPE_MAX_OBSERVERS") or MAX_OBSERVERS
        self.max_pending = max_pending or MAX_PENDING
        if allow_other_users is None:
            allow_other_users = os.environ.get("POOLSCOPE_ALLOW_OTHER_USERS", "") == "1"
        self.allow_other_users = allow_other_users
        self.stall_timeout = STALL_TIMEOUT if stall_timeout is None else stall_timeout
        self.observers: set[Observer] = set()
        self.endpoint: Endpoint | None = None
        self.bad_lines = 0
        self.refusals = RefusalLog()
        self.fds = FdBudget()
        self._listeners: list[socket.socket] = []
        self._waiting: dict[int, _Waiting] = {}
        self._arrived: list[Observer] = []  # checked, greeted at the end of this tick
        self._by_fd: dict[int, socket.socket | _Waiting | Observer] = {}
        self._poll: Any = select.poll() if hasattr(select, "poll") else None
        self._uid = os.geteuid() if hasattr(os, "geteuid") else None
        self._io = sockio.choose()

    # -- listening ---------------------------------------------------------------
    async def start(self, endpoint: Endpoint, *, fallback: bool = True) -> Endpoint:
        """Listen on ``endpoint``; if its port is taken and ``fallback``, on a free port."""
        if endpoint.path is not None:
            self._listen([await self._start_unix(endpoint.path)])
            self.endpoint = endpoint
            return endpoint
        try:
            socks = _bind_tcp(endpoint.host, endpoint.port)
        except OSError as exc:
            if not fallback or endpoint.port == 0:
                raise
            log.warning(
                "poolscope: %s is taken (%s); listening on a free port instead", endpoint, exc
            )
            socks = _bind_tcp(endpoint.host, 0)
        self._listen(socks)
        port = socks[0].getsockname()[1]
        self.endpoint = Endpoint(host=endpoint.host, port=int(port))
        return self.endpoint

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return list(self._listeners)

    def _listen(self, socks: list[socket.socket]) -> None:
        for sock in socks:
            self._listeners.append(sock)
            self._watch(sock.fileno(), sock)

    async def _start_unix(self, path: str) -> socket.socket:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        # Another user's directory (or one they can write to) could swap in their socket.
        discovery.check_socket_dir(path)
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            # A stale socket from a previous run: nobody answers on it.
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)
            else:
                raise OSError(f"{path} is in use by another process")
            finally:
                probe.close()
        # Bind inside a fresh private (0700) directory, make the socket 0600, then move
        # it into place: nobody else can connect in between, and the process-wide
        # umask - which the application's other threads rely on - is never touched.
        private = tempfile.mkdtemp(prefix=".poolscope-", dir=d)
        staged = os.path.join(private, "s")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(staged)
            os.chmod(staged, 0o600)
            os.rename(staged, path)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        finally:
            try:
                os.unlink(staged)
            except OSError:
                pass
            os.rmdir(private)
        return sock

    # -- bookkeeping -------------------------------------------------------------
    def _watch(self, fd: int, obj: socket.socket | _Waiting | Observer) -> None:
        self._by_fd[fd] = obj
        if self._poll is not None:
            self._poll.register(fd, select.POLLIN)

    def _unwatch(self, fd: int) -> None:
        if self._by_fd.pop(fd, None) is not None and self._poll is not None:
            try:
                self._poll.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _ready(self) -> list[int]:
        """The descriptors with something to read (or a hang-up): one system call."""
        if not self._by_fd:
            return []
        try:
            if self._poll is not None:
                return [fd for fd, _ in self._poll.poll(0)]
            readable, _, _ = select.select(list(self._by_fd), [], [], 0)
            return list(readable)
        except (OSError, ValueError):
            return []

    def _close_sock(self, sock: socket.socket) -> None:
        try:
            fd = sock.fileno()
        except OSError:
            fd = -1
        if fd >= 0:
            self._unwatch(fd)
        try:
            self._io.close(sock)
        except OSError:
            pass
        self.fds.closed()

    def _refuse(self, sock: socket.socket, reason: str, now: float) -> None:
        self._close_sock(sock)
        self.refusals.note(reason, now)

    def _finish(self, ob: Observer) -> None:
        ob.closed = True
        self.observers.discard(ob)
        self._close_sock(ob.sock)

    # -- before the fan-out: accept, read, close -----------------------------------
    def service(self) -> None:
        """Accept new connections, read what observers sent, close the ones that left, and
        greet the arrivals (one greeting, built once, shared by all of them)."""
        now = time.monotonic()
        accepted: list[tuple[socket.socket, socket.socket, Any]] = []
        for fd in self._ready():
            obj = self._by_fd.get(fd)
            if isinstance(obj, Observer):
                self._read_observer(obj)
            elif isinstance(obj, _Waiting):
                self._read_token(obj, now)
            elif obj is not None:
                self._accept(obj, now, accepted)
        if accepted:
            self._admit(accepted, now)
        if self._waiting:
            for w in [w for w in self._waiting.values() if now >= w.deadline]:
                self._waiting.pop(w.sock.fileno(), None)
                self._refuse(w.sock, "sent no token in time", now)
        for ob in [ob for ob in self.observers if ob.closed]:
            self._finish(ob)
        if self._arrived:
            # Before the fan-out: their greeting is the state so far, and this tick's
            # events follow it like everyone else's.
            self._greet()
        self.refusals.tick(now)

    def _accept(
        self,
        lsock: socket.socket,
        now: float,
        accepted: list[tuple[socket.socket, socket.socket, Any]],
    ) -> None:
        room = self.fds.room(now)
        for _ in range(MAX_ACCEPT_PER_TICK):
            if room <= 0:
                # Leave them in the backlog: every descriptor left is the application's.
                self.refusals.defer("file descriptor reserve", now)
                return
            try:
                conn, addr = self._io.accept(lsock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self.refusals.defer("out of descriptors", now)
                    return
                continue  # ECONNABORTED and the like: that one is gone, try the next
            room -= 1
            self.fds.opened()
            busy = len(self.observers) + len(self._arrived) + len(accepted)
            if busy >= self.max_observers:
                self._refuse(conn, f"over the observer limit ({self.max_observers})", now)
                continue
            if self._token is not None and len(self._waiting) >= self.max_pending:
                self._refuse(conn, f"over the limit awaiting a token ({self.max_pending})", now)
                continue
            accepted.append((conn, lsock, addr))

    def _admit(self, accepted: list[tuple[socket.socket, socket.socket, Any]], now: float) -> None:
        """Check who they are (one question to the kernel for all of them), then wait
        for their token or greet them at the end of this service."""
        uids: dict[int, int] = {}
        if not self.allow_other_users and self._uid is not None:
            # By the address each was accepted on (a listener on 0.0.0.0 has many).
            groups: dict[tuple[int, str, int], list[tuple[socket.socket, Any]]] = {}
            for conn, _, addr in accepted:
                if conn.family in (socket.AF_INET, socket.AF_INET6) and _is_loopback(addr[0]):
                    try:
                        here = self._io.local_address(conn)
                    except OSError:
                        continue
                    groups.setdefault((conn.family, here[0], here[1]), []).append((conn, addr))
            for (family, host, port), group in groups.items():
                found = peers.peer_uids(family, (host, port), [(a[0], a[1]) for _, a in group])
                if found is None:  # this OS does not tell: documented in docs/security.md
                    continue
                for (conn, _), uid in zip(group, found, strict=True):
                    uids[id(conn)] = uid if uid is not None else -1
        for conn, _, addr in accepted:
            uid = uids.get(id(conn))
            if uid is not None and uid not in (0, self._uid):
                self._refuse(
                    conn, "from another user" if uid >= 0 else "from a peer of unknown owner", now
                )
                continue
            peer = str(addr or "unix")
            if self._token is not None:
                w = _Waiting(conn, peer, now + AUTH_TIMEOUT)
                self._waiting[conn.fileno()] = w
                self._watch(conn.fileno(), w)
                self._read_token(w, now)  # it may be here already
            else:
                self._arrived.append(Observer(conn, peer, self._capacity, now))

    def _read_token(self, w: _Waiting, now: float) -> None:
        fd = w.sock.fileno()
        try:
            chunk = self._io.recv(w.sock, MAX_AUTH_BYTES + 1 - len(w.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._waiting.pop(fd, None)
            self._refuse(w.sock, "left before sending a token", now)
            return
        w.inbuf += chunk
        cut = w.inbuf.find(b"\n")
        if cut < 0:
            if len(w.inbuf) > MAX_AUTH_BYTES:
                self._waiting.pop(fd, None)
                self._refuse(w.sock, "missing or wrong token", now)
            return
        self._waiting.pop(fd, None)
        self._unwatch(fd)
        line = bytes(w.inbuf[:cut])
        rest = bytes(w.inbuf[cut + 1 :])
        if not self._token_ok(line):
            self._refuse(w.sock, "missing or wrong token", now)
            return
        ob = Observer(w.sock, w.peer, self._capacity, now)
        ob.inbuf += rest
        self._arrived.append(ob)

    def _token_ok(self, line: bytes) -> bool:
        assert self._token is not None
        try:
            # Plain JSON: the auth line is {"type":"auth","token":...}, no "t" needed.
            msg = json.loads(line)
        except Exception:  # not JSON, too deep, ...
            return False
        if not isinstance(msg, dict):
            return False
        given = msg.get("token") if msg.get("type") == "auth" else None
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self._token.encode())

    def _read_observer(self, ob: Observer) -> None:
        """Observers may send nothing we must act on; read to notice them leave."""
        got = 0
        while got < READ_PER_TICK:
            try:
                chunk = self._io.recv(ob.sock, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                ob.closed = True
                return
            got += len(chunk)
            self._take_lines(ob, chunk)
            if ob.closed:
                return

    def _take_lines(self, ob: Observer, chunk: bytes) -> None:
        buf = ob.inbuf
        buf += chunk
        start = 0
        while True:
            cut = buf.find(b"\n", start)
            if cut < 0:
                break
            try:
                decode(bytes(buf[start : cut + 1]))
            except DecodeError:
                self.bad_lines += 1
            start = cut + 1
        if start:
            del buf[:start]
        if len(buf) > MAX_LINE_BYTES:
            ob.closed = True
            ob.inbuf = bytearray()
            self.refusals.note("closed: sent a line over 1 MiB")

    # -- after the fan-out: greet, write -------------------------------------------
    def deliver(self) -> None:
        """Write to every observer: one send each, as much as its socket takes."""
        now = time.monotonic()
        if self._arrived:  # a token line read by flush()'s last service, say
            self._greet()
        stall = self.stall_timeout
        for ob in list(self.observers):
            if not ob.closed and (ob.queue or ob.dropped):
                self._write(ob, now)
            if not ob.queue and not ob.behind:
                ob.progress = now
            full = ob.behind or 2 * len(ob.queue) >= ob.capacity
            if not ob.closed and now - ob.progress >= stall and full:
                ob.closed = True
                self.refusals.note(f"closed: read nothing for {stall:.0f} s", now)
            if ob.closed:
                self._finish(ob)

    def _greet(self) -> None:
        arrived, self._arrived = self._arrived, []
        try:
            lines = self._greeting()
            blob = b"".join(lines)
        except Exception as exc:
            errors.report("stream server", exc)
            for ob in arrived:
                self._close_sock(ob.sock)
            return
        for ob in arrived:
            try:
                ob.put(lines, blob, keep=True)
            except Exception as exc:
                errors.report("stream server", exc)
                self._close_sock(ob.sock)
                continue
            self.observers.add(ob)
            self._watch(ob.sock.fileno(), ob)
            if ob.inbuf:  # bytes that came with the token line
                rest, ob.inbuf = bytes(ob.inbuf), bytearray()
                self._take_lines(ob, rest)
            # Now, not after this tick's drain: the greeting is on its way at once.
            self._write(ob, time.monotonic())

    def _write(self, ob: Observer, now: float) -> None:
        q = ob.queue
        if ob.dropped:
            # Told before anything queued after the loss: at the head, or right after
            # the rest of a chunk already begun (a line boundary either way).
            n, ob.dropped = ob.dropped, 0
            q.chunks.insert(1 if q.offset else 0, (encode(_dropped_event(n)), 1, n, False))
            q.lines += 1
        try:
            sent = self._io.send(ob.sock, [c[0] for c in islice(q.chunks, MAX_IOV)], q.offset)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the peer left (reset, broken pipe): not an internal error
            ob.closed = True
            return
        if sent <= 0:
            return
        ob.progress = now
        ob.behind = False
        chunks = q.chunks
        while sent and chunks:
            left = len(chunks[0][0]) - q.offset
            if sent >= left:
                sent -= left
                q.lines -= chunks.popleft()[1]
                q.offset = 0
            else:
                q.offset += sent
                sent = 0

    # -- the runtime's questions and the end --------------------------------------
    def broadcast(self, lines: list[bytes]) -> None:
        """Queue ``lines`` for every greeted observer (one shared copy of the bytes)."""
        if not self.observers or not lines:
            return
        blob = b"".join(lines)
        for ob in self.observers:
            ob.put(lines, blob)

    def lagging(self) -> bool:
        """True when an observer that is still reading has its queue over half full
        (one that took nothing for LAG_GRACE seconds is stalled: it only costs drops;
        a reader descheduled for a moment on a busy machine is not)."""
        half = self._capacity // 2
        recent = time.monotonic() - LAG_GRACE
        return any(len(ob.queue) > half and ob.progress >= recent for ob in self.observers)

    async def flush(self, timeout: float) -> None:
        """Write until every observer's queue is empty (or ``timeout`` passes)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            self.deliver()
            if not any(ob.queue or ob.dropped for ob in self.observers):
                return
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.refusals.flush()
        for sock in self._listeners:
            self._close_sock(sock)
        self._listeners = []
        for w in list(self._waiting.values()):
            self._close_sock(w.sock)
        self._waiting.clear()
        for ob in self._arrived:
            self._close_sock(ob.sock)
        self._arrived = []
        for ob in list(self.observers):
            self._finish(ob)
        if self.endpoint is not None and self.endpoint.path:
            try:
                os.unlink(self.endpoint.path)
            except OSError:
                pass

    def forget_inherited(self) -> None:
        """In a forked child: close the copies of the parent's listening and observer
        sockets (so the parent's observers see it when the parent goes), without
        touching the parent's event loop, which does not run here."""
        socks = list(self._listeners)
        socks += [ob.sock for ob in self.observers]
        socks += [ob.sock for ob in self._arrived]
        socks += [w.sock for w in self._waiting.values()]
        # Point each inherited descriptor at /dev/null instead of closing it: the
        # socket objects still own those numbers and will close them some day, which
        # must not hit an unrelated file that reused the number.
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for sock in socks:
                try:
                    os.dup2(devnull, sock.fileno())
                except OSError:
                    pass
        finally:
            os.close(devnull)
        self.observers = set()
        self._listeners = []
        self._arrived = []
        self._waiting = {}
        self._by_fd = {}
        self._poll = select.poll() if hasattr(select, "poll") else None


def _bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (one port for all of them)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, type_, proto, _, addr in infos:
            if addr in seen:
                continue
            seen.add(addr)
            if socks and port == 0:  # the other families on the port the first one got
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock = socket.socket(family, type_, proto)
            try:
                if os.name == "posix":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
            except OSError:
                sock.close()
                if not socks:
                    raise
                continue  # the first address is served; another family is a bonus
            socks.append(sock)
    except BaseException:
        for s in socks:
            s.close()
        raise
    if not socks:
        raise OSError(f"cannot listen on {host}:{port}: no address")
    return socks


def _dropped_event(n: int) -> dict[str, Any]:
    return {"type": "dropped", "t": time.time(), "count": n, "where": "observer queue"}
