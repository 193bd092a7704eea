"""The shim never raises: a failure injected into each instrumentation path leaves the
application's pool calls with exactly the results they have uninstrumented, while
the failure is counted, logged once per place and (where the stream still works)
told to observers as an ``error`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument import discovery, errors, leakwatch, sites
from poolscope.instrument import drain as drain_module
from poolscope.instrument import runtime as runtime_module
from poolscope.instrument import server as server_module
from tests.fixtures.faults import RawObserver, await_for, make_pool, workload

HOLD = 0.4  # a hold long enough for the leak watch (every 0.2 s, on the tick) to see it
ACQUIRES = 40 + 2 + 1  # what _run_app acquires: the workload's, both held, the long hold


class Injected(RuntimeError):
    pass


def boom(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected fault")


class FailingDeque(deque):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        raise Injected("injected fault in append")


class FailingHeartbeats(deque):  # type: ignore[type-arg]
    """The recorder fails for the pool's heartbeat events only."""

    def append(self, item: Any) -> None:
        if isinstance(item, dict) and item.get("type") == "heartbeat":
            raise Injected("injected fault in heartbeat")
        super().append(item)


def _only_for(etype: str, real: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def encode(ev: Any) -> Any:
        if isinstance(ev, dict) and ev.get("type") == etype:
            raise Injected("injected fault in encode")
        return real(ev)

    return encode


def _break_acquire_encoding(mp: pytest.MonkeyPatch) -> None:
    # The generic encoder, and the drain's fast line for the application's acquires.
    mp.setattr(drain_module, "encode", _only_for("acquire", drain_module.encode))
    mp.setattr(drain_module, "encode_acquire", boom)


# name -> (set-up before instrument(), set-up after, is the error event expected in the model)
Setup = Callable[[pytest.MonkeyPatch, runtime_module.Runtime], None]


def _nothing(mp: pytest.MonkeyPatch, rt: runtime_module.Runtime) -> None:
    return None


FAULTS: dict[str, tuple[Setup, Setup, bool]] = {
    "recorder append (hot path)": (
        lambda mp, rt: mp.setattr(rt.recorder, "buffer", FailingDeque(maxlen=rt.recorder.capacity)),
        _nothing,
        False,  # the recorder itself is broken: nothing reaches the model
    ),
    "fold (model.apply)": (
        _nothing,
        lambda mp, rt: mp.setattr(rt.model, "apply", boom),
        False,
    ),
    "encode (serializer)": (
        lambda mp, rt: _break_acquire_encoding(mp),
        _nothing,
        True,
    ),
    "server broadcast": (
        lambda mp, rt: mp.setattr(server_module.StreamServer, "broadcast", boom),
        _nothing,
        True,
    ),
    "observer queue": (
        lambda mp, rt: mp.setattr(server_module.Observer, "put", boom),
        _nothing,
        True,
    ),
    "greeting (hello/sync)": (
        lambda mp, rt: mp.setattr(rt, "_greeting", boom),
        _nothing,
        True,
    ),
    "site capture (hot path)": (
        lambda mp, rt: mp.setattr(sites, "capture", boom),
        _nothing,
        True,
    ),
    "site formatting": (
        lambda mp, rt: mp.setattr(sites, "format_site", boom),
        _nothing,
        True,
    ),
    "gauges (state poll)": (
        _nothing,
        lambda mp, rt: [mp.setattr(h, "gauges", boom) for h in rt.handles.values()],  # type: ignore[func-returns-value]
        True,
    ),
    "leak report (holder's stack)": (
        lambda mp, rt: mp.setattr(leakwatch, "current_stack", boom),
        _nothing,
        True,
    ),
    "heartbeat": (
        lambda mp, rt: mp.setattr(
            rt.recorder, "buffer", FailingHeartbeats(maxlen=rt.recorder.capacity)
        ),
        _nothing,
        True,
    ),
    "discovery entry": (
        lambda mp, rt: mp.setattr(discovery, "write_entry", boom),
        _nothing,
        True,
    ),
}


async def _run_app(pool: Any) -> list[Any]:
    """The application's calls: the workload, then one connection held past the leak threshold."""
    seen = await workload(pool, 40)
    async with pool.acquire() as conn:
        await asyncio.sleep(HOLD)
        seen.append(conn.value > 0)
    return seen


@pytest.fixture(scope="module")
def baseline() -> list[Any]:
    """The same calls on a pool nobody instruments."""

    async def go() -> list[Any]:
        async with make_pool() as pool:
            return await _run_app(pool)

    return asyncio.run(go())


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_injected_fault_never_reaches_the_application(
    fault: str,
    baseline: list[Any],
    fresh_runtime: runtime_module.Runtime,
    fresh_errors: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = fresh_runtime
    before, after, expect_event = FAULTS[fault]
    rt.state_interval = 0.05  # poll gauges often, so a broken gauge fails many times
    caplog.set_level(logging.WARNING, logger="poolscope")
    before(monkeypatch, rt)

    pool = ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=0.1, heartbeat=0.05)
    after(monkeypatch, rt)
    assert rt.endpoint is not None and rt.endpoint.port
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    try:
        async with pool:
            seen = await _run_app(pool)
        # The application saw exactly what it sees uninstrumented.
        assert seen == baseline
        # The failure was counted ...
        await await_for(lambda: errors.count() > fresh_errors, 5.0)
        # ... and logged once per place, with no traceback.
        logged = [r for r in caplog.records if "poolscope internal error in" in r.getMessage()]
        assert logged, "the failure was not logged"
        places = [r.getMessage().split(" in ", 1)[1].split(" (")[0] for r in logged]
        assert len(places) == len(set(places)), places
        assert all(r.exc_info is None and r.levelno == logging.WARNING for r in logged)
        if expect_event:
            # Observers are told: the internal error is an event of the stream.
            await await_for(lambda: rt.model.internal_errors > 0, 5.0)
            # And nothing the application did went missing from the model.
            p = rt.model.pools["app"]
            await await_for(lambda: p.releases == ACQUIRES, 5.0)
            assert p.acquires == ACQUIRES and p.holders == {} and rt.model.leaks == {}
        # The stream server and the runtime thread are still alive for the next observer.
        assert rt.thread is not None and rt.thread.is_alive()
        if fault not in ("greeting (hello/sync)", "observer queue"):
            ob2 = RawObserver(rt.endpoint.host, rt.endpoint.port)
            try:
                await await_for(lambda: any(b'"type":"hello"' in ln for ln in ob2.lines()), 5.0)
            finally:
                ob2.close()
    finally:
        ob.close()


async def test_fold_failure_does_not_stop_the_stream(
    fresh_runtime: runtime_module.Runtime, fresh_errors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-app model breaking must not silence the observers."""
    rt = fresh_runtime
    pool = ps.instrument(make_pool(), listen="127.0.0.1:0", leak_threshold=None)
    assert rt.endpoint is not None
    ob = RawObserver(rt.endpoint.host, rt.endpoint.port)
    try:
        await await_for(lambda: ob.lines(), 5.0)
        monkeypatch.setattr(rt.model, "apply", boom)
        async with pool:
            for _ in range(20):
                async with pool.acquire():
                    pass
        await await_for(lambda: sum(e["type"] == "release" for e in ob.events()) >= 20, 5.0)
    finally:
        ob.close()


async def test_errors_report_survives_a_broken_listener(fresh_errors: int) -> None:
    """A listener that itself fails (or re-enters report) cannot recurse or raise."""
    calls: list[str] = []

    def reentrant(where: str, message: str) -> None:
        calls.append(where)
        errors.report("listener", Injected("again"))
        raise Injected("listener broke")

    errors.listeners.append(reentrant)
    try:
        errors.report("test", Injected("first"))
    finally:
        errors.listeners.remove(reentrant)
    # "test", the listener's own report and the listener's exception; no recursion.
    assert errors.count() - fresh_errors == 3
    assert calls == ["test"]


async def test_internal_errors_reach_the_metric(
    fresh_runtime: runtime_module.Runtime, fresh_errors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """poolscope_internal_errors_total counts what errors.count() counts (in-app /metrics)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from poolscope.instrument.prometheus import register

    rt = fresh_runtime
    rt.state_interval = 0.05
    pool = ps.instrument(make_pool(), listen=False, leak_threshold=None)
    for h in rt.handles.values():
        monkeypatch.setattr(h, "gauges", boom)
    registry = CollectorRegistry()
    register(registry)

    def metric() -> float:
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("poolscope_internal_errors_total"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async with pool:
        await await_for(lambda: metric() >= 3, 5.0)
    assert rt.model.internal_errors <= errors.count() - fresh_errors
