"""The autoscaling regulator for ``max_size`` (off unless ``autoscale=True``).

Grow by 20% (at least one) when more than 5% of the acquires of the last period
waited and utilisation (mean of in_use / max_size samples) is above 80%; shrink by
20% (at least one) when utilisation is below 30% and nothing waited. Always
within ``[low, high]`` and never twice within ``cooldown`` seconds.
"""

from __future__ import annotations

import math

GROW_WAIT_SHARE = 0.05
GROW_UTILISATION = 0.80
SHRINK_UTILISATION = 0.30
STEP = 0.20


class Autoscaler:
    def __init__(self, low: int, high: int, cooldown: float) -> None:
        self.low = low
        self.high = high
        self.cooldown = cooldown
        self.last_change = -math.inf
        self._util_sum = 0.0
        self._util_n = 0

    def sample(self, in_use: int, max_size: int) -> None:
        self._util_sum += in_use / max_size if max_size else 0.0
        self._util_n += 1

    def decide(
        self, now: float, max_size: int, acquires: int, waited: int
    ) -> tuple[int, str] | None:
        """The new ``max_size`` and why, or None; resets the utilisation window."""
        util = self._util_sum / self._util_n if self._util_n else 0.0
        self._util_sum, self._util_n = 0.0, 0
        if now - self.last_change < self.cooldown:
            return None
        share = waited / acquires if acquires else 0.0
        new = max_size
        if share > GROW_WAIT_SHARE and util > GROW_UTILISATION:
            new = min(self.high, max(max_size + 1, math.ceil(max_size * (1 + STEP))))
            why = f"grow: {share:.0%} of {acquires} acquires waited, utilisation {util:.0%}"
        elif util < SHRINK_UTILISATION and waited == 0:
            new = max(self.low, min(max_size - 1, math.floor(max_size * (1 - STEP))))
            why = f"shrink: utilisation {util:.0%}, no waits"
        if new == max_size:
            return None
        self.last_change = now
        return new, why
