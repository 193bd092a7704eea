"""Reading event streams: a live endpoint (with reconnect) or a recorded file."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from poolscope.endpoint import Endpoint
from poolscope.events import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    DecodeError,
    Event,
    decode,
    encode,
)
from poolscope.textsafe import safe_event, visible

#: Local events a client yields about its own connection; never on the wire.
CONNECTED = "connected"
DISCONNECTED = "disconnected"
#: Local: complete lines as they came, undecoded (``StreamClient(batches=True)``).
LINES = "lines"
#: Most bytes read from the socket at once in batch mode.
BATCH_BYTES = 1 << 16
#: Why a connection's reading stopped, whichever way it was read.
LINE_TOO_LONG = "a line over 1 MiB; connection closed"
MID_LINE = "stream ended mid-line"


class ConnectError(ConnectionError):
    """Nothing answers at an endpoint; the message is one line for users."""


def protocol_problem(hello: Event) -> str:
    """Why this poolscope cannot read a stream that starts with ``hello`` ("" if it can)."""
    v = hello.get("protocol")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return f"hello without a valid protocol version; this poolscope speaks {PROTOCOL_VERSION}"
    if v > PROTOCOL_VERSION:
        return f"protocol version {v} from the future; this poolscope speaks {PROTOCOL_VERSION}"
    return ""


async def open_stream(
    endpoint: Endpoint, *, token: str | None = None, timeout: float = 3.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to an application's stream server (and authenticate if a token is set)."""
    try:
        if endpoint.path is not None:
            conn = asyncio.open_unix_connection(endpoint.path, limit=MAX_LINE_BYTES + 2)
        else:
            conn = asyncio.open_connection(endpoint.host, endpoint.port, limit=MAX_LINE_BYTES + 2)
        reader, writer = await asyncio.wait_for(conn, timeout)
    except asyncio.TimeoutError:
        raise ConnectError(f"{endpoint}: no answer within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise ConnectError(
            f"{endpoint}: connection refused (is an instrumented process there?)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectError(f"{endpoint}: {reason}") from None
    if token is not None:
        writer.write(encode({"type": "auth", "t": time.time(), "token": token}))
    return reader, writer


def complete_lines(rest: bytes, data: bytes) -> tuple[bytes, bytes]:
    """(the complete lines of ``rest + data``, what follows the last of them). A line
    over MAX_LINE_BYTES leaves a longer remainder, whether it ended here or not."""
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        return b"", rest + data
    if rest and len(rest) + data.find(b"\n") >= MAX_LINE_BYTES:
        return b"", rest + data  # its first line was too long
    return (rest + data[:cut] if rest else data[:cut]), data[cut:]


@dataclass
class StreamStats:
    lines: int = 0
    bad_lines: int = 0
    connects: int = 0
    connected: bool = False
    disconnected_since: float | None = None
    last_error: str = ""


@dataclass
class StreamClient:
    """Events from one endpoint, reconnecting with exponential backoff and jitter.

    Yields protocol events as they arrive plus two local ones, ``connected`` and
    ``disconnected`` (with ``endpoint`` and, for the latter, ``error``), so a
    view can say "disconnected since ...". With ``raw=True`` each event comes
    with its original line in the ``_line`` key. With ``batches=True`` too, the
    lines after a connection's ``hello`` are not decoded at all: they come as
    ``lines`` events, ``_lines`` holding complete lines as they came and ``count``
    how many (``poolscope record``, which writes them unread: decoding and
    sanitizing each line cost its observer ~8 us per event).
    """

    endpoint: Endpoint
    token: str | None = None
    reconnect: bool = True
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    raw: bool = False
    batches: bool = False
    stats: StreamStats = field(default_factory=StreamStats)
    _writer: asyncio.StreamWriter | None = None

    async def events(self) -> AsyncIterator[Event]:
        attempt = 0
        while True:
            try:
                reader, writer = await open_stream(self.endpoint, token=self.token)
            except ConnectError as exc:
                self.stats.last_error = visible(str(exc))
                if not self.reconnect:
                    raise
                if self.stats.connected or self.stats.disconnected_since is None:
                    self.stats.connected = False
                    self.stats.disconnected_since = time.time()
                    yield self._local(DISCONNECTED, str(exc))
                attempt += 1
                await asyncio.sleep(self._backoff(attempt))
                continue
            attempt = 0
            self._writer = writer
            self.stats.connects += 1
            self.stats.connected = True
            self.stats.disconnected_since = None
            yield self._local(CONNECTED, "")
            error = "closed by the application"
            incompatible = False
            hello = False
            rest = b""  # batch mode: an unfinished line
            try:
                while True:
                    if hello and self.batches:
                        data = await reader.read(BATCH_BYTES)
                        if not data:
                            if rest:
                                error = MID_LINE
                            break
                        chunk, rest = complete_lines(rest, data)
                        if len(rest) > MAX_LINE_BYTES:
                            error = LINE_TOO_LONG
                            break
                        if chunk:
                            n = chunk.count(b"\n")
                            self.stats.lines += n
                            yield {"type": LINES, "t": time.time(), "_lines": chunk, "count": n}
                        continue
                    try:
                        line = await reader.readline()
                    except (ValueError, asyncio.LimitOverrunError):
                        error = LINE_TOO_LONG
                        break
                    if not line:
                        break
                    if not line.endswith(b"\n"):
                        error = MID_LINE
                        break
                    self.stats.lines += 1
                    try:
                        ev = safe_event(decode(line), line)
                    except (DecodeError, RecursionError):
                        self.stats.bad_lines += 1
                        continue
                    if ev["type"] == "hello":
                        problem = protocol_problem(ev)
                        if problem:
                            # Say so in one line and stop reading: what follows is
                            # in a language this version does not know.
                            error, incompatible = problem, True
                            break
                        hello = True
                    if self.raw:
                        ev["_line"] = line
                    yield ev
            except (ConnectionError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            finally:
                writer.close()
                self._writer = None
            self.stats.connected = False
            self.stats.disconnected_since = time.time()
            self.stats.last_error = visible(error)
            gone = self._local(DISCONNECTED, error)
            if incompatible:
                gone["incompatible"] = True
            yield gone
            if not self.reconnect:
                return
            attempt += 1
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_cap, self.backoff_base * (2 ** min(attempt - 1, 10)))
        return float(base * (0.5 + random.random() / 2))

    def _local(self, kind: str, error: str) -> Event:
        # Not from the wire, but made of an endpoint and error texts that may be.
        ev: Event = {"type": kind, "t": time.time(), "endpoint": visible(str(self.endpoint))}
        if error:
            ev["error"] = visible(error)
        return ev

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


@dataclass
class FileFeed:
    """Events from a recording, remembering where and why reading stopped."""

    path: Path
    lines: int = 0
    bad_lines: int = 0
    first_bad_line: int | None = None
    stopped: str = ""

    def __iter__(self) -> Iterator[Event]:
        try:
            with open(self.path, "rb") as f:
                number = 0
                while True:
                    # Bounded: a giant (or endless) line costs at most 1 MiB of memory.
                    line = f.readline(MAX_LINE_BYTES + 1)
                    if not line:
                        return
                    number += 1
                    self.lines = number
                    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                        while True:  # skip the rest of it
                            chunk = f.readline(1 << 16)
                            if not chunk or chunk.endswith(b"\n"):
                                break
                        self._bad(number)
                        continue
                    if not line.strip():
                        continue
                    try:
                        ev = safe_event(decode(line), line)
                    except (DecodeError, RecursionError) as exc:
                        self._bad(number)
                        if not line.endswith(b"\n"):
                            self.stopped = visible(f"truncated at line {number}: {exc}")
                            return
                        continue
                    if ev["type"] == "hello":
                        problem = protocol_problem(ev)
                        if problem:
                            self.stopped = visible(f"stopped at line {number}: {problem}")
                            return
                    yield ev
        except OSError as exc:
            self.stopped = visible(f"{self.path}: {exc.strerror or exc}")
            raise

    def _bad(self, number: int) -> None:
        self.bad_lines += 1
        if self.first_bad_line is None:
            self.first_bad_line = number


def read_events(path: str | Path) -> list[Event]:
    """All readable events of a recording (malformed lines skipped)."""
    return list(FileFeed(Path(path)))
