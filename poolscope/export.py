"""The headless Prometheus exporter behind ``poolscope export``.

It attaches to one or more instrumented processes over their event streams,
folds each stream into its own :class:`~poolscope.model.PoolState` (the same
fold the TUI runs) and serves ``/metrics`` from those states with aiohttp.

Rule for processes that go away: a process's series are exported only while
its stream is connected and has delivered its ``sync``. When the stream drops,
its series disappear from the next scrape (Prometheus marks them stale) instead
of repeating the last values forever; ``poolscope_target_up{endpoint=...}``
says 0 meanwhile. When it comes back (same or restarted process) its ``sync``
restores the full counters and the series return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from poolscope.client import CONNECTED, DISCONNECTED, StreamClient
from poolscope.endpoint import Endpoint
from poolscope.events import Event
from poolscope.follow import StreamFollower
from poolscope.metrics import Family, Series, Source, families, to_client
from poolscope.pgview import INTERVAL as PG_INTERVAL
from poolscope.pgview import METRICS as PG_METRICS
from poolscope.pgview import PgView, Snapshot
from poolscope.pgview import metric_values as pg_metric_values
from poolscope.textsafe import visible

log = logging.getLogger("poolscope.export")

#: Labels the exporter adds to every series of a process.
PROCESS_LABEL = "process"  # the process name from its ``hello`` (argv[0]'s basename)
PID_LABEL = "pid"
TARGET_UP = "poolscope_target_up"
TARGET_UP_HELP = (
    "1 while the exporter is connected to the instrumented process at this endpoint "
    "and has its state, else 0 (its other series are then not exported)."
)


class Target(StreamFollower):
    """One endpoint the exporter follows: a :class:`StreamFollower` whose state
    lasts one connection (no stale series from a stream that dropped)."""

    def __init__(self, endpoint: Endpoint, client: StreamClient) -> None:
        super().__init__(per_connection=True)
        self.endpoint = endpoint
        self.client = client

    @property
    def error(self) -> str:
        """Why it is not up: the client's latest error (it keeps retrying)."""
        return self.client.stats.last_error or self.last_error

    @property
    def up(self) -> bool:
        """Connected, and the connection delivered the application's state."""
        return self.connected and self.synced

    def labels(self) -> dict[str, str]:
        proc = self.state.process
        return {
            PROCESS_LABEL: str(proc.get("process") or "?"),
            PID_LABEL: str(proc.get("pid") or "?"),
        }

    def apply(self, ev: Event) -> None:
        self.follow(ev, time.time())


class Exporter:
    """Follows endpoints and renders their metrics."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        token: str | None = None,
        backoff_cap: float = 5.0,
        on_change: Callable[[Target, Event], None] | None = None,
        pg: PgView | None = None,
    ) -> None:
        self.targets = [
            Target(ep, StreamClient(ep, token=token, backoff_cap=backoff_cap)) for ep in endpoints
        ]
        self.on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.scrapes = 0
        #: --pg: the server's own view, sampled once a second (poolscope.pgview).
        self.pg = pg
        self.pg_snapshot: Snapshot | None = None

    # -- following the streams ---------------------------------------------------
    def start(self) -> None:
        for t in self.targets:
            self._tasks.append(asyncio.ensure_future(self._follow(t)))
        if self.pg is not None:
            self._tasks.append(asyncio.ensure_future(self._sample_pg(self.pg)))

    async def _sample_pg(self, pg: PgView) -> None:
        try:
            while True:
                states = []
                for t in self.targets:
                    if t.up:
                        labels = t.labels()
                        states.append((f"{labels[PROCESS_LABEL]}@{labels[PID_LABEL]}", t.state))
                self.pg_snapshot = await pg.sample(states)
                await asyncio.sleep(PG_INTERVAL)
        finally:
            await pg.close()

    async def _follow(self, target: Target) -> None:
        async for ev in target.client.events():
            try:
                target.apply(ev)
            except Exception as exc:  # one bad event must not stop the exporter
                # The message may quote the event: made visible like all stream text.
                log.warning("poolscope export: %s: %s", target.endpoint, visible(str(exc)))
            if self.on_change is not None and ev.get("type") in (CONNECTED, DISCONNECTED):
                self.on_change(target, ev)

    # -- metrics -----------------------------------------------------------------
    def families(self) -> list[Family]:
        sources: list[Source] = []
        seen: set[tuple[str, str]] = set()
        for t in self.targets:
            if not t.up:
                continue
            labels = t.labels()
            key = (labels[PROCESS_LABEL], labels[PID_LABEL])
            if key in seen:  # the same process reached twice: export it once
                continue
            seen.add(key)
            sources.append(Source(t.state, labels))
        fams = families(sources)
        up = Family(TARGET_UP, "gauge", TARGET_UP_HELP)
        up.series = [
            Series({"endpoint": str(t.endpoint)}, 1.0 if t.up else 0.0) for t in self.targets
        ]
        fams.append(up)
        snap = self.pg_snapshot
        if snap is not None and not snap.error:
            for name, values in pg_metric_values(snap).items():
                fam = Family(name, "gauge", PG_METRICS[name])
                fam.series = [Series(labels, v) for labels, v in values]
                fams.append(fam)
        return fams

    def collect(self) -> list[Any]:
        """prometheus_client collector protocol (the encoders call this)."""
        return to_client(self.families())

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: OpenMetrics when asked for, else text."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self), content_type

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "targets": [
                {
                    "endpoint": str(t.endpoint),
                    "up": t.up,
                    "since": t.changed,
                    **({"error": t.error} if not t.up and t.error else {}),
                    **(t.labels() if t.up else {}),
                }
                for t in self.targets
            ],
        }

    # -- HTTP ----------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        body, content_type = self.render(request.headers.get("Accept", ""))
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.health()), content_type="application/json")

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="poolscope exporter: see /metrics and /healthz\n")

    async def serve(self, listen: Endpoint) -> Endpoint:
        """Start the HTTP server; returns where it listens (the real port for port 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        return Endpoint(str(host), int(port))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for t in self.targets:
            t.client.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
