"""The reference pool's configuration checks: every option validated in one place,
before the pool exists, with a message that names the option and the value."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any


def _check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a positive number, got None")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"{name} must be a positive number{' or None' * allow_none}, got {value!r}"
        )


def check_options(options: Mapping[str, Any]) -> tuple[int, int]:
    """Raise ValueError/TypeError for a bad option of ``Pool(...)`` (its keyword
    arguments by name, as ``locals()`` gives them); returns the autoscaler's (low, high)."""
    o: Any = SimpleNamespace(**options)
    if not callable(o.factory):
        raise TypeError(f"factory must be an async callable, got {o.factory!r}")
    for iname, ival in (("max_size", o.max_size), ("min_size", o.min_size)):
        if isinstance(ival, bool) or not isinstance(ival, int):
            raise ValueError(f"{iname} must be an int, got {ival!r}")
    if o.max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {o.max_size}")
    if o.min_size < 0 or o.min_size > o.max_size:
        raise ValueError(
            f"min_size must be between 0 and max_size ({o.max_size}), got {o.min_size}"
        )
    if o.max_idle is not None and o.max_idle < 0:
        raise ValueError(f"max_idle must be >= 0 or None, got {o.max_idle}")
    for pname, pval in (
        ("acquire_timeout", o.acquire_timeout),
        ("idle_timeout", o.idle_timeout),
        ("max_lifetime", o.max_lifetime),
        ("validation_interval", o.validation_interval),
        ("heartbeat_interval", o.heartbeat_interval),
        ("leak_threshold", o.leak_threshold),
        ("reclaim_after", o.reclaim_after),
        ("maintenance_interval", o.maintenance_interval),
        ("close_timeout", o.close_timeout),
    ):
        _check_positive(pname, pval)
    for pname, pval in (
        ("reset_timeout", o.reset_timeout),
        ("validation_timeout", o.validation_timeout),
        ("heartbeat_timeout", o.heartbeat_timeout),
        ("backoff_base", o.backoff_base),
        ("backoff_cap", o.backoff_cap),
        ("breaker_reset", o.breaker_reset),
        ("autoscale_interval", o.autoscale_interval),
    ):
        _check_positive(pname, pval, allow_none=False)
    if o.backoff_cap < o.backoff_base:
        raise ValueError(
            f"backoff_cap ({o.backoff_cap}) must be >= backoff_base ({o.backoff_base})"
        )
    if o.borrow_ping_skip < 0:
        raise ValueError(f"borrow_ping_skip must be >= 0, got {o.borrow_ping_skip}")
    if o.autoscale_cooldown < 0:
        raise ValueError(f"autoscale_cooldown must be >= 0, got {o.autoscale_cooldown}")
    if not 0 <= o.lifetime_jitter < 1:
        raise ValueError(f"lifetime_jitter must be in [0, 1), got {o.lifetime_jitter}")
    if o.breaker_threshold is not None and (
        isinstance(o.breaker_threshold, bool)
        or not isinstance(o.breaker_threshold, int)
        or o.breaker_threshold < 1
    ):
        raise ValueError(
            f"breaker_threshold must be an int >= 1 or None, got {o.breaker_threshold!r}"
        )
    if o.ping is None:
        for flag, val in (
            ("test_on_borrow", o.test_on_borrow),
            ("test_on_return", o.test_on_return),
            ("validation_interval", o.validation_interval),
            ("heartbeat_interval", o.heartbeat_interval),
        ):
            if val:
                raise ValueError(f"{flag} needs a ping callable (ping=...)")
    lo = o.autoscale_min if o.autoscale_min is not None else max(1, o.min_size)
    hi = o.autoscale_max if o.autoscale_max is not None else o.max_size * 4
    if o.autoscale and not (1 <= lo <= o.max_size <= hi and lo >= o.min_size):
        raise ValueError(
            f"autoscale_min ({lo}) <= max_size ({o.max_size}) <= autoscale_max ({hi}) "
            f"must hold, with autoscale_min >= min_size ({o.min_size}) and >= 1"
        )
    return lo, hi
