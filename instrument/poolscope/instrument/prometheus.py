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

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from poolscope.metrics import Family, Source, families, to_client

from . import errors
from .runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["PoolscopeCollector", "register", "unregister"]

log = logging.getLogger("poolscope")

#: Longest a scrape waits for a snapshot at least as new as the model it found; after
#: that it takes the latest one published (one tick older at most).
SNAPSHOT_WAIT = 0.05
#: A snapshot this recent is served as it is while a tick is under way.
RECENT = 0.5
#: Snapshots are made at most this often, unless a scrape is waiting for one.
PUBLISH_INTERVAL = 0.1
#: A snapshot is published at the end of every tick that changed the model, while
#: scrapes came this recently.
DEMAND_WINDOW = 300.0

_lock = threading.Lock()
# id(registry) -> (registry, collector): registering twice returns the first one.
_registered: dict[int, tuple[CollectorRegistry, PoolscopeCollector]] = {}


def _build(rt: Runtime) -> list[Family]:
    return families([Source(rt.model, internal_errors=errors.count())])


class _Published:
    """The latest snapshot the runtime thread made, and what it saw: (model
    generation, internal errors). The scraping thread only reads it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.key: tuple[int, int] | None = None
        self.families: list[Family] | None = None
        #: The same as prometheus_client objects, converted on the runtime thread too.
        self.client: list[Any] | None = None
        self.waiting = 0
        self.at = 0.0
        self.tick = -1
        self.demand = float("-inf")

    def fresh_for(self, want: tuple[int, int]) -> bool:
        key = self.key
        return key is not None and key[0] >= want[0] and key[1] >= want[1]


_published: weakref.WeakKeyDictionary[Runtime, _Published] = weakref.WeakKeyDictionary()


def _key(rt: Runtime) -> tuple[int, int]:
    return (rt.generation, errors.count())


def _publisher(rt: Runtime) -> _Published:
    with _lock:
        pub = _published.get(rt)
        if pub is None:
            pub = _published[rt] = _Published()
            p = pub

            def publish() -> None:  # a tick hook: on the runtime thread, between folds
                now = time.monotonic()
                if now - p.demand > DEMAND_WINDOW:
                    return
                key = _key(rt)
                if key == p.key or (not p.waiting and now - p.at < PUBLISH_INTERVAL):
                    return
                fams = _build(rt)
                client = to_client(fams)
                with p.cond:
                    p.key, p.families, p.client = key, fams, client
                    p.at, p.tick = now, rt.ticks
                    p.cond.notify_all()

            rt.tick_hooks.append(publish)
        return pub


def snapshot(rt: Runtime) -> list[Family]:
    """The model's metric families, as the runtime thread last published them."""
    return _latest(rt)[0]


def _latest(rt: Runtime) -> tuple[list[Family], list[Any] | None]:
    """The latest snapshot: (families, the same as prometheus_client objects or None).

    The runtime thread mutates the model; a snapshot made there, between two folds,
    is consistent (a histogram's count always equals its acquires) and the scrape
    never iterates a dict the other thread changes. The scrape does not schedule
    anything on the loop and never waits for it: it serves the snapshot of the latest
    tick (or one made in the last RECENT seconds), and only after a quiet spell does it
    wait, at most SNAPSHOT_WAIT, for the tick under way to publish its own.
    """
    loop = rt.loop
    if (
        loop is not None
        and loop.is_running()
        and not loop.is_closed()
        and rt.thread is not None
        and rt.thread.is_alive()
        and threading.current_thread() is not rt.thread
    ):
        pub = _publisher(rt)
        want = _key(rt)
        with pub.cond:
            pub.demand = time.monotonic()
            # Made in the latest tick: nothing fresher exists until the next one (the
            # loop is between ticks) - serve it. Made recently: the model is moving,
            # a tick's difference is noise - serve it. Otherwise (a first scrape, or the
            # first change after a quiet spell) a tick is folding under way: wait for
            # what it publishes at its end, so a quiet model is reported exactly.
            if (
                not pub.fresh_for(want)
                and pub.tick != rt.ticks
                and time.monotonic() - pub.at > RECENT
            ):
                pub.waiting += 1
                try:
                    pub.cond.wait_for(
                        lambda: pub.fresh_for(want) or pub.tick == rt.ticks, SNAPSHOT_WAIT
                    )
                finally:
                    pub.waiting -= 1
            if pub.families is not None:
                return pub.families, pub.client
    # No runtime thread (or called on it): the model does not move under us - read
    # it directly, retrying on a race with a thread just starting.
    for _ in range(3):
        try:
            return _build(rt), None
        except RuntimeError:  # mutated while we read
            continue
    return _build(rt), None


class PoolscopeCollector:
    """A prometheus_client collector over ``get_runtime().model`` (looked up per scrape)."""

    def describe(self) -> list[Any]:
        # Names only, so a registry can refuse a clash with another collector.
        return to_client(families([]))

    def collect(self) -> Iterator[Any]:
        try:
            fams, client = _latest(get_runtime())
            if client is None:
                client = to_client(fams)
        except Exception as exc:
            # A scrape must not fail the application's /metrics handler.
            errors.report("prometheus collect", exc)
            return iter(())
        return iter(client)


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
