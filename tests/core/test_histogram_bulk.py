"""``Histogram.add_many_trusted`` is ``add_trusted`` of each value, in order, exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolscope.histogram import MIN_VALUE, Histogram, bucket_upper

pytestmark = pytest.mark.fast

# Durations a pool measures: zero, below the lowest bucket, at edges, up to years.
_durations = st.one_of(
    st.just(0.0),
    st.just(MIN_VALUE),
    st.sampled_from([bucket_upper(k) for k in range(-90, 70, 7)]),
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False),
)


def _state(h: Histogram) -> tuple[object, ...]:
    # Buckets as a mapping: a bulk fold may meet them in another order.
    return (dict(h.buckets), h.count, h.sum, h.min, h.max)


@given(before=st.lists(_durations, max_size=20), batch=st.lists(_durations, max_size=200))
def test_bulk_is_one_by_one(before: list[float], batch: list[float]) -> None:
    one, bulk = Histogram(), Histogram()
    for v in before:
        one.add_trusted(v)
        bulk.add_trusted(v)
    for v in batch:
        one.add_trusted(v)
    bulk.add_many_trusted(batch)
    assert _state(bulk) == _state(one)  # sum compared exactly, not approximately


def test_values_beyond_the_edge_table() -> None:
    one, bulk = Histogram(), Histogram()
    batch = [2e6, 0.001, 5e8, 0.0, 5e8]  # 2e6 s is past the ~11-day table
    for v in batch:
        one.add_trusted(v)
    bulk.add_many_trusted(batch)
    assert _state(bulk) == _state(one)
    assert bulk.count == 5
