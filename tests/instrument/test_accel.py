"""The optional C hot path (``_accel.c``) against its reference, the Python closures.

Both make the records a pool handle appends for the drain. They are driven with the
same calls here and must make the same records, clock readings aside; the C one must
never raise into the application, leak a reference or read another clock.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from collections import deque
from typing import Any

import pytest

from poolscope.instrument import accel, errors, sites, tags
from poolscope.instrument.recorder import PoolHandle, Recorder

pytestmark = pytest.mark.fast

needs_accel = pytest.mark.skipif(
    not accel.ENABLED and not os.environ.get("CI"), reason=f"C hot path: {accel.REASON}"
)


def _handles(
    monkeypatch: pytest.MonkeyPatch, depth: int, capacity: int = 1000
) -> tuple[PoolHandle, PoolHandle]:
    """(C, Python) handles of one pool name, each on its own recorder."""
    c = PoolHandle(Recorder(capacity), "p", "reference", leak_threshold=None, site_depth=depth)
    monkeypatch.setattr(accel, "ENABLED", False)
    py = PoolHandle(Recorder(capacity), "p", "reference", leak_threshold=None, site_depth=depth)
    monkeypatch.setattr(accel, "ENABLED", True)
    return c, py


def _records(h: PoolHandle) -> list[tuple[Any, ...]]:
    """The records, clock readings (field 1) replaced by whether they are floats."""
    return [(r[0], type(r[1]) is float, *r[2:]) for r in h.recorder.buffer]  # type: ignore[misc]


def _c_path(h: PoolHandle) -> bool:
    return type(h.acquired).__name__ == "builtin_function_or_method"


@needs_accel
def test_the_project_install_built_the_accelerator_where_a_compiler_is() -> None:
    # make test installs with setuptools and this machine has a C compiler: the C path
    # must be there and in use (a silent fallback would hide a broken build).
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if (
        platform.python_implementation() == "CPython"
        and shutil.which("cc")
        and os.path.exists(headers)
    ):
        assert accel.ENABLED, accel.REASON
        h = PoolHandle(Recorder(), "p", "reference", leak_threshold=None)
        assert _c_path(h)


@needs_accel
def test_acquired_and_released_make_the_same_records_as_the_python_closures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, py = _handles(monkeypatch, 1)
    assert _c_path(c) and not _c_path(py)
    holder = object()
    labels = tags.Labels((("route", "/x"),), None)
    for h in (c, py):
        h.acquired("c1", 0.25, (3, 10), holder)
        h.released("c1")
        token = tags.current.set(labels)
        try:
            h.acquired(conn="c2", wait=0.0, site=None, holder=None)
        finally:
            tags.current.reset(token)
        h.released("c2", 1.5)
        h.released("c2", hold=None, t=42.0)
        h.released(7, 0.5, 43.0)
    assert _records(c) == _records(py)
    recs = list(c.recorder.buffer)
    assert recs[2][7] is labels and recs[0][7] is None
    assert recs[4][1] == 42.0 and recs[5][1] == 43.0


def _pool_acquire(h: PoolHandle, t: float | None, loop: Any, up: int) -> None:
    """A pool's acquire method: the handle is called from here."""
    if up:
        _pool_inner(h, t, loop)
    else:
        h.acquired_here("c", 0.125, t, loop, 0)


def _pool_inner(h: PoolHandle, t: float | None, loop: Any) -> None:
    h.acquired_here("c", 0.125, t, loop, 1)


def _application(h: PoolHandle, t: float | None, loop: Any, up: int) -> None:
    _pool_acquire(h, t, loop, up)  # the acquire site both handles must report


@needs_accel
@pytest.mark.parametrize("depth", [0, 1, 8])
@pytest.mark.parametrize("up", [0, 1])
def test_acquired_here_takes_the_same_site_and_task(
    monkeypatch: pytest.MonkeyPatch, depth: int, up: int
) -> None:
    c, py = _handles(monkeypatch, depth)

    tasks: list[Any] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks.append(asyncio.current_task())
        # Twice each: the first call may intern the code (the general path), the
        # second finds it interned (the inline walk).
        for _ in range(2):
            for h in (c, py):
                _application(h, None, loop, up)
                _application(h, 5.0, None, up)

    asyncio.run(main())
    rc, rp = _records(c), _records(py)
    assert rc == rp
    if depth:
        # The acquire site is the application's line, above the pool's own frames.
        app = _application.__code__
        for r in rc:
            assert sites._codes[r[5][0]] is app, r[5]
            assert sites.line_of(app, r[5][1]) == app.co_firstlineno + 1
            assert 2 <= len(r[5]) <= 2 * depth
    else:
        assert all(r[5] is None for r in rc)
    # The task, by either lookup, named at the acquire and weakly referenced: a record
    # must not keep a finished request's task alive (naming.held_by).
    (task,) = tasks
    for r in rc + rp:
        name, ref = r[6]
        assert name == task.get_name() and ref() is task, r[6]


@needs_accel
def test_acquired_here_outside_a_running_loop_is_reported_by_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, py = _handles(monkeypatch, 1)
    seen: list[str] = []
    monkeypatch.setattr(errors, "report", lambda where, exc: seen.append(where))
    for h in (c, py):
        _application(h, None, None, 0)
    # asyncio.current_task() outside a running loop raises: reported by both, raised
    # by neither, and neither records a half-made acquire.
    assert seen == ["recorder", "recorder"]
    assert len(c.recorder.buffer) == len(py.recorder.buffer) == 0


@needs_accel
def test_the_c_clock_is_perf_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = _handles(monkeypatch, 0)
    for _ in range(1000):
        a = time.perf_counter()
        c.released("x")
        b = time.perf_counter()
        t = c.recorder.buffer.pop()[1]
        assert a <= t <= b


@needs_accel
def test_a_full_buffer_counts_drops_like_the_python_closures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, py = _handles(monkeypatch, 0, capacity=10)
    for h in (c, py):
        for i in range(25):
            h.acquired(f"c{i}", 0.0, None, None)
            h.released(f"c{i}")
    assert c.recorder.dropped == py.recorder.dropped == 40
    assert _records(c) == _records(py)


class _Broken(deque[Any]):
    def append(self, item: Any) -> None:
        raise RuntimeError("no room")


@needs_accel
def test_a_failing_append_is_reported_never_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(10)
    rec.buffer = _Broken(maxlen=10)
    h = PoolHandle(rec, "p", "reference", leak_threshold=None)
    assert _c_path(h)
    seen: list[tuple[str, BaseException]] = []
    monkeypatch.setattr(errors, "report", lambda where, exc: seen.append((where, exc)))
    h.acquired("c", 0.0, None, None)
    h.released("c")
    h.acquired_here("c", 0.0)
    assert [w for w, _ in seen] == ["recorder"] * 3
    assert all(isinstance(e, RuntimeError) for _, e in seen)


@needs_accel
def test_a_wrong_call_is_a_type_error_as_with_the_closures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for h in _handles(monkeypatch, 1):
        with pytest.raises(TypeError):
            h.acquired("c", 0.0)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            h.released("c", bogus=1)  # type: ignore[call-arg]


@needs_accel
def test_records_hold_no_reference_once_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    c, _ = _handles(monkeypatch, 1, capacity=100_000)
    conn, holder, site = object(), object(), (1, 2)
    before = (sys.getrefcount(conn), sys.getrefcount(holder), sys.getrefcount(site))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            c.acquired(conn, 0.0, site, holder)
            c.released(conn, None, 1.0)
            c.acquired_here(conn, 0.0, None, loop, 0)

    asyncio.run(main())
    assert len(c.recorder.buffer) == 30_000
    c.recorder.drain()
    after = (sys.getrefcount(conn), sys.getrefcount(holder), sys.getrefcount(site))
    assert after == before


def test_poolscope_accel_0_turns_it_off() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from poolscope.instrument import accel, recorder as r;"
            "h = r.PoolHandle(r.Recorder(), 'p', 'k', leak_threshold=None);"
            "print(accel.ENABLED, accel.REASON, type(h.acquired).__name__)",
        ],
        env={**os.environ, "POOLSCOPE_ACCEL": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split(" ", 1)[0] == "False"
    assert out.stdout.strip().endswith("function")
