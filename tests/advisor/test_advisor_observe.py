"""The advisor from observation: estimates, recommendations and assumption warnings."""

from __future__ import annotations

import json
import math
import random

import pytest

from poolscope import advisor
from poolscope.histogram import Histogram
from poolscope.model import PoolState, fold
from tests.fixtures.advisor import poisson_arrivals, synth_events

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses


def _advise(events: list[dict[str, object]], **kw: object) -> advisor.Advice:
    state, log = advisor.fold_with_arrivals(events)
    return advisor.advise(state, "orders", arrivals=log, cores=4, **kw)  # type: ignore[arg-type]


def test_poisson_workload_is_estimated_and_advised() -> None:
    rate, hold, size = 60.0, 0.04, 4
    a = _advise(synth_events(rate=rate, hold=hold, size=size, seconds=90, seed=3))
    w = a.workload
    assert w.rate_source == "acquire events"
    assert w.rate == pytest.approx(rate, rel=0.06)
    assert w.hold_mean == pytest.approx(hold, rel=0.06)
    assert w.hold_cv is not None and 0.85 < w.hold_cv < 1.15
    assert w.dispersion is not None and 0.6 < w.dispersion < 1.5
    assert w.mean_in_use == pytest.approx(rate * hold, rel=0.25)
    assert a.current_size == size
    # The predictions are the theory's, from the observed rate and hold.
    assert a.predicted_p99_current == pytest.approx(advisor.wait_p99(size, w.rate, w.hold_mean))
    expected = advisor.smallest_size(w.rate, w.hold_mean, advisor.DEFAULT_P99_TARGET)
    assert a.recommended == a.model_size == expected
    assert a.predicted_p99_recommended is not None
    assert a.predicted_p99_recommended <= advisor.DEFAULT_P99_TARGET
    # A measured p99 is reported beside the predicted (within a histogram bucket or so
    # of the truth: the queue was simulated exactly as the model assumes).
    assert a.measured_p99 is not None and a.predicted_p99_current is not None
    assert a.measured_p99 == pytest.approx(a.predicted_p99_current, rel=0.45)
    assert not a.warnings, a.warnings
    text = "\n".join(advisor.format_advice(a))
    assert "Little's law" in text and "Folk rules" in text and "cores × 2 + spindles = 9" in text
    assert f"recommended size {a.recommended} (now {size})" in text


def test_verdicts() -> None:
    grow = _advise(synth_events(rate=80.0, hold=0.04, size=4, seconds=60, seed=4))
    assert grow.verdict == "grow" and grow.recommended is not None and grow.recommended > 4
    assert "grow from 4 to" in " ".join(grow.reasoning)
    shrink = _advise(synth_events(rate=20.0, hold=0.02, size=20, seconds=60, seed=5))
    assert shrink.verdict == "shrink"
    assert shrink.recommended is not None and shrink.recommended < 20


def test_bursty_arrivals_are_flagged() -> None:
    rng = random.Random(9)
    # 120 acquires in a clump every 4 seconds: the same mean rate, nothing like Poisson.
    times = sorted(b * 4 + rng.uniform(0, 0.2) for b in range(15) for _ in range(120))
    a = _advise(synth_events(arrivals=times, hold=0.02, size=6, seconds=60, seed=9))
    assert a.workload.dispersion is not None and a.workload.dispersion > 5
    assert any(w.startswith("Bursty arrivals") for w in a.warnings), a.warnings
    assert any("Allen-Cunneen" in w for w in a.warnings)


def test_regular_arrivals_are_flagged() -> None:
    times = [i / 40 for i in range(40 * 60)]  # exactly 40 per second
    a = _advise(synth_events(arrivals=times, hold=0.02, size=4, seconds=60))
    assert a.workload.dispersion is not None and a.workload.dispersion < 0.2
    assert any("more regular than random" in w for w in a.warnings), a.warnings


def test_heavy_tailed_holds_are_flagged() -> None:
    a = _advise(
        synth_events(
            rate=30.0,
            size=8,
            seconds=60,
            hold_sampler=lambda r: r.lognormvariate(math.log(0.01), 2.0),
        )
    )
    assert a.workload.hold_cv is not None and a.workload.hold_cv > 2
    assert any(w.startswith("Heavy-tailed hold times") for w in a.warnings), a.warnings


def test_too_little_data_is_flagged() -> None:
    a = _advise(synth_events(rate=10.0, seconds=5, seed=2))
    assert a.recommended is not None
    assert any(w.startswith("Too little data") for w in a.warnings)


def test_no_traffic_gives_no_recommendation() -> None:
    a = _advise(synth_events(arrivals=[], seconds=10))
    assert a.recommended is None and a.verdict == "unknown"
    assert any(w.startswith("Too little data") for w in a.warnings)
    lines = advisor.format_advice(a)
    assert lines[0] == "orders: no recommendation"
    json.dumps(a.to_dict(), allow_nan=False)


def test_saturated_pool_is_flagged() -> None:
    # Offered load 3.2 on 3 connections: the queue only grows, and the pool caps
    # what can be observed at about 3 busy.
    a = _advise(synth_events(rate=80.0, hold=0.04, size=3, seconds=40, seed=6))
    assert a.workload.offered_load == pytest.approx(3.0, rel=0.05)
    assert a.predicted_p99_current is not None and a.predicted_p99_current > 1.0
    assert any(w.startswith("The pool is saturated") for w in a.warnings)
    assert a.verdict == "grow"


def _workload(**kw: object) -> advisor.Workload:
    base: dict[str, object] = dict(
        pool="p", size=3, rate=100.0, rate_source="acquire events", span=60.0, attempts=6000,
        holds=6000, hold_mean=0.04, hold_cv=1.0, hold_p50=0.03, hold_p99=0.18, waits=6000,
        wait_mean=0.5, wait_p50=0.4, wait_p99=2.0, timeouts=12, dispersion=1.0,
        dispersion_bins=60, mean_in_use=3.0,
    )  # fmt: skip
    base.update(kw)
    return advisor.Workload(**base)  # type: ignore[arg-type]


def test_unbounded_prediction_serialises() -> None:
    a = advisor.advise_workload(_workload())  # rate × hold = 4 on 3 connections
    assert a.predicted_p99_current == math.inf
    d = a.to_dict()
    assert d["predicted_p99_current"] is None and d["unbounded_current"] is True
    assert d["unbounded_recommended"] is False and d["recommended"] == a.recommended
    assert "unbounded" in "\n".join(advisor.format_advice(a))
    assert any("12 acquires timed out" in w for w in a.warnings)
    json.dumps(d, allow_nan=False)


def test_measured_far_above_predicted_is_flagged() -> None:
    a = advisor.advise_workload(_workload(size=10, rate=50.0, wait_p99=0.5, timeouts=0))
    assert a.predicted_p99_current is not None and a.predicted_p99_current < 0.01
    assert any(w.startswith("Measured p99 wait") for w in a.warnings), a.warnings


def test_database_share_caps_the_advice() -> None:
    events = synth_events(rate=200.0, hold=0.05, size=10, seconds=40, seed=8)
    free = _advise(events)
    assert free.recommended is not None and free.recommended > 12
    capped = _advise(events, db_max_connections=60, instances=4)  # 60 × 0.8 / 4 = 12
    assert capped.recommended == 12 and capped.model_size == free.recommended
    assert any("The database allows 12 per instance" in w for w in capped.warnings)
    assert any(f.name == "database share" and f.size == 12 for f in capped.folk)


def test_state_alone_uses_gauge_samples() -> None:
    """The TUI path: a state that arrived as a ``sync`` (no live acquire events)."""
    rate, hold = 50.0, 0.03
    live = fold(synth_events(rate=rate, hold=hold, size=4, seconds=120, seed=11))
    state = PoolState.from_dict(json.loads(json.dumps(live.to_dict())))
    a = advisor.advise(state, "orders")
    assert a.workload.rate_source == "gauge samples"
    assert a.workload.rate == pytest.approx(rate, rel=0.06)
    assert a.workload.dispersion is not None and 0.5 < a.workload.dispersion < 1.6
    assert a.recommended == advisor.smallest_size(a.workload.rate, a.workload.hold_mean)
    # An unknown pool is simply "no data".
    assert advisor.advise(state, "nope").recommended is None


def test_arrivals_restart_at_sync_and_use_wait_start() -> None:
    events = [
        {"type": "acquire", "t": 5.0, "pool": "p", "conn": "1", "wait": 0.0},
        {"type": "sync", "t": 10.0, "state": PoolState().to_dict()},
        {"type": "acquire", "t": 12.0, "pool": "p", "conn": "2", "wait": 0.5},
        {"type": "timeout", "t": 13.0, "pool": "p", "wait": 2.0, "error": "x"},
        {"type": "release", "t": 14.0, "pool": "p", "conn": "2", "hold": 2.0},
    ]
    _, log = advisor.fold_with_arrivals(events)
    assert log.start == 10.0 and log.end == 14.0
    assert log.times["p"] == [11.5, 11.0]


def test_histogram_cv_and_dispersion() -> None:
    rng = random.Random(1)
    h = Histogram()
    for _ in range(20000):
        h.add(rng.expovariate(20.0))
    cv = advisor.histogram_cv(h)
    assert cv is not None and cv == pytest.approx(1.0, abs=0.06)
    flat = Histogram()
    for _ in range(100):
        flat.add(0.05)
    assert advisor.histogram_cv(flat) == pytest.approx(0.0, abs=1e-9)
    assert advisor.histogram_cv(Histogram()) is None
    counts = advisor.per_second_counts(poisson_arrivals(30.0, 200, rng), 0.0, 200.0)
    d = advisor.dispersion_index([float(c) for c in counts])
    assert d is not None and 0.75 < d < 1.3
    assert advisor.dispersion_index([5.0] * 20) == 0.0
    assert advisor.dispersion_index([0.0, 0.0]) is None
    # Unequal intervals: counts proportional to their lengths are perfectly regular.
    assert advisor.dispersion_index([10.0, 20.0, 5.0], [1.0, 2.0, 0.5]) == pytest.approx(0.0)


def test_fmt_seconds() -> None:
    # The observer's one duration formatter (poolscope.units), "n/a" when unknown.
    assert advisor.fmt_seconds(0.0) == "0s"
    assert advisor.fmt_seconds(0.0000312) == "31.2µs"
    assert advisor.fmt_seconds(0.0032) == "3.2ms"
    assert advisor.fmt_seconds(0.041) == "41ms"
    assert advisor.fmt_seconds(1.25) == "1.25s"
    assert advisor.fmt_seconds(math.inf) == "unbounded"
    assert advisor.fmt_seconds(None) == "n/a"
