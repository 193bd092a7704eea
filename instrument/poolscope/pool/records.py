"""The reference pool's record of one connection, its states and small shared helpers."""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

C = TypeVar("C")
Factory = Callable[[], Awaitable[C]]
Hook = Callable[[C], Awaitable[Any]]

_clock = time.perf_counter
_ids = itertools.count(1)

# Connection record states.
_IDLE = 0  # in the idle deque, strongly held
_OUT = 1  # checked out; weakly held when possible
_BUSY = 2  # held by the pool outside the idle deque: hand-off, validation, reset
_CLOSED = 3
_RECLAIMED = 4  # forcibly closed while checked out; the holder may still release it

_SLOT = object()  # a waiter's future result: a slot was freed for you, open a connection
_EXPIRED = object()  # a waiter's future result: your acquire timed out

#: Errors that mean the peer is gone (close reason ``lost``) rather than unhealthy.
_LOST_ERRORS = (ConnectionError, EOFError, asyncio.IncompleteReadError, BrokenPipeError)


def _err(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _checked_at(rec: _Conn[Any]) -> float:
    return rec.checked


def _close_reason(exc: BaseException) -> str:
    return "lost" if isinstance(exc, _LOST_ERRORS) else "invalid"


class _Conn(Generic[C]):
    """The pool's record of one connection, reused for each of its checkouts."""

    __slots__ = (
        "acquired_at",
        "checked",
        "created",
        "expires",
        "id",
        "key",
        "last_used",
        "raw",
        "state",
        "uses",
        "wref",
    )

    def __init__(self, raw: C, expires: float) -> None:
        self.raw: C | None = raw
        self.id = next(_ids)
        self.key = id(raw)
        self.created = self.last_used = self.checked = _clock()
        self.expires = expires
        self.acquired_at = 0.0
        self.state = _BUSY
        self.uses = 0
        self.wref: weakref.ref[Any] | None = None

    def get(self) -> C | None:
        """The raw connection, whether held strongly or weakly (None once collected)."""
        if self.raw is not None:
            return self.raw
        w = self.wref
        return w() if w is not None else None
