"""In-app Prometheus export: the collector over the runtime's model in a real registry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY, CollectorRegistry

import poolscope.instrument as ps
from poolscope.instrument import errors
from poolscope.instrument import prometheus as ps_prom
from poolscope.instrument.runtime import Runtime
from poolscope.metrics import POOL_LABEL
from poolscope.pool import Pool, PoolTimeout
from tests.fixtures.prometheus import assert_promtool_ok

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class _Conn:
    async def close(self) -> None:
        return None


async def _factory() -> _Conn:
    return _Conn()


def _scrape(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _v(samples: Samples, name: str, pool: str | None, **labels: str) -> float:
    key = {**labels, **({POOL_LABEL: pool} if pool else {})}
    return samples[(name, frozenset(key.items()))]


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_registry_values_match_a_known_workload(fresh_runtime: Runtime) -> None:
    fresh_runtime.state_interval = 0.05
    pool: Pool[_Conn] = Pool(_factory, max_size=2, acquire_timeout=0.02, name="inapp")
    ps.instrument(pool, name="inapp", leak_threshold=None, listen=False)
    registry = CollectorRegistry()
    ps_prom.register(registry)
    async with pool:
        for _ in range(20):
            async with pool.acquire():
                pass
        a = await pool.acquire()
        b = await pool.acquire()
        for _ in range(4):  # injected timeouts: the pool is exhausted
            with pytest.raises(PoolTimeout):
                await pool.acquire()
        await pool.release(b)
        model = fresh_runtime.model
        await _until(
            lambda: (
                model.pools.get("inapp") is not None
                and model.pools["inapp"].releases == 21
                and model.pools["inapp"].in_use == 1
            )
        )
        s = _scrape(registry)
        await pool.release(a)
    acquires = 22
    assert _v(s, "db_client_connection_timeouts_total", "inapp") == 4
    assert _v(s, "db_client_connection_wait_time_seconds_count", "inapp") == acquires
    assert _v(s, "db_client_connection_wait_time_seconds_bucket", "inapp", le="+Inf") == acquires
    assert _v(s, "db_client_connection_use_time_seconds_count", "inapp") == acquires - 1
    assert _v(s, "db_client_connection_create_time_seconds_count", "inapp") == 2
    assert _v(s, "db_client_connection_count", "inapp", state="used") == 1
    assert _v(s, "db_client_connection_count", "inapp", state="idle") == 1
    assert _v(s, "db_client_connection_max", "inapp") == 2
    assert _v(s, "db_client_connection_pending_requests", "inapp") == 0
    assert _v(s, "poolscope_backend_up", "inapp") == 1
    # In-app series carry no process labels: Prometheus' target labels say which process.
    assert all({k for k, _ in labels} <= {POOL_LABEL, "state", "le"} for (_, labels) in s), (
        "unexpected labels"
    )
    # Every successful acquire was a short wait: all in buckets well under a second.
    assert _v(s, "db_client_connection_wait_time_seconds_bucket", "inapp", le="1") == acquires


async def _refused() -> _Conn:
    raise ConnectionRefusedError("refused")


async def test_failures_are_counted_apart(fresh_runtime: Runtime) -> None:
    """Timeouts, acquire errors, connect errors and closes by reason: each its own
    series, from real failures of real pools (a refusing backend behind a breaker,
    an exhausted pool, an idle timeout)."""
    fresh_runtime.state_interval = 0.05
    down: Pool[_Conn] = Pool(
        _refused, max_size=2, acquire_timeout=0.2, breaker_threshold=2, breaker_reset=60.0
    )
    ps.instrument(down, name="down", leak_threshold=None, listen=False)
    busy: Pool[_Conn] = Pool(_factory, max_size=1, acquire_timeout=0.02, idle_timeout=0.05)
    ps.instrument(busy, name="busy", leak_threshold=None, listen=False)
    registry = CollectorRegistry()
    ps_prom.register(registry)
    seen: dict[str, int] = {}
    async with down, busy:
        for _ in range(5):  # 2 refused connects open the breaker; 3 refused by it
            try:
                async with down.acquire():
                    pass
            except Exception as exc:
                seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
        held = await busy.acquire()
        for _ in range(3):
            with pytest.raises(PoolTimeout):
                await busy.acquire()
        await busy.release(held)
        model = fresh_runtime.model
        await _until(lambda: model.pools["busy"].closes.get("idle_timeout", 0) >= 1)
        s = _scrape(registry)
    assert seen == {"ConnectionRefusedError": 2, "CircuitOpenError": 3}
    assert _v(s, "db_client_connection_timeouts_total", "busy") == 3
    assert _v(s, "db_client_connection_timeouts_total", "down") == 0
    # Every acquire the breaker refused is an acquire error (and the two refused
    # connects too, where the pool reports those acquires as failed).
    assert _v(s, "poolscope_acquire_errors_total", "down") in (3, 5)
    assert _v(s, "poolscope_acquire_errors_total", "busy") == 0
    assert _v(s, "poolscope_connect_errors_total", "down") == 2
    assert _v(s, "poolscope_connect_errors_total", "busy") == 0
    assert _v(s, "poolscope_connection_closes_total", "busy", reason="idle_timeout") >= 1
    assert not [
        k for k in s if k[0] == "poolscope_connection_closes_total" and (POOL_LABEL, "down") in k[1]
    ]


async def test_internal_errors_come_from_the_error_counter(fresh_runtime: Runtime) -> None:
    registry = CollectorRegistry()
    ps_prom.register(registry)
    before = _v(_scrape(registry), "poolscope_internal_errors_total", None)
    assert before == errors.count()
    errors.report("test_export_inapp", RuntimeError("counted, not raised"))
    after = _v(_scrape(registry), "poolscope_internal_errors_total", None)
    assert after == before + 1


async def test_register_twice_and_instrument_with_prometheus(fresh_runtime: Runtime) -> None:
    registry = CollectorRegistry()
    first = ps_prom.register(registry)
    assert ps_prom.register(registry) is first
    generate_latest(registry)  # one collector: no duplicate families

    pool: Pool[_Conn] = Pool(_factory, max_size=1, name="global")
    try:
        ps.instrument(pool, name="global", leak_threshold=None, listen=False, prometheus=True)
        pool2: Pool[_Conn] = Pool(_factory, max_size=1, name="global2")
        ps.instrument(pool2, name="global2", leak_threshold=None, listen=False, prometheus=True)
        await _until(lambda: "global2" in fresh_runtime.model.pools)
        text = generate_latest(REGISTRY).decode()
        assert text.count("# TYPE db_client_connection_max gauge") == 1
        assert f'db_client_connection_max{{{POOL_LABEL}="global2"}} 1.0' in text
    finally:
        ps_prom.unregister()
    assert "db_client_connection_max" not in generate_latest(REGISTRY).decode()


def test_prometheus_client_is_imported_only_when_asked() -> None:
    code = (
        "import sys\n"
        "import poolscope.instrument\n"
        "assert 'prometheus_client' not in sys.modules, 'eager prometheus_client'\n"
        "from poolscope.instrument.prometheus import register\n"
        "assert 'prometheus_client' not in sys.modules, 'eager in the collector module'\n"
        "register()\n"
        "assert 'prometheus_client' in sys.modules\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp in the app'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


async def test_in_app_output_passes_promtool(fresh_runtime: Runtime, promtool: str) -> None:
    pool: Pool[_Conn] = Pool(_factory, max_size=1, name="checked")
    ps.instrument(pool, name="checked", leak_threshold=None, listen=False)
    async with pool, pool.acquire():
        pass
    await _until(lambda: "checked" in fresh_runtime.model.pools)
    registry = CollectorRegistry()
    ps_prom.register(registry)
    assert_promtool_ok(promtool, generate_latest(registry).decode())
