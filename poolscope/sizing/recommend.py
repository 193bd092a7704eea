"""Sizing advice for one pool: a recommended size with its reasons and warnings.

``advise`` (from a folded state) and ``advise_workload`` (from a
:class:`~poolscope.sizing.workload.Workload`) give an :class:`Advice`: a recommended
size, predicted p99 waits at the current and recommended sizes beside the measured
one, plain-words reasoning, and warnings where the model's assumptions do not hold
(bursty arrivals, heavy-tailed holds, a saturated pool, too little data).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from poolscope.model import PoolState
from poolscope.sizing.queueing import (
    DB_SHARE_TARGET,
    DEFAULT_P99_TARGET,
    DEFAULT_SPINDLES,
    DEFAULT_UTIL_CEILING,
    SIZE_LIMIT,
    allen_cunneen,
    folk_cores_rule,
    folk_db_share,
    folk_qps_rule,
    smallest_size,
    wait_p99,
)
from poolscope.sizing.text import fmt_percent, fmt_seconds
from poolscope.sizing.workload import ArrivalLog, Workload, observe

#: Below these the measured rate and percentiles are too noisy to trust.
MIN_ACQUIRES = 500
MIN_SECONDS = 30.0
#: Index of dispersion of per-second acquire counts outside this range means
#: arrivals are not Poisson (1.0 is Poisson).
DISPERSION_RANGE = (0.5, 2.0)
#: Bins needed before the index of dispersion means anything.
MIN_DISPERSION_BINS = 10
#: Hold times with a coefficient of variation above this, or a p99/p50 ratio
#: above that, are heavy-tailed (exponential: CV 1, p99/p50 6.6).
HEAVY_CV = 2.0
HEAVY_P99_P50 = 20.0
#: A pool with acquires waiting in at least this share of its gauge samples queued in
#: the span: never "shrink" it. From this share on it was saturated outright (the
#: measured rate is capped by the pool itself).
QUEUED_SHARE = 0.05
SATURATED_SHARE = 0.5
#: A measured p99 wait this many times the target (and 5 ms above it) is far above it.
FAR_ABOVE_TARGET = 3.0


@dataclass
class FolkRule:
    name: str
    size: int
    detail: str


@dataclass
class Advice:
    """A sizing recommendation for one pool, with its reasons."""

    pool: str
    current_size: int
    recommended: int | None  # None when there is nothing to base it on
    p99_target: float
    util_ceiling: float
    predicted_p99_current: float | None  # M/M/c; inf when the pool cannot keep up
    predicted_p99_recommended: float | None
    measured_p99: float | None
    utilization_current: float | None
    utilization_recommended: float | None
    model_size: int | None  # what the model alone asks for (before a database cap)
    workload: Workload
    folk: list[FolkRule] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """One of "grow", "shrink", "keep" or "unknown"."""
        if self.recommended is None or self.current_size <= 0:
            return "unknown"
        if self.recommended > self.current_size:
            return "grow"
        if self.recommended < self.current_size:
            return "shrink"
        return "keep"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite predictions become ``null`` with ``*_unbounded: true``."""
        d: dict[str, Any] = {
            "pool": self.pool,
            "verdict": self.verdict,
            "current_size": self.current_size,
            "recommended": self.recommended,
            "model_size": self.model_size,
            "p99_target": self.p99_target,
            "util_ceiling": self.util_ceiling,
            "measured_p99": self.measured_p99,
            "utilization_current": self.utilization_current,
            "utilization_recommended": self.utilization_recommended,
        }
        for key in ("predicted_p99_current", "predicted_p99_recommended"):
            v: float | None = getattr(self, key)
            unbounded = v is not None and math.isinf(v)
            d[key] = None if unbounded else v
            d[key.replace("predicted_p99", "unbounded")] = unbounded
        d["workload"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.workload.to_dict().items()
        }
        d["folk"] = [dict(f.__dict__) for f in self.folk]
        d["reasoning"] = list(self.reasoning)
        d["warnings"] = list(self.warnings)
        return d


def advise_workload(
    w: Workload,
    *,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    db_max_connections: int | None = None,
    instances: int = 1,
    cores: int | None = None,
) -> Advice:
    """Advice for a workload (see :func:`advise` for the arguments)."""
    if not 0.0 < util_ceiling <= 1.0:
        raise ValueError(f"util_ceiling must be in (0, 1], got {util_ceiling}")
    current = w.size
    advice = Advice(
        pool=w.pool,
        current_size=current,
        recommended=None,
        p99_target=p99_target,
        util_ceiling=util_ceiling,
        predicted_p99_current=None,
        predicted_p99_recommended=None,
        measured_p99=w.wait_p99 if w.waits else None,
        utilization_current=None,
        utilization_recommended=None,
        model_size=None,
        workload=w,
    )
    why, warn = advice.reasoning, advice.warnings
    if w.rate <= 0 or w.hold_mean <= 0:
        why.append(
            "No acquires with hold times were observed, so there is nothing to size from."
            if w.rate <= 0 or w.holds == 0
            else "Hold times are all zero, so there is nothing to size from."
        )
        warn.append(_little_data_warning(w) or "Too little data: no traffic observed.")
        return advice

    load = w.offered_load
    hold = w.hold_mean
    if w.span_note:
        why.append(f"Span: {w.span_note}.")
    why.append(
        f"Observed {w.attempts:,} acquires over {fmt_seconds(w.span)} ({w.rate_source}): "
        f"{w.rate:.3g} per second, each holding a connection {fmt_seconds(hold)} on average"
        + (f" (CV {w.hold_cv:.2f})." if w.hold_cv is not None else ".")
    )
    measured_busy = (
        f" (the pool's own gauges averaged {w.mean_in_use:.2f})"
        if w.mean_in_use is not None
        else ""
    )
    why.append(
        f"Little's law: {w.rate:.3g}/s × {fmt_seconds(hold)} = {load:.2f} connections busy "
        f"on average{measured_busy}."
    )
    if current > 0:
        advice.utilization_current = load / current
        advice.predicted_p99_current = wait_p99(current, w.rate, hold)
        stable = load < current
        why.append(
            f"At the current size {current}, utilization is {fmt_percent(load / current)}; "
            f"the M/M/c model predicts a p99 wait of {fmt_seconds(advice.predicted_p99_current)}"
            + ("" if stable else " (arrivals outpace the pool: the queue grows until timeouts)")
            + f"; measured p99 wait: {fmt_seconds(advice.measured_p99)}."
        )
    try:
        size = smallest_size(w.rate, hold, p99_target, util_ceiling)
    except ValueError:
        warn.append(f"No pool of up to {SIZE_LIMIT:,} connections meets the target.")
        return advice
    advice.model_size = size
    why.append(
        f"The smallest size with utilization at most {fmt_percent(util_ceiling)} and a predicted "
        f"p99 wait at most {fmt_seconds(p99_target)} is {size} "
        f"(utilization {fmt_percent(load / size)}, "
        f"predicted p99 {fmt_seconds(wait_p99(size, w.rate, hold))})."
    )
    recommended = size
    share: int | None = None
    if db_max_connections is not None:
        share = folk_db_share(db_max_connections, instances)
        if size > share:
            recommended = share
            at_share = wait_p99(share, w.rate, hold)
            warn.append(
                f"The database allows {share} per instance ({db_max_connections} max_connections "
                f"× {fmt_percent(DB_SHARE_TARGET)} / {instances} instance(s)), fewer than the "
                f"{size} the model asks for; capped at {share}, where the predicted p99 wait is "
                f"{fmt_seconds(at_share)}."
                + (
                    " The database cannot carry this load: add capacity or shorten holds."
                    if load >= share
                    else ""
                )
            )
    if current > 0 and recommended < current and recommended == size:
        reason = _why_not_shrink(w, p99_target, advice.measured_p99)
        if reason:
            # The headline must agree with the warnings: a pool that queued in the
            # span, or whose waits were far above target, is not too big.
            why.append(f"Not shrinking: {reason}.")
            recommended = current
    advice.recommended = recommended
    advice.utilization_recommended = load / recommended
    advice.predicted_p99_recommended = wait_p99(recommended, w.rate, hold)
    why.append(_verdict_line(advice))
    advice.folk = _folk(w, cores, db_max_connections, instances, share)
    if advice.folk:
        why.append(
            "Folk rules, for comparison: "
            + "; ".join(f"{f.name} = {f.size} ({f.detail})" for f in advice.folk)
            + "."
        )
    _assumption_warnings(advice, p99_target, util_ceiling)
    return advice


def saturated_in_span(w: Workload) -> bool:
    """The pool ran out of connections in the span (by its gauges, or by the load)."""
    return w.saturated >= SATURATED_SHARE or (w.size > 0 and w.offered_load >= w.size * 0.98)


def far_above_target(measured: float | None, target: float) -> bool:
    return (
        measured is not None and measured > FAR_ABOVE_TARGET * target and measured - target > 0.005
    )


def _why_not_shrink(w: Workload, target: float, measured: float | None) -> str:
    parts = []
    if w.saturated >= QUEUED_SHARE or saturated_in_span(w):
        parts.append(
            f"acquires queued in {fmt_percent(w.saturated)} of the span's gauge samples"
            + (f" (up to {w.waiting_max} waiting)" if w.waiting_max else "")
        )
    if far_above_target(measured, target):
        parts.append(
            f"the measured p99 wait ({fmt_seconds(measured)}) is far above the target "
            f"({fmt_seconds(target)})"
        )
    return " and ".join(parts)


def _verdict_line(a: Advice) -> str:
    rec, cur = a.recommended, a.current_size
    if cur <= 0:
        return f"Recommendation: {rec} connections."
    if a.verdict == "grow":
        return f"Recommendation: grow from {cur} to {rec} connections."
    if a.verdict == "shrink":
        return (
            f"Recommendation: {rec} connections would do; the current {cur} are more than "
            f"needed (idle connections still cost the database memory)."
        )
    return f"Recommendation: keep {cur} connections."


def _folk(
    w: Workload, cores: int | None, db_max: int | None, instances: int, share: int | None
) -> list[FolkRule]:
    rules: list[FolkRule] = []
    n = cores if cores is not None else os.cpu_count()
    if n:
        where = "database cores" if cores is not None else "this machine's cores"
        rules.append(
            FolkRule(
                "cores × 2 + spindles",
                folk_cores_rule(n),
                f"{n} {where}, {DEFAULT_SPINDLES} spindle",
            )
        )
    rules.append(
        FolkRule(
            "QPS × mean time × 1.2",
            folk_qps_rule(w.rate, w.hold_mean),
            f"{w.rate:.3g}/s × {fmt_seconds(w.hold_mean)}",
        )
    )
    if db_max is not None and share is not None:
        rules.append(
            FolkRule(
                "database share",
                share,
                f"{db_max} × {fmt_percent(DB_SHARE_TARGET)} / {instances} instance(s)",
            )
        )
    return rules


def _little_data_warning(w: Workload) -> str | None:
    if w.attempts >= MIN_ACQUIRES and w.span >= MIN_SECONDS:
        return None
    return (
        f"Too little data: {w.attempts:,} acquires over {fmt_seconds(w.span)} "
        f"(want at least {MIN_ACQUIRES:,} over {MIN_SECONDS:.0f} s); "
        "the rate and percentiles are rough."
    )


def _assumption_warnings(a: Advice, p99_target: float, util_ceiling: float) -> None:
    w, warn = a.workload, a.warnings
    little = _little_data_warning(w)
    if little:
        warn.append(little)
    lo, hi = DISPERSION_RANGE
    bursty = (
        w.dispersion is not None
        and w.dispersion_bins >= MIN_DISPERSION_BINS
        and not lo <= w.dispersion <= hi
    )
    heavy = w.hold_cv is not None and w.hold_cv > HEAVY_CV
    ratio = w.hold_p99 / w.hold_p50 if w.hold_p50 > 0 else 0.0
    heavy = heavy or (w.holds >= 100 and ratio > HEAVY_P99_P50)
    if bursty and w.dispersion is not None:
        if w.dispersion > hi:
            warn.append(
                f"Bursty arrivals: per-second acquire counts vary {w.dispersion:.1f}× as much as "
                "random (Poisson) arrivals would; real waits will be longer than predicted."
            )
        else:
            warn.append(
                f"Arrivals are more regular than random (index of dispersion "
                f"{w.dispersion:.2f}), as from a fixed set of workers in a loop; the model "
                "overstates waits."
            )
    if heavy:
        cv = f"CV {w.hold_cv:.1f}, " if w.hold_cv is not None else ""
        warn.append(
            f"Heavy-tailed hold times ({cv}p99 {fmt_seconds(w.hold_p99)} vs p50 "
            f"{fmt_seconds(w.hold_p50)}): a few long holds drive the waits; find them (the "
            "holders and leaks views) before adding connections."
        )
    if bursty or heavy:
        f = allen_cunneen(w.dispersion if bursty else None, w.hold_cv)
        if f > 1.0:
            try:
                adj = smallest_size(w.rate, w.hold_mean, p99_target, util_ceiling, variability=f)
                warn.append(
                    f"Allowing for that variability (Allen-Cunneen factor {f:.1f}), the size "
                    f"meeting the target is about {adj}."
                )
            except ValueError:
                pass
    if a.current_size > 0 and saturated_in_span(w):
        share = (
            f" (acquires waiting in {fmt_percent(w.saturated)} of the gauge samples"
            + (f", up to {w.waiting_max} waiting" if w.waiting_max else "")
            + ")"
            if w.saturated
            else ""
        )
        warn.append(
            f"The pool is saturated{share}: the observed rate is capped by the pool itself, "
            "so demand may be higher than measured; treat the recommendation as a lower bound."
        )
    if w.acquire_errors:
        warn.append(f"{w.acquire_errors:,} acquires failed with errors (not in the rate).")
    if w.timeouts:
        warn.append(f"{w.timeouts:,} acquires timed out (counted in the rate).")
    if w.mean_in_use is not None and w.offered_load > 0:
        gap = abs(w.mean_in_use - w.offered_load) / max(w.offered_load, w.mean_in_use)
        if gap > 0.5 and abs(w.mean_in_use - w.offered_load) >= 1.0:
            warn.append(
                f"The gauges say {w.mean_in_use:.1f} connections were in use on average, but "
                f"rate × hold gives {w.offered_load:.1f}: connections held without acquire "
                "events (leaks, or history from before the observation) skew the picture."
            )
    pred, meas = a.predicted_p99_current, a.measured_p99
    if (
        pred is not None
        and meas is not None
        and not math.isinf(pred)
        and meas > 3 * pred
        and meas - pred > 0.005
    ):
        warn.append(
            f"Measured p99 wait ({fmt_seconds(meas)}) is far above the prediction "
            f"({fmt_seconds(pred)}): slow connection opening, bursts or a backend stall "
            "add waits the model does not see."
        )
    if w.dropped:
        warn.append(f"The observer lost {w.dropped:,} events; counts are incomplete.")


def advise(
    state: PoolState,
    pool: str,
    *,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    db_max_connections: int | None = None,
    instances: int = 1,
    cores: int | None = None,
    arrivals: ArrivalLog | None = None,
    window: float | None = None,
) -> Advice:
    """Sizing advice for ``pool`` from a folded state (what the TUI panel calls).

    ``p99_target`` is the wait (seconds) 99% of acquires should beat;
    ``util_ceiling`` the highest acceptable mean utilization; with
    ``db_max_connections`` (and ``instances`` sharing the database) the advice is
    capped at this instance's share; ``cores`` are the database server's cores
    for the folk rule (default: this machine's); ``arrivals`` from
    :func:`fold_with_arrivals` adds live acquire timestamps (better burst detection).
    """
    return advise_workload(
        observe(state, pool, arrivals, window=window),
        p99_target=p99_target,
        util_ceiling=util_ceiling,
        db_max_connections=db_max_connections,
        instances=instances,
        cores=cores,
    )
