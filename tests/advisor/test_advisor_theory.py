"""The advisor's queueing theory against exact arithmetic and a simulation."""

from __future__ import annotations

import heapq
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolscope import advisor

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses


def exact_erlang_c(servers: int, load: Fraction) -> Fraction:
    """Erlang C from its textbook definition, in exact integer arithmetic.

    C = (A^c/c! · c/(c-A)) / (sum_{k<c} A^k/k! + A^c/c! · c/(c-A)), with A = p/q
    and everything multiplied by q^c · c! so only integers appear.
    """
    p, q, c = load.numerator, load.denominator, servers
    assert Fraction(p, q) < c
    s = 0
    fact_ratio = 1  # c!/k!, built from k = c down
    for k in range(c - 1, -1, -1):
        fact_ratio *= k + 1
        s += p**k * q ** (c - k) * fact_ratio
    t_num = p**c * c * q  # p^c · c / (c - p/q), over (c q - p)
    t_den = c * q - p
    return Fraction(t_num, s * t_den + t_num)


def exact_erlang_b(servers: int, load: Fraction) -> Fraction:
    terms = [Fraction(1)]
    for k in range(1, servers + 1):
        terms.append(terms[-1] * load / k)
    return terms[-1] / sum(terms)


# -- reference values ---------------------------------------------------------------


def test_hand_computed_values() -> None:
    # C(2, 1): sum_{k<2} 1/k! = 2; A^2/2! · 2/(2-1) = 1; C = 1/3.
    assert advisor.erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-14)
    # C(3, 2): 1 + 2 + 2 = 5; 8/6 · 3/1 = 4; C = 4/9.
    assert advisor.erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-14)
    # One server: the probability of waiting is the utilization.
    for rho in (0.01, 0.5, 0.999):
        assert advisor.erlang_c(1, rho) == pytest.approx(rho, rel=1e-14)
    # Erlang B(1, A) = A/(1+A); B(2, 1) = (1/2)/(1 + 1 + 1/2) = 1/5.
    assert advisor.erlang_b(1, 3.0) == pytest.approx(0.75, rel=1e-14)
    assert advisor.erlang_b(2, 1.0) == pytest.approx(0.2, rel=1e-14)


@pytest.mark.parametrize("servers", [1, 2, 3, 5, 10, 25, 50, 120])
@pytest.mark.parametrize(
    "rho", [Fraction(1, 10), Fraction(1, 2), Fraction(4, 5), Fraction(19, 20), Fraction(99, 100)]
)
def test_erlang_c_matches_exact_arithmetic(servers: int, rho: Fraction) -> None:
    load = rho * servers
    exact = exact_erlang_c(servers, load)
    assert advisor.erlang_c(servers, float(load)) == pytest.approx(float(exact), rel=1e-11)
    assert advisor.erlang_b(servers, float(load)) == pytest.approx(
        float(exact_erlang_b(servers, load)), rel=1e-11
    )


@pytest.mark.parametrize(
    "load", [Fraction(900), Fraction(990), Fraction(999), Fraction(9999, 10), Fraction(99999, 100)]
)
def test_thousand_servers_near_saturation(load: Fraction) -> None:
    c = advisor.erlang_c(1000, float(load))
    assert math.isfinite(c) and 0.0 < c < 1.0
    assert c == pytest.approx(float(exact_erlang_c(1000, load)), rel=1e-9)


def test_thousands_of_servers_no_overflow() -> None:
    for servers, load in ((5000, 4990.0), (20000, 19999.9), (1000, 1e-6), (1000, 999.999999)):
        c = advisor.erlang_c(servers, load)
        assert math.isfinite(c) and 0.0 <= c <= 1.0, (servers, load, c)
    w = advisor.wait_p99(1000, 999.9 / 0.05, 0.05)
    assert math.isfinite(w) and w > 0


def test_edges() -> None:
    assert advisor.erlang_c(4, 4.0) == 1.0
    assert advisor.erlang_c(4, 7.5) == 1.0
    assert advisor.erlang_c(4, 0.0) == 0.0
    assert advisor.erlang_c(0, 0.5) == 1.0
    assert advisor.mean_wait(2, 100.0, 0.02) == math.inf  # A = 2 = c
    assert advisor.wait_quantile(2, 100.0, 0.03) == math.inf
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            advisor.erlang_c(3, bad)
    with pytest.raises(ValueError):
        advisor.erlang_c(-1, 1.0)
    with pytest.raises(ValueError):
        advisor.wait_quantile(3, 1.0, 0.1, q=1.0)
    with pytest.raises(ValueError):
        advisor.mean_wait(3, 1.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    servers=st.integers(min_value=1, max_value=400),
    rho=st.floats(min_value=0.0, max_value=0.9999),
)
def test_erlang_c_is_a_probability_and_monotone(servers: int, rho: float) -> None:
    load = rho * servers
    c = advisor.erlang_c(servers, load)
    assert 0.0 <= c <= 1.0
    # More servers never make waiting more likely; more load never less likely.
    assert advisor.erlang_c(servers + 1, load) <= c + 1e-12
    assert advisor.erlang_c(servers, min(load * 1.01, servers * 0.99999)) >= c - 1e-12


# -- wait times ---------------------------------------------------------------------


def test_mean_wait_agrees_with_queue_length_formula() -> None:
    # Lq = C · rho / (1 - rho) for M/M/c; Little's law turns it into Wq = Lq / lambda.
    servers, rate, hold = 6, 100.0, 0.05
    load = rate * hold
    rho = load / servers
    lq = advisor.erlang_c(servers, load) * rho / (1 - rho)
    assert advisor.mean_wait(servers, rate, hold) == pytest.approx(lq / rate, rel=1e-12)
    assert advisor.littles_law(rate, advisor.mean_wait(servers, rate, hold)) == pytest.approx(lq)


def test_quantile_is_the_inverse_of_the_tail() -> None:
    servers, rate, hold = 5, 80.0, 0.05
    c = advisor.erlang_c(servers, rate * hold)
    for q in (0.9, 0.99, 0.999):
        t = advisor.wait_quantile(servers, rate, hold, q)
        tail = c * math.exp(-(servers / hold - rate) * t)
        assert tail == pytest.approx(1 - q, rel=1e-9)
    # Fewer than 1% wait at all: the p99 is zero.
    assert advisor.wait_p99(20, 100.0, 0.05) == 0.0
    # The Allen-Cunneen factor scales the wait.
    base = advisor.wait_p99(servers, rate, hold)
    assert advisor.wait_p99(servers, rate, hold, variability=2.0) == pytest.approx(2 * base)


def _simulate(servers: int, rate: float, hold: float, n: int, seed: int) -> list[float]:
    """Waits of a FIFO M/M/c queue, by discrete-event simulation."""
    rng = random.Random(seed)
    free = [0.0] * servers
    t = 0.0
    waits = []
    for _ in range(n):
        t += rng.expovariate(rate)
        start = max(t, heapq.heappop(free))
        waits.append(start - t)
        heapq.heappush(free, start + rng.expovariate(1.0 / hold))
    return waits[1000:]


def test_predictions_match_a_simulated_queue() -> None:
    servers, hold = 4, 0.05
    rate = 0.6 * servers / hold
    waits = sorted(_simulate(servers, rate, hold, 200_000, seed=7))
    measured_p99 = waits[math.ceil(0.99 * len(waits)) - 1]
    measured_mean = sum(waits) / len(waits)
    waited = sum(1 for w in waits if w > 0) / len(waits)
    assert waited == pytest.approx(advisor.erlang_c(servers, rate * hold), rel=0.05)
    assert measured_mean == pytest.approx(advisor.mean_wait(servers, rate, hold), rel=0.08)
    assert measured_p99 == pytest.approx(advisor.wait_p99(servers, rate, hold), rel=0.10)


# -- sizing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "hold", "target", "ceiling"),
    [
        (50.0, 0.04, 0.010, 0.8),
        (500.0, 0.02, 0.005, 0.8),
        (2.0, 0.5, 0.1, 0.5),
        (1e4, 0.01, 0.001, 0.9),
    ],
)
def test_smallest_size_is_smallest(rate: float, hold: float, target: float, ceiling: float) -> None:
    k = advisor.smallest_size(rate, hold, target, ceiling)
    load = rate * hold

    def ok(c: int) -> bool:
        return load / c <= ceiling and advisor.wait_p99(c, rate, hold) <= target

    assert ok(k)
    assert k == 1 or not ok(k - 1)


def test_smallest_size_respects_ceiling_and_target() -> None:
    # A lax target: the utilization ceiling decides (A = 8 needs 10 at 80%).
    assert advisor.smallest_size(200.0, 0.04, p99_target=60.0, util_ceiling=0.8) == 10
    # A tighter target needs more.
    assert advisor.smallest_size(200.0, 0.04, p99_target=0.001) > 10
    assert advisor.smallest_size(0.0, 0.04) == 1
    with pytest.raises(ValueError):
        advisor.smallest_size(1000.0, 1.0, limit=50)
    with pytest.raises(ValueError):
        advisor.smallest_size(10.0, 0.1, util_ceiling=1.5)


def test_folk_rules() -> None:
    assert advisor.folk_cores_rule(4) == 9  # HikariCP: 4 cores × 2 + 1 spindle
    assert advisor.folk_cores_rule(8, spindles=0) == 16
    assert advisor.folk_qps_rule(100.0, 0.05) == 6  # 100/s × 50 ms × 1.2
    assert advisor.folk_qps_rule(0.0, 0.05) == 1
    assert advisor.folk_db_share(200, 3) == 53  # 200 × 0.8 / 3
    assert advisor.folk_db_share(100, 1, target_util=1.0) == 100
    with pytest.raises(ValueError):
        advisor.folk_db_share(0, 1)
    assert advisor.allen_cunneen(None, None) == 1.0
    assert advisor.allen_cunneen(3.0, 2.0) == pytest.approx(3.5)
