"""Mergeable log-bucket histograms (standard library only: used in the app too).

Bucket ``k`` holds values in ``(10**((k-1)/10), 10**(k/10)]`` seconds: ten buckets
a decade, each about 26% wide, so a percentile read from the buckets is within
one bucket of the exact value. Upper bounds are inclusive, as Prometheus ``le``
buckets are, so the exporter can sum buckets into cumulative ``le`` counts
exactly at any bucket edge.
"""

from __future__ import annotations

import math
from bisect import bisect_left as _bisect_left
from collections import _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable
from functools import partial, reduce
from operator import add as _add
from typing import Any

BUCKETS_PER_DECADE = 10
#: Values at or below this fall in the lowest bucket (1 ns).
MIN_VALUE = 1e-9
_LOWEST = -90  # ceil(10 * log10(1e-9))


def bucket_of(value: float) -> int:
    """Index of the bucket whose (exclusive lower, inclusive upper] range holds value."""
    if not value > MIN_VALUE:  # also catches NaN
        return _LOWEST
    # Up to ~11 days, a binary search of the precomputed upper edges: the same answer
    # as the formula below (the edges are bucket_upper's own values), several times
    # cheaper, and the app folds every acquire and release through here.
    i = _bisect_left(_EDGES, value)
    if i < _N_EDGES:
        return _LOWEST + i
    k = math.ceil(BUCKETS_PER_DECADE * math.log10(value) - 1e-9)
    # Guard against floating-point error at the edges.
    if bucket_upper(k - 1) >= value:
        k -= 1
    elif bucket_upper(k) < value:
        k += 1
    return k


def bucket_upper(k: int) -> float:
    return float(10.0 ** (k / BUCKETS_PER_DECADE))


_EDGES = [bucket_upper(k) for k in range(_LOWEST, 61)]
#: The highest bucket a sync may carry: 10**20 s, far beyond any real duration.
MAX_BUCKET = 200
_N_EDGES = len(_EDGES)
_TOP = _EDGES[-1]
#: A value's index into the edges: ``bucket_of`` is ``_LOWEST`` + it up to ``_TOP``
#: (a value at or below MIN_VALUE finds index 0, the lowest bucket, as it should).
_edge_index = partial(_bisect_left, _EDGES)


def _no_bucket_counts(edges: list[float], values: list[float]) -> dict[int, int] | None:
    return None


#: ``{edge index: count}`` of values in one C loop, or None: set to the optional
#: accelerator's by ``poolscope.instrument.accel`` (the in-app side, which folds in
#: bulk); ``add_many_trusted``'s own loop is the reference and the fallback.
_bucket_counts: Callable[[list[float], list[float]], dict[int, int] | None] = _no_bucket_counts


def bucket_lower(k: int) -> float:
    return bucket_upper(k - 1)


class Histogram:
    """Counts of values in log buckets, with exact count, sum, min and max."""

    __slots__ = ("buckets", "count", "max", "min", "sum")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, value: float) -> None:
        if not isinstance(value, (int, float)) or value != value:
            return
        value = max(float(value), 0.0)
        if value == math.inf:  # a peer's 1e999: no bucket holds it
            return
        k = bucket_of(value)
        self.buckets[k] = self.buckets.get(k, 0) + 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_trusted(self, value: float) -> None:
        """``add`` for a finite, non-negative float the caller measured itself (the
        in-app fold of its own acquires and releases): no checks, fewer branches."""
        # bucket_of's common case inline (a function call is a third of the cost here).
        k = _LOWEST + _bisect_left(_EDGES, value) if MIN_VALUE < value <= _TOP else bucket_of(value)
        b = self.buckets
        b[k] = b.get(k, 0) + 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_many_trusted(self, values: list[float]) -> None:
        """``add_trusted`` of each value, in order, in one go: the same buckets, count,
        min, max and sum, to the last bit (the sum is added up in the same order). The
        application's drain folds a tick's waits and holds this way: the buckets are
        found and counted by C loops (``map`` of ``bisect_left``, ``_count_elements``)
        instead of one Python call per value."""
        if not values:
            return
        counts = _bucket_counts(_EDGES, values)
        if counts is None:  # no accelerator, or not all floats: the reference loop
            counts = {}
            _count_elements(counts, map(_edge_index, values))
        b = self.buckets
        for i, n in counts.items():
            if i < _N_EDGES:
                k = _LOWEST + i
                b[k] = b.get(k, 0) + n
        if _N_EDGES in counts:  # beyond the table (~11 days): each value's own bucket
            for v in values:
                if v > _TOP:
                    k = bucket_of(v)
                    b[k] = b.get(k, 0) + 1
        self.count += len(values)
        self.sum = reduce(_add, values, self.sum)
        lo = min(values)
        if lo < self.min:
            self.min = lo
        hi = max(values)
        if hi > self.max:
            self.max = hi

    def merge(self, other: Histogram) -> None:
        for k, n in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + n
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1): the upper edge of the bucket holding it,
        clamped to the observed min and max. 0.0 when empty."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= rank:
                return min(max(bucket_upper(k), self.min), self.max)
        return self.max

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p90(self) -> float:
        return self.percentile(0.90)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def cumulative(self, edges: list[float]) -> list[int]:
        """Counts of values <= each edge (edges ascending); exact at bucket edges."""
        out: list[int] = []
        items = sorted(self.buckets.items())
        i = 0
        running = 0
        for edge in edges:
            while i < len(items) and bucket_upper(items[i][0]) <= edge * (1 + 1e-12):
                running += items[i][1]
                i += 1
            out.append(running)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): n for k, n in self.buckets.items()},
            "count": self.count,
            "sum": self.sum,
            "min": None if self.count == 0 else self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Histogram:
        h = cls()
        if not isinstance(data, dict):
            return h
        buckets = data.get("buckets")
        if isinstance(buckets, dict):
            for k, n in buckets.items():
                try:
                    key, count = int(k), int(n)
                except (TypeError, ValueError, OverflowError):
                    continue
                # A peer's bucket beyond any duration (10**(k/10) overflows a float
                # past k=3080) or a negative count would break every percentile.
                if _LOWEST <= key <= MAX_BUCKET and count > 0:
                    h.buckets[key] = count
        h.count = sum(h.buckets.values())
        s = data.get("sum")
        h.sum = _finite(s, 0.0)
        mn, mx = data.get("min"), data.get("max")
        h.min = _finite(mn, math.inf)
        h.max = _finite(mx, 0.0)
        return h


def _finite(value: Any, default: float) -> float:
    """A peer's number as a finite, non-negative float, else ``default``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            f = float(value)
        except OverflowError:
            return default
        if 0.0 <= f < math.inf:
            return f
    return default
