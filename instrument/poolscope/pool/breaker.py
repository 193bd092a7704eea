"""The circuit breaker in front of the pool's connection factory.

States: ``closed`` (connects allowed), ``open`` (connects and acquires fail fast
with :class:`CircuitOpenError` until ``reset`` seconds have passed), ``half_open``
(one trial connect at a time decides: success closes the breaker, failure opens
it again). ``threshold`` consecutive connect failures open it. Every state change
goes through ``on_change`` (the pool turns it into a ``breaker`` event).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from poolscope.pool.errors import CircuitOpenError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

OnChange = Callable[[str, str, int, str], None]  # state, previous, failures, error


class CircuitBreaker:
    """Counts consecutive connect failures and gates connect attempts."""

    def __init__(
        self,
        name: str,
        threshold: int | None,
        reset: float,
        on_change: OnChange,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.reset = reset
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self._trial = False
        self._on_change = on_change
        self._clock = clock

    def _set(self, state: str) -> None:
        previous, self.state = self.state, state
        if previous != state:
            self._on_change(
                state, previous, self.failures, "" if state == CLOSED else self.last_error
            )

    def error(self) -> CircuitOpenError:
        left = max(0.0, self.reset - (self._clock() - self.opened_at))
        what = (
            "a trial connect is in progress" if self.state == HALF_OPEN else f"retry in {left:.2g}s"
        )
        return CircuitOpenError(
            f"pool {self.name}: circuit open after {self.failures} consecutive connect "
            f"failures ({self.last_error or 'no error text'}); {what}"
        )

    def check_acquire(self) -> None:
        """Fail fast while open; move to half-open once ``reset`` seconds have passed."""
        if self.state == OPEN:
            if self._clock() - self.opened_at < self.reset:
                raise self.error()
            self._set(HALF_OPEN)

    def before_connect(self) -> None:
        """Gate one connect attempt; raises :class:`CircuitOpenError` when not allowed."""
        if self.state == CLOSED:
            return
        self.check_acquire()
        if self.state == HALF_OPEN:
            if self._trial:
                raise self.error()
            self._trial = True

    def success(self) -> None:
        self.failures = 0
        self._trial = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        trial, self._trial = self._trial, False
        reopen = self.state == HALF_OPEN and trial
        trip = self.state == CLOSED and self.threshold is not None
        if reopen or (trip and self.failures >= (self.threshold or 0)):
            self.opened_at = self._clock()
            self._set(OPEN)

    def cancelled(self) -> None:
        """A gated attempt ended without a verdict (cancelled): free the trial."""
        self._trial = False
