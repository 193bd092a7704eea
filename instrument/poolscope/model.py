"""The state is a fold over the event stream: the public face of its three parts.

``fold(events) -> PoolState`` is the one computation behind every view: it runs
in the application (for late attachers and in-app Prometheus), in the TUI, in
the exporter and over a recorded file, so a live session and a replay agree.
Pure Python, standard library only, never Textual. Each part does one job:

- :mod:`poolscope.records`: what the fold keeps (``PoolMetrics``, ``Holder``,
  ``Leak``, ``Sample``) and the limits that bound it;
- :mod:`poolscope.sync_codec`: a state as the ``sync`` event carries it, and back;
- :mod:`poolscope.fold`: ``PoolState`` and ``fold``, one handler per event type.

Every name importable from here before the split still is
(``from poolscope.model import fold, PoolState``).
"""

from __future__ import annotations

from poolscope.fold import PoolState, fold
from poolscope.records import (
    FAILURES_KEPT,
    HEARTBEATS_KEPT,
    MAX_CLOSE_REASONS,
    MAX_HOLDERS,
    MAX_OPEN_LEAKS,
    MAX_POOLS,
    MAX_SITES,
    RESOLVED_LEAKS_KEPT,
    SERIES_MIN_STEP,
    SERIES_SECONDS,
    Holder,
    Leak,
    PoolMetrics,
    Sample,
)
from poolscope.sync_codec import INT_FIELDS as _INT_FIELDS  # noqa: F401 - the fuzz tests read it

__all__ = [
    "FAILURES_KEPT",
    "HEARTBEATS_KEPT",
    "MAX_CLOSE_REASONS",
    "MAX_HOLDERS",
    "MAX_OPEN_LEAKS",
    "MAX_POOLS",
    "MAX_SITES",
    "RESOLVED_LEAKS_KEPT",
    "SERIES_MIN_STEP",
    "SERIES_SECONDS",
    "Holder",
    "Leak",
    "PoolMetrics",
    "PoolState",
    "Sample",
    "fold",
]
