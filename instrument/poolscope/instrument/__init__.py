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

# The adapters register themselves in ``adapter.registry`` at import (standard library
# only: each imports its pool library lazily, when it attaches).
from . import aiohttp as _aiohttp
from . import asyncpg as _asyncpg
from . import httpx as _httpx
from . import psycopg as _psycopg
from . import redis as _redis
from . import reference as _reference
from . import sqlalchemy as _sqlalchemy
from .adapter import (
    Adapter,
    Options,
    check_private_attributes,
    check_version,
    registry,
)
from .runtime import Runtime, get_runtime
from .tags import tag
from .track import Tracker, track

__all__ = [
    "Adapter",
    "Runtime",
    "Tracker",
    "get_runtime",
    "instrument",
    "registry",
    "serve",
    "shutdown",
    "tag",
    "track",
    "uninstrument",
]

log = logging.getLogger("poolscope")

del _aiohttp, _asyncpg, _httpx, _psycopg, _redis, _reference, _sqlalchemy


def _adapter_for(obj: Any) -> Adapter:
    """The adapter that handles ``obj``, its library checked; TypeError otherwise."""
    adapter = registry.for_object(obj)
    if adapter is None:
        raise TypeError(
            f"poolscope.instrument: cannot instrument {type(obj).__module__}."
            f"{type(obj).__qualname__}; supported: {registry.describe()}"
        )
    return adapter


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
    if leak_threshold is not None and leak_threshold <= 0:
        raise ValueError(f"leak_threshold must be positive or None, got {leak_threshold}")
    if heartbeat is not None and heartbeat <= 0:
        raise ValueError(f"heartbeat must be positive or None, got {heartbeat}")
    # A library outside the adapter's range, or one that moved what the adapter hooks,
    # is refused here in one line - never hooked silently wrong.
    check_version(adapter)
    check_private_attributes(adapter, obj)
    runtime = get_runtime()
    result = adapter.attach(obj, runtime, Options(name, leak_threshold, heartbeat))
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


def uninstrument(obj: Any, *, timeout: float = 1.0) -> Any:
    """Undo ``instrument(obj)`` exactly; returns the object to use from now on (the pool
    itself; for a proxy, the pool it wrapped). ``obj`` is what ``instrument`` was given
    or returned. An object of a supported kind that is not instrumented is returned as
    it is. Once no pool is left, the stream server and the background thread stop too
    (unless ``serve()`` was called explicitly); a later ``instrument()`` starts them again.
    """
    adapter = _adapter_for(obj)
    result = adapter.detach(obj)
    if result is None:
        return obj
    try:
        get_runtime().stop_if_unused(timeout)
    except Exception as exc:  # never into the application
        from . import errors

        errors.report("uninstrument", exc)
    return result


def serve(
    listen: str | Endpoint | None = None,
    *,
    allow_remote: bool = False,
    token: str | None = None,
    max_observers: int | None = None,
    allow_other_users: bool | None = None,
) -> Endpoint:
    """Start the stream server explicitly; returns the endpoint it listens on. It stays up
    when the last pool is uninstrumented.

    ``max_observers`` caps the observers served at once (default
    ``$POOLSCOPE_MAX_OBSERVERS``, else 64); ``allow_other_users=True`` (or
    ``$POOLSCOPE_ALLOW_OTHER_USERS=1``) lets loopback TCP peers of another user in."""
    runtime = get_runtime()
    endpoint = runtime.serve(
        listen,
        allow_remote=allow_remote,
        token=token,
        max_observers=max_observers,
        allow_other_users=allow_other_users,
    )
    runtime.explicit_serve = True
    return endpoint


def shutdown(timeout: float = 1.0) -> None:
    """Flush the last events to observers and stop streaming (also done at exit)."""
    get_runtime().shutdown(timeout)
