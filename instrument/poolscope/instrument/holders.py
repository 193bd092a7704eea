"""Who holds a connection right now: the frame, task or thread that references it.

Used when poolscope is attached to a live process (``poolscope inject``): connections
checked out before the attach have no acquire site, so the holder's *current* stack
stands in for it - the line a leaked connection is held at.

Two places hold a reference an application can give back later:

* a running thread's frame (found through ``sys._current_frames()``: running frames
  are not visible to ``gc.get_referrers``);
* a suspended coroutine (``gc.get_referrers`` finds it: the coroutine's frame locals are
  traversed), and the asyncio task whose chain of awaits reaches it.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

from . import sites

#: Frames looked at per thread, and frames kept in a holding stack.
MAX_DEPTH = 64
_WAITERS = (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)


class Holding:
    """Where a connection is held: the raw site (``(code, lasti, ...)``, holding frame
    first, then its callers), and the holder (an asyncio task or a thread ident)."""

    __slots__ = ("holder", "name", "site")

    def __init__(self, site: tuple[Any, ...], holder: Any, name: str) -> None:
        self.site = site
        self.holder = holder
        self.name = name


def _refers(frame: types.FrameType, ids: set[int]) -> bool:
    try:
        values = frame.f_locals.values()
    except Exception:
        return False
    return any(id(v) in ids for v in values)


def _site(frames: list[types.FrameType]) -> tuple[Any, ...]:
    """Frames (holding one first, then outward) as a raw site, pool machinery skipped at
    the front (a holder inside the library's own call is shown at the application line)."""
    out: list[Any] = []
    for f in frames:
        if not out and sites._is_internal(f.f_code):
            continue
        out.append(f.f_code)
        out.append(f.f_lasti)
        if len(out) >= 2 * 16:
            break
    return tuple(out)


def _thread_holding(ids: set[int]) -> Holding | None:
    me = threading.get_ident()
    for ident, top in sys._current_frames().items():
        if ident == me:
            continue
        chain: list[types.FrameType] = []
        f: types.FrameType | None = top
        while f is not None and len(chain) < MAX_DEPTH:
            chain.append(f)
            f = f.f_back
        for i, frame in enumerate(chain):
            if _refers(frame, ids):
                site = _site(chain[i:])
                if not site:
                    continue
                th = threading._active.get(ident)  # type: ignore[attr-defined]
                return Holding(site, ident, th.name if th is not None else f"thread-{ident}")
    return None


def _coroutine_chain(task: Any) -> list[Any]:
    """The coroutines a task is suspended in, outermost first."""
    chain: list[Any] = []
    coro = task.get_coro()
    while coro is not None and len(chain) < MAX_DEPTH:
        chain.append(coro)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is not None and not isinstance(coro, _WAITERS):
            break
    return chain


def _task_holding(ids: set[int], objects: Iterable[Any], tasks: list[Any]) -> Holding | None:
    waiting: set[int] = set()
    for obj in objects:
        for ref in gc.get_referrers(obj):
            if isinstance(ref, _WAITERS):
                waiting.add(id(ref))
    if not waiting:
        return None
    for task in tasks:
        try:
            if task.done():
                continue
            chain = _coroutine_chain(task)
        except Exception:
            continue
        for i, coro in enumerate(chain):
            if id(coro) not in waiting:
                continue
            # Holding coroutine first, then the coroutines that await it (outward).
            frames = [c.cr_frame if hasattr(c, "cr_frame") else c.gi_frame for c in chain[: i + 1]]
            frames = [f for f in reversed(frames) if f is not None]
            site = _site(frames)
            if site:
                return Holding(site, task, str(task.get_name()))
    return None


def find_holding(objects: list[Any], tasks: list[Any]) -> Holding | None:
    """Where any of ``objects`` (the forms of one connection the application may hold)
    is held: a suspended task first (asyncio pools), then a running thread."""
    ids = {id(o) for o in objects}
    return _task_holding(ids, objects, tasks) or _thread_holding(ids)
