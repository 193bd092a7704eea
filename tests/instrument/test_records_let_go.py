"""An acquire's record does not keep the request that made it alive.

Records wait up to a drain tick to be folded; a web request's task usually ends
first. Holding the task (or the request's ASGI scope) made the finished request's
objects wait for the background thread to free them, and that deferral drove the
cyclic collector on the application's thread (naming.held_by, bench/asgi_wrk.py's GC
column). Both hot paths, C and Python, keep a (name, weak reference) pair instead.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import pytest

from poolscope.instrument import accel, naming
from poolscope.instrument.asgi import AsgiRequestLabels
from poolscope.instrument.recorder import PoolHandle, Recorder
from poolscope.instrument.wsgi import WsgiRequestLabels

pytestmark = pytest.mark.fast


def _handle(monkeypatch: pytest.MonkeyPatch, c: bool) -> PoolHandle:
    if c and not accel.ENABLED:
        pytest.skip(f"C hot path: {accel.REASON}")
    monkeypatch.setattr(accel, "ENABLED", c)
    return PoolHandle(Recorder(100), "p", "reference", leak_threshold=None, site_depth=1)


@pytest.mark.parametrize("c", [True, False], ids=["C", "Python"])
def test_a_finished_task_is_freed_while_its_records_wait(
    monkeypatch: pytest.MonkeyPatch, c: bool
) -> None:
    h = _handle(monkeypatch, c)
    refs: list[Any] = []

    async def request(i: int) -> None:
        me = asyncio.current_task()
        assert me is not None
        me.set_name(f"GET /orders/{i}")
        refs.append(weakref.ref(me))
        h.acquired_here(f"c{i}", 0.0, None, asyncio.get_running_loop(), 0)
        h.acquired(f"d{i}", 0.0, None, me)  # the adapters' form, the task passed in
        h.released(f"c{i}")
        h.released(f"d{i}")

    async def main() -> None:
        for i in range(3):
            await asyncio.get_running_loop().create_task(request(i))

    asyncio.run(main())
    # Nobody drained the recorder: the records are all still there...
    acquires = [r for r in h.recorder.buffer if r[0] == "acquire"]
    assert len(acquires) == 6
    # ...and the tasks are gone (reference counting freed each as it ended).
    assert [r() for r in refs] == [None, None, None]
    # What the records kept: the name the task had at the acquire, and a dead reference.
    names = [r[6][0] for r in acquires]
    assert (
        names
        == ["GET /orders/0", "GET /orders/0", "GET /orders/1", "GET /orders/1"]
        + ["GET /orders/2"] * 2
    )
    assert all(r[6][1]() is None for r in acquires)


def test_held_by_keeps_threads_and_none_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert naming.held_by(None) is None
    assert naming.held_by(1234) == 1234
    pair = ("x", None)
    assert naming.held_by(pair) is pair

    class Broken:
        def get_name(self) -> str:
            raise RuntimeError("no name")

    reported: list[str] = []
    monkeypatch.setattr(naming.errors, "report", lambda where, exc=None: reported.append(where))
    assert naming.held_by(Broken()) == ("", None)
    assert reported == ["holder name"]


@pytest.mark.parametrize("c", [True, False], ids=["C", "Python"])
def test_a_task_subclass_is_named_too(monkeypatch: pytest.MonkeyPatch, c: bool) -> None:
    # Not the exact asyncio.Task: the C path names a subclass that keeps Task.get_name
    # itself (one with its own get_name: test_a_task_class_with_its_own_get_name_is_asked).
    h = _handle(monkeypatch, c)

    class MyTask(asyncio.Task):  # type: ignore[type-arg]
        pass

    async def request() -> None:
        h.acquired_here("c", 0.0, None, asyncio.get_running_loop(), 0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro: MyTask(coro, loop=lp, name="custom"))
        await loop.create_task(request())

    asyncio.run(main())
    (record,) = [r for r in h.recorder.buffer if r[0] == "acquire"]
    assert record[6][0] == "custom" and record[6][1]() is None


class _Mapping(dict[str, Any]):
    """A scope or environ that can be weakly referenced (a plain dict cannot)."""


def test_a_finished_asgi_request_lets_go_of_its_task_and_scope() -> None:
    async def main() -> tuple[AsgiRequestLabels, Any, Any]:
        scope = _Mapping(type="http", method="GET", path="/orders/12345", headers=[])
        labels = AsgiRequestLabels(scope, "GET", asyncio.current_task())
        labels.start()
        labels.finish()
        return labels, weakref.ref(scope), weakref.ref(asyncio.current_task())  # type: ignore[arg-type]

    labels, scope_ref, task_ref = asyncio.run(main())
    assert scope_ref() is None and task_ref() is None and labels.holder is None
    # What it knew stays: the route (here the fallback), the request's name.
    assert labels.route() == "GET /orders/…" and labels.request_name() == "GET /orders/…"


def test_a_finished_wsgi_request_restores_the_thread_and_lets_go() -> None:
    me = threading.current_thread()
    before = me.name
    environ = _Mapping(REQUEST_METHOD="POST", PATH_INFO="/login", SCRIPT_NAME="")
    labels = WsgiRequestLabels(environ, me)
    labels.start()
    assert me.name == "POST /login"
    labels.finish()
    assert me.name == before and labels.holder is None
    env_ref = weakref.ref(environ)
    del environ
    assert env_ref() is None and labels.request_name() == "POST /login"


class _Task:
    def get_name(self) -> str:
        return "Task-1"


@pytest.mark.parametrize("c", [True, False], ids=["C", "Python"])
def test_an_ended_hold_lets_go_of_its_task_reference(c: bool) -> None:
    # Wait attribution keeps ended holders (the recent acquires of a pool with waits):
    # their weak reference to the task and raw site go at the release.
    from poolscope.fold import PoolState
    from poolscope.instrument.drain import Drain

    if c and not accel.FOLD:
        pytest.skip(f"C fold: {accel.REASON}")
    d = Drain(PoolState(bulk=True))
    if not c:
        d._folder = lambda: None  # type: ignore[method-assign]
    d.run([{"type": "pool", "t": 1.0, "pool": "a"}], [], 0.0, False, False)
    task = _Task()
    items: list[Any] = []
    for i in range(20):  # every acquire waited: the pool counts its holders
        holder = naming.held_by(task)
        items.append(("acquire", 10.0 + i, "a", f"c{i % 3}", 0.01, (1, 2), holder, None))
        items.append(("release", 10.5 + i, "a", f"c{i % 3}", None))
    items.append(("acquire", 40.0, "a", "open", 0.01, (1, 2), naming.held_by(task), None))
    d.run(items, [], 0.0, False, False)
    kept = [h for _, h in d.model.attribution._pools["a"].acquired]
    assert len(kept) == 21
    ended = [h for h in kept if h.conn != "open"]
    assert all(h.ref is None and h.raw_site is None for h in ended)
    (still,) = d.model.pools["a"].holders.values()
    assert still.ref() is task and still.raw_site == (1, 2)  # an open hold keeps both


@pytest.mark.parametrize("c", [True, False], ids=["C", "Python"])
def test_a_task_renamed_between_acquires_is_named_anew(
    monkeypatch: pytest.MonkeyPatch, c: bool
) -> None:
    # The C hot path reuses the latest pair for the same task under the same name.
    h = _handle(monkeypatch, c)

    async def request() -> None:
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        for name in ("GET /a", "GET /a", "GET /b/{id}", "GET /a"):
            me.set_name(name)
            h.acquired_here("c", 0.0, None, loop, 0)
            h.released("c")

    async def main() -> None:
        await asyncio.get_running_loop().create_task(request())
        await asyncio.get_running_loop().create_task(request())

    asyncio.run(main())
    pairs = [r[6] for r in h.recorder.buffer if r[0] == "acquire"]
    assert [name for name, _ in pairs] == ["GET /a", "GET /a", "GET /b/{id}", "GET /a"] * 2
    assert all(ref() is None for _, ref in pairs)  # both tasks gone
    # The two tasks' pairs are not shared: each names its own (dead) task.
    assert pairs[0][1] is not pairs[4][1]


def test_what_wait_attribution_keeps_is_out_of_the_collectors_sight() -> None:
    # Ended holds (20,000) and recent acquires (4,096) kept per pool with waits: each
    # entry tracked would be traversed, then promoted to the oldest generation, where
    # it counts towards the next full collection of the application's whole heap.
    import gc

    from poolscope.fold import PoolState
    from poolscope.instrument.drain import Drain

    if not accel.FOLD:
        pytest.skip(f"C fold: {accel.REASON}")
    d = Drain(PoolState(bulk=True))
    d.run([{"type": "pool", "t": 1.0, "pool": "a"}], [], 0.0, False, False)
    task = _Task()
    items: list[Any] = []
    for i in range(50):
        items.append(
            ("acquire", 10.0 + i, "a", f"c{i % 3}", 0.01, (1, 2), naming.held_by(task), None)
        )
        items.append(("release", 10.5 + i, "a", f"c{i % 3}", None))
    d.run(items, [], 0.0, False, False)
    pb = d.model.attribution._pools["a"]
    assert len(pb.acquired) == 50 and len(pb.recent) == 50
    # The pool's first wait goes through the Python attribution (its entry is Python's
    # own tuple); every later one is the C fold's, untracked.
    assert [gc.is_tracked(e) for e in pb.acquired][1:] == [False] * 49
    assert not any(gc.is_tracked(e) for e in pb.recent)
    assert not any(gc.is_tracked(h) for _, h in list(pb.acquired)[1:])


@pytest.mark.parametrize("c", [True, False], ids=["C", "Python"])
def test_a_task_class_with_its_own_get_name_is_asked(
    monkeypatch: pytest.MonkeyPatch, c: bool
) -> None:
    # The C path names a Task subclass itself only while it keeps Task.get_name.
    h = _handle(monkeypatch, c)

    class Named(asyncio.Task):  # type: ignore[type-arg]
        def get_name(self) -> str:
            return "from the override"

    async def request() -> None:
        h.acquired_here("c", 0.0, None, asyncio.get_running_loop(), 0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro: Named(coro, loop=lp))
        await loop.create_task(request())

    asyncio.run(main())
    (record,) = [r for r in h.recorder.buffer if r[0] == "acquire"]
    assert record[6][0] == "from the override"
