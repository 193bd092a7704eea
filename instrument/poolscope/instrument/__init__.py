"""poolscope's in-app side: ``import poolscope.instrument as ps``.

    pool = ps.instrument(pool, name="orders", leak_threshold=30.0, heartbeat=5.0)

Imports only the standard library (and poolscope's own stdlib-only modules): the
pool libraries are recognised by their module names and imported by the adapter
that handles them, Prometheus only when asked for.
"""

from __future__ import annotations

import logging
from typing import Any

from poolscope.endpoint import Endpoint

from .runtime import Runtime, get_runtime

__all__ = ["Runtime", "get_runtime", "instrument", "serve", "shutdown"]

log = logging.getLogger("poolscope")

SUPPORTED = (
    "poolscope.pool.Pool, asyncpg.Pool, SQLAlchemy Engine/AsyncEngine/Pool, "
    "psycopg_pool.ConnectionPool/AsyncConnectionPool"
)


def _adapter_for(obj: Any) -> Any:
    """The function that instruments ``obj``, chosen by its class's module."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        top = module.split(".")[0]
        if module.startswith("poolscope.pool") and cls.__name__ == "Pool":
            from .reference import instrument_reference

            return instrument_reference
        if top == "asyncpg" and cls.__name__ == "Pool":
            from .asyncpg import instrument_asyncpg

            return instrument_asyncpg
        if top == "sqlalchemy" and cls.__name__ in ("Engine", "AsyncEngine", "Pool"):
            from .sqlalchemy import instrument_sqlalchemy

            return instrument_sqlalchemy
        if top == "psycopg_pool" and cls.__name__ in ("ConnectionPool", "AsyncConnectionPool"):
            from .psycopg import instrument_psycopg

            return instrument_psycopg
    return None


def instrument(
    obj: Any,
    *,
    name: str | None = None,
    leak_threshold: float | None = 30.0,
    heartbeat: float | None = None,
    listen: str | Endpoint | bool | None = None,
    prometheus: bool = False,
) -> Any:
    """Instrument a pool; returns the object the application should use from now on.

    Raises ``TypeError`` for an object of a kind poolscope does not support.
    Everything after this call is guarded: poolscope never raises into the pool's
    own calls.
    """
    adapter = _adapter_for(obj)
    if adapter is None:
        raise TypeError(
            f"poolscope.instrument: cannot instrument {type(obj).__module__}."
            f"{type(obj).__qualname__}; supported: {SUPPORTED}"
        )
    if leak_threshold is not None and leak_threshold <= 0:
        raise ValueError(f"leak_threshold must be positive or None, got {leak_threshold}")
    if heartbeat is not None and heartbeat <= 0:
        raise ValueError(f"heartbeat must be positive or None, got {heartbeat}")
    runtime = get_runtime()
    result = adapter(obj, runtime, name=name, leak_threshold=leak_threshold, heartbeat=heartbeat)
    if listen is not False and runtime.server is None:
        try:
            runtime.serve(None if listen is True else listen)
        except (OSError, ValueError) as exc:
            # ValueError: a non-loopback address without opt-in and token (maybe from
            # $POOLSCOPE_LISTEN): refused, and the application starts anyway.
            log.warning("poolscope: streaming disabled: cannot listen: %s", exc)
    if prometheus:
        from .prometheus import register

        register()
    return result


def serve(
    listen: str | Endpoint | None = None, *, allow_remote: bool = False, token: str | None = None
) -> Endpoint:
    """Start the stream server explicitly; returns the endpoint it listens on."""
    return get_runtime().serve(listen, allow_remote=allow_remote, token=token)


def shutdown(timeout: float = 1.0) -> None:
    """Flush the last events to observers and stop streaming (also done at exit)."""
    get_runtime().shutdown(timeout)
