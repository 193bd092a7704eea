"""The stream server: NDJSON to any number of observers, each with a bounded queue.

Runs on the runtime's event loop (the background thread). A slow observer loses
its oldest lines, never the application's memory or time; the loss is counted
and announced to that observer as a ``dropped`` event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import stat
import tempfile
from collections import deque
from collections.abc import Callable
from typing import Any

from poolscope.endpoint import Endpoint
from poolscope.events import MAX_LINE_BYTES, DecodeError, decode, encode

from . import errors

log = logging.getLogger("poolscope")

#: Lines queued for one observer before its oldest are dropped (~ a few MiB).
OBSERVER_QUEUE = 20_000


class Observer:
    def __init__(self, writer: asyncio.StreamWriter, capacity: int) -> None:
        self.writer = writer
        self.queue: deque[bytes] = deque()
        self.capacity = capacity
        self.dropped = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.peer = str(writer.get_extra_info("peername") or "unix")

    def put(self, lines: list[bytes]) -> None:
        q = self.queue
        q.extend(lines)
        over = len(q) - self.capacity
        if over > 0:
            popleft = q.popleft
            n = 0
            for _ in range(over):
                line = popleft()
                # A ``dropped`` line (the recorder's own losses) dropped here must not
                # take its count with it: carry the count into this observer's tally.
                n += _dropped_count(line) if line.startswith(_DROPPED_PREFIX) else 1
            self.dropped += n
        self.wake.set()


_DROPPED_PREFIX = b'{"type":"dropped"'


def _dropped_count(line: bytes) -> int:
    try:
        count = json.loads(line).get("count")
    except Exception:
        return 1
    return count if isinstance(count, int) and count > 0 else 1


class StreamServer:
    def __init__(
        self,
        greeting: Callable[[], list[bytes]],
        *,
        token: str | None = None,
        queue_capacity: int | None = None,
    ) -> None:
        self._greeting = greeting
        self._token = token
        # Read at construction, not at import, so it can be tuned before serving.
        self._capacity = queue_capacity if queue_capacity is not None else OBSERVER_QUEUE
        self.observers: set[Observer] = set()
        self._server: asyncio.base_events.Server | None = None
        self.endpoint: Endpoint | None = None
        self.bad_lines = 0

    async def start(self, endpoint: Endpoint, *, fallback: bool = True) -> Endpoint:
        """Listen on ``endpoint``; if its port is taken and ``fallback``, on a free port."""
        if endpoint.path is not None:
            self._server = await self._start_unix(endpoint.path)
            self.endpoint = endpoint
            return endpoint
        try:
            self._server = await asyncio.start_server(
                self._serve, endpoint.host, endpoint.port, limit=MAX_LINE_BYTES + 2
            )
        except OSError as exc:
            if not fallback or endpoint.port == 0:
                raise
            log.warning(
                "poolscope: %s is taken (%s); listening on a free port instead", endpoint, exc
            )
            self._server = await asyncio.start_server(
                self._serve, endpoint.host, 0, limit=MAX_LINE_BYTES + 2
            )
        sock = self._server.sockets[0]
        port = sock.getsockname()[1]
        self.endpoint = Endpoint(host=endpoint.host, port=int(port))
        return self.endpoint

    async def _start_unix(self, path: str) -> asyncio.base_events.Server:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, mode=0o700, exist_ok=True)
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
            sock.listen(100)
            sock.setblocking(False)
            server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_LINE_BYTES + 2
            )
        except BaseException:
            sock.close()
            raise
        finally:
            try:
                os.unlink(staged)
            except OSError:
                pass
            os.rmdir(private)
        return server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for ob in list(self.observers):
            ob.closed = True
            ob.wake.set()
            try:
                ob.writer.close()
            except Exception:
                pass
        if self.endpoint is not None and self.endpoint.path:
            try:
                os.unlink(self.endpoint.path)
            except OSError:
                pass

    def lagging(self) -> bool:
        """True when some observer's queue is over half full."""
        half = self._capacity // 2
        return any(len(ob.queue) > half for ob in self.observers)

    def forget_inherited(self) -> None:
        """In a forked child: close the copies of the parent's listening and observer
        sockets (so the parent's observers see it when the parent goes), without
        touching the parent's event loop, which does not run here."""
        socks = list(self._server.sockets) if self._server is not None else []
        for ob in self.observers:
            sock = ob.writer.get_extra_info("socket")
            if sock is not None:
                socks.append(sock)
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
        self._server = None

    def broadcast(self, lines: list[bytes]) -> None:
        for ob in self.observers:
            ob.put(lines)

    async def flush(self, timeout: float) -> None:
        """Wait until every observer's queue is written (or ``timeout`` passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Copies: observers leave (and are discarded) while we wait.
        while any(ob.queue for ob in list(self.observers)) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for ob in list(self.observers):
            try:
                await asyncio.wait_for(ob.writer.drain(), max(0.01, deadline - loop.time()))
            except Exception:
                pass

    async def _authenticate(self, reader: asyncio.StreamReader) -> bool:
        if self._token is None:
            return True
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            # Plain JSON: the auth line is {"type":"auth","token":...}, no "t" needed.
            msg = json.loads(line)
        except Exception:  # timeout, a line over the limit, not JSON, too deep, ...
            return False
        if not isinstance(msg, dict):
            return False
        given = msg.get("token") if msg.get("type") == "auth" else None
        if not isinstance(given, str):
            return False
        return hmac.compare_digest(given.encode(), self._token.encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ob: Observer | None = None
        try:
            if not await self._authenticate(reader):
                log.warning("poolscope: observer refused: missing or wrong token")
                writer.close()
                return
            ob = Observer(writer, self._capacity)
            ob.put(self._greeting())
            self.observers.add(ob)
            sender = asyncio.ensure_future(self._send(ob))
            await self._read(reader, ob)
            ob.closed = True
            ob.wake.set()
            await sender
        except Exception as exc:
            errors.report("stream server", exc)
        finally:
            if ob is not None:
                self.observers.discard(ob)
            try:
                writer.close()
            except Exception:
                pass

    async def _read(self, reader: asyncio.StreamReader, ob: Observer) -> None:
        """Observers may send nothing we must act on; read to notice them leave."""
        while not ob.closed:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("poolscope: observer %s sent a line over 1 MiB; closing", ob.peer)
                return
            except (ConnectionError, OSError):
                return
            if not line:
                return
            try:
                decode(line)
            except DecodeError:
                self.bad_lines += 1

    async def _send(self, ob: Observer) -> None:
        w = ob.writer
        try:
            while not ob.closed:
                await ob.wake.wait()
                ob.wake.clear()
                while ob.queue:
                    if ob.closed or w.is_closing():
                        # Closed meanwhile (by the server at exit, or the peer left):
                        # writing now would only log asyncio's "socket.send()" noise.
                        return
                    batch: list[bytes] = []
                    if ob.dropped:
                        n, ob.dropped = ob.dropped, 0
                        batch.append(encode(_dropped_event(n)))
                    q = ob.queue
                    for _ in range(min(len(q), 2048)):
                        batch.append(q.popleft())
                    w.write(b"".join(batch))
                    await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            ob.closed = True


def _dropped_event(n: int) -> dict[str, Any]:
    import time

    return {"type": "dropped", "t": time.time(), "count": n, "where": "observer queue"}
