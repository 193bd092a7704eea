"""The runtime's fast lines for acquire and release are byte for byte ``encode``'s."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolscope.events import encode, encode_acquire, encode_release

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses

_floats = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)
_text = st.text(max_size=20)


@given(
    t=_floats,
    pool=_text,
    conn=_text,
    wait=_floats,
    site=st.none() | st.integers(-(10**12), 10**12) | st.booleans(),
    task=_text,
)
def test_acquire_line_is_the_generic_line(
    t: float, pool: str, conn: str, wait: float, site: int | None, task: str
) -> None:
    ev = {"type": "acquire", "t": t, "pool": pool, "conn": conn, "wait": wait}
    ev["site"] = site
    ev["task"] = task
    line = encode_acquire(t, pool, conn, wait, site, task)
    assert line == encode(ev)
    assert json.loads(line) == json.loads(encode(ev))


@given(t=_floats, pool=_text, conn=_text, hold=_floats)
def test_release_line_is_the_generic_line(t: float, pool: str, conn: str, hold: float) -> None:
    ev = {"type": "release", "t": t, "pool": pool, "conn": conn, "hold": hold}
    assert encode_release(t, pool, conn, hold) == encode(ev)


def test_escaping_cache_stays_bounded() -> None:
    from poolscope import events

    for i in range(events._ESCAPED_MAX * 2):
        encode_release(1.0, "p", f"conn-{i}", 0.5)
    assert len(events._escaped) <= events._ESCAPED_MAX
