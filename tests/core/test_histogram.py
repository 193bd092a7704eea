"""Histogram: percentiles within one bucket of the exact value, merge == add-all,
Prometheus cumulative counts exact at bucket edges, and a lossless round trip."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolscope.histogram import MIN_VALUE, Histogram, bucket_lower, bucket_of, bucket_upper

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses

# Latencies as they occur: from sub-microsecond to minutes, plus exact zeros.
values_st = st.lists(
    st.one_of(
        st.just(0.0),
        st.floats(min_value=1e-7, max_value=600.0, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=300,
)
q_st = st.floats(min_value=0.0, max_value=1.0)


def _exact(values: list[float], q: float) -> float:
    """The q-quantile by the same rank rule (nearest rank, at least the first)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _hist(values: list[float]) -> Histogram:
    h = Histogram()
    for v in values:
        h.add(v)
    return h


@settings(max_examples=300, deadline=None)
@given(values_st, q_st)
def test_percentile_within_one_bucket_of_exact(values: list[float], q: float) -> None:
    h = _hist(values)
    exact = _exact(values, q)
    got = h.percentile(q)
    # Never below the exact value, never past the upper edge of its bucket ...
    assert got >= exact * (1 - 1e-12)
    assert got <= bucket_upper(bucket_of(exact)) * (1 + 1e-12)
    # ... so in the same bucket (or on the next edge, which the next bucket starts at).
    assert abs(bucket_of(got) - bucket_of(exact)) <= 1
    # And clamped to what was observed.
    assert min(values) <= got <= max(values)


@settings(max_examples=200, deadline=None)
@given(values_st, values_st)
def test_merge_equals_adding_all(a: list[float], b: list[float]) -> None:
    merged = _hist(a)
    merged.merge(_hist(b))
    direct = _hist(a + b)
    assert merged.buckets == direct.buckets
    assert merged.count == direct.count == len(a) + len(b)
    assert merged.min == direct.min
    assert merged.max == direct.max
    assert math.isclose(merged.sum, direct.sum, rel_tol=1e-9, abs_tol=1e-12)
    for q in (0.5, 0.9, 0.99, 1.0):
        assert merged.percentile(q) == direct.percentile(q)


@settings(max_examples=200, deadline=None)
@given(values_st)
def test_cumulative_counts_exact_at_bucket_edges(values: list[float]) -> None:
    h = _hist(values)
    ks = sorted({bucket_of(v) for v in values} | {bucket_of(v) - 1 for v in values})
    edges = [bucket_upper(k) for k in ks]
    assert h.cumulative(edges) == [sum(1 for v in values if bucket_of(v) <= k) for k in ks]
    # The last cumulative count at an edge above everything is the total.
    assert h.cumulative([bucket_upper(bucket_of(max(values)) + 1)]) == [len(values)]


@settings(max_examples=100, deadline=None)
@given(values_st)
def test_round_trip_through_json(values: list[float]) -> None:
    h = _hist(values)
    back = Histogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.buckets == h.buckets
    assert (back.count, back.sum, back.min, back.max) == (h.count, h.sum, h.min, h.max)


def test_bucket_edges_are_upper_inclusive() -> None:
    for k in (-60, -30, -1, 0, 1, 17):
        edge = bucket_upper(k)
        assert bucket_of(edge) == k
        assert bucket_of(edge * (1 + 1e-9)) == k + 1
        assert bucket_lower(k + 1) == edge
    # Ten buckets a decade: one second is the upper edge of bucket 0, 10 s of bucket 10.
    assert bucket_of(1.0) == 0
    assert bucket_of(10.0) == 10


def test_empty_and_degenerate_values() -> None:
    h = Histogram()
    assert (h.p50, h.p99, h.mean, h.count) == (0.0, 0.0, 0.0, 0)
    assert h.to_dict()["min"] is None
    h.add(float("nan"))  # ignored, not counted
    h.add("1.0")  # type: ignore[arg-type]  # not a number: ignored
    assert h.count == 0
    h.add(-5.0)  # a clock step backwards is clamped to zero, not lost
    h.add(MIN_VALUE / 10)
    assert h.count == 2
    assert h.min == 0.0
    assert h.p99 <= MIN_VALUE


def test_percentiles_on_a_known_distribution() -> None:
    h = _hist([i / 1000 for i in range(1, 1001)])  # 1 ms .. 1 s, uniform
    assert h.count == 1000
    assert math.isclose(h.mean, 0.5005)
    for q, exact in ((0.5, 0.5), (0.9, 0.9), (0.99, 0.99)):
        got = h.percentile(q)
        assert exact <= got <= exact * 10**0.1 * (1 + 1e-9)
    assert h.percentile(1.0) == 1.0  # clamped to the observed max
    assert h.percentile(0.0) == 0.001  # clamped to the observed min
