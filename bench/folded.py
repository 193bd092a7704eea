"""Waiting until poolscope's runtime has folded what a timed round recorded, blocked
rather than polling.

A whole-process CPU reading taken after a round must include the background thread's
fold of that round's events, and nothing the benchmark itself adds. Polling the
recorder with short sleeps until it is empty cost the measured process a wake-up per
poll - ~50 of them while the 10 Hz tick comes round, ~1 us per pair on rounds of a
few thousand pairs (overhead_reference measured it; the SQLAlchemy benchmarks still
polled until session 6). Here the runtime's own tick says when it left the recorder
empty, and the waiting thread sleeps on an event until then.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

#: One event per runtime: set at the end of a tick that left its recorder empty.
_events: dict[int, tuple[Any, threading.Event]] = {}


def _runtime() -> Any:
    mod = sys.modules.get("poolscope.instrument.runtime")
    return getattr(mod, "_runtime", None) if mod is not None else None


def wait_folded(timeout: float = 10.0) -> bool:
    """Block until the end of a tick that found nothing more to fold (False on timeout);
    at once when no runtime is running (a bare configuration)."""
    rt = _runtime()
    if rt is None or getattr(rt, "loop", None) is None:
        return True
    entry = _events.get(id(rt))
    if entry is None or entry[0] is not rt:
        event = threading.Event()

        def on_tick(rt: Any = rt, event: threading.Event = event) -> None:
            if not rt.recorder.buffer:
                event.set()

        rt.tick_hooks.append(on_tick)
        entry = _events[id(rt)] = (rt, event)
    event = entry[1]
    # Cleared first: a set left from an earlier tick says nothing about this round. A
    # tick already folding the round's last chunk sets it when it ends.
    event.clear()
    return event.wait(timeout)
