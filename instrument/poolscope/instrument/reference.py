"""Adapter for poolscope's own reference pool, which emits its events natively.

The pool calls the handle itself (``acquired``/``released`` on its hot path,
``event`` for every other decision, its own ``backend`` states included); this
adapter only wires the handle in, reads the gauges from ``pool.stats()`` and, when
``instrument(heartbeat=...)`` asks for a heartbeat the pool does not run yet, turns
the pool's own on (and off again on detach).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from . import errors
from .adapter import Attachment, Options, attach_function, registry
from .adapters import PROBE_TIMEOUT, describe_error, emit_heartbeat, timed_out_error
from .backend import HEALTHY, BackendTracker
from .recorder import PoolHandle
from .runtime import Runtime

__all__ = ["ReferenceAdapter", "instrument_reference"]


@dataclass
class _Attached:
    pool: Any
    handle: PoolHandle
    runtime: Runtime
    name: str  # the pool's own name before the runtime made it unique
    heartbeat_enabled: bool  # turned on by instrument(heartbeat=...), off on detach


class ReferenceAdapter:
    """``poolscope.pool.Pool``: hooked in place through its ``_attach`` seam."""

    kind = "poolscope"
    classes: tuple[str, ...] = ("poolscope.pool.Pool",)
    distribution = ""
    supported: tuple[str | None, str | None] = (None, None)
    attaches: Attachment = "in_place"
    private_attributes: tuple[str, ...] = (
        "_attach",
        "enable_heartbeat",
        "_handle",
        "_tasks",
        "_factory",
        "_close_raw",
    )

    def __init__(self) -> None:
        self._attached: dict[int, _Attached] = {}

    def matches(self, obj: Any) -> bool:
        return any(
            (cls.__module__ or "").startswith("poolscope.pool") and cls.__name__ == "Pool"
            for cls in type(obj).__mro__
        )

    def private_root(self, obj: Any) -> Any:
        return obj

    def attach(self, pool: Any, runtime: Runtime, options: Options) -> Any:
        if id(pool) in self._attached:
            return pool
        own = pool.leak_threshold
        threshold = own if own is not None else options.leak_threshold
        enabled = False
        if (
            options.heartbeat is not None
            and getattr(pool, "heartbeat_interval", None) is None
            and getattr(pool, "ping", None) is not None
        ):
            try:
                pool.enable_heartbeat(options.heartbeat)
                enabled = True
            except Exception as exc:
                errors.report("reference heartbeat", exc)

        def gauges() -> dict[str, Any]:
            s = pool.stats()
            return {
                "size": s["size"],
                "idle": s["idle"],
                "in_use": s["in_use"],
                "waiting": s["waiting"],
                "max": s["max_size"],
                "min": s.get("min_size", 0),
            }

        config = pool.config()
        original_name = pool.name
        handle = _ReferenceHandle(
            runtime.recorder,
            options.name or pool.name,
            "poolscope",
            leak_threshold=threshold,
            heartbeat=config.get("heartbeat"),
            target=getattr(pool, "target", ""),
            config=config,
            gauges=gauges,
        )
        handle.watch(pool)
        runtime.register(handle)
        pool.name = handle.name
        pool._attach(handle)
        self._attached[id(pool)] = _Attached(pool, handle, runtime, original_name, enabled)
        return pool

    def detach(self, pool: Any) -> Any:
        att = self._attached.pop(id(pool), None)
        if att is None or att.pool is not pool:
            return None
        try:
            pool._handle = None  # the pool's events stop at its own seam
            if isinstance(att.handle, _ReferenceHandle):
                att.handle.pool = att.handle.tracker = None
            pool.name = att.name
            if att.heartbeat_enabled:
                _stop_heartbeat(pool)
        finally:
            att.runtime.unregister(att.handle)
        return pool


class _ReferenceHandle(PoolHandle):
    """The reference pool's handle: passes its events on, and derives the ``backend``
    state from all of them (probes, connects, connect and acquire errors, lost
    closes) with the same tracker every adapter uses - instead of the pool's own,
    which sees its probes only. With nothing idle to probe, the heartbeat opens a
    connection of its own (the pool's factory), at most once per interval."""

    pool: Any = None
    tracker: BackendTracker | None = None

    def watch(self, pool: Any) -> None:
        self.pool = pool
        self.tracker = BackendTracker(self, self.heartbeat)
        self._own: set[asyncio.Task[None]] = set()
        self._timed_out: set[str] = set()  # connections whose probe timed out
        self._watcher: asyncio.Task[None] | None = None

    def event(self, etype: str, **fields: Any) -> None:
        tr = self.tracker
        if tr is None:
            super().event(etype, **fields)
            return
        try:
            if etype == "backend":
                return  # said by the tracker, from everything below
            if etype == "heartbeat" and fields.get("skipped") and self._own_probe():
                return  # not skipped: probed on a connection of its own
            if etype == "heartbeat" and str(fields.get("error") or "").startswith("TimeoutError"):
                # The pool's ping timed out and the pool retires that connection: say
                # so, and give its close the reason that tells it from a real loss.
                limit = getattr(self.pool, "heartbeat_timeout", PROBE_TIMEOUT)
                fields["error"] = timed_out_error(limit)
                self._timed_out.add(str(fields.get("conn")))
            elif etype == "close" and str(fields.get("conn")) in self._timed_out:
                self._timed_out.discard(str(fields.get("conn")))
                fields["reason"] = "probe_timeout"
            super().event(etype, **fields)
            error = str(fields.get("error") or "")
            if etype == "heartbeat":
                source = "connect" if fields.get("probe") == "connect" else "probe"
                if fields.get("ok") is True:
                    tr.ok(source)
                elif fields.get("ok") is False:
                    tr.failed(source, error or "probe failed")
            elif etype == "connect":
                tr.ok("connect")
            elif etype == "connect_error":
                tr.failed("connect", error)
            elif etype == "acquire_error":
                tr.failed("acquire", error)
            elif etype == "close" and fields.get("reason") == "lost":
                tr.failed("lost", error or "connection lost (closed by server)")
            if tr.state != HEALTHY and self._watcher is None and self.heartbeat is not None:
                self._start_watcher(tr)
        except Exception as exc:
            errors.report("reference backend", exc)

    def _start_watcher(self, tr: BackendTracker) -> None:
        """While not healthy, probe on a connection of our own every interval: the pool
        spaces its own reconnect probes by a back-off of up to ``backoff_cap``, and
        recovery must show within two intervals of the database answering."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the pool's loop: the next event there starts it
        self._watcher = loop.create_task(self._watch(tr))

    async def _watch(self, tr: BackendTracker) -> None:
        try:
            interval = self.heartbeat
            while interval is not None and self.tracker is tr and tr.state != HEALTHY:
                await asyncio.sleep(interval)
                pool = self.pool
                if pool is None or getattr(pool, "closed", False):
                    return
                if tr.state != HEALTHY and tr.own_probe_due():
                    await self._probe_own(pool, tr)
        finally:
            self._watcher = None

    def _own_probe(self) -> bool:
        pool, tr = self.pool, self.tracker
        if pool is None or tr is None or self.heartbeat is None or not tr.own_probe_due():
            return False
        task = asyncio.get_running_loop().create_task(self._probe_own(pool, tr))
        self._own.add(task)  # the loop keeps tasks weakly
        task.add_done_callback(self._own.discard)
        return True

    async def _probe_own(self, pool: Any, tr: BackendTracker) -> None:
        assert self.heartbeat is not None
        limit = min(getattr(pool, "heartbeat_timeout", PROBE_TIMEOUT), self.heartbeat)
        t0 = time.perf_counter()
        try:
            raw = await asyncio.wait_for(pool._factory(), limit)
        except Exception as exc:
            error = (
                timed_out_error(limit)
                if isinstance(exc, asyncio.TimeoutError)
                else (describe_error(exc))
            )
            emit_heartbeat(self, "", False, time.perf_counter() - t0, error, probe="connect")
            tr.failed("connect", error, t0)
            return
        latency = time.perf_counter() - t0
        pool._close_raw(raw)
        emit_heartbeat(self, "", True, latency, None, probe="connect")
        tr.ok("connect")


def _stop_heartbeat(pool: Any) -> None:
    """Turn off the heartbeat ``attach`` turned on: its task is cancelled, not left to run
    one more round."""
    pool.heartbeat_interval = None
    for task in list(getattr(pool, "_tasks", ())):
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "").endswith("_heartbeat_loop") and not task.done():
            loop = task.get_loop()
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                task.cancel()
            else:
                loop.call_soon_threadsafe(task.cancel)
            pool._tasks.remove(task)


ADAPTER = registry.register(ReferenceAdapter())


instrument_reference = attach_function(ADAPTER)
