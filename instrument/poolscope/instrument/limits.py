"""What the stream server may take from the application: file descriptors, and how
loudly it may complain about connections it refuses.

poolscope must never take the application's last file descriptors: the server stops
accepting while fewer than a reserve of the soft ``RLIMIT_NOFILE`` would be left
(:class:`FdBudget`). Refusals are logged at most once a minute, with a count
(:class:`RefusalLog`), so a flood of connections cannot flood the logs either.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("poolscope")

#: Descriptors always left to the application: at least this many, ...
FD_RESERVE_MIN = 32
#: ... or this share of the soft RLIMIT_NOFILE, whichever is more.
FD_RESERVE_SHARE = 0.10
#: How stale the count of open descriptors may be before it is taken again.
FD_SAMPLE_INTERVAL = 0.5
#: Seconds between two log lines about refused connections.
REFUSAL_LOG_INTERVAL = 60.0


def _soft_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return int(soft)


def _fd_dir() -> str | None:
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return path
    return None


class FdBudget:
    """How many descriptors the server may still open without eating the reserve.

    Counting open descriptors lists a directory, so it is done at most every
    ``FD_SAMPLE_INTERVAL`` seconds; in between the server adds what it opened and
    subtracts what it closed.
    """

    def __init__(self) -> None:
        self.soft = _soft_limit()
        self.reserve = max(FD_RESERVE_MIN, int(self.soft * FD_RESERVE_SHARE)) if self.soft else 0
        self._dir = _fd_dir() if self.soft else None
        self._open = 0
        self._sampled = float("-inf")

    def _sample(self, now: float) -> None:
        self._sampled = now
        if self._dir is None:
            return
        try:
            # listdir opens a descriptor of its own, counted among the entries.
            self._open = len(os.listdir(self._dir))
        except OSError:
            pass

    def room(self, now: float) -> int:
        """Descriptors the server may open now (a large number when there is no limit)."""
        if self.soft is None or self._dir is None:
            return 1 << 30
        if now - self._sampled >= FD_SAMPLE_INTERVAL:
            self._sample(now)
        left = self.soft - self.reserve - self._open
        if left <= 0 and now - self._sampled > 0.05:
            self._sample(now)  # closed meanwhile? look before saying no
            left = self.soft - self.reserve - self._open
        return left

    def opened(self, n: int = 1) -> None:
        self._open += n

    def closed(self, n: int = 1) -> None:
        self._open = max(0, self._open - n)


class RefusalLog:
    """Refused connections (and ticks the server stopped accepting), counted by reason
    and logged at most once per interval.

    The first one is logged at once (so the operator learns of it); later ones are
    counted and summed up in one line when the interval has passed (and at close).
    """

    def __init__(self, interval: float | None = None) -> None:
        self.interval = REFUSAL_LOG_INTERVAL if interval is None else interval
        self.total = 0
        self.deferred = 0
        self._refused: dict[str, int] = {}
        self._deferred: dict[str, int] = {}
        self._last: float | None = None

    def note(self, reason: str, now: float | None = None) -> None:
        """One connection refused (closed at accept, or closed later for ``reason``)."""
        self.total += 1
        self._refused[reason] = self._refused.get(reason, 0) + 1
        self.tick(time.monotonic() if now is None else now)

    def defer(self, reason: str, now: float | None = None) -> None:
        """One tick in which the server left connections waiting in the backlog."""
        self.deferred += 1
        self._deferred[reason] = self._deferred.get(reason, 0) + 1
        self.tick(time.monotonic() if now is None else now)

    def tick(self, now: float) -> None:
        if (self._refused or self._deferred) and (
            self._last is None or now - self._last >= self.interval
        ):
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if not self._refused and not self._deferred:
            return
        refused, self._refused = self._refused, {}
        deferred, self._deferred = self._deferred, {}
        first = self._last is None
        self._last = time.monotonic() if now is None else now
        parts = []
        if refused:
            parts.append(f"refused {sum(refused.values())} ({_reasons(refused)})")
        if deferred:
            n = sum(deferred.values())
            parts.append(
                f"stopped accepting {n} time{'' if n == 1 else 's'} ({_reasons(deferred)})"
            )
        log.warning(
            "poolscope: observer connections%s: %s%s",
            "" if first else f" in the last {self.interval:.0f} s",
            "; ".join(parts),
            (
                f"; further ones are counted and logged at most every {self.interval:.0f} s"
                if first
                else ""
            ),
        )


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
