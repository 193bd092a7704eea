"""The fast lines for acquire and release are byte for byte the JSON encoder's, and
``encode`` writes every usual acquire and release through them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolscope import events
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
    assert line == events._encode_dict(ev)  # the JSON encoder's own line
    assert line == encode(ev)
    assert json.loads(line) == json.loads(events._encode_dict(ev))


@given(t=_floats, pool=_text, conn=_text, hold=_floats)
def test_release_line_is_the_generic_line(t: float, pool: str, conn: str, hold: float) -> None:
    ev = {"type": "release", "t": t, "pool": pool, "conn": conn, "hold": hold}
    assert encode_release(t, pool, conn, hold) == events._encode_dict(ev) == encode(ev)


@given(tags=st.none() | st.integers(-(10**20), 10**20) | st.booleans())
def test_acquire_with_tags_is_the_generic_line(tags: int | None) -> None:
    ev = {"type": "acquire", "t": 1.5, "pool": "p", "conn": "c", "wait": 0.0, "site": 3}
    ev.update(task="t", tags=tags)
    assert encode(ev) == events._encode_dict(ev)
    if tags is not None:
        assert encode(ev) == encode_acquire(1.5, "p", "c", 0.0, 3, "t", tags)


def test_encode_writes_usual_hot_events_with_the_fast_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real_acquire, real_release = events.encode_acquire, events.encode_release
    monkeypatch.setattr(events, "encode_acquire", lambda *a: calls.append("a") or real_acquire(*a))
    monkeypatch.setattr(events, "encode_release", lambda *a: calls.append("r") or real_release(*a))
    encode({"type": "release", "t": 1.0, "pool": "p", "conn": "c", "hold": 0.5})
    encode(
        {
            "type": "acquire",
            "t": 1.0,
            "pool": "p",
            "conn": "c",
            "wait": 0.0,
            "site": None,
            "task": "",
        }
    )
    encode({"type": "release", "t": 1.0, "pool": "p", "conn": "c", "hold": 0.5, "lost": True})
    assert calls == ["r", "a"]  # the lost release has another field: the JSON encoder's


def test_escaping_cache_stays_bounded() -> None:
    from poolscope import events

    for i in range(events._ESCAPED_MAX * 2):
        encode_release(1.0, "p", f"conn-{i}", 0.5)
    assert len(events._escaped) <= events._ESCAPED_MAX
