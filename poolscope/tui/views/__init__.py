"""Pure views: folded state in, rows and text out. No Textual here.

Every function takes the feeds (or one pool) and the data's own clock
(``state.now``), never the wall clock, so a recording renders the same
whenever it is shown, and these are unit-testable without a terminal.

One module per view (``pools``, ``holders``, ``leaks``, ``heartbeat``,
``connections``, ``events``, ``advice``; ``header`` for the top lines) and
``common`` for what they share (thresholds, styles, formatters, the filter).
Every name importable from ``poolscope.tui.views`` before the split still is.
"""

from __future__ import annotations

from poolscope.tui.views.advice import advice_text
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    FAILURE_ALERT,
    OK,
    P99_WAIT_ALERT,
    SPARK,
    UTIL_ALERT,
    WARN,
    Filter,
    clip,
    distinct_site_labels,
    fmt_bytes,
    fmt_clock,
    fmt_dur,
    fmt_rate,
    frame_label,
    site_label,
    sparkline,
)
from poolscope.tui.views.connections import CONN_COLUMNS, connection_rows
from poolscope.tui.views.events import (
    EVENT_COLUMNS,
    event_cells,
    event_matches,
    event_summary,
    recent_events,
)
from poolscope.tui.views.header import header_line
from poolscope.tui.views.heartbeat import (
    HEARTBEAT_COLUMNS,
    heartbeat_failures_text,
    heartbeat_rows,
)
from poolscope.tui.views.holders import HOLDER_COLUMNS, HOLDERS_SHOWN, holder_rows, top_holders
from poolscope.tui.views.leaks import LEAK_COLUMNS, LeakGroup, leak_detail, leak_groups
from poolscope.tui.views.pools import (
    POOL_COLUMNS,
    SORTS,
    PoolRow,
    chart_text,
    find_pool,
    histogram_text,
    pool_detail,
    pool_rows,
)

__all__ = [
    "ALERT",
    "CONN_COLUMNS",
    "DIM",
    "EVENT_COLUMNS",
    "FAILURE_ALERT",
    "HEARTBEAT_COLUMNS",
    "HOLDERS_SHOWN",
    "HOLDER_COLUMNS",
    "LEAK_COLUMNS",
    "OK",
    "P99_WAIT_ALERT",
    "POOL_COLUMNS",
    "SORTS",
    "SPARK",
    "UTIL_ALERT",
    "WARN",
    "Filter",
    "LeakGroup",
    "PoolRow",
    "advice_text",
    "chart_text",
    "clip",
    "connection_rows",
    "distinct_site_labels",
    "event_cells",
    "event_matches",
    "event_summary",
    "find_pool",
    "fmt_bytes",
    "fmt_clock",
    "fmt_dur",
    "fmt_rate",
    "frame_label",
    "header_line",
    "heartbeat_failures_text",
    "heartbeat_rows",
    "histogram_text",
    "holder_rows",
    "leak_detail",
    "leak_groups",
    "pool_detail",
    "pool_rows",
    "recent_events",
    "site_label",
    "sparkline",
    "top_holders",
]
