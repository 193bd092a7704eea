"""The one duration formatter of the observer (TUI, advice, command line).

Units are exactly ``µs ms s min h`` so no two can be confused: ``1.05ms`` is a
millisecond and ``2min05s`` two minutes; a bare ``m`` is never printed. Values
below a minute keep three significant digits; a value that rounds up to the next
unit is shown in it (``999.7µs`` is ``1ms``, not ``1e+03µs``).
"""

from __future__ import annotations

import math

#: (seconds per unit, unit, first count of the unit shown in the next unit)
_SMALL = ((1e-6, "µs", 1000.0), (1e-3, "ms", 1000.0), (1.0, "s", 60.0))


def fmt_duration(seconds: float | None, missing: str = "-") -> str:
    """``seconds`` for people: ``850µs``, ``1.05ms``, ``12.3ms``, ``1.2s``, ``2min05s``,
    ``1h30min``; ``missing`` for None or NaN, ``unbounded`` for infinity."""
    if seconds is None or seconds != seconds:
        return missing
    s = float(seconds)
    if s == math.inf:
        return "unbounded"
    if s <= 0:
        return "0s"
    if s < 1e-6:
        return "<1µs"
    for scale, unit, upto in _SMALL:
        value = float(f"{s / scale:.3g}")
        if value < upto:
            return f"{value:g}{unit}"
    if s < 3600 - 0.5:
        minutes, secs = divmod(round(s), 60)
        return f"{minutes}min{secs:02d}s" if secs else f"{minutes}min"
    hours_total = s / 3600
    if hours_total >= 1e6:  # over a century: no one reads the minutes of that
        return f"{hours_total:.3g}h"
    hours, minutes = divmod(round(s / 60), 60)
    return f"{hours}h{minutes:02d}min" if minutes else f"{hours}h"
