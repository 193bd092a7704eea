"""Adapter for poolscope's own reference pool, which emits its events natively.

The pool calls the handle itself (``acquired``/``released`` on its hot path,
``event`` for every other decision, its own ``backend`` states included); this
adapter only wires the handle in, reads the gauges from ``pool.stats()`` and, when
``instrument(heartbeat=...)`` asks for a heartbeat the pool does not run yet, turns
the pool's own on (and off again on detach).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from . import errors
from .adapter import Attachment, Options, registry
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
        "poolscope.pool.core:Pool._attach",
        "poolscope.pool.core:Pool.enable_heartbeat",
        "_handle",
        "_tasks",
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
        handle = PoolHandle(
            runtime.recorder,
            options.name or pool.name,
            "poolscope",
            leak_threshold=threshold,
            heartbeat=config.get("heartbeat"),
            target=getattr(pool, "target", ""),
            config=config,
            gauges=gauges,
        )
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
            pool.name = att.name
            if att.heartbeat_enabled:
                _stop_heartbeat(pool)
        finally:
            att.runtime.unregister(att.handle)
        return pool


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


def instrument_reference(
    pool: Any,
    runtime: Runtime,
    *,
    name: str | None,
    leak_threshold: float | None,
    heartbeat: float | None,
) -> Any:
    """The reference pool adapter's ``attach`` (kept for callers of the old function)."""
    return ADAPTER.attach(pool, runtime, Options(name, leak_threshold, heartbeat))
