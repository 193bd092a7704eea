"""Fuzzing the decoder and the fold: whatever a peer sends, no crash and sane types.

The observer side (TUI, exporter, advisor) reads the folded state and formats its
numbers; a hostile or garbled stream must leave that state well-typed, bounded and
serialisable, and the decoder must answer every line with an event or a
``DecodeError`` - never another exception.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolscope import model as model_module
from poolscope.events import (
    EVENT_TYPES,
    MAX_LINE_BYTES,
    REQUIRED_FIELDS,
    DecodeError,
    decode,
    encode,
)
from poolscope.histogram import Histogram
from poolscope.model import Holder, Leak, PoolMetrics, PoolState, Sample, fold

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_FUZZ = settings(FUZZ, max_examples=80)

# JSON-shaped values, including what Python's json accepts beyond the standard
# (NaN, 1e999 -> inf) and integers too large for a float.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**320),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    sorted({f for fs in REQUIRED_FIELDS.values() for f in fs} | {"t", "proven", "skipped", "count"})
)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    """An event of a known (mostly) or unknown type with fields of any JSON type."""
    etype = draw(st.one_of(st.sampled_from(sorted(EVENT_TYPES)), st.text(max_size=10)))
    ev: dict[str, Any] = {"type": etype, "t": draw(st.one_of(st.floats(0, 2e9), scalars))}
    for f in REQUIRED_FIELDS.get(etype, ()):
        if draw(st.integers(0, 9)):  # now and then a required field is missing
            ev[f] = draw(values)
    ev.update(draw(st.dictionaries(field_names, values, max_size=3)))
    if draw(st.booleans()):
        ev["pool"] = draw(st.sampled_from(["p", "q"]))  # reuse names, so events interact
    return ev


def _syncs() -> Any:
    """A ``sync`` with a state dict built from a real one, then corrupted in places."""
    base = PoolState()
    base.apply({"type": "pool", "t": 1.0, "pool": "p", "kind": "k", "config": {"max": 4}})
    base.apply({"type": "acquire", "t": 2.0, "pool": "p", "conn": "1", "wait": 0.1, "site": 1})
    base.apply({"type": "leak", "t": 3.0, "pool": "p", "conn": "1", "held": 1.0, "stack": []})
    base.apply({"type": "state", "t": 3.0, "pool": "p", "size": 1, "idle": 0, "in_use": 1})
    state = json.loads(json.dumps(base.to_dict()))
    paths = [
        ("pools", "p", "gauges"),
        ("pools", "p", "counters"),
        ("pools", "p", "histograms"),
        ("pools", "p", "histograms", "wait"),
        ("pools", "p", "holders"),
        ("pools", "p", "series"),
        ("pools", "p", "heartbeat_latency"),
        ("pools", "p", "closes"),
        ("leaks",),
        ("sites",),
        ("pools",),
    ]

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        s = json.loads(json.dumps(state))
        for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
            node: Any = s
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if draw(st.booleans()):
                    node[path[-1]] = draw(values)
                else:  # keep the shape, corrupt the leaves
                    node[path[-1]] = draw(
                        st.dictionaries(
                            st.sampled_from(
                                [*sorted(PoolMetrics.__dataclass_fields__), "wait", "1", "x"]
                            ),
                            values,
                            max_size=4,
                        )
                    )
        return {"type": "sync", "t": 5.0, "state": s}

    return build()


def check_sane(state: PoolState) -> None:
    """What views rely on: types as declared, finite times, serialisable state."""
    assert isinstance(state.now, float) and math.isfinite(state.now)
    assert isinstance(state.dropped, int) and isinstance(state.internal_errors, int)
    for name, p in state.pools.items():
        assert isinstance(name, str) and isinstance(p, PoolMetrics)
        for f in model_module._INT_FIELDS:
            assert type(getattr(p, f)) is int, f
        for h in (p.wait, p.hold, p.create):
            assert isinstance(h, Histogram)
            h.percentile(0.99)
            h.cumulative([0.001, 0.1, 10.0])
        assert all(type(v) is int for v in p.closes.values())
        assert all(isinstance(h, Holder) and isinstance(h.since, float) for h in p.holders.values())
        assert all(isinstance(s, Sample) for s in p.series)
        p.rate()
        p.utilization  # noqa: B018 - a property views read
        p.failure_rate  # noqa: B018
    for lk in [*state.leaks.values(), *state.resolved_leaks]:
        assert isinstance(lk, Leak)
        assert isinstance(lk.held, float) and math.isfinite(lk.held)
        assert isinstance(lk.stack, list) and isinstance(lk.task, str)
    # The state serialises (a late attacher's sync) and reads back the same.
    again = PoolState.from_dict(
        json.loads(encode({"type": "x", "t": 0, "s": state.to_dict()}))["s"]
    )
    assert sorted(again.pools) == sorted(state.pools)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_random_bytes_gives_event_or_decode_error(data: bytes) -> None:
    try:
        ev = decode(data)
    except DecodeError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 200
    else:
        assert isinstance(ev["type"], str) and isinstance(ev["t"], (int, float))


@FUZZ
@given(st.dictionaries(st.text(max_size=6), values, max_size=5))
def test_decode_any_json_object(obj: dict[str, Any]) -> None:
    line = json.dumps(obj, allow_nan=True).encode()
    try:
        decode(line)
    except DecodeError:
        pass


def test_decode_pathological_lines() -> None:
    giant = b'{"type":"x","t":1,"pad":"' + b"a" * MAX_LINE_BYTES + b'"}\n'
    deep = b"[" * 100_000 + b"]" * 100_000
    for line in (giant, deep, b"\xff\xfe\n", b"", b"   ", b"{}", b"[]", b'{"type":1,"t":1}'):
        try:
            decode(line)
        except DecodeError as exc:
            assert "\n" not in str(exc)
        else:
            raise AssertionError(f"accepted {line[:40]!r}")
    # Truncated lines of a real event are rejected, not half-read.
    full = encode({"type": "acquire", "t": 1.0, "pool": "p", "conn": "1", "wait": 0.0})
    for cut in range(1, len(full) - 2):
        try:
            decode(full[:cut])
        except DecodeError:
            continue
        raise AssertionError(f"accepted truncated {full[:cut]!r}")


@SLOW_FUZZ
@given(st.lists(events(), max_size=30))
def test_fold_of_any_events_never_raises_and_stays_sane(evs: list[dict[str, Any]]) -> None:
    state = fold(evs)
    if not any(ev["type"] == "sync" for ev in evs):  # a sync resets the tallies
        assert state.events + state.skipped == len(evs)
    check_sane(state)


@SLOW_FUZZ
@given(_syncs(), st.lists(events(), max_size=15))
def test_corrupt_sync_then_events(sync: dict[str, Any], evs: list[dict[str, Any]]) -> None:
    state = fold([sync, *evs])
    check_sane(state)


def test_sync_contradicted_by_later_events_converges() -> None:
    """A sync claims things later events contradict: the fold follows the events,
    and the gauges follow the next ``state`` (they come from the pool itself)."""
    claim = PoolState()
    claim.apply({"type": "acquire", "t": 1.0, "pool": "p", "conn": "9", "wait": 0.0, "site": None})
    claim.apply({"type": "state", "t": 1.0, "pool": "p", "size": 5, "idle": 0, "in_use": 5})
    claim.apply({"type": "leak", "t": 1.0, "pool": "p", "conn": "9", "held": 40.0, "stack": []})
    sync = {"type": "sync", "t": 2.0, "state": claim.to_dict()}
    later = [
        # Releases and closes of connections the sync never mentioned.
        {"type": "release", "t": 3.0, "pool": "p", "conn": "77", "hold": 0.1},
        {"type": "close", "t": 3.0, "pool": "p", "conn": "78", "reason": "lost", "age": 1.0},
        {"type": "unleak", "t": 3.0, "pool": "p", "conn": "79", "held": 1.0, "stack": []},
        # The connection the sync says is leaked comes back.
        {"type": "release", "t": 4.0, "pool": "p", "conn": "9", "hold": 3.0},
        {"type": "unleak", "t": 4.0, "pool": "p", "conn": "9", "held": 43.0, "stack": []},
        {"type": "state", "t": 5.0, "pool": "p", "size": 2, "idle": 2, "in_use": 0},
        # A second sync (the app restarted) replaces counters rather than adding.
    ]
    state = fold([sync, *later])
    p = state.pools["p"]
    assert state.skipped == 0
    assert (p.size, p.idle, p.in_use) == (2, 2, 0)
    assert p.holders == {} and state.leaks == {}
    assert [lk.resolution for lk in state.resolved_leaks] == ["returned"]
    assert p.releases == 2 and p.acquires == 1
    check_sane(state)


def test_flood_of_names_is_bounded() -> None:
    """An observer's memory does not grow without limit whatever names it is sent."""
    evs: list[dict[str, Any]] = []
    for i in range(model_module.MAX_POOLS + 50):
        evs.append({"type": "state", "t": 1.0, "pool": f"p{i}", "size": 1})
    for i in range(model_module.MAX_SITES + 50):
        evs.append({"type": "site", "t": 1.0, "id": i, "stack": []})
    state = fold(evs)
    assert len(state.pools) == model_module.MAX_POOLS
    assert len(state.sites) == model_module.MAX_SITES
    assert state.skipped == 50  # the pools over the cap; extra sites are ignored quietly
    holders = fold(
        {"type": "acquire", "t": 1.0, "pool": "p", "conn": str(i), "wait": 0.0}
        for i in range(model_module.MAX_HOLDERS + 10)
    )
    assert len(holders.pools["p"].holders) == model_module.MAX_HOLDERS
