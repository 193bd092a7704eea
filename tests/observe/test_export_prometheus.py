"""End to end: a real Prometheus server scrapes ``poolscope export`` and answers PromQL."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from poolscope.metrics import POOL_LABEL
from tests.fixtures.export_app import ORDERS, App, ExporterProc
from tests.fixtures.prometheus import PrometheusServer

# The two queries the README shows, verbatim.
P99_WAIT = (
    "histogram_quantile(0.99, sum by (le, db_client_connection_pool_name) "
    "(rate(db_client_connection_wait_time_seconds_bucket[5m])))"
)
UTILIZATION = 'db_client_connection_count{state="used"} / ignoring(state) db_client_connection_max'


def _by_pool(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"].get(POOL_LABEL, ""): float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_exporter(
    export_app: Callable[..., App],
    export_cli: Callable[..., ExporterProc],
    prometheus_server: Callable[[list[str]], PrometheusServer],
) -> None:
    app = export_app()
    exp = export_cli([app.endpoint])
    prom = prometheus_server([exp.url.removeprefix("http://")])

    orders = f'{{{POOL_LABEL}="orders"}}'
    res = prom.wait_for(
        f"db_client_connection_timeouts_total{orders}",
        lambda r: len(r) == 1 and float(r[0]["value"][1]) == ORDERS["timeouts"],
    )
    labels = res[0]["metric"]
    assert labels["process"] == "app.py" and labels["pid"] == str(app.pid)
    assert labels["job"] == "poolscope"

    res = prom.query(f"db_client_connection_wait_time_seconds_count{orders}")
    assert [float(r["value"][1]) for r in res] == [ORDERS["acquires"]]

    # Utilisation: the orders pool holds its leaked connection, 1 of 3 (gauges are
    # polled, so wait for the sample after the workload).
    util = prom.wait_for(UTILIZATION, lambda r: _by_pool(r).get("orders") == 1 / 3)
    assert set(_by_pool(util)) == {"orders", "steady", "down", "churn"}

    # An outage is visible in /metrics, each failure kind apart.
    res = prom.wait_for("poolscope_connect_errors_total", lambda r: _by_pool(r).get("down") == 2.0)
    assert _by_pool(prom.query("db_client_connection_timeouts_total")).get("down") == 0
    closes = prom.query('poolscope_connection_closes_total{reason="idle_timeout"}')
    assert _by_pool(closes) == {"churn": 1.0}

    # p99 wait of the steady pool: two workers share one connection held 20 ms, so a
    # waiter waits up to one hold. Needs two scrapes with traffic between them.
    p99 = prom.wait_for(P99_WAIT, lambda r: not math.isnan(_by_pool(r).get("steady", math.nan)))
    steady = _by_pool(p99)["steady"]
    assert 0.005 < steady < 0.08, steady

    # The counters move between scrapes: ~50 acquires a second in the steady pool.
    prom.wait_for(
        f'rate(db_client_connection_wait_time_seconds_count{{{POOL_LABEL}="steady"}}[3s])',
        lambda r: len(r) == 1 and float(r[0]["value"][1]) > 10,
    )
