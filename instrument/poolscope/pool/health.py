"""The backend's health as the heartbeat sees it, and reconnect back-off.

``healthy`` -> one failed probe -> ``suspect`` (the pool probes again at once) ->
another failure -> ``down``. While down, probes (reconnect attempts when no idle
connection is left) are spaced by exponential back-off with jitter between
``base`` and ``cap``. A successful probe makes it ``healthy`` again.
"""

from __future__ import annotations

import random
from collections.abc import Callable

HEALTHY = "healthy"
SUSPECT = "suspect"
DOWN = "down"

OnChange = Callable[[str, str, str], None]  # state, previous, error


class Backend:
    def __init__(
        self, on_change: OnChange, base: float, cap: float, rng: random.Random | None = None
    ) -> None:
        self.state = HEALTHY
        self.base = base
        self.cap = cap
        self.attempts = 0  # failed probes while down
        self.last_error = ""
        self._on_change = on_change
        self._rng = rng or random.Random()

    def set(self, state: str, error: str = "") -> None:
        previous, self.state = self.state, state
        if state == HEALTHY:
            self.attempts = 0
        if previous != state:
            self._on_change(state, previous, error)

    def probe_failed(self, error: str) -> None:
        """A probe failed in state suspect or down."""
        self.last_error = error
        if self.state == DOWN:
            self.attempts += 1
        else:
            self.set(DOWN, error)

    def backoff(self) -> float:
        """Delay before the next probe while down: exponential, capped, with jitter.

        "Equal jitter": half the exponential delay fixed, half random, so probes
        of many processes spread out but never come faster than half the step.
        """
        step = min(self.cap, self.base * (2.0 ** min(self.attempts, 30)))
        return step / 2.0 + self._rng.uniform(0.0, step / 2.0)
