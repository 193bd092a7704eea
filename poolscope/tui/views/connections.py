"""5 Connections: each pool's own size against the TCP sockets the OS sees."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from poolscope.tui.data import ProcessFeed
from poolscope.tui.osinfo import parse_target
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    OK,
    WARN,
)

# -- connections seen by the OS ---------------------------------------------------

CONN_COLUMNS = ("pool", "target", "pool size", "OS sockets", "check")


def _address(target: str) -> object:
    return parse_target(target) or target


def connection_rows(
    feeds: Sequence[ProcessFeed], counts: Sequence[dict[str, int] | None]
) -> list[tuple[str, tuple[Text, ...]]]:
    """Each pool's own size against the TCP connections the OS sees to its target.

    ``counts[i]`` is None when the OS cannot be asked (a recording, a remote or
    vanished process). Several pools to one target share the OS count.
    """
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        st = feed.state
        # Pools are grouped by the address their target names, so "localhost:80" and
        # "http://127.0.0.1:80" (an HTTP client's per-host pools) share one OS count.
        per_target: dict[object, int] = {}
        for p in st.pools.values():
            per_target[_address(p.target)] = per_target.get(_address(p.target), 0) + p.size
        c = counts[i] if i < len(counts) else None
        for name, p in sorted(st.pools.items()):
            if c is None:
                seen, check = Text("n/a", style=DIM), Text("not a live local process", style=DIM)
            elif p.target not in c:
                seen, check = Text("?", style=DIM), Text("target has no host:port", style=DIM)
            else:
                n = c[p.target]
                here = _address(p.target)
                expected = per_target[here]
                seen = Text(str(n), justify="right")
                shared = sum(1 for q in st.pools.values() if _address(q.target) == here)
                if n == expected:
                    note = f" ({shared} pools share this target: {expected})" if shared > 1 else ""
                    check = Text("ok" + note, style=OK)
                elif n > expected:
                    check = Text(
                        f"MISMATCH: {n - expected} socket(s) outside the pool", style=ALERT
                    )
                else:
                    check = Text(
                        f"MISMATCH: {expected - n} pool conn(s) without a socket", style=WARN
                    )
            rows.append(
                (
                    f"{i}:{name}",
                    (
                        Text(name, style="bold"),
                        Text(p.target or "?"),
                        Text(str(p.size), justify="right"),
                        seen,
                        check,
                    ),
                )
            )
    return rows
