"""Whether the optional C accelerator is in use, and the hot path made with it.

``_accel`` (``_accel.c``) is built only where a C compiler was present at install
time. It makes the same records as the pure-Python closures of
:meth:`~poolscope.instrument.recorder.PoolHandle._bind`, which stay the reference
implementation: they run wherever the module is missing, fails to import, or is
turned off with ``POOLSCOPE_ACCEL=0`` (read at import).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from . import errors, naming, sites, tags

try:
    from . import _accel  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time, or another interpreter
    _accel = None

#: True when pool handles use the C hot path.
ENABLED: bool = _accel is not None and os.environ.get("POOLSCOPE_ACCEL", "1") != "0"
#: True when the drain folds the usual records in C (off with the hot path).
FOLD: bool = ENABLED

#: Why the C hot path is not in use ("" when it is).
REASON: str = (
    ""
    if ENABLED
    else "turned off (POOLSCOPE_ACCEL=0)"
    if _accel is not None
    else "not built (no C compiler at install time)"
)

if FOLD and _accel is not None:
    from poolscope import histogram as _histogram

    _histogram._bucket_counts = _accel.bucket_counts


def _clock() -> Any:
    """None when the accelerator may read the clock itself: CPython's perf_counter is
    CLOCK_MONOTONIC in float seconds there. Elsewhere it calls ``time.perf_counter``,
    since records are compared with the pool's own perf_counter readings."""
    try:
        impl = time.get_clock_info("perf_counter").implementation
    except Exception:
        return time.perf_counter
    return None if impl == "clock_gettime(CLOCK_MONOTONIC)" else time.perf_counter


def make_hot(recorder: Any, pool_name: str, depth: int) -> Any:
    """The C hot path of one pool handle (``acquired``, ``released``, ``acquired_here``),
    or None when it is not in use."""
    if not ENABLED or _accel is None or sites.capture is not sites.CAPTURE:
        return None
    return _accel.Hot(
        recorder=recorder,
        buf=recorder.buffer,
        cap=recorder.capacity,
        pool_name=pool_name,
        tags_var=tags.current,
        errors=errors,
        clock=_clock(),
        depth=depth,
        code_index=sites._code_index,
        code_internal=sites._code_internal,
        intern=sites._intern,
        current_task=asyncio.current_task,
        tasks_by_loop=getattr(asyncio.tasks, "_current_tasks", None),
        task_type=asyncio.Task,
        held_by=naming.held_by,
    )


def _fast_labels() -> tuple[type, ...]:
    """The web middleware's label classes whose route the C fold may read itself
    (``_route``, once found) instead of calling ``tags_id`` and ``request_name``: those
    that keep RequestLabels' ``items``, ``own``, ``route`` and ``request_name``."""
    from .asgi import AsgiRequestLabels
    from .wsgi import WsgiRequestLabels

    base = tags.RequestLabels
    return tuple(
        cls
        for cls in (AsgiRequestLabels, WsgiRequestLabels)
        if cls.items is tags.Labels.items
        and cls.own is base.own
        and cls.route is base.route
        and cls.request_name is base.request_name
    )


def make_folder(model: Any, interner: Any) -> Any:
    """The C fold of the usual acquire and release records into ``model`` (a
    :class:`~poolscope.fold.PoolState`), or None when it is not in use."""
    if not FOLD or _accel is None:
        return None
    from poolscope import attribution, events, records

    a = model.attribution
    try:
        return _accel.Folder(
            pools=model.pools,
            holder=records.Holder,
            attribution=a,
            blame=a._pools,
            site_ids=interner.site_ids,
            pending=interner.pending,
            holder_name=naming.holder_name,
            redacted=naming._redacted_names,
            redacted_name=naming.redacted_name,
            tags_id=interner.tags_id,
            request_name=naming.request_name,
            encode_acquire=events.encode_acquire,
            encode_release=events.encode_release,
            escaped=events._escaped,
            quoted=events._quoted,
            errors=errors,
            max_holders=records.MAX_HOLDERS,
            wait_min=attribution.WAIT_MIN,
            horizon=attribution.HORIZON,
            calm=attribution.CALM,
            cover_kept=attribution.COVER_KEPT,
            recent_scan=attribution.MAX_RECENT_SCAN,
            tag_ids=interner.tag_ids,
            fast_labels=_fast_labels(),
        )
    except Exception as exc:  # a model this build does not know: the Python fold
        errors.report("accelerator", exc)
        return None
