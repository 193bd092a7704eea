"""adapters.cached_site against the reference, sites.capture: the same site from every
call path (short, long, application code called back from inside the pool, alternating),
at depth 1 and 8, while it learns at most four paths."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest

from poolscope.instrument import sites
from poolscope.instrument.adapters import cached_site

pytestmark = pytest.mark.fast

# "Pool machinery": a module in a directory registered as internal, like a pool library.
POOL = textwrap.dedent(
    """
    def short(listener):
        return listener()

    def long(listener):
        return _a(listener)

    def _a(listener):
        return _b(listener)

    def _b(listener):
        return listener()

    def calls_back(app_fn, listener):
        return app_fn(listener)
    """
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("fakepool")
    (d / "ps_fakepool.py").write_text(POOL)
    sites.add_internal_dir(str(d))
    sys.path.insert(0, str(d))
    try:
        import ps_fakepool

        yield ps_fakepool
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("ps_fakepool", None)


def listener_pair(known: list[Any], depth: int) -> Any:
    def listener() -> tuple[Any, Any]:
        # Both measured from this frame: cached_site's skip counts from its caller.
        return cached_site(known, depth, 2), sites.capture(depth, 2)

    return listener


def app_callback(pool: Any, listener: Any) -> Any:
    return pool.short(listener)  # the application's frame inside the pool's call


@pytest.mark.parametrize("depth", [1, 8])
def test_same_site_as_the_full_walk_on_every_path(pool: Any, depth: int) -> None:
    known: list[Any] = []
    listener = listener_pair(known, depth)
    paths = [
        lambda: pool.short(listener),
        lambda: pool.long(listener),
        lambda: pool.calls_back(lambda lst: app_callback(pool, lst), listener),
    ]
    for _ in range(5):
        for path in paths:
            fast, reference = path()
            assert fast == reference
            assert sites.format_site(fast)[0]["file"] == __file__
    # The callback path's application frame is app_callback, not this test's frame.
    fast, _ = paths[2]()
    assert sites.format_site(fast)[0]["func"] == "app_callback"
    assert 1 <= len(known) <= 4
    assert {n for n, _, _ in known} >= {3, 5}  # short: one pool frame; long: three


def test_learns_at_most_four_paths(pool: Any) -> None:
    known: list[Any] = []
    listener = listener_pair(known, 1)

    def nest(k: int) -> Any:  # application frames of different depths
        return pool.long(listener) if k == 0 else nest(k - 1)

    for k in range(10):
        fast, reference = nest(k)
        assert fast == reference
    assert len(known) <= 4


def test_a_path_shallower_than_a_known_one_falls_back(pool: Any) -> None:
    known: list[Any] = [(10_000, None, None)]  # deeper than any stack here
    fast, reference = pool.short(listener_pair(known, 1))
    assert fast == reference


def test_a_known_path_jumps_without_the_full_walk(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    known: list[Any] = []
    walks = []
    real = sites.capture

    def counted(depth: int = 1, skip: int = 2) -> Any:
        walks.append(skip)
        return real(depth, skip + 1)

    def listener() -> Any:
        return cached_site(known, 1, 2)

    def call() -> Any:
        return pool.long(listener)

    first = call()  # learns the path: one full walk
    monkeypatch.setattr(sites, "capture", counted)
    again = [call() for _ in range(3)]
    assert walks == [] and known
    assert again == [first] * 3  # the same site: call()'s one line
