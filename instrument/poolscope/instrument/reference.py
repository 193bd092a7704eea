"""Adapter for poolscope's own reference pool, which emits its events natively.

The pool calls the handle itself (``acquired``/``released`` on its hot path,
``event`` for every other decision); this adapter only wires the handle in,
reads the gauges from ``pool.stats()`` and, when ``instrument(heartbeat=...)``
asks for a heartbeat the pool does not run yet, turns the pool's own on.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .recorder import PoolHandle
from .runtime import Runtime


def instrument_reference(
    pool: Any,
    runtime: Runtime,
    *,
    name: str | None,
    leak_threshold: float | None,
    heartbeat: float | None,
) -> Any:
    threshold = pool.leak_threshold if pool.leak_threshold is not None else leak_threshold
    if (
        heartbeat is not None
        and getattr(pool, "heartbeat_interval", None) is None
        and getattr(pool, "ping", None) is not None
    ):
        try:
            pool.enable_heartbeat(heartbeat)
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
    handle = PoolHandle(
        runtime.recorder,
        name or pool.name,
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
    return pool
