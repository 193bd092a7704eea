"""7 Advice: the sizing advisor's panel per pool."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from poolscope.tui.data import ProcessFeed
from poolscope.tui.views.common import (
    DIM,
    Filter,
)

# -- sizing advice ------------------------------------------------------------------


def advice_text(feeds: Sequence[ProcessFeed], flt: Filter | None = None) -> Text:
    """Sizing advice for every pool (poolscope.advisor over the folded state): the
    recommended size, predicted against measured p99 wait, the reasoning and the
    warnings that say when the queueing model's assumptions do not hold."""
    from poolscope.advisor import advise, format_advice

    out = Text()
    many = len(feeds) > 1
    shown = 0
    for feed in feeds:
        st = feed.state
        for name in sorted(st.pools):
            label = f"{name}@{st.process.get('pid', '?')}" if many else name
            if flt and not flt.match(label, pool=name):
                continue
            try:
                lines = format_advice(advise(st, name))
            except (ValueError, ArithmeticError) as exc:
                lines = [f"{name}: no advice ({exc})"]
            if shown:
                out.append("\n")
            shown += 1
            head, *rest = lines
            out.append(head.replace(name, label, 1) + "\n", style="bold")
            for line in rest:
                warn = line.startswith("  !")
                out.append(line + "\n", style="yellow" if warn else "")
    if not shown:
        out.append("no pools yet\n", style=DIM)
    out.append(
        "\nM/M/c (Erlang C) from the observed acquire rate and hold times; "
        "`poolscope advise` gives the same with --p99-target, --db-max-connections, --json.\n",
        style=DIM,
    )
    return out
