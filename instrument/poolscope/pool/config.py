"""The reference pool's configuration checks: every option validated in one place,
before the pool exists, with a message that names the option and the value."""

from __future__ import annotations

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


def check_options(
    *,
    factory: Any,
    min_size: int = 0,
    max_size: int = 10,
    acquire_timeout: float | None = 5.0,
    idle_timeout: float | None = 600.0,
    max_lifetime: float | None = 1800.0,
    lifetime_jitter: float = 0.05,
    max_idle: int | None = None,
    ping: Any = None,
    reset: Any = None,
    reset_timeout: float = 5.0,
    test_on_borrow: bool | None = None,
    test_on_return: bool = False,
    validation_interval: float | None = None,
    validation_timeout: float = 2.0,
    borrow_ping_skip: float = 0.5,
    heartbeat_interval: float | None = None,
    heartbeat_timeout: float = 2.0,
    backoff_base: float = 0.1,
    backoff_cap: float = 10.0,
    breaker_threshold: int | None = 5,
    breaker_reset: float = 5.0,
    leak_threshold: float | None = None,
    reclaim_after: float | None = None,
    warmup_required: bool = False,
    autoscale: bool = False,
    autoscale_min: int | None = None,
    autoscale_max: int | None = None,
    autoscale_interval: float = 5.0,
    autoscale_cooldown: float = 10.0,
    maintenance_interval: float | None = None,
    close_timeout: float | None = 10.0,
    name: str | None = None,
    target: str = "",
) -> tuple[int, int]:
    """Raise ValueError/TypeError for a bad option; returns the autoscaler's (low, high)."""
    if not callable(factory):
        raise TypeError(f"factory must be an async callable, got {factory!r}")
    for iname, ival in (("max_size", max_size), ("min_size", min_size)):
        if isinstance(ival, bool) or not isinstance(ival, int):
            raise ValueError(f"{iname} must be an int, got {ival!r}")
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    if min_size < 0 or min_size > max_size:
        raise ValueError(f"min_size must be between 0 and max_size ({max_size}), got {min_size}")
    if max_idle is not None and max_idle < 0:
        raise ValueError(f"max_idle must be >= 0 or None, got {max_idle}")
    for pname, pval in (
        ("acquire_timeout", acquire_timeout),
        ("idle_timeout", idle_timeout),
        ("max_lifetime", max_lifetime),
        ("validation_interval", validation_interval),
        ("heartbeat_interval", heartbeat_interval),
        ("leak_threshold", leak_threshold),
        ("reclaim_after", reclaim_after),
        ("maintenance_interval", maintenance_interval),
        ("close_timeout", close_timeout),
    ):
        _check_positive(pname, pval)
    for pname, pval in (
        ("reset_timeout", reset_timeout),
        ("validation_timeout", validation_timeout),
        ("heartbeat_timeout", heartbeat_timeout),
        ("backoff_base", backoff_base),
        ("backoff_cap", backoff_cap),
        ("breaker_reset", breaker_reset),
        ("autoscale_interval", autoscale_interval),
    ):
        _check_positive(pname, pval, allow_none=False)
    if backoff_cap < backoff_base:
        raise ValueError(f"backoff_cap ({backoff_cap}) must be >= backoff_base ({backoff_base})")
    if borrow_ping_skip < 0:
        raise ValueError(f"borrow_ping_skip must be >= 0, got {borrow_ping_skip}")
    if autoscale_cooldown < 0:
        raise ValueError(f"autoscale_cooldown must be >= 0, got {autoscale_cooldown}")
    if not 0 <= lifetime_jitter < 1:
        raise ValueError(f"lifetime_jitter must be in [0, 1), got {lifetime_jitter}")
    if breaker_threshold is not None and (
        isinstance(breaker_threshold, bool)
        or not isinstance(breaker_threshold, int)
        or breaker_threshold < 1
    ):
        raise ValueError(
            f"breaker_threshold must be an int >= 1 or None, got {breaker_threshold!r}"
        )
    if ping is None:
        for flag, val in (
            ("test_on_borrow", test_on_borrow),
            ("test_on_return", test_on_return),
            ("validation_interval", validation_interval),
            ("heartbeat_interval", heartbeat_interval),
        ):
            if val:
                raise ValueError(f"{flag} needs a ping callable (ping=...)")
    lo = autoscale_min if autoscale_min is not None else max(1, min_size)
    hi = autoscale_max if autoscale_max is not None else max_size * 4
    if autoscale and not (1 <= lo <= max_size <= hi and lo >= min_size):
        raise ValueError(
            f"autoscale_min ({lo}) <= max_size ({max_size}) <= autoscale_max ({hi}) "
            f"must hold, with autoscale_min >= min_size ({min_size}) and >= 1"
        )
    return lo, hi
