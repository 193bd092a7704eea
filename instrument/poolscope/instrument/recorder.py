"""The Recorder and the per-pool handle adapters call on the hot path.

Hot path (``acquired``/``released``): one clock read and one append of a tuple to
a bounded deque, in C where the optional accelerator was built (:mod:`.accel`).
Everything else - naming the task, resolving the acquire site, building dicts,
folding, JSON, sockets - happens on the background thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable
from itertools import repeat as _repeat
from typing import Any

from poolscope.events import AcquireRecord, Event, ReleaseRecord

from . import accel, errors, sites, tags
from .naming import held_by

#: Events held for the background thread before the oldest are dropped.
DEFAULT_CAPACITY = 200_000

Gauges = Callable[[], "dict[str, Any] | None"]
#: What the buffer holds: the two hot-path records, and rarer events as dicts.
Item = AcquireRecord | ReleaseRecord | Event


class Recorder:
    """A bounded buffer of raw events between the application and the background thread."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.buffer: deque[Item] = deque(maxlen=capacity)
        # Items lost to a full buffer. Incremented only when full, so the
        # unsynchronised += costs nothing in the common case.
        self.dropped = 0

    def append(self, item: Item) -> None:
        try:
            buf = self.buffer
            if len(buf) >= self.capacity:
                self.dropped += 1
            buf.append(item)
        except Exception as exc:
            errors.report("recorder", exc)

    def drain(self, limit: int = 1 << 30) -> list[Item]:
        """Take buffered items, oldest first (background thread only)."""
        buf = self.buffer
        pop = buf.popleft
        # Only this thread takes items out, so the length can only grow meanwhile (a
        # full deque's append drops its oldest, but keeps the length): ``n`` pops
        # never find it empty.
        return [pop() for _ in _repeat(None, min(limit, len(buf)))]

    def take_dropped(self) -> int:
        n = self.dropped
        self.dropped -= n
        return n


class PoolHandle:
    """What an adapter holds for one instrumented pool.

    ``acquired``/``released`` are the hot path. ``event`` is for everything rarer
    (connects, closes, heartbeats, ...). ``gauges`` is polled by the background
    thread for ``state`` events; it reads the pool's own API.
    """

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        kind: str,
        *,
        leak_threshold: float | None,
        heartbeat: float | None = None,
        target: str = "",
        config: dict[str, Any] | None = None,
        gauges: Gauges | None = None,
        site_depth: int | None = None,
    ) -> None:
        self.recorder = recorder
        self.name = name
        self.kind = kind
        self.leak_threshold = leak_threshold
        self.heartbeat = heartbeat
        self.target = target
        self.config = dict(config or {})
        self.gauges = gauges
        # With leak detection on, keep enough frames for a useful traceback;
        # off, only the acquiring line (for the holders view).
        self.site_depth = site_depth if site_depth is not None else (8 if leak_threshold else 1)
        self.closed = False
        #: Called by the runtime with the holder's task or thread when a leak is
        #: reported, to read its current stack; adapters may leave it alone.
        self.extra: dict[str, Any] = {}
        self._bind()

    def rename(self, name: str) -> None:
        """Give the pool another name (the runtime makes names unique); the hot-path
        closures carry the name, so they are made again."""
        self.name = name
        self._bind()

    def _bind(self) -> None:
        """Make ``acquired``/``released``/``acquired_here`` for the current name."""
        recorder = self.recorder
        buf = recorder.buffer
        cap = recorder.capacity
        append = buf.append
        clock = time.perf_counter
        rec = recorder
        pool_name = self.name
        # The labels of ps.tag() current at the acquire: a reference, resolved later.
        get_tags = tags.current.get

        # Closures keep the hot path free of attribute lookups.
        # The try costs nothing until something raises (zero-cost since 3.11), and
        # nothing may: these run inside the application's acquire and release.
        def acquired(conn: Any, wait: float, site: Any, holder: Any) -> None:
            try:
                if len(buf) >= cap:
                    rec.dropped += 1
                record: AcquireRecord = (
                    "acquire",
                    clock(),
                    pool_name,
                    conn,
                    wait,
                    site,
                    held_by(holder),
                    get_tags(),
                )
                append(record)
            except Exception as exc:
                errors.report("recorder", exc)

        def released(conn: Any, hold: float | None = None, t: float | None = None) -> None:
            # ``t``: the pool's own perf_counter reading, if it has one (saves a clock read).
            try:
                if len(buf) >= cap:
                    rec.dropped += 1
                record: ReleaseRecord = (
                    "release",
                    clock() if t is None else t,
                    pool_name,
                    conn,
                    hold,
                )
                append(record)
            except Exception as exc:
                errors.report("recorder", exc)

        current_task = asyncio.current_task
        task_type = asyncio.Task
        weak = weakref.ref
        # The C module's table of running tasks by loop: with the pool's own loop in
        # hand, one dict lookup instead of ``current_task()`` (~2x dearer on 3.11).
        tasks_by_loop: Any = getattr(asyncio.tasks, "_current_tasks", None)
        depth = self.site_depth
        getframe = sys._getframe
        code_index = sites._code_index
        code_internal = sites._code_internal
        capture = sites.capture

        def acquired_here(
            conn: Any, wait: float, t: float | None = None, loop: Any = None, up: int = 0
        ) -> None:
            """``acquired`` for an asyncio pool calling from its own acquire method: the
            acquire site and the current task are taken here - one call, not three.
            ``loop``: the pool's event loop, if it knows it (the task is then looked up
            in that loop's table of current tasks). ``up``: how many of the pool's own
            frames lie between its acquire method and the application, if it knows
            (each frame object walked through costs an allocation)."""
            site: Any
            try:
                if depth == 1:
                    # sites.capture(1, ...) inline: frame 2 + up is the caller of the
                    # pool's acquire; skip any other pool machinery.
                    try:
                        f: Any = getframe(2 + up)
                    except ValueError:  # a stack this shallow has no application frame
                        f = None
                    while True:
                        if f is None:
                            site = ()
                            break
                        i = code_index.get(id(f.f_code), -1)
                        if i < 0:  # a code not interned yet: the general path
                            site = capture(1, 3 + up)
                            break
                        if not code_internal[i]:
                            site = (i, f.f_lasti)
                            break
                        f = f.f_back
                else:
                    # Frames: capture, acquired_here, the pool's acquire, then its caller.
                    site = capture(depth, 3 + up) if depth else None  # site_depth=0: none
            except Exception as exc:  # the acquire is still recorded, without a site
                errors.report("site capture", exc)
                site = None
            try:
                task = (
                    current_task()
                    if loop is None or tasks_by_loop is None
                    else tasks_by_loop.get(loop)
                )
                # held_by's usual case written out (an exact asyncio.Task cannot fail it).
                holder = (task.get_name(), weak(task)) if type(task) is task_type else held_by(task)
                if len(buf) >= cap:
                    rec.dropped += 1
                record: AcquireRecord = (
                    "acquire",
                    clock() if t is None else t,
                    pool_name,
                    conn,
                    wait,
                    site,
                    holder,
                    get_tags(),
                )
                append(record)
            except Exception as exc:
                errors.report("recorder", exc)

        self.acquired = acquired
        self.released = released
        self.acquired_here = acquired_here
        # The same three in C where the accelerator was built (accel.py): the same
        # records, without a Python frame per call. The closures above stay the
        # reference implementation, and the path taken wherever it is missing.
        hot = accel.make_hot(recorder, pool_name, depth)
        if hot is not None:
            self.acquired = hot.acquired
            self.released = hot.released
            self.acquired_here = hot.acquired_here

    def capture_site(self, skip: int = 2) -> Any:
        """The acquire site of the caller's caller (cheap references, formatted later)."""
        try:
            return sites.capture(self.site_depth, skip + 1)
        except Exception as exc:
            errors.report("site capture", exc)
            return None

    def event(self, etype: str, **fields: Any) -> None:
        """Record a non-hot event (wall-clock time, dict form)."""
        try:
            # type, t and pool first, as every other event is laid out on the wire.
            ev = {"type": etype, "t": time.time(), "pool": self.name}
            ev.update(fields)
            self.recorder.append(ev)
        except Exception as exc:
            errors.report("event", exc)

    def describe(self) -> dict[str, Any]:
        """The ``pool`` event for this pool."""
        # The effective leak threshold and heartbeat win over the pool's own settings
        # (a reference pool says None for those it leaves to poolscope).
        config = dict(self.config)
        config["leak_threshold"] = self.leak_threshold
        config["heartbeat"] = self.heartbeat
        return {"pool": self.name, "kind": self.kind, "config": config, "target": self.target}
