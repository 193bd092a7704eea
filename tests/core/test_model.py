"""fold(): one test per handler family, series trimming, the sync round trip, and
malformed events counted rather than raised."""

from __future__ import annotations

import json
from typing import Any

import pytest

from poolscope.events import Event, make
from poolscope.model import SERIES_MIN_STEP, SERIES_SECONDS, PoolState, fold

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses

T0 = 1_700_000_000.0


def ev(etype: str, dt: float = 0.0, pool: str | None = "p", **fields: Any) -> Event:
    if pool is not None:
        fields["pool"] = pool
    return make(etype, T0 + dt, **fields)


def acq(conn: str, dt: float, wait: float = 0.001, site: int | None = 1, task: str = "T") -> Event:
    return ev("acquire", dt, conn=conn, wait=wait, site=site, task=task)


def rel(conn: str, dt: float, hold: float = 0.01) -> Event:
    return ev("release", dt, conn=conn, hold=hold)


STACK = [{"file": "app.py", "line": 12, "func": "handler", "code": "conn = await pool.acquire()"}]


def rich_events() -> list[Event]:
    """A little of everything, as an application would stream it."""
    return [
        make("hello", T0, protocol=1, pid=42, process="app", version="0.1.0"),
        ev("pool", 0.1, kind="poolscope", target="db:5432/x", config={"min": 1, "max": 4}),
        make("site", T0 + 0.2, id=1, stack=STACK),
        ev("connect", 0.3, conn="1", duration=0.004),
        ev("connect_error", 0.35, error="ConnectionRefusedError: refused", duration=0.001),
        acq("1", 1.0, wait=0.002),
        acq("2", 1.5, wait=0.2, task="worker-2"),
        ev("state", 2.0, size=2, idle=0, in_use=2, waiting=1, max=4, min=1),
        rel("1", 2.5, hold=1.5),
        ev("timeout", 3.0, wait=5.0, error="no connection within 5s"),
        ev("acquire_error", 3.1, error="PoolClosed"),
        ev("heartbeat", 4.0, conn="1", ok=True, latency=0.0007, error=None),
        ev("heartbeat", 4.1, conn="3", ok=False, latency=None, error="ping timed out"),
        ev("heartbeat", 4.2, conn=None, ok=None, latency=None, error=None, skipped=True),
        ev("leak", 40.0, conn="2", held=38.5, stack=STACK, task="worker-2", site=1),
        ev("close", 41.0, conn="1", reason="idle_timeout", age=40.0),
        ev("close", 41.5, conn="5", reason="lost", age=3.0),
        ev("backend", 42.0, state="down", previous="healthy"),
        ev("breaker", 42.1, state="open"),
        ev("resize", 43.0, max=6, previous=4, reason="advice"),
        ev("reclaim", 44.0, conn="7", held=90.0),
        ev("state", 45.0, size=3, idle=1, in_use=1, waiting=0, max=6, min=1),
        make("dropped", T0 + 46.0, count=17, where="observer queue"),
        make("error", T0 + 47.0, where="drain", error="ValueError: x"),
    ]


def test_counters_and_gauges() -> None:
    st = fold(rich_events())
    p = st.pools["p"]
    assert (p.kind, p.target) == ("poolscope", "db:5432/x")
    assert (p.acquires, p.releases, p.timeouts, p.acquire_errors) == (2, 1, 1, 1)
    assert (p.connects, p.connect_errors) == (1, 1)
    assert (p.heartbeats_ok, p.heartbeats_failed, p.heartbeats_skipped) == (1, 1, 1)
    assert p.heartbeat_latency[-1] == (T0 + 4.0, 0.0007)
    assert p.heartbeat_failures[-1] == (T0 + 4.1, "ping timed out", "3")
    assert p.closes == {"idle_timeout": 1, "lost": 1}
    assert p.closes_total == 2
    assert (p.size, p.idle, p.in_use, p.waiting, p.max, p.min) == (3, 1, 1, 0, 6, 1)
    assert (p.backend, p.breaker, p.reclaims) == ("down", "open", 1)
    assert p.last_error == "ping timed out"
    assert st.dropped == 17
    assert st.internal_errors == 1
    assert st.process["pid"] == 42
    assert st.sites[1] == STACK
    assert st.first_t == T0 and st.now == T0 + 47.0
    assert st.skipped == 0
    assert st.events == len(rich_events())
    assert p.failure_rate == pytest.approx(2 / 4)
    assert p.utilization == pytest.approx(1 / 6)


def test_histograms_of_wait_hold_and_create() -> None:
    st = fold([acq("1", 0, wait=0.001), acq("2", 0.1, wait=0.5), rel("1", 1, hold=2.0)])
    st.apply(ev("connect", 2, conn="3", duration=0.03))
    p = st.pools["p"]
    assert p.wait.count == 2 and p.wait.max == 0.5
    assert p.hold.count == 1 and p.hold.sum == 2.0
    assert p.create.count == 1 and p.create.max == 0.03
    assert 0.001 <= p.wait.p50 <= 0.001 * 10**0.1


def test_pool_event_sets_config_and_limits() -> None:
    st = fold([ev("pool", kind="asyncpg", target="h:1/db", config={"min": 2, "max": 9, "x": 1})])
    p = st.pools["p"]
    assert (p.kind, p.target, p.min, p.max, p.config["x"]) == ("asyncpg", "h:1/db", 2, 9, 1)


def test_holders_follow_acquire_release_and_close() -> None:
    st = fold([acq("1", 0, task="a"), acq("2", 1, task="b"), acq("3", 2, task="c")])
    assert [h.conn for h in st.holders("p")] == ["1", "2", "3"]  # longest held first
    assert st.holders("p")[1].task == "b" and st.holders("p")[0].site == 1
    st.apply(rel("2", 3))
    st.apply(ev("close", 4, conn="3", reason="lost", age=9.0))  # closed while held
    assert [h.conn for h in st.holders("p")] == ["1"]
    assert st.holders("nope") == []


def test_leak_resolved_by_unleak() -> None:
    st = fold([acq("2", 0), ev("leak", 31, conn="2", held=31.0, stack=STACK, task="w", site=1)])
    p = st.pools["p"]
    assert len(st.open_leaks()) == 1 and st.open_leaks("other") == []
    leak = st.open_leaks("p")[0]
    assert (leak.conn, leak.held, leak.task, leak.stack, leak.proven) == (
        "2",
        31.0,
        "w",
        STACK,
        False,
    )
    assert p.leaks_total == 1 and p.leaks_resolved == 0
    # The same leak reported again (proven by gc) updates, not duplicates.
    st.apply(ev("leak", 35, conn="2", held=35.0, stack=STACK, task="w", proven=True))
    assert p.leaks_total == 1 and st.open_leaks()[0].proven and st.open_leaks()[0].held == 35.0
    st.apply(ev("unleak", 50, conn="2", held=50.0, stack=STACK, task="w"))
    assert st.open_leaks() == []
    assert p.leaks_resolved == 1
    done = st.resolved_leaks[-1]
    assert (done.resolution, done.resolved_t, done.resolved_held) == ("returned", T0 + 50, 50.0)
    # An unleak for a connection never reported is ignored.
    st.apply(ev("unleak", 51, conn="9", held=1.0, stack=[], task=""))
    assert p.leaks_resolved == 1 and st.skipped == 0


def test_leak_resolved_by_gc_close_and_other_close() -> None:
    st = fold(
        [
            ev("leak", 10, conn="1", held=10.0, stack=[], task="a"),
            ev("leak", 11, conn="2", held=11.0, stack=[], task="b"),
            ev("close", 20, conn="1", reason="gc_leak", age=30.0),
            ev("close", 21, conn="2", reason="reclaimed", age=30.0),
        ]
    )
    assert st.open_leaks() == []
    assert [lk.resolution for lk in st.resolved_leaks] == ["gc", "closed:reclaimed"]
    assert st.resolved_leaks[0].resolved_held == pytest.approx(20.0)
    assert st.pools["p"].leaks_resolved == 2
    assert st.pools["p"].closes == {"gc_leak": 1, "reclaimed": 1}


def test_series_trims_to_fifteen_minutes_and_coalesces() -> None:
    events = [
        ev("state", float(i), size=4, idle=4 - i % 4, in_use=i % 4, waiting=0, max=4, min=0)
        for i in range(0, 1200)
    ]
    st = fold(events)
    series = st.pools["p"].series
    assert series[-1].t == T0 + 1199
    assert series[0].t >= series[-1].t - SERIES_SECONDS
    assert series[0].t <= series[-1].t - SERIES_SECONDS + 1
    assert len(series) == int(SERIES_SECONDS) + 1
    # Samples closer than SERIES_MIN_STEP replace each other.
    before = len(series)
    st.apply(ev("state", 1199 + SERIES_MIN_STEP / 2, size=4, idle=0, in_use=4, waiting=3, max=4))
    assert len(series) == before - 1  # replaced the last; the window moved past the first
    assert (series[-1].t, series[-1].waiting) == (T0 + 1199 + SERIES_MIN_STEP / 2, 3)
    assert len(st.pools["p"].window(10)) == 10  # 1190 .. 1198 and 1199.25


def test_rate_from_cumulative_samples() -> None:
    events: list[Event] = []
    for i in range(10):
        events += [acq(str(i), i + 0.1), rel(str(i), i + 0.2)]
        events.append(ev("state", i + 0.5, size=1, idle=1, in_use=0, waiting=0, max=1))
    st = fold(events)
    assert st.pools["p"].rate("acquires", window=5.0) == pytest.approx(1.0)
    assert st.pools["p"].rate("timeouts") == 0.0


def _roundtrip(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(d))
    return out


def test_sync_round_trip_to_dict_from_dict() -> None:
    st = fold(
        [*rich_events(), acq("9", 48), ev("leak", 49, conn="9", held=31.0, stack=STACK, task="x")]
    )
    d = _roundtrip(st.to_dict())
    assert _roundtrip(PoolState.from_dict(d).to_dict()) == d
    # A late attacher that folds only the sync event sees the same state.
    late = fold([make("sync", st.now, state=d)])
    assert late.events == st.events + 1  # the sync itself is one more event folded
    assert {**_roundtrip(late.to_dict()), "events": st.events} == d
    assert late.pools["p"].wait.p99 == st.pools["p"].wait.p99
    assert late.open_leaks()[0].stack == STACK
    # ... and keeps folding live events on top of it.
    late.apply(rel("9", 50, hold=40.0))
    assert late.pools["p"].releases == st.pools["p"].releases + 1


def test_application_state_in_bulk_syncs_like_one_folded_event_by_event() -> None:
    """The application's state (bulk histograms, holders carrying the monotonic start,
    raw site and holder reference) says in its sync exactly what an observer's says."""
    import weakref

    class Task:
        pass

    task = Task()
    app, observer = PoolState(bulk=True), PoolState()
    for i, (w, h) in enumerate([(0.0, 0.002), (0.004, 0.1), (2e-10, 7.0)]):
        app.fold_acquire("p", f"c{i}", T0 + i, w, 3, "T", None, 12.5 + i, (1, 2), weakref.ref(task))
        observer.fold_acquire("p", f"c{i}", T0 + i, w, 3, "T")
        if i < 2:  # the last one stays checked out
            app.fold_release("p", f"c{i}", T0 + i + h, h)
            observer.fold_release("p", f"c{i}", T0 + i + h, h)
    d = app.to_dict()  # settles the pending waits and holds first
    assert d == observer.to_dict()
    json.dumps(d)  # no weak reference or raw site in it
    (held,) = d["pools"]["p"]["holders"]
    assert set(held) == {"conn", "since", "site", "task", "tags"}
    assert app.pools["p"].wait.count == 3 and app.pools["p"].hold.count == 2


def test_sync_keeps_history_across_restart() -> None:
    old = fold(
        [ev("state", float(i), size=1, idle=1, in_use=0, waiting=0, max=2) for i in range(5)]
    )
    new_app = fold(
        [ev("state", 100.0 + i, size=1, idle=0, in_use=1, waiting=0, max=2) for i in range(3)]
    )
    old.apply(make("sync", T0 + 103, state=_roundtrip(new_app.to_dict())))
    ts = [s.t - T0 for s in old.pools["p"].series]
    assert ts == [0, 1, 2, 3, 4, 100, 101, 102]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "acquire", "t": T0, "pool": "p"},  # no conn
        {"type": "release", "t": T0, "pool": "p"},  # no conn
        {"type": "leak", "t": T0, "pool": "p"},  # no conn
        {"type": "site", "t": T0, "id": "not-a-number", "stack": []},
        {"type": "sync", "t": T0, "state": "nope"},
        {"type": "no-such-type", "t": T0},
        {"type": ["unhashable"], "t": T0},
        {"t": T0},
    ],
)
def test_malformed_events_are_counted_not_raised(bad: Event) -> None:
    st = fold([acq("1", 0)])
    st.apply(bad)
    assert st.skipped == 1
    assert st.pools["p"].acquires == 1  # the state before the bad event is intact
    st.apply(rel("1", 1))
    assert st.pools["p"].releases == 1


def test_wrongly_typed_fields_fall_back_to_defaults() -> None:
    st = fold(
        [
            ev("state", 0, size="many", idle=None, in_use=True, waiting=1.0, max=4, min=0),
            ev("acquire", 1, conn=5, wait="slow", site="x"),
            make("dropped", "yesterday", count="lots"),  # type: ignore[arg-type]
        ]
    )
    p = st.pools["p"]
    assert (p.size, p.idle, p.in_use, p.waiting, p.max) == (0, 0, 0, 1, 4)
    assert p.acquires == 1 and p.wait.count == 1 and p.holders["5"].site is None
    assert st.dropped == 0 and st.skipped == 0
