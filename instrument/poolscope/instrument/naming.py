"""Who holds a connection, as the stream names it: the holder's name and a reference
to read its live stack from later, a web request's name, redacted; and an acquire
site or a live stack as frames.

The drain (:mod:`.drain`) names the holder of every acquire with these; the leak
watch (:mod:`.leakwatch`) formats sites and live stacks only for a leak.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from . import errors, sites
from .redact import plain, redact


def holder_name(holder: Any) -> tuple[str, Any]:
    """(name, reference) of an acquire's holder: a task (weakly referenced, so a
    finished request's task is not kept alive by its open hold) or a thread ident.
    A pair is one already named (:func:`held_by`, at the acquire)."""
    if holder is None:
        return "", None
    if type(holder) is tuple:
        return holder
    if isinstance(holder, int):
        th = threading._active.get(holder)  # type: ignore[attr-defined]
        return (th.name if th is not None else f"thread-{holder}"), holder
    get_name = getattr(holder, "get_name", None)
    if get_name is not None:
        try:
            return str(get_name()), weakref.ref(holder)
        except TypeError:
            return str(get_name()), None
    return str(holder), None


def held_by(holder: Any) -> Any:
    """What an acquire's record keeps of its holder: a task as its (name, weak
    reference) pair, taken at the acquire; a thread ident (or None) as it is.

    Not the task itself: a record waits up to a drain tick (100 ms) to be folded,
    and a request's task usually ends before that. Kept alive by the record, the
    finished task, its coroutine and its context were freed on the background thread
    a tick later - each such deferred object counts towards the cyclic collector's
    next young-generation run: on a uvicorn app under wrk, three times as many
    collections, whose survivors went on to the older generations (bench/asgi_wrk.py,
    docs/data-path.md). The C hot path (``_accel.c``) does the same."""
    if holder is None or type(holder) is int or type(holder) is tuple:
        return holder
    try:
        return holder_name(holder)
    except Exception as exc:
        errors.report("holder name", exc)
        return ("", None)


# Task and thread names are the application's text (``GET /login?password=...``, a
# DSN in a thread name): redacted before they reach the stream, leaks and holders.
# Names repeat, so a bounded cache keeps the per-acquire cost a dict lookup.
MAX_NAMES = 4096
_redacted_names: dict[str, str] = {}


def redacted_name(name: str) -> str:
    out = _redacted_names.get(name)
    if out is None:
        if type(name) is str and plain(name):
            # Unique task names ("Task-8812", one per request) would fill the cache
            # and clear it every 4,096 requests, to no use: they need no redaction.
            return name
        if len(_redacted_names) >= MAX_NAMES:
            _redacted_names.clear()
        out = _redacted_names[name] = redact(name)
    return out


def request_name(labels: Any) -> str | None:
    """The web request a ``ps.tag()`` label set names (its holder is named after it)."""
    try:
        name = labels.request_name()
        return name if isinstance(name, str) else None
    except Exception as exc:
        errors.report("tags", exc)
        return None


def format_site(raw: Any) -> list[dict[str, Any]]:
    """An acquire site as frames; [] when there is none or it cannot be formatted, so
    the acquire, release or leak that carries it is never lost with it."""
    if not raw:
        return []
    try:
        return sites.format_site(raw)
    except Exception as exc:
        errors.report("site formatting", exc)
        return []


def current_stack(holder: Any) -> list[dict[str, Any]]:
    """The holder's stack right now (innermost first), application frames only."""
    try:
        if isinstance(holder, int):
            frame = sys._current_frames().get(holder)
            frames: list[Any] = []
            while frame is not None and len(frames) < 50:
                frames.append(frame)
                frame = frame.f_back
            return sites.format_frames(frames)
        task = holder() if isinstance(holder, weakref.ref) else None
        if task is not None and not task.done():
            frames = list(reversed(task.get_stack(limit=50)))
            return sites.format_frames(frames)
    except Exception as exc:
        errors.report("current stack", exc)
    return []
