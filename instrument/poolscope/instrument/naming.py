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
from .redact import redact


def holder_name(holder: Any) -> tuple[str, Any]:
    """(name, reference) of an acquire's holder: a task (weakly referenced, so a
    finished request's task is not kept alive by its open hold) or a thread ident."""
    if holder is None:
        return "", None
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


# Task and thread names are the application's text (``GET /login?password=...``, a
# DSN in a thread name): redacted before they reach the stream, leaks and holders.
# Names repeat, so a bounded cache keeps the per-acquire cost a dict lookup.
MAX_NAMES = 4096
_redacted_names: dict[str, str] = {}


def redacted_name(name: str) -> str:
    out = _redacted_names.get(name)
    if out is None:
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
