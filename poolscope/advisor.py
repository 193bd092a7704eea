"""Pool sizing from what the pool is doing: queueing theory over observed traffic.

The public face of :mod:`poolscope.sizing`, whose modules each do one job, in the
order the data flows (all pure functions over plain data, standard library only):

1. **Theory** (:mod:`poolscope.sizing.queueing`). A pool of ``c`` connections
   serving acquires at ``rate`` per second, each held ``hold`` seconds on average,
   is an M/M/c queue; Erlang C and the closed-form wait quantiles size it, and
   ``smallest_size`` finds the smallest pool meeting a p99 wait target under a
   utilization ceiling. The folk rules people size pools by, for comparison.
2. **Observation** (:mod:`poolscope.sizing.workload`). ``observe`` turns a folded
   :class:`~poolscope.model.PoolState` (plus the live acquire timestamps of
   ``fold_with_arrivals``) into a :class:`Workload`.
3. **Advice** (:mod:`poolscope.sizing.recommend`). ``advise`` (from a state) /
   ``advise_workload`` (from a workload) give an :class:`Advice`: a recommended size,
   predicted and measured p99 waits, reasoning, and warnings where the model's
   assumptions do not hold.
4. **Rendering** (:mod:`poolscope.sizing.text`). ``format_advice`` renders it as
   text lines (the CLI and the TUI panel both use it).
"""

from __future__ import annotations

from poolscope.sizing.queueing import (
    DB_SHARE_TARGET,
    DEFAULT_P99_TARGET,
    DEFAULT_SPINDLES,
    DEFAULT_UTIL_CEILING,
    SIZE_LIMIT,
    allen_cunneen,
    erlang_b,
    erlang_c,
    folk_cores_rule,
    folk_db_share,
    folk_qps_rule,
    littles_law,
    mean_wait,
    smallest_size,
    wait_p99,
    wait_quantile,
)
from poolscope.sizing.recommend import (
    DISPERSION_RANGE,
    FAR_ABOVE_TARGET,
    HEAVY_CV,
    HEAVY_P99_P50,
    MIN_ACQUIRES,
    MIN_DISPERSION_BINS,
    MIN_SECONDS,
    QUEUED_SHARE,
    SATURATED_SHARE,
    Advice,
    FolkRule,
    advise,
    advise_workload,
    far_above_target,
    saturated_in_span,
)
from poolscope.sizing.text import fmt_percent, fmt_seconds, format_advice
from poolscope.sizing.workload import (
    MAX_BINS,
    MAX_SAMPLE_GAP,
    ArrivalLog,
    Workload,
    dispersion_index,
    fold_with_arrivals,
    histogram_cv,
    observe,
    per_second_counts,
)

__all__ = [
    "DB_SHARE_TARGET",
    "DEFAULT_P99_TARGET",
    "DEFAULT_SPINDLES",
    "DEFAULT_UTIL_CEILING",
    "DISPERSION_RANGE",
    "FAR_ABOVE_TARGET",
    "HEAVY_CV",
    "HEAVY_P99_P50",
    "MAX_BINS",
    "MAX_SAMPLE_GAP",
    "MIN_ACQUIRES",
    "MIN_DISPERSION_BINS",
    "MIN_SECONDS",
    "QUEUED_SHARE",
    "SATURATED_SHARE",
    "SIZE_LIMIT",
    "Advice",
    "ArrivalLog",
    "FolkRule",
    "Workload",
    "advise",
    "advise_workload",
    "allen_cunneen",
    "dispersion_index",
    "erlang_b",
    "erlang_c",
    "far_above_target",
    "fmt_percent",
    "fmt_seconds",
    "fold_with_arrivals",
    "folk_cores_rule",
    "folk_db_share",
    "folk_qps_rule",
    "format_advice",
    "histogram_cv",
    "littles_law",
    "mean_wait",
    "observe",
    "per_second_counts",
    "saturated_in_span",
    "smallest_size",
    "wait_p99",
    "wait_quantile",
]
