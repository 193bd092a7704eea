"""ps.tag(), the route helpers of the middleware, and wait attribution in the fold,
without servers: labels through a real runtime and reference pool, attribution over
hand-written event streams whose answer is worked out in the comments."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import poolscope.instrument as ps
from poolscope.attribution import Attribution
from poolscope.events import Event
from poolscope.instrument import tags
from poolscope.instrument.runtime import Runtime
from poolscope.model import PoolState, fold
from tests.adapter_support import capture, wait_sync

pytestmark = pytest.mark.fast


def test_tag_nests_overrides_and_resets() -> None:
    assert tags.current_labels() == {}
    with ps.tag(route="GET /a", tenant="acme"):
        assert tags.current_labels() == {"route": "GET /a", "tenant": "acme"}
        with ps.tag(tenant="other", user=7):
            assert tags.current_labels() == {"route": "GET /a", "tenant": "other", "user": "7"}
        assert tags.current_labels() == {"route": "GET /a", "tenant": "acme"}
    assert tags.current.get() is None


def test_tag_as_decorator_of_functions_and_coroutines() -> None:
    @ps.tag(job="sync")
    def f() -> dict[str, str]:
        return tags.current_labels()

    @ps.tag(job="async")
    async def g() -> dict[str, str]:
        await asyncio.sleep(0)
        return tags.current_labels()

    assert f() == {"job": "sync"}
    assert asyncio.run(g()) == {"job": "async"}
    assert tags.current.get() is None


def test_tag_async_with_and_tasks_inherit() -> None:
    async def main() -> dict[str, str]:
        async with ps.tag(route="GET /x"):
            return await asyncio.create_task(_labels_later())

    assert asyncio.run(main()) == {"route": "GET /x"}


async def _labels_later() -> dict[str, str]:
    await asyncio.sleep(0)
    return tags.current_labels()


def test_tag_is_bounded_and_never_raises() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    many = {f"k{i}": "v" * 500 for i in range(40)}
    with ps.tag(**many):
        got = tags.current_labels()
    assert len(got) == tags.MAX_LABELS and all(len(v) == tags.MAX_VALUE for v in got.values())
    with ps.tag(bad=Bad()):  # counted as an internal error, the code still runs
        assert tags.current_labels() == {}
    t = ps.tag(a="1")
    ctx = contextvars.copy_context()
    ctx.run(t.__enter__)
    t.__exit__()  # reset from another context: reported, not raised


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/articles/hello-world", "GET /articles/…"),
        ("GET", "/articles", "GET /articles"),
        ("POST", "/", "POST /"),
        ("GET", "/12345/edit", "GET /{id}/…"),
        ("GET", "/v1/users/9", "GET /v1/…"),
        ("GET", "/" + "x" * 100, "GET /{id}"),
        ("GET", "/search?q=secret", "GET /search"),
    ],
)
def test_fallback_route_is_bounded(method: str, path: str, expected: str) -> None:
    assert tags.fallback_route(method, path) == expected


def _fallback_route_as_written_first(method: str, path: str) -> str:
    """The uncached fallback_route (before session 8 kept its answers): the reference."""
    method = (method or "?")[:16]
    parts = (path or "/").split("?", 1)[0].lstrip("/").split("/", 1)
    head = parts[0]
    if not head:
        return f"{method} /"
    if len(head) > tags.MAX_SEGMENT or sum(c.isdigit() for c in head) >= 3:
        head = "{id}"
    rest = "/…" if len(parts) > 1 and parts[1] else ""
    return f"{method} /{head}{rest}"


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "", "X" * 20, "get"]),
    path=st.text(alphabet="/?a1-é%x", max_size=40) | st.sampled_from(["", "/", "//", "/a/"]),
)
def test_kept_fallback_routes_are_the_ones_computed(method: str, path: str) -> None:
    # Asked twice: the first answer may be computed, the second comes from the cache.
    expected = _fallback_route_as_written_first(method, path)
    assert tags.fallback_route(method, path) == expected
    assert tags.fallback_route(method, path) == expected


def test_fallback_routes_kept_are_bounded() -> None:
    for i in range(tags.MAX_FALLBACKS + 5):
        tags.fallback_route("GET", f"/seg{i}x/y")
    assert 0 < len(tags._fallbacks) <= tags.MAX_FALLBACKS
    tags.fallback_route("GET", "/" + "a" * (tags.MAX_SEGMENT + 1))
    assert ("GET", "a" * (tags.MAX_SEGMENT + 1), False) not in tags._fallbacks


def test_template_route_is_cached_and_bounded() -> None:
    first = tags.template_route("GET", "/items/<int:id>")
    assert first == "GET /items/{id}" and tags.template_route("GET", "/items/<int:id>") is first
    for i in range(tags.MAX_TEMPLATES + 5):
        tags.template_route("GET", f"/r{i}")
    assert len(tags._templates) <= tags.MAX_TEMPLATES


def test_template_route_writes_converters_as_braces() -> None:
    assert tags.template_route("GET", "/articles/<slug>") == "GET /articles/{slug}"
    assert tags.template_route("GET", "/fast/<int:n>") == "GET /fast/{n}"
    assert tags.template_route("PUT", "items/{id}") == "PUT /items/{id}"


def test_acquires_carry_interned_tags_through_the_runtime(fresh_runtime: Runtime) -> None:
    from poolscope.pool import Pool

    events = capture(fresh_runtime)

    class Conn:
        async def close(self) -> None:
            return None

    async def factory() -> Conn:
        return Conn()

    async def main() -> None:
        pool = ps.instrument(Pool(factory, max_size=2, name="tp"), listen=False)
        async with pool:
            for route in ("GET /a", "GET /b", "GET /a"):
                with ps.tag(route=route):
                    async with pool.acquire():
                        pass
            async with pool.acquire():
                pass

    asyncio.run(main())
    acquires = wait_sync(lambda: [e for e in events if e["type"] == "acquire"][:4], what="acq")
    wait_sync(lambda: len([e for e in events if e["type"] == "acquire"]) == 4, what="4 acquires")
    tag_events = [e for e in events if e["type"] == "tags"]
    assert [e["labels"] for e in tag_events] == [{"route": "GET /a"}, {"route": "GET /b"}]
    ids = [e.get("tags") for e in events if e["type"] == "acquire"]
    assert ids == [1, 2, 1, None]
    assert events.index(tag_events[0]) < events.index(acquires[0])  # sent before use
    st = fresh_runtime.model
    assert {route for (_, route) in st.attribution.routes} == {"GET /a", "GET /b"}


def _acq(t: float, conn: str, wait: float, tags_id: int | None, site: int = 1) -> Event:
    ev: Event = {"type": "acquire", "t": t, "pool": "p", "conn": conn, "wait": wait}
    ev["site"] = site
    if tags_id is not None:
        ev["tags"] = tags_id
    return ev


def _rel(t: float, conn: str, hold: float) -> Event:
    return {"type": "release", "t": t, "pool": "p", "conn": conn, "hold": hold}


def _labels() -> list[Event]:
    return [
        {"type": "tags", "t": 0.5, "id": 1, "labels": {"route": "GET /slow"}},
        {"type": "tags", "t": 0.5, "id": 2, "labels": {"route": "GET /fast"}},
    ]


def test_overlapping_waits_are_charged_once_to_whoever_held() -> None:
    # A pool of 2: /slow holds c1 over [1, 5], /fast holds c2 over [1, 2]; then two
    # waiters wait over [2, 4] and [3, 5] (the union [2, 5] is 3 s of waiting). While
    # they wait: c1 is held all of [2, 5] (3 s), c2 not at all (released at 2).
    events = [
        *_labels(),
        _acq(1.0, "c1", 0.0, 1),
        _acq(1.0, "c2", 0.0, 2),
        _rel(2.0, "c2", 1.0),
        _acq(4.0, "c2", 2.0, 2, site=2),  # waited [2, 4]
        _rel(5.0, "c1", 4.0),
        _rel(5.0, "c2", 1.0),
        _acq(5.0, "c1", 2.0, 2, site=2),  # waited [3, 5]: only [4, 5] is new
        _rel(5.5, "c1", 0.5),
    ]
    st = fold(events)
    attr = st.attribution
    assert attr.waited["p"] == pytest.approx(3.0)
    blame = {b.key: b for b in attr.blame("route")}
    # Over [2, 4]: c1 (slow) 2 s; c2 was re-acquired by a waiter at 4, so over [4, 5]
    # both c1 (slow, 1 s) and c2 (fast, 1 s) held.
    assert blame["GET /slow"].seconds == pytest.approx(3.0)
    assert blame["GET /fast"].seconds == pytest.approx(1.0)
    assert blame["GET /slow"].share == pytest.approx(0.75)
    routes = {r: s for (_, r), s in attr.routes.items()}
    assert routes["GET /fast"].waits == 2 and routes["GET /fast"].waited == pytest.approx(4.0)
    assert routes["GET /slow"].hold.sum == pytest.approx(4.0)
    sites = {b.site: b.seconds for b in attr.blame("site")}
    assert sites[1] == pytest.approx(3.0) and sites[2] == pytest.approx(1.0)


def test_timeouts_are_waits_and_short_waits_are_not() -> None:
    events = [
        *_labels(),
        _acq(1.0, "c1", 0.0, 1),
        _acq(1.5, "c2", 0.0005, 2),  # under WAIT_MIN: not a wait
        {"type": "timeout", "t": 4.0, "pool": "p", "wait": 2.0, "error": "PoolTimeout"},
    ]
    attr = fold(events).attribution
    assert attr.waited["p"] == pytest.approx(2.0)
    blame = {b.key: b.seconds for b in attr.blame("route")}
    assert blame == {"GET /slow": pytest.approx(2.0), "GET /fast": pytest.approx(2.0)}


def test_window_counts_only_recent_charges() -> None:
    events = [
        *_labels(),
        _acq(1.0, "c1", 0.0, 1),
        _acq(3.0, "c2", 1.0, 2),  # waited [2, 3] while c1 (slow) held: 1 s, at t=3
        _rel(3.5, "c2", 0.5),
        _rel(100.0, "c1", 99.0),
        _acq(101.0, "c1", 0.0, 2),
        _acq(200.0, "c2", 2.0, 1),  # waited [198, 200] while c1 (fast) held: 2 s
    ]
    st = fold(events)
    recent = st.attribution.blame("route", since=st.now - 60)
    assert [(b.key, b.seconds) for b in recent] == [("GET /fast", pytest.approx(2.0))]
    assert st.attribution.waited_since(st.now - 60) == {"p": pytest.approx(2.0)}
    assert {b.key for b in st.attribution.blame("route")} == {"GET /slow", "GET /fast"}


def test_sync_carries_attribution_and_garbage_is_left_out() -> None:
    events = [*_labels(), _acq(1.0, "c1", 0.0, 1), _acq(3.0, "c2", 1.0, 2)]
    events.insert(0, {"type": "connect", "t": 0.9, "pool": "p", "conn": "c1", "duration": 0.1,
                      "backend_pid": 4242})  # fmt: skip
    st = fold(events)
    again = PoolState.from_dict(st.to_dict())
    assert again.attribution.to_dict() == st.attribution.to_dict()
    assert again.attribution.pids == {("p", "c1"): 4242}
    assert again.pools["p"].holders["c1"].tags == 1
    junk: Any = {
        "labels": {"1": "x", "x": {}, "2": {"route": 3}},
        "pids": [[1], ["p", "c", "nope"], "x"],
        "routes": [["p", "r", {"acquires": -5, "hold": "?"}]],
        "caused": [["p", "1", None, 1e999], [None]],
        "waited": {"p": "lots"},
        "buckets": [[1.5, [], {}], ["x"], [3, [["p", None, None, -1]], {"p": -2}]],
    }
    a = Attribution.from_dict(junk)
    assert a.labels == {2: {"route": "3"}} and a.pids == {}
    assert a.routes[("p", "r")].acquires == 0 and a.waited == {"p": 0.0}
    assert all(v >= 0 for v in a.caused.values())
    assert a.blame("route", since=0) == [] or all(b.seconds >= 0 for b in a.blame("route", 0))


def test_a_holder_closed_while_held_ends_its_hold() -> None:
    events = [
        *_labels(),
        _acq(1.0, "c1", 0.0, 1),
        {"type": "close", "t": 2.0, "pool": "p", "conn": "c1", "reason": "lost", "age": 5.0},
        _acq(4.0, "c2", 3.0, 2),  # waited [1, 4]: c1 (slow) held over [1, 2] only
    ]
    blame = fold(events).attribution.blame("route")
    assert [(b.key, b.seconds) for b in blame] == [("GET /slow", pytest.approx(1.0))]


def test_wsgi_thread_is_named_after_the_route_and_restored() -> None:
    from poolscope.instrument.wsgi import PoolscopeMiddleware

    seen: dict[str, Any] = {}

    class Rule:
        rule = "/articles/<slug>"

    class Request:
        url_rule = Rule()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["thread"] = threading.current_thread().name
        environ["werkzeug.request"] = Request()  # what Werkzeug does once it has routed
        labels = tags.current.get()
        assert labels is not None
        seen["labels"] = dict(labels.items())  # resolves the route: renames the thread
        seen["resolved"] = threading.current_thread().name
        start_response("200 OK", [])
        return [b"ok"]

    def serve() -> None:
        threading.current_thread().name = "worker-1"
        body = PoolscopeMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/articles/x"},
                                        lambda *a: None)  # fmt: skip
        assert list(body) == [b"ok"]
        seen["during"] = threading.current_thread().name
        body.close()  # type: ignore[attr-defined]
        seen["after"] = threading.current_thread().name
        seen["left"] = tags.current.get()

    th = threading.Thread(target=serve)
    th.start()
    th.join(5)
    assert seen["labels"] == {"route": "GET /articles/{slug}"}
    assert seen["thread"] == "GET /articles/…"  # before the route is known: the fallback
    assert seen["resolved"] == seen["during"] == "GET /articles/{slug}"
    assert seen["after"] == "worker-1" and seen["left"] is None


def test_asgi_unknown_framework_falls_back_and_other_scopes_pass_through() -> None:
    from poolscope.instrument.asgi import PoolscopeMiddleware

    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        labels = tags.current.get()
        got.append(dict(labels.items()) if labels is not None else None)
        got.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": 200})

    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {}

    async def main() -> None:
        mw = PoolscopeMiddleware(app)
        await mw({"type": "http", "method": "GET", "path": "/users/12345/x"}, receive, send)
        await mw({"type": "lifespan"}, receive, send)

    asyncio.run(main())
    assert got[0] == {"route": "GET /users/…"} and got[1] == "GET /users/…"
    assert got[2] is None  # lifespan: no labels
    time.sleep(0)


def test_replay_and_advise_blame_the_same_route(capsys: pytest.CaptureFixture[str]) -> None:
    """The recording of the Starlette test app: its fold, a replay's fold and advise
    all name GET /articles/{slug} as the top blocker, with the same share."""
    from pathlib import Path

    from poolscope.cli import main
    from poolscope.events import iter_lines
    from poolscope.tui.data import ReplaySource

    path = Path(__file__).resolve().parents[1] / "data" / "who_session.ndjson"
    with path.open("rb") as f:
        st = fold(iter_lines(f))
    top = st.attribution.blame("route")[0]
    assert top.key == "GET /articles/{slug}" and top.share > 0.5
    src = ReplaySource(path, start=3600)
    replayed = src.feeds[0].state.attribution.blame("route")[0]
    assert (replayed.key, round(replayed.share, 6)) == (top.key, round(top.share, 6))
    assert main(["advise", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{top.share * 100:3.0f}%" in out and top.key in out
    assert out.index(top.key) < out.index("recommend")


def test_pgview_join_flags_and_budget() -> None:
    """The join of a server sample to folded pools (pure): each flag by its rule."""
    from poolscope.pgview import Backend, join

    events: list[Event] = [
        {"type": "pool", "t": 1.0, "pool": "p", "kind": "asyncpg", "config": {"max": 4},
         "target": "10.0.0.5:5432/app"},
        *_labels(),
        *({"type": "connect", "t": 1.0, "pool": "p", "conn": c, "duration": 0.0,
           "backend_pid": pid} for c, pid in (("c1", 101), ("c2", 102), ("c3", 103))),
        _acq(2.0, "c1", 0.0, 1),  # held: idle in transaction on the server
        _acq(2.0, "c3", 0.0, 2),  # held and active: fine
    ]  # fmt: skip
    st = fold(events)

    def b(pid: int, state: str, age: float, port: int = 0) -> Backend:
        return Backend(pid, state, "", "", age, age, "", port, "app")

    backends = {
        101: b(101, "idle in transaction", 9.0),
        102: b(102, "active", 3.0),  # the pool counts c2 idle
        103: b(103, "active", 9.0),
        555: b(555, "idle", 1.0, port=40001),  # from the app's socket, no pool knows
        556: b(556, "idle", 1.0, port=40002),  # another process's
    }
    snap = join(
        [("app", st)],
        backends,
        max_connections=10,
        reserved=3,
        idle_tx=5.0,
        app_ports={"app": {40001}},
        server="postgresql://u:***@10.0.0.5:5432/app",
    )
    assert snap.kinds == {"idle_in_transaction": 1, "idle_but_active": 1, "unknown_connections": 1}
    text = "\n".join(snap.flags)
    assert "conn c1 (backend 101, GET /slow)" in text and "backends 555)" in text
    assert "c2 (backend 102)" in text and "556" not in text
    assert snap.fleet_max == 4 and snap.available == 7 and not snap.budget_exceeded
    # A second process with the same pool on the same server: over budget.
    over = join([("a", st), ("b", st)], backends, max_connections=10, reserved=3,
                server="postgresql://u:***@10.0.0.5:5432/app")  # fmt: skip
    assert over.fleet_max == 8 and over.budget_exceeded and over.kinds["budget"] == 1
    # A short idle-in-transaction spell, and a just-released active one, are not flagged.
    calm = join(
        [("app", st)], {101: b(101, "idle in transaction", 1.0), 102: b(102, "active", 0.2)}
    )
    assert calm.flags == [] and calm.max_connections == 0


def test_asgi_labels_set_every_slot_request_labels_would() -> None:
    # AsgiRequestLabels.__init__ writes RequestLabels.__init__ out (one call fewer per
    # request): a slot added there and not here fails this.
    from poolscope.instrument.asgi import AsgiRequestLabels

    holder = object()
    asgi = AsgiRequestLabels({"path": "/users/12345/x"}, "GET", holder)
    ref = tags.RequestLabels.__new__(AsgiRequestLabels)
    tags.RequestLabels.__init__(ref, tags.fallback_route("GET", "/users/12345/x"), holder)
    slots = [n for c in (tags.Labels, tags.RequestLabels) for n in c.__slots__]
    assert slots and {n: getattr(asgi, n) for n in slots} == {n: getattr(ref, n) for n in slots}


def test_asgi_task_that_refuses_its_name_still_has_its_labels() -> None:
    from poolscope.instrument import errors
    from poolscope.instrument.asgi import PoolscopeMiddleware

    class Stubborn(asyncio.Task):  # type: ignore[type-arg]
        def set_name(self, value: object) -> None:
            raise RuntimeError("no renaming here")

    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        labels = tags.current.get()
        got.append(dict(labels.items()) if labels is not None else None)

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        return None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda lp, coro: Stubborn(coro, loop=lp))
        mw = PoolscopeMiddleware(app)
        await loop.create_task(mw({"type": "http", "method": "GET", "path": "/a/b"}, receive, send))

    before = errors.count()
    asyncio.run(main())
    assert got == [{"route": "GET /a/…"}]
    assert errors.count() > before  # reported, not raised into the application


def test_asgi_route_template_under_a_starlette_mount() -> None:
    """Starlette's own router and Mount, called as an ASGI server would: the route is
    the template with the mount's prefix, found after routing."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from poolscope.instrument.asgi import PoolscopeMiddleware

    seen: list[Any] = []

    async def item(request: Request) -> PlainTextResponse:
        seen.append(tags.current_labels())
        seen.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Mount("/api", routes=[Route("/items/{id:int}", item)])],
        middleware=[Middleware(PoolscopeMiddleware)],
    )
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/api/items/42", "raw_path": b"/api/items/42",
        "root_path": "", "query_string": b"", "headers": [], "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }  # fmt: skip

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert seen == [{"route": "GET /api/items/{id}"}, "GET /api/items/{id}"]
