"""The C fold's float text (``_shortest.h``, Grisu3) against ``float.__repr__``.

The hot lines must be byte for byte what the generic encoder (``json.dumps``) writes,
so every double Grisu3 formats must come out exactly as ``repr`` has it; where Grisu3
cannot be sure it says so (``None`` here) and the line falls back to CPython's dtoa.
"""

from __future__ import annotations

import math
import random
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolscope.instrument import accel

pytestmark = [
    pytest.mark.fast,
    pytest.mark.skipif(accel._accel is None, reason=f"C accelerator: {accel.REASON}"),
]


def _shortest(x: float) -> str | None:
    out: str | None = accel._accel.shortest_repr(x)
    return out


def _check(values: list[float]) -> int:
    """Assert each formatted value equals its repr; return how many fell back."""
    fallbacks = 0
    for x in values:
        got = _shortest(x)
        if got is None:
            fallbacks += 1
            continue
        assert got == repr(x), (x.hex(), got, repr(x))
    return fallbacks


def _from_bits(bits: int) -> float:
    x: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    return x


def test_random_bit_patterns_format_as_repr_and_rarely_fall_back() -> None:
    rnd = random.Random(18)
    values = [_from_bits(rnd.getrandbits(64)) for _ in range(200_000)]
    values = [x for x in values if math.isfinite(x)]
    fallbacks = _check(values)
    # Grisu3 gives up on ~0.5% of doubles; far more would mean it does not do its job.
    assert fallbacks < len(values) * 0.02


def test_the_values_the_stream_carries() -> None:
    """Wall-clock timestamps (the ``t`` of every line) and waits and holds."""
    rnd = random.Random(7)
    walls = [1.6e9 + rnd.random() * 4e8 for _ in range(100_000)]
    durations = [rnd.random() * 10 ** rnd.uniform(-9, 4) for _ in range(100_000)]
    micro = [round(rnd.random() * 100, 6) for _ in range(20_000)]
    assert _check(walls) < 2_000
    assert _check(durations) < 2_000
    _check(micro)


def test_edges_of_the_format_and_of_the_double() -> None:
    """Where repr switches to exponent notation, the boundaries of the double's binade
    (a power of two has a nearer lower neighbour), denormals, the extremes, signs."""
    values: list[float] = [0.0, -0.0, 5e-324, -5e-324, sys.float_info.max, sys.float_info.min]
    for k in range(-325, 309):
        p = float(f"1e{k}")
        values += [p, -p, math.nextafter(p, 0.0), math.nextafter(p, math.inf), 1.5 * p]
    for k in range(-1074, 1024):
        p = math.ldexp(1.0, k)
        values += [p, math.nextafter(p, 0.0), math.nextafter(p, math.inf)]
    for i in range(-2_000, 2_000):
        values += [float(i), i / 8, i / 10, i * 1e-5, i * 1e15]
    values += [123456789012345678.0, 9007199254740993.0, 0.1 + 0.2, 1 / 3, 2 / 3]
    values = [x for x in values if math.isfinite(x)]
    _check(values)
    # Zero and its sign never need the fallback.
    assert _shortest(0.0) == "0.0" and _shortest(-0.0) == "-0.0"


def test_non_finite_values_are_left_to_the_encoder() -> None:
    """JSON has no text for them; the generic encoder decides (the line falls back)."""
    assert _shortest(math.inf) is None
    assert _shortest(-math.inf) is None
    assert _shortest(math.nan) is None


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_double(x: float) -> None:
    got = _shortest(x)
    assert got is None or got == repr(x)
