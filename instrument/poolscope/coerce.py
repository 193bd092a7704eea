"""Fields of an untrusted event or sync as the numbers the fold needs.

Everything a peer sends is checked here: a string where a number belongs, a bool
(an ``int`` to Python), ``1e999``, NaN or an int too large for a float all come
back as the default, so a view never formats a number that is not one.
"""

from __future__ import annotations

import math
from typing import Any


def number(ev: dict[str, Any], key: str, default: float = 0.0) -> float:
    """``ev[key]`` as a finite float, else ``default``."""
    v = ev.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:  # an int too large for a float
            return default
        # JSON decoders accept 1e999 and NaN; neither is a time or a duration.
        return f if math.isfinite(f) else default
    return default


def tags_id(d: dict[str, Any]) -> int | None:
    """The ``tags`` labels id, or None when it is not an int."""
    v = d.get("tags")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def integer(ev: dict[str, Any], key: str, default: int = 0) -> int:
    """``ev[key]`` as an int (a finite float truncated), else ``default``."""
    v = ev.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return default
