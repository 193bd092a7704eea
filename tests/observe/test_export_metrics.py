"""The PoolState -> metric families mapping (poolscope.metrics), on known event streams."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from poolscope.histogram import bucket_of, bucket_upper
from poolscope.metrics import BUCKET_EDGES, POOL_LABEL, Source, families, to_client
from poolscope.model import PoolState, fold

CONTRACT = {
    "db_client_connection_count": "gauge",
    "db_client_connection_max": "gauge",
    "db_client_connection_idle_max": "gauge",
    "db_client_connection_idle_min": "gauge",
    "db_client_connection_pending_requests": "gauge",
    "db_client_connection_timeouts_total": "counter",
    "db_client_connection_create_time_seconds": "histogram",
    "db_client_connection_wait_time_seconds": "histogram",
    "db_client_connection_use_time_seconds": "histogram",
    "poolscope_acquire_errors_total": "counter",
    "poolscope_connect_errors_total": "counter",
    "poolscope_connection_closes_total": "counter",
    "poolscope_leaks_open": "gauge",
    "poolscope_leaks_total": "counter",
    "poolscope_heartbeat_failures_total": "counter",
    "poolscope_backend_up": "gauge",
    "poolscope_events_dropped_total": "counter",
    "poolscope_internal_errors_total": "counter",
}
PROCESS_WIDE = {"poolscope_events_dropped_total", "poolscope_internal_errors_total"}


def _ev(type_: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "t": t, **fields}


def known_state() -> PoolState:
    """Pool "a": 4 acquires (waits known), 3 releases, 2 timeouts, 3 acquire errors,
    1 connect error, closes by reason (2 lost, 1 idle_timeout), 1 leak, backend down."""
    waits = [0.00005, 0.0001, 0.002, 70.0]
    evs = [
        _ev("hello", 1.0, protocol=1, pid=42, process="app", version="0"),
        _ev("pool", 1.0, pool="a", kind="poolscope", config={"min": 1, "max": 5}, target=""),
        _ev("pool", 1.0, pool="b", kind="poolscope", config={"min": 0, "max": 2, "max_idle": 1}),
        _ev("connect", 1.1, pool="a", conn="1", duration=0.003),
        _ev("connect", 1.1, pool="a", conn="2", duration=0.004),
    ]
    for i, w in enumerate(waits):
        evs.append(_ev("acquire", 2.0 + i, pool="a", conn=str(i), wait=w, site=None))
    for i, h in enumerate([0.01, 0.5, 2.0]):
        evs.append(_ev("release", 3.0 + i, pool="a", conn=str(i), hold=h))
    evs += [
        _ev("timeout", 4.0, pool="a", wait=0.5, error="no connection"),
        _ev("timeout", 4.1, pool="a", wait=0.5, error="no connection"),
        *(_ev("acquire_error", 4.15, pool="a", error="refused") for _ in range(3)),
        _ev("connect_error", 4.16, pool="a", error="refused"),
        _ev("close", 4.17, pool="a", conn="8", reason="lost", age=1.0),
        _ev("close", 4.17, pool="a", conn="9", reason="lost", age=1.0),
        _ev("close", 4.18, pool="a", conn="7", reason="idle_timeout", age=9.0),
        _ev("heartbeat", 4.2, pool="a", conn="1", ok=False, latency=None, error="boom"),
        _ev("heartbeat", 4.3, pool="a", conn="1", ok=True, latency=0.001, error=None),
        _ev("leak", 5.0, pool="a", conn="3", held=31.0, stack=[], task="t"),
        _ev("backend", 5.1, pool="a", state="down", previous="suspect"),
        _ev("state", 6.0, pool="a", size=4, idle=1, in_use=3, waiting=2, max=5, min=1),
        _ev("dropped", 6.1, count=7),
        _ev("error", 6.2, error="x"),
    ]
    return fold(evs)


def _samples(fams: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for f in fams:
        for s in f.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _parse(text: str) -> tuple[dict[str, Any], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    fams = list(text_string_to_metric_families(text))
    return {f.name: f for f in fams}, _samples(fams)


def _render(state: PoolState, **labels: str) -> str:
    class C:
        def collect(self) -> list[Any]:
            return to_client(families([Source(state, labels)]))

    reg = CollectorRegistry()
    reg.register(C())
    return generate_latest(reg).decode()


def test_contract_names_types_and_help() -> None:
    by_name, samples = _parse(_render(known_state()))
    exposed = {
        (f.name + "_total" if f.type == "counter" else f.name): f.type for f in by_name.values()
    }
    assert exposed == CONTRACT
    for f in by_name.values():
        assert len(f.documentation) > 20, f.name
    for (name, labels), _ in samples.items():
        label_names = {k for k, _ in labels}
        if any(name.startswith(p) for p in PROCESS_WIDE):
            assert POOL_LABEL not in label_names
        else:
            assert POOL_LABEL in label_names, name


def test_values_match_the_known_stream() -> None:
    _, s = _parse(_render(known_state(), process="app", pid="42"))
    a = {("process", "app"), ("pid", "42"), (POOL_LABEL, "a")}
    b = {("process", "app"), ("pid", "42"), (POOL_LABEL, "b")}

    def v(name: str, labels: set[tuple[str, str]], **extra: str) -> float:
        return s[(name, frozenset(labels | set(extra.items())))]

    assert v("db_client_connection_count", a, state="idle") == 1
    assert v("db_client_connection_count", a, state="used") == 3
    assert v("db_client_connection_max", a) == 5
    assert v("db_client_connection_idle_max", a) == 5  # no separate idle limit
    assert v("db_client_connection_idle_max", b) == 1  # max_idle from the config
    assert v("db_client_connection_idle_min", a) == 1
    assert v("db_client_connection_pending_requests", a) == 2
    # Each failure kind in its own series: timeouts stay timeouts only.
    assert v("db_client_connection_timeouts_total", a) == 2
    assert v("poolscope_acquire_errors_total", a) == 3
    assert v("poolscope_connect_errors_total", a) == 1
    assert v("poolscope_connection_closes_total", a, reason="lost") == 2
    assert v("poolscope_connection_closes_total", a, reason="idle_timeout") == 1
    assert v("poolscope_acquire_errors_total", b) == 0
    assert not any(
        n == "poolscope_connection_closes_total" and (POOL_LABEL, "b") in lb for n, lb in s
    )
    assert v("db_client_connection_wait_time_seconds_count", a) == 4
    assert math.isclose(v("db_client_connection_wait_time_seconds_sum", a), 70.00215)
    assert v("db_client_connection_use_time_seconds_count", a) == 3
    assert v("db_client_connection_create_time_seconds_count", a) == 2
    assert v("poolscope_leaks_open", a) == 1
    assert v("poolscope_leaks_total", a) == 1
    assert v("poolscope_heartbeat_failures_total", a) == 1
    assert v("poolscope_backend_up", a) == 0
    assert v("poolscope_backend_up", b) == 1
    proc = {("process", "app"), ("pid", "42")}
    assert v("poolscope_events_dropped_total", proc) == 7
    assert v("poolscope_internal_errors_total", proc) == 1
    # Waits below 100 us fall in the first bucket, 70 s only in +Inf.
    assert v("db_client_connection_wait_time_seconds_bucket", a, le="0.0001") == 2
    assert v("db_client_connection_wait_time_seconds_bucket", a, le="63.0957") == 3
    assert v("db_client_connection_wait_time_seconds_bucket", a, le="+Inf") == 4


def test_bucket_edges_cover_100us_to_60s_on_model_edges() -> None:
    assert BUCKET_EDGES[0] == 1e-4
    assert BUCKET_EDGES[-2] < 60 <= BUCKET_EDGES[-1]
    assert list(BUCKET_EDGES) == sorted(BUCKET_EDGES)
    for e in BUCKET_EDGES:  # every le is an edge of the model's own buckets
        assert bucket_upper(bucket_of(e)) == e


def test_cumulative_counts_are_exact_at_every_edge() -> None:
    # Values on, just below and just above each edge, where interpolation would err.
    values = []
    for e in BUCKET_EDGES:
        values += [e, e * 0.999, e * 1.001]
    values += [1e-7, 100.0]
    events = [_ev("pool", 0.0, pool="p", kind="x", config={}, target="")]
    events += [
        _ev("acquire", 1.0, pool="p", conn=str(i), wait=w, site=None) for i, w in enumerate(values)
    ]
    _, s = _parse(_render(fold(events)))
    for e in BUCKET_EDGES:
        le = f"{e:.6g}"
        got = s[
            (
                "db_client_connection_wait_time_seconds_bucket",
                frozenset({(POOL_LABEL, "p"), ("le", le)}),
            )
        ]
        assert got == sum(1 for x in values if x <= e), le
    inf = s[
        (
            "db_client_connection_wait_time_seconds_bucket",
            frozenset({(POOL_LABEL, "p"), ("le", "+Inf")}),
        )
    ]
    assert inf == len(values)


def test_metrics_module_is_stdlib_only() -> None:
    code = (
        "import sys, poolscope.metrics; "
        "bad = [m for m in ('prometheus_client', 'aiohttp', 'textual') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
