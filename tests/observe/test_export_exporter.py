"""``poolscope export``: a real app subprocess, the real command, parsed /metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from poolscope.cli import main
from poolscope.metrics import POOL_LABEL
from tests.fixtures.export_app import FAILURES, ORDERS, App, ExporterProc, free_port
from tests.fixtures.prometheus import assert_promtool_ok

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str, openmetrics: bool = False) -> Samples:
    parser = openmetrics_families if openmetrics else text_string_to_metric_families
    out: Samples = {}
    for fam in parser(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def orders_ready(samples: Samples, pid: int) -> bool:
    """The app's final state has reached the exporter (gauges are polled)."""
    lb = {"process": "app.py", "pid": str(pid), POOL_LABEL: "orders"}
    return (
        value(samples, "db_client_connection_count", **lb, state="used") == ORDERS["used"]
        and value(samples, "db_client_connection_count", **lb, state="idle") == ORDERS["idle"]
        and value(samples, "poolscope_leaks_open", **lb) == ORDERS["leaks_open"]
    )


def wait_metrics(
    exp: ExporterProc, ok: Callable[[Samples], bool], timeout: float = 15.0
) -> tuple[Samples, str]:
    deadline = time.monotonic() + timeout
    while True:
        text, _ = exp.get()
        samples = parse(text)
        if ok(samples):
            return samples, text
        if time.monotonic() > deadline:
            raise AssertionError(
                f"metrics not as expected in {timeout:g}s; exporter said:\n"
                f"{exp.stderr_path.read_text()}\n{text[:3000]}"
            )
        time.sleep(0.1)


def test_metrics_match_the_known_workload(
    export_app: Callable[..., App],
    export_cli: Callable[..., ExporterProc],
    promtool: str,
) -> None:
    app = export_app()
    exp = export_cli([app.endpoint])
    s, text = wait_metrics(exp, lambda s: orders_ready(s, app.pid))
    lb = {"process": "app.py", "pid": str(app.pid), POOL_LABEL: "orders"}

    def v(name: str, **extra: str) -> float | None:
        return value(s, name, **lb, **extra)

    assert v("db_client_connection_timeouts_total") == ORDERS["timeouts"]
    assert v("db_client_connection_wait_time_seconds_count") == ORDERS["acquires"]
    assert v("db_client_connection_wait_time_seconds_bucket", le="+Inf") == ORDERS["acquires"]
    assert v("db_client_connection_use_time_seconds_count") == ORDERS["releases"]
    assert v("db_client_connection_create_time_seconds_count") == ORDERS["connects"]
    assert v("db_client_connection_max") == ORDERS["max"]
    assert v("db_client_connection_idle_min") == 0
    assert v("db_client_connection_pending_requests") == 0
    assert v("poolscope_leaks_total") == ORDERS["leaks_total"]
    assert v("poolscope_backend_up") == 1
    proc = {"process": "app.py", "pid": str(app.pid)}
    assert value(s, "poolscope_events_dropped_total", **proc) == 0
    assert value(s, "poolscope_internal_errors_total", **proc) == 0
    assert value(s, "poolscope_target_up", endpoint=app.endpoint) == 1
    # The second pool is there too, and busy.
    steady = {**proc, POOL_LABEL: "steady"}
    assert (value(s, "db_client_connection_wait_time_seconds_count", **steady) or 0) > 0

    assert_promtool_ok(promtool, text)

    # OpenMetrics when the scraper asks for it, with the same numbers.
    om_text, ctype = exp.get(accept="application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert om_text.rstrip().endswith("# EOF")
    om = parse(om_text, openmetrics=True)
    assert value(om, "db_client_connection_timeouts_total", **lb) == ORDERS["timeouts"]
    assert value(om, "db_client_connection_wait_time_seconds_count", **lb) == ORDERS["acquires"]
    _, ctype = exp.get()
    assert ctype.startswith("text/plain"), ctype

    health = exp.health()
    assert health["status"] == "ok"
    assert health["targets"] == [
        {
            "endpoint": app.endpoint,
            "up": True,
            "since": pytest.approx(time.time(), abs=60),
            "process": "app.py",
            "pid": str(app.pid),
        }
    ]


def test_failures_are_exported_apart(
    export_app: Callable[..., App], export_cli: Callable[..., ExporterProc]
) -> None:
    """Timeouts, acquire errors, connect errors and closes by reason in their own
    series, the same mapping as the in-app collector (test_export_inapp)."""
    app = export_app()
    exp = export_cli([app.endpoint])
    proc = {"process": "app.py", "pid": str(app.pid)}
    churn = {**proc, POOL_LABEL: "churn"}
    down = {**proc, POOL_LABEL: "down"}
    orders = {**proc, POOL_LABEL: "orders"}
    s, _ = wait_metrics(
        exp,
        lambda s: (
            orders_ready(s, app.pid)
            and value(s, "poolscope_connection_closes_total", **churn, reason="idle_timeout")
            == FAILURES["churn_idle_closes"]
        ),
    )
    assert value(s, "db_client_connection_timeouts_total", **orders) == ORDERS["timeouts"]
    assert value(s, "poolscope_acquire_errors_total", **orders) == 0
    assert value(s, "db_client_connection_timeouts_total", **down) == 0
    refused = value(s, "poolscope_acquire_errors_total", **down)
    connect_failed = FAILURES["down_connect_errors"]
    assert refused in (
        FAILURES["down_refused_acquires"],
        FAILURES["down_refused_acquires"] + connect_failed,
    )
    assert value(s, "poolscope_connect_errors_total", **down) == connect_failed
    assert value(s, "poolscope_connect_errors_total", **orders) == 0
    assert not [
        k for k in s if k[0] == "poolscope_connection_closes_total" and (POOL_LABEL, "down") in k[1]
    ]


def test_a_gone_process_stops_being_exported_and_returns(
    export_app: Callable[..., App], export_cli: Callable[..., ExporterProc]
) -> None:
    port = free_port()
    app = export_app(port)
    exp = export_cli([app.endpoint, f"127.0.0.1:{free_port()}"])  # the second: nobody there
    wait_metrics(exp, lambda s: orders_ready(s, app.pid))
    old_pid = str(app.pid)
    app.stop()

    def gone(s: Samples) -> bool:
        return (
            not any(dict(lb).get("pid") == old_pid for _, lb in s)
            and value(s, "poolscope_target_up", endpoint=app.endpoint) == 0
        )

    s, _ = wait_metrics(exp, gone, timeout=10)
    # Nothing of the dead process is left: no frozen gauges or counters.
    assert not any(name.startswith("db_client_") for name, _ in s)
    health: Any = exp.health()
    assert [t["up"] for t in health["targets"]] == [False, False]
    assert all(t["error"] for t in health["targets"])  # why each is not exported

    # A new process on the same endpoint is picked up (reconnect with backoff).
    app2 = export_app(port)
    s, _ = wait_metrics(exp, lambda s: orders_ready(s, app2.pid), timeout=15)
    assert value(s, "poolscope_target_up", endpoint=app2.endpoint) == 1
    lb = {"process": "app.py", "pid": str(app2.pid), POOL_LABEL: "orders"}
    assert value(s, "db_client_connection_timeouts_total", **lb) == ORDERS["timeouts"]
    assert not any(dict(lb).get("pid") == old_pid for _, lb in s)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["export"], "required"),
        (["export", "nonsense"], "expected :PORT"),
        (["export", ":9400", "--listen", "host:notaport"], "not a number"),
        (["export", ":9400", "--listen", "unix:/tmp/x.sock"], "--listen must be HOST:PORT"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err
    assert len(err.splitlines()) == 1, err


def test_listen_port_taken_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["export", f":{free_port()}", "--listen", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"poolscope: cannot listen on 127.0.0.1:{port}"), err
    assert len(err.splitlines()) == 1, err
