"""Internal errors: counted, logged once per place, never raised into the application."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import redact as _redact

log = logging.getLogger("poolscope")

_lock = threading.Lock()
_seen: set[str] = set()
_count = 0
# Set while listeners run on this thread: an error raised by a listener (or by what
# it calls, e.g. a broken recorder) is counted and logged but not fed back to the
# listeners, which would recurse.
_local = threading.local()
#: Called with (where, message) for each error, so the runtime can stream an event.
listeners: list[Callable[[str, str], None]] = []


def count() -> int:
    return _count


# The one redaction function (here too under its old name: errors.redact).
redact = _redact.redact


def report(where: str, exc: BaseException) -> None:
    """Count an internal error and log it the first time it happens at ``where``.

    Logs the type and message only: a traceback could carry values from the
    application's frames into a log.
    """
    global _count
    try:
        with _lock:
            _count += 1
            first = where not in _seen
            _seen.add(where)
        message = redact(f"{type(exc).__name__}: {exc}")[:300]
        if first:
            log.warning("poolscope internal error in %s (further ones counted): %s", where, message)
        if getattr(_local, "busy", False):
            return
        _local.busy = True
        try:
            for fn in list(listeners):
                try:
                    fn(where, message)
                except Exception as exc2:
                    report("error listener", exc2)
        finally:
            _local.busy = False
    except Exception:
        pass
