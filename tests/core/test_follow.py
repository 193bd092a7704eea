"""The one stream follower: connection status and state under both policies."""

from __future__ import annotations

import pytest

from poolscope.client import CONNECTED, DISCONNECTED
from poolscope.export import Target
from poolscope.follow import StreamFollower
from poolscope.model import MAX_POOLS, PoolState, fold
from poolscope.tui.data import ProcessFeed

pytestmark = pytest.mark.fast

T0 = 1000.0


def _sync(t: float, pid: int, pools: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "type": "sync",
        "t": t,
        "state": {"process": {"pid": pid, "process": "app", "t": t - 5}, "pools": pools or {}},
    }


def _acquire(t: float) -> dict[str, object]:
    return {"type": "acquire", "t": t, "pool": "p", "conn": "1", "wait": 0.0}


def _session(f: StreamFollower, t: float, pid: int) -> None:
    f.follow({"type": CONNECTED, "t": t, "endpoint": ":1"}, t)
    f.follow({"type": "hello", "t": t, "protocol": 1, "pid": pid}, t)
    f.follow(_sync(t, pid), t)
    f.follow(_acquire(t + 1), t + 1)


def test_the_tui_policy_keeps_the_state_across_a_drop() -> None:
    f = StreamFollower(windowed=True)
    assert not f.connected and not f.ever_connected
    _session(f, T0, 7)
    assert f.connected and f.synced and f.started == T0 - 5
    f.follow({"type": DISCONNECTED, "t": T0 + 2, "error": "closed by the application"}, T0 + 2)
    assert not f.connected and f.ever_connected and not f.synced
    assert f.disconnected_since == T0 + 2 and f.last_error == "closed by the application"
    assert f.state.pools["p"].acquires == 1  # still shown, marked disconnected
    assert not f.refused


def test_the_exporter_policy_starts_each_connection_empty() -> None:
    f = StreamFollower(per_connection=True)
    _session(f, T0, 7)
    assert f.state.process["pid"] == 7 and f.state.pools["p"].acquires == 1
    f.follow({"type": DISCONNECTED, "t": T0 + 2, "error": "reset"}, T0 + 2)
    assert not f.state.pools and not f.state.process  # nothing stale to serve
    f.follow({"type": CONNECTED, "t": T0 + 3, "endpoint": ":1"}, T0 + 3)
    assert f.connected and not f.synced


def test_a_refused_stream_says_why() -> None:
    f = StreamFollower()
    f.follow({"type": CONNECTED, "t": T0, "endpoint": ":1"}, T0)
    problem = "protocol version 9 from the future; this poolscope speaks 1"
    gone = {"type": DISCONNECTED, "t": T0, "error": problem, "incompatible": True}
    f.follow(gone, T0)
    assert f.refused == problem
    plain = StreamFollower()
    plain.follow({"type": DISCONNECTED, "t": T0, "error": "refused"}, T0)
    assert not plain.refused  # a drop is not a refusal


def test_export_target_and_tui_feed_are_followers() -> None:
    from poolscope.client import StreamClient
    from poolscope.endpoint import Endpoint

    ep = Endpoint("127.0.0.1", 1)
    target = Target(ep, StreamClient(ep))
    feed = ProcessFeed(":1", endpoint=ep)
    for ev in (
        {"type": CONNECTED, "t": T0, "endpoint": ":1"},
        _sync(T0, 7),
    ):
        target.apply(ev)
        feed.apply(ev, T0)
    assert target.up and target.labels() == {"process": "app", "pid": "7"}
    assert feed.connected and feed.synced and feed.seq == 2
    gone = {"type": DISCONNECTED, "t": T0 + 1, "error": "reset"}
    target.apply(gone)
    feed.apply(gone, T0 + 1)
    assert not target.up and target.labels() == {"process": "?", "pid": "?"}
    assert feed.state.process["pid"] == 7 and feed.disconnected_since == T0 + 1


def _state(t: float, pool: str = "p") -> dict[str, object]:
    return {"type": "state", "t": t, "pool": pool, "size": 1, "idle": 0, "in_use": 1}


def test_the_fold_alone_keeps_history_for_a_pool_created_after_the_sync() -> None:
    # The exporter's and advise's states get it too, not only the TUI's feeds.
    st = fold([_state(T0 + i) for i in range(3)])
    st.apply(_sync(T0 + 10, 8))  # restarted: the pool does not exist yet
    assert "p" not in st.pools
    st.apply(_state(T0 + 11))
    assert [s.t - T0 for s in st.pools["p"].series] == [0, 1, 2, 11]
    assert not st.to_dict().get("parked")  # parked history never rides in a sync


def test_parked_history_is_bounded_like_the_pools() -> None:
    st = PoolState()
    for round_ in range(3):  # each sync forgets every pool the one before had
        names = [f"r{round_}-{i}" for i in range(MAX_POOLS)]
        st.apply(_sync(T0 + round_ * 10, 8, {}))
        for name in names:
            st.apply(_state(T0 + round_ * 10 + 1, name))
    st.apply(_sync(T0 + 100, 8, {}))
    assert len(st._parked) <= MAX_POOLS
