"""A loopback TCP "mini database" for the demo and the tests.

Each request line gets one answer line after a latency drawn from a log-normal
distribution (most answers fast, a long tail), like a real database's. It can be
made slow (latencies multiplied) or unreachable (existing connections dropped,
new ones refused) on purpose.

Protocol: ``PING`` -> ``PONG``; ``Q [ms]`` -> ``OK`` (after ``ms`` when given,
else a drawn latency); anything else -> ``ERR ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random


class MiniDB:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        median_ms: float = 4.0,
        sigma: float = 0.6,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.median_ms = median_ms
        self.sigma = sigma
        self.slow_factor = 1.0
        self.stalled = False  # accept and read, never answer
        self.rng = random.Random(seed)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.requests = 0

    @property
    def up(self) -> bool:
        return self._server is not None

    def latency(self) -> float:
        """One request's service time in seconds."""
        ms = self.median_ms * math.exp(self.rng.gauss(0.0, self.sigma))
        return ms * self.slow_factor / 1000.0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Go down: stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                self.requests += 1
                parts = line.decode(errors="replace").split()
                if self.stalled:
                    continue
                if parts[:1] == ["PING"]:
                    delay, answer = 0.0002 * self.slow_factor, b"PONG\n"
                elif parts[:1] == ["Q"]:
                    delay, answer = self.latency(), b"OK\n"
                    if len(parts) > 1:
                        with contextlib.suppress(ValueError):
                            delay = float(parts[1]) / 1000.0
                else:
                    delay, answer = 0.0, b"ERR unknown request\n"
                await asyncio.sleep(delay)
                if writer.is_closing():  # dropped by stop() while we slept
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        except asyncio.CancelledError:
            # The demo is ending (asyncio.run cancels what is left). Ending the handler
            # normally, not cancelled, keeps Python 3.11's start_server callback from
            # printing a CancelledError traceback at exit (it calls task.exception()).
            return
        finally:
            self._conns.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
