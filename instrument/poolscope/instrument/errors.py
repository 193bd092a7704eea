"""Internal errors: counted, logged once per place, never raised into the application."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

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


# A password in a URL (scheme://user:PASSWORD@host) or a libpq keyword string.
_SECRETS = re.compile(
    r"(?P<url>://[^\s:/@]*:)\S*@"  # greedy: an unencoded "@" in the password too
    r"|(?P<kw>\b(?:password|passwd|pwd|sslpassword)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with any DSN password replaced by ``***`` (for messages that may
    quote a connection string: exceptions of drivers, errors of pools)."""
    if "@" not in text and "=" not in text:
        return text
    return _SECRETS.sub(
        lambda m: f"{m.group('url')}***@" if m.group("url") else f"{m.group('kw')}***", text
    )


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
