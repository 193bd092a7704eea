"""In-app Prometheus export: a collector over the runtime's folded model.

    import poolscope.instrument as ps
    pool = ps.instrument(pool, name="orders", prometheus=True)
    # or: from poolscope.instrument.prometheus import register; register(my_registry)

An application that already serves ``/metrics`` with prometheus_client gets the
pool metrics there, with no new port. Even this module imports only the standard
library: prometheus_client is imported by :func:`register`, when Prometheus
export is asked for.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from poolscope.metrics import Family, Source, families, to_client

from . import errors
from .runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["PoolscopeCollector", "register", "unregister"]

log = logging.getLogger("poolscope")

#: How long a scrape waits for the runtime thread to take a consistent snapshot.
SNAPSHOT_TIMEOUT = 2.0

_lock = threading.Lock()
# id(registry) -> (registry, collector): registering twice returns the first one.
_registered: dict[int, tuple[CollectorRegistry, PoolscopeCollector]] = {}


def _build(rt: Runtime) -> list[Family]:
    return families([Source(rt.model, internal_errors=errors.count())])


def snapshot(rt: Runtime) -> list[Family]:
    """The model's metric families, read on the runtime thread when it runs.

    The runtime thread mutates the model; reading it there gives a consistent
    snapshot (a histogram's count always equals its acquires) and no "dict
    changed size during iteration" from a scraping thread.
    """
    loop = rt.loop
    if (
        loop is not None
        and loop.is_running()
        and not loop.is_closed()
        and threading.current_thread() is not rt.thread
    ):
        fut: concurrent.futures.Future[list[Family]] = concurrent.futures.Future()

        def work() -> None:
            try:
                fut.set_result(_build(rt))
            except BaseException as exc:
                fut.set_exception(exc)

        try:
            loop.call_soon_threadsafe(work)
            return fut.result(SNAPSHOT_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            pass  # loop stopped or stuck: read directly, retrying on a race below
    for _ in range(3):
        try:
            return _build(rt)
        except RuntimeError:  # mutated while we read
            continue
    return _build(rt)


class PoolscopeCollector:
    """A prometheus_client collector over ``get_runtime().model`` (looked up per scrape)."""

    def describe(self) -> list[Any]:
        # Names only, so a registry can refuse a clash with another collector.
        return to_client(families([]))

    def collect(self) -> Iterator[Any]:
        try:
            fams = to_client(snapshot(get_runtime()))
        except Exception as exc:
            # A scrape must not fail the application's /metrics handler.
            errors.report("prometheus collect", exc)
            return iter(())
        return iter(fams)


def register(registry: CollectorRegistry | None = None) -> PoolscopeCollector:
    """Register the poolscope collector (in ``registry``, default the global one).

    Idempotent: a second call for the same registry returns the collector already
    registered. A clash with another collector's names is logged, not raised.
    """
    from prometheus_client.registry import REGISTRY

    reg = REGISTRY if registry is None else registry
    with _lock:
        existing = _registered.get(id(reg))
        if existing is not None and existing[0] is reg:
            return existing[1]
        collector = PoolscopeCollector()
        try:
            reg.register(collector)
        except ValueError as exc:
            log.warning("poolscope: Prometheus collector not registered: %s", exc)
            return collector
        _registered[id(reg)] = (reg, collector)
        return collector


def unregister(registry: CollectorRegistry | None = None) -> None:
    """Remove the poolscope collector from ``registry`` (default the global one)."""
    from prometheus_client.registry import REGISTRY

    reg = REGISTRY if registry is None else registry
    with _lock:
        existing = _registered.pop(id(reg), None)
        if existing is not None and existing[0] is reg:
            reg.unregister(existing[1])
