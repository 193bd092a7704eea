"""Queueing theory for pool sizing: Erlang B/C, M/M/c waits, and the folk rules.

A pool of ``c`` connections serving acquires that arrive at ``rate`` per second and
hold a connection ``hold`` seconds on average is an M/M/c queue when arrivals are
Poisson and holds exponential. Erlang C gives the probability an acquire has to
wait; the wait beyond that is exponential, so every wait percentile has a closed
form. ``smallest_size`` searches for the smallest pool meeting a p99 wait target
under a utilization ceiling. The folk rules people size pools by are here too, for
comparison. Pure functions over numbers, standard library only.
"""

from __future__ import annotations

import math

#: Defaults a user can override (CLI flags / keyword arguments).
DEFAULT_P99_TARGET = 0.010  # seconds
DEFAULT_UTIL_CEILING = 0.8
#: Share of the database's max_connections the app pools may use together.
DB_SHARE_TARGET = 0.8
#: HikariCP's "effective spindle count" for an SSD or cached working set.
DEFAULT_SPINDLES = 1
#: The largest pool ``smallest_size`` will consider.
SIZE_LIMIT = 100_000


def _check(servers: int, load: float) -> None:
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    if not load >= 0 or math.isinf(load):
        raise ValueError(f"offered load must be a finite number >= 0, got {load}")


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the blocking probability of ``servers`` servers with no queue.

    Computed by the recurrence ``B(k) = A·B(k-1) / (k + A·B(k-1))``, ``B(0) = 1``,
    which never forms ``A**c`` or ``c!`` and so neither overflows nor loses
    precision for thousands of servers.
    """
    _check(servers, offered_load)
    b = 1.0
    for k in range(1, servers + 1):
        ab = offered_load * b
        b = ab / (k + ab)
    return b


def _erlang_c_from_b(servers: int, load: float, b: float) -> float:
    if load >= servers:
        return 1.0
    rho = load / servers
    # C = B / (1 - rho (1 - B)); the denominator tends to B (not 0) at saturation.
    return min(1.0, b / (1.0 - rho * (1.0 - b)))


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability an arrival has to wait in an M/M/c queue.

    ``offered_load`` is ``A = rate × mean hold`` (Erlangs). 1.0 when ``A >= servers``
    (the queue grows without bound), 0.0 when there is no load.
    """
    _check(servers, offered_load)
    if offered_load == 0:
        return 0.0
    if servers == 0 or offered_load >= servers:
        return 1.0
    return _erlang_c_from_b(servers, offered_load, erlang_b(servers, offered_load))


def _quantile(c: float, servers: int, load: float, hold: float, q: float, var: float) -> float:
    """The q-quantile of the wait given Erlang C ``c``; see :func:`wait_quantile`."""
    if load >= servers:
        return math.inf
    if c <= 1.0 - q:
        return 0.0
    drain = (servers - load) / hold  # c·mu - lambda, per second
    return var * math.log(c / (1.0 - q)) / drain


def _params(servers: int, rate: float, hold: float) -> float:
    if not rate >= 0 or not hold > 0 or math.isinf(rate) or math.isinf(hold):
        raise ValueError(f"need rate >= 0 and hold > 0, got rate={rate}, hold={hold}")
    load = rate * hold
    _check(servers, load)
    return load


def mean_wait(servers: int, rate: float, hold: float) -> float:
    """Mean wait for a connection in M/M/c: ``W_q = C / (c·mu - lambda)`` (seconds).

    ``rate`` is acquires per second, ``hold`` the mean hold time in seconds;
    ``inf`` when the pool cannot keep up (``rate × hold >= servers``).
    """
    load = _params(servers, rate, hold)
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * hold / (servers - load)


def wait_quantile(
    servers: int, rate: float, hold: float, q: float = 0.99, variability: float = 1.0
) -> float:
    """The q-quantile of the wait for a connection in M/M/c (seconds).

    ``P(W > t) = C · exp(-(c·mu - lambda) t)``, so the quantile is
    ``max(0, ln(C / (1 - q)) / (c·mu - lambda))``: zero while fewer than ``1 - q``
    of acquires wait at all. ``variability`` scales the waits for non-Poisson
    traffic (the Allen-Cunneen factor ``(ca² + cs²) / 2``; 1 for M/M/c).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    load = _params(servers, rate, hold)
    return _quantile(erlang_c(servers, load), servers, load, hold, q, variability)


def wait_p99(servers: int, rate: float, hold: float, variability: float = 1.0) -> float:
    return wait_quantile(servers, rate, hold, 0.99, variability)


def smallest_size(
    rate: float,
    hold: float,
    p99_target: float = DEFAULT_P99_TARGET,
    util_ceiling: float = DEFAULT_UTIL_CEILING,
    *,
    q: float = 0.99,
    variability: float = 1.0,
    limit: int = SIZE_LIMIT,
) -> int:
    """The smallest pool whose utilization ``rate × hold / c`` is at most
    ``util_ceiling`` and whose predicted q-quantile wait is at most ``p99_target``.

    1 when there is no load. Raises ``ValueError`` if no pool up to ``limit`` does.
    """
    if not 0.0 < util_ceiling <= 1.0:
        raise ValueError(f"util_ceiling must be in (0, 1], got {util_ceiling}")
    if not p99_target >= 0:
        raise ValueError(f"p99_target must be >= 0, got {p99_target}")
    load = _params(1, rate, hold)
    if load == 0:
        return 1
    b = 1.0
    # One pass of the Erlang B recurrence serves every candidate size.
    for k in range(1, limit + 1):
        ab = load * b
        b = ab / (k + ab)
        if load >= k or load / k > util_ceiling:
            continue
        c = _erlang_c_from_b(k, load, b)
        if _quantile(c, k, load, hold, q, variability) <= p99_target:
            return k
    raise ValueError(f"no pool of up to {limit} connections meets the target")


def littles_law(rate: float, time_in_system: float) -> float:
    """Little's law, ``L = lambda · W``: the mean number of items in a system.

    With the hold time it is the mean number of connections in use (the
    offered load ``A``); with the mean wait, the mean number of waiters.
    """
    return rate * time_in_system


def folk_cores_rule(cores: int, spindles: int = DEFAULT_SPINDLES) -> int:
    """HikariCP wiki's "About Pool Sizing": ``cores × 2 + effective spindles``.

    ``cores`` are the *database server's* cores; the rule targets the total of
    all pools against one database.
    """
    return max(1, cores * 2 + spindles)


def folk_qps_rule(rate: float, mean_time: float, headroom: float = 1.2) -> int:
    """The capacity rule ``QPS × mean time × 1.2``, rounded up."""
    return max(1, math.ceil(rate * mean_time * headroom - 1e-9))


def folk_db_share(
    max_connections: int, instances: int = 1, target_util: float = DB_SHARE_TARGET
) -> int:
    """Each app instance's share of the database's ``max_connections`` when all
    instances together may use ``target_util`` of them."""
    if max_connections < 1 or instances < 1:
        raise ValueError("max_connections and instances must be >= 1")
    return max(1, math.floor(max_connections * target_util / instances + 1e-9))


def allen_cunneen(dispersion: float | None, hold_cv: float | None) -> float:
    """The Allen-Cunneen factor ``(ca² + cs²) / 2`` that scales M/M/c waits for
    G/G/c traffic; the index of dispersion stands in for ``ca²``."""
    ca2 = 1.0 if dispersion is None else dispersion
    cs2 = 1.0 if hold_cv is None else hold_cv**2
    return (ca2 + cs2) / 2.0
