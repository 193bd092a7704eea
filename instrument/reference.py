"""Adapter for poolscope's own reference pool, which emits its events natively."""

from __future__ import annotations

from typing import Any

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

    handle = PoolHandle(
        runtime.recorder,
        name or pool.name,
        "poolscope",
        leak_threshold=threshold,
        heartbeat=heartbeat if heartbeat is not None else pool.config().get("heartbeat"),
        target=getattr(pool, "target", ""),
        config=pool.config(),
        gauges=gauges,
    )
    runtime.register(handle)
    pool.name = handle.name
    pool._attach(handle)
    return pool
