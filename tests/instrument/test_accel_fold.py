"""The C fold of the drain (``_accel.Folder``) against its reference, the Python loop.

Two drains fold the same batches of records - usual ones and every kind the C fold
leaves to Python (new sites, labels, unknown pools, a reported leak given back, closes
while held, waits long enough to be charged, out-of-order ends, odd types) - and must
end with the same lines, events, model, holders and attribution state.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from typing import Any

import pytest

from poolscope.fold import PoolState
from poolscope.histogram import Histogram
from poolscope.instrument import accel, tags
from poolscope.instrument.asgi import AsgiRequestLabels
from poolscope.instrument.drain import Drain
from poolscope.instrument.wsgi import WsgiRequestLabels

pytestmark = [
    pytest.mark.fast,
    pytest.mark.skipif(not accel.FOLD, reason=f"C fold: {accel.REASON}"),
]

OFFSET = 1_700_000_000.0 - 20_000.0  # wall minus perf_counter, as the runtime reads it


class _Task:
    """A holder with a name, weakly referenceable, as an asyncio task is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_name(self) -> str:
        return self.name


_THREAD = object()


def _holder(h: Any) -> Any:
    return int(str(threading.get_ident())) if h is _THREAD else h


class _Route:
    path_format = "/orders/{id}"


def _request_labels() -> list[Any]:
    """Web requests' labels as the middleware leaves them: the route found (the C fold
    reads it itself), not found (the fallback: Python is called), found under labels
    of their own (a parent: Python), and an empty route (Python)."""
    found = AsgiRequestLabels({"path": "/orders/12345", "route": _Route()}, "GET", None)
    missing = AsgiRequestLabels({"path": "/login"}, "POST", None)
    worker = threading.Thread(name="worker-3")  # never started: only named
    wsgi = WsgiRequestLabels({"REQUEST_METHOD": "GET", "PATH_INFO": "/x/1"}, worker)
    for x in (found, missing, wsgi):
        x.finish()
    nested = AsgiRequestLabels({"path": "/a", "route": _Route()}, "PUT", None)
    nested.parent = tags.Labels((("tenant", "acme"),))
    nested.finish()
    empty = AsgiRequestLabels({"path": "/e"}, "GET", None)
    empty._route = ""
    return [found, missing, wsgi, nested, empty]


def _batches(seed: int) -> list[list[Any]]:
    rnd = random.Random(seed)
    kept = _Task("Task-7")
    holders: list[Any] = [
        # Named at the acquire, as the hot path keeps a task (naming.held_by's pair).
        (kept.get_name(), weakref.ref(kept)),
        ("GET /admin?token=abc", None),  # a pair whose task is gone
        _Task("Task-1"),
        _Task("GET /login?password=hunter2"),
        _Task("worker"),
        _Task("run-job --password hunter2"),  # a dash, then a blank: redacted
        _Task("run-job\t--token\tabc"),
        _Task("worker-7"),  # a dash, no blank: plain (no regular expression)
        _Task('quote " and \\ and \x01 and \u00fc and \u2028'),  # escaped in the line
        _Task("long-" * 400),  # a line longer than the C encoder's buffer
        None,
        1234,  # a thread ident no thread has
        _THREAD,  # this thread, a fresh int per acquire as threading.get_ident() gives
    ]
    sites: list[Any] = [(i, 2 * i, i + 1, 40) for i in range(6)] + [(), None]
    labels = [
        tags.Labels((("route", "/a"),)),
        tags.Labels((("route", "/b"), ("x", "1"))),
        *_request_labels(),
    ]
    pools = ["a", "a", "a", "b", 'p"\u00fc', "z"]
    conns: list[Any] = ["c0", "c1", "c2", "c3", 7, 8, "c\n\u00e9"]
    mono = 20_000.0
    out: list[list[Any]] = []
    for _ in range(rnd.randint(3, 6)):
        batch: list[Any] = []
        if not out:
            for p in ("a", "b", 'p"\u00fc'):
                batch.append({"type": "pool", "t": mono + OFFSET, "pool": p, "kind": "k"})
        for _ in range(rnd.randint(50, 400)):
            mono += rnd.choice([0.0001, 0.001, 0.01, 0.5])
            t = mono - (rnd.random() * 0.5 if rnd.random() < 0.05 else 0.0)  # disorder
            pool, conn = rnd.choice(pools), rnd.choice(conns)
            r = rnd.random()
            if r < 0.45:
                wait = rnd.choice([0.0, 0.0, 0.0, 0.0004, 0.002, 0.3, -1.0])
                batch.append(
                    (
                        "acquire",
                        t,
                        pool,
                        conn,
                        wait,
                        rnd.choice(sites),
                        _holder(rnd.choice(holders)),
                        rnd.choice(labels) if rnd.random() < 0.15 else None,
                    )
                )
            elif r < 0.9:
                hold = rnd.choice([None, None, None, 0.25, 0.0, -0.5])
                batch.append(("release", t, pool, conn, hold))
            elif r < 0.93:
                batch.append({"type": "close", "t": t + OFFSET, "pool": pool, "conn": str(conn)})
            elif r < 0.96:
                batch.append({"type": "state", "t": t + OFFSET, "pool": pool, "in_use": 2})
            elif r < 0.98:
                batch.append(("release", t, pool, conn, 3))  # an int hold: not the usual
            else:
                batch.append(("bogus", t))
        out.append(batch)
    return out


def _mark_leaks(d: Drain, rnd: random.Random) -> None:
    """Some open holds reported as leaks (the leak watch's flag) between batches."""
    for p in sorted(d.model.pools):
        for conn in sorted(d.model.pools[p].holders):
            if rnd.random() < 0.2:
                d.model.pools[p].holders[conn].leak_reported = True


def _histogram(h: Histogram) -> tuple[Any, ...]:
    return (h.buckets, h.count, h.sum, h.min, h.max)


def _state(d: Drain) -> dict[str, Any]:
    m = d.model
    a = m.attribution
    holders = {
        (p, c): (h.conn, h.since, h.site, h.task, h.tags, h.mono, h.raw_site, h.leak_reported)
        for p, pm in m.pools.items()
        for c, h in pm.holders.items()
    }
    blame = {
        p: (
            list(pb.recent),
            pb.last_end,
            pb.disorder,
            pb.held,
            list(pb.cover),
            pb.last_wait,
            [(t, h.conn, h.since, h.site, h.tags) for t, h in pb.acquired],
        )
        for p, pb in a._pools.items()
    }
    return {
        "model": m.to_dict(),
        "holders": holders,
        "blame": blame,
        "charges": a.blame("site"),
        "waited": a.waited_since(),
        "last_t": {p: pm.last_t for p, pm in m.pools.items()},
        "events": m.events,
        "now": m.now,
        "sites": dict(d.interner.site_ids),
        # Each route's use: counts and its hold histogram to the bit (C adds to it).
        "routes": {
            k: (r.acquires, r.waits, r.waited, _histogram(r.hold)) for k, r in a.routes.items()
        },
    }


@pytest.mark.parametrize("seed", range(25))
def test_the_c_fold_ends_where_the_python_fold_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # new sites' and labels' t
    fast, ref = Drain(PoolState(bulk=True)), Drain(PoolState(bulk=True))
    ref._folder = lambda: None  # type: ignore[method-assign]
    # The C fold, making holders in their slots (not by calling the class).
    assert fast._folder().slotted
    rnd_f, rnd_r = random.Random(seed), random.Random(seed)
    folded = 0
    for batch in _batches(seed):
        results = []
        for d, rnd in ((fast, rnd_f), (ref, rnd_r)):
            items = [dict(x) if isinstance(x, dict) else x for x in batch]  # dicts change
            results.append(d.run(items, [], OFFSET, want_lines=True, want_events=True))
            _mark_leaks(d, rnd)
        (lines_f, events_f), (lines_r, events_r) = results
        assert lines_f == lines_r
        assert events_f == events_r
        assert _state(fast) == _state(ref)
        folded += len(batch)
    assert folded > 0


def test_the_c_fold_takes_the_usual_records_itself() -> None:
    # Not a vacuous comparison: the usual records are folded by C, not handed back.
    d = Drain(PoolState(bulk=True))
    d.run([{"type": "pool", "t": 1.0, "pool": "a"}], [], OFFSET, False, False)
    d.interner.site_ids[(1, 2)] = 1
    items: list[Any] = []
    for i in range(100):
        items.append(("acquire", 1.0 + i, "a", f"c{i % 3}", 0.0, (1, 2), None, None))
        items.append(("release", 1.5 + i, "a", f"c{i % 3}", None))
    stop, n, t_first, t_last = d._folder().run(items, 0, OFFSET, {}, None, None)
    assert (stop, n) == (200, 200)
    assert (t_first, t_last) == (1.0 + OFFSET, 100.5 + OFFSET)
    p = d.model.pools["a"]
    assert (p.acquires, p.releases, p.holders) == (100, 100, {})
    assert p.pending_holds == [0.5] * 100 and p.last_t == 100.5 + OFFSET


def test_bucket_counts_matches_the_python_loop() -> None:
    rnd = random.Random(3)
    values = [
        rnd.choice([0.0, 1e-12, 5e-9, 1.0, 10.0, 1e7, 1e300, float("nan")]) for _ in range(50)
    ]
    values += [rnd.lognormvariate(-6, 3) for _ in range(5000)]
    a, b = Histogram(), Histogram()
    a.add_many_trusted(values)
    for v in values:
        b.add_trusted(v)
    assert a.buckets == b.buckets and a.count == b.count
    # repr: a NaN sum equals itself there, and every float is compared to the last bit.
    assert repr((a.sum, a.min, a.max)) == repr((b.sum, b.min, b.max))


def test_ten_thousand_pairs_end_in_the_counters_and_histograms() -> None:
    d = Drain(PoolState(bulk=True))
    d.run([{"type": "pool", "t": time.time(), "pool": "a"}], [], OFFSET, False, False)
    items: list[Any] = []
    for i in range(10_000):
        items += [("acquire", 1.0 + i, "a", "c", 0.0, None, None, None)]
        items += [("release", 1.5 + i, "a", "c", None)]
    d.run(items, [], OFFSET, False, False)
    p = d.model.pools["a"]
    assert p.acquires == p.releases == 10_000 and p.hold.count == 10_000


def test_the_c_fold_does_a_finished_requests_labels_and_route_hold_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not vacuous either: once a request's label set is known, C reads its route and
    # adds to the route's hold histogram without calling Python for them (the
    # differential test shows the results equal; this, that C took them).
    assert accel._fast_labels() == (AsgiRequestLabels, WsgiRequestLabels)
    d = Drain(PoolState(bulk=True))
    d.run([{"type": "pool", "t": 1.0, "pool": "a"}], [], OFFSET, False, False)
    d.interner.site_ids[(1, 2)] = 1

    def request(i: int) -> AsgiRequestLabels:
        labels = AsgiRequestLabels({"path": f"/orders/{i}", "route": _Route()}, "GET", None)
        labels.finish()
        return labels

    def pairs(start: int) -> list[Any]:
        items: list[Any] = []
        for i in range(start, start + 50):  # every acquire waited: the route counts
            holder = (f"Task-{i}", None)
            items.append(("acquire", 10.0 + i, "a", "c1", 0.01, (1, 2), holder, request(i)))
            items.append(("release", 10.5 + i, "a", "c1", None))
        return items

    d.run(pairs(0), [], OFFSET, False, False)  # the label set's first sight: Python
    calls: list[str] = []
    real_tags_id = d.interner.tags_id
    monkeypatch.setattr(
        d.interner, "tags_id", lambda labels: calls.append("tags_id") or real_tags_id(labels)
    )
    real_add = Histogram.add_trusted
    monkeypatch.setattr(
        Histogram, "add_trusted", lambda h, v: calls.append("add_trusted") or real_add(h, v)
    )
    d._fast = None  # the C fold made again, with the patched interner
    (route,) = d.model.attribution.routes.values()
    before = route.hold.count
    d.run(pairs(50), [], OFFSET, False, False)
    assert route.hold.count == before + 50 and route.acquires == 100
    assert calls == []
