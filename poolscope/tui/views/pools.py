"""1 Pools: one row per pool, the selected pool's detail (alerts, window, wait and
hold histograms, totals) and its utilisation chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from poolscope.histogram import Histogram, bucket_upper
from poolscope.model import PoolMetrics
from poolscope.tui.data import ProcessFeed
from poolscope.tui.views.common import (
    ALERT,
    DIM,
    FAILURE_ALERT,
    OK,
    P99_WAIT_ALERT,
    UTIL_ALERT,
    WARN,
    Filter,
    fmt_dur,
    fmt_rate,
)
from poolscope.units import fmt_duration
from poolscope.window import DEFAULT_WINDOW, WindowStats

# -- pools table -----------------------------------------------------------------

# The pool's kind is in the detail beside it: the table's width goes to the failures,
# each kind in its own column.
POOL_COLUMNS = (
    "pool",
    "size/max",
    "in use",
    "idle",
    "waiting",
    "util",
    "acq/s",
    "p99 wait",
    "timeouts",
    "acq err",
    "conn err",
    "leaks",
    "backend",
)

#: ``s`` cycles through these: (label, key function, descending).
SORTS: tuple[str, ...] = ("name", "util", "p99 wait", "acq/s", "waiting", "leaks")


@dataclass
class PoolRow:
    key: str
    label: str
    pool: PoolMetrics
    open_leaks: int
    acq_rate: float
    p99_wait: float
    #: The recent window the rate, p99 and failures are over (None: totals only).
    win: WindowStats | None = None

    @property
    def failure_rate(self) -> float:
        return self.win.failure_rate if self.win is not None else self.pool.failure_rate

    @property
    def counts(self) -> tuple[int, int, int]:
        """(timeouts, acquire errors, connect errors) in the window (else in total)."""
        w = self.win
        if w is not None:
            return w.timeouts, w.acquire_errors, w.connect_errors
        p = self.pool
        return p.timeouts, p.acquire_errors, p.connect_errors

    @property
    def alerts(self) -> list[str]:
        p = self.pool
        out = []
        span = f" (last {fmt_dur(self.win.seconds)})" if self.win is not None else ""
        if p.utilization > UTIL_ALERT:
            out.append(f"utilization {p.utilization:.0%} > {UTIL_ALERT:.0%}")
        if self.p99_wait > P99_WAIT_ALERT:
            out.append(f"p99 wait {fmt_dur(self.p99_wait)} > {fmt_dur(P99_WAIT_ALERT)}{span}")
        if self.failure_rate > FAILURE_ALERT:
            out.append(f"acquire failures {self.failure_rate:.1%} > {FAILURE_ALERT:.0%}{span}")
        if self.open_leaks:
            out.append(f"{self.open_leaks} open leak(s)")
        if p.backend != "healthy":
            out.append(f"backend {p.backend}")
        return out

    def cells(self) -> tuple[Text, ...]:
        p = self.pool
        util_style = ALERT if p.utilization > UTIL_ALERT else ""
        wait_style = ALERT if self.p99_wait > P99_WAIT_ALERT else ""
        fail_style = ALERT if self.failure_rate > FAILURE_ALERT else ""
        timeouts, acq_err, conn_err = self.counts
        leak_style = ALERT if self.open_leaks else ""
        backend_style = {"healthy": OK, "suspect": WARN}.get(p.backend, ALERT)
        name_style = "bold" + (" red" if self.alerts else "")
        leaks = f"{self.open_leaks}" + (f" ({p.leaks_resolved}✓)" if p.leaks_resolved else "")
        return (
            Text(self.label, style=name_style),
            Text(f"{p.size}/{p.max}", justify="right"),
            Text(str(p.in_use), justify="right"),
            Text(str(p.idle), justify="right"),
            Text(str(p.waiting), justify="right", style=WARN if p.waiting else ""),
            Text(f"{p.utilization:.0%}", justify="right", style=util_style),
            Text(fmt_rate(self.acq_rate), justify="right"),
            Text(fmt_dur(self.p99_wait), justify="right", style=wait_style),
            Text(str(timeouts), justify="right", style=fail_style if timeouts else ""),
            Text(str(acq_err), justify="right", style=fail_style if acq_err else ""),
            Text(str(conn_err), justify="right", style=ALERT if conn_err else ""),
            Text(leaks, justify="right", style=leak_style),
            Text(p.backend, style=backend_style),
        )


def pool_rows(
    feeds: Sequence[ProcessFeed],
    sort: str = "name",
    flt: Filter | None = None,
    window: float = DEFAULT_WINDOW,
) -> list[PoolRow]:
    """One row per pool across every attached process, sorted. Rates, p99 wait and
    failures are over the last ``window`` seconds of data time (where the state
    keeps windows); gauges are now."""
    many = len(feeds) > 1
    rows: list[PoolRow] = []
    for i, feed in enumerate(feeds):
        st = feed.state
        pid = st.process.get("pid", "?")
        for name, p in st.pools.items():
            label = f"{name}@{pid}" if many else name
            if flt and not flt.match(f"{label} {p.kind} {p.backend}", pool=name):
                continue
            win = p.window_stats(window, st.now) if p.recent is not None else None
            rows.append(
                PoolRow(
                    key=f"{i}:{name}",
                    label=label,
                    pool=p,
                    open_leaks=len(st.open_leaks(name)),
                    acq_rate=win.acquire_rate if win is not None else p.rate("acquires"),
                    p99_wait=win.wait.p99 if win is not None else p.wait.p99,
                    win=win,
                )
            )
    keyfn: dict[str, Any] = {
        "name": lambda r: (r.label,),
        "util": lambda r: (-r.pool.utilization, r.label),
        "p99 wait": lambda r: (-r.p99_wait, r.label),
        "acq/s": lambda r: (-r.acq_rate, r.label),
        "waiting": lambda r: (-r.pool.waiting, r.label),
        "leaks": lambda r: (-r.open_leaks, r.label),
    }
    rows.sort(key=keyfn.get(sort, keyfn["name"]))
    return rows


def find_pool(
    feeds: Sequence[ProcessFeed], key: str | None
) -> tuple[ProcessFeed, PoolMetrics] | None:
    if not key:
        return None
    idx, _, name = key.partition(":")
    try:
        feed = feeds[int(idx)]
    except (ValueError, IndexError):
        return None
    p = feed.state.pools.get(name)
    return (feed, p) if p is not None else None


# -- utilisation chart -----------------------------------------------------------


def chart_text(pool: PoolMetrics, window: float, width: int, height: int) -> Text:
    """in use / idle / waiting / max of one pool over the last ``window`` seconds,
    drawn by plotext with ``hd`` markers (they line up in PNG conversions)."""
    import plotext as plt

    samples = pool.window(window)
    if width < 20 or height < 6:
        return Text("")
    if len(samples) < 2:
        return Text(f"{pool.name}: waiting for utilisation samples…", style=DIM)
    now = samples[-1].t
    xs = [s.t - now for s in samples]
    top = max(max(s.max for s in samples), max(s.in_use + s.waiting for s in samples), 1)
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")
    # Drawn last is drawn on top: in use matters most.
    plt.plot(xs, [float(s.max) for s in samples], label="max", marker="hd", color="red")
    plt.plot(xs, [float(s.idle) for s in samples], label="idle", marker="hd", color="green")
    plt.plot(xs, [float(s.waiting) for s in samples], label="waiting", marker="hd", color="yellow")
    plt.plot(xs, [float(s.in_use) for s in samples], label="in use", marker="hd", color="cyan")
    # Fit the x axis to the data while it is shorter than the window.
    span = min(window, max(10.0, -xs[0]))
    plt.xlim(-span, 0)
    plt.ylim(0, top + 1)
    step = max(1, math.ceil((top + 1) / 6))
    plt.yticks(list(range(0, top + 2, step)))
    plt.xlabel("seconds ago")
    plt.title(f"{pool.name} utilisation, last {fmt_duration(window)}")
    try:
        out = plt.build()
    finally:
        plt.clf()
    return Text.from_ansi(out, no_wrap=True)


# -- histograms ------------------------------------------------------------------


def histogram_text(title: str, hist: Histogram, max_lines: int = 8, bar: int = 16) -> Text:
    """Log-bucket bars (adjacent buckets merged to fit) with p50/p90/p99/max."""
    out = Text()
    out.append(f"{title} ", style="bold")
    if hist.count == 0:
        out.append("no samples\n", style=DIM)
        return out
    out.append(f"n={hist.count}\n", style=DIM)
    out.append(
        f"p50 {fmt_dur(hist.p50)}  p90 {fmt_dur(hist.p90)}  p99 {fmt_dur(hist.p99)}  "
        f"max {fmt_dur(hist.max)}\n"
    )
    ks = sorted(hist.buckets)
    lo, hi = ks[0], ks[-1]
    span = hi - lo + 1
    step = max(1, math.ceil(span / max_lines))
    groups: list[tuple[int, int]] = []  # (upper bucket index, count)
    k = lo
    while k <= hi:
        n = sum(hist.buckets.get(j, 0) for j in range(k, k + step))
        groups.append((k + step - 1, n))
        k += step
    peak = max(n for _, n in groups) or 1
    for upper, n in groups:
        width = round(n / peak * bar)
        label = f"≤{fmt_dur(bucket_upper(upper))}"
        out.append(f"{label:>9} ")
        out.append("█" * width, style="cyan")
        out.append(" " * (bar - width))
        out.append(f" {n}\n", style=DIM)
    return out


def pool_detail(row: PoolRow) -> Text:
    """The selected pool: alerts, wait and hold over the window, then the totals
    since start with every failure kind apart and closes by reason."""
    p, win = row.pool, row.win
    out = Text()
    out.append(f"{row.label}", style="bold")
    out.append(f"  {p.kind} → {p.target or '?'}\n", style=DIM)
    for alert in row.alerts:
        out.append(f"⚠ {alert}\n", style="bold red")
    out.append("\n")
    if win is not None:
        out.append(f"last {fmt_dur(win.seconds)}: ", style="bold")
        out.append(
            f"{fmt_rate(win.acquire_rate)} acq/s, failures {win.failure_rate:.1%}, "
            f"timeouts {win.timeouts}, acquire errors {win.acquire_errors}, "
            f"connect errors {win.connect_errors}, closes {win.closes_total}\n"
        )
        wait, hold = win.wait, win.hold
    else:
        wait, hold = p.wait, p.hold
    out.append_text(histogram_text("wait", wait, max_lines=6, bar=14))
    out.append_text(histogram_text("hold", hold, max_lines=6, bar=14))
    out.append("\nsince start: ", style="bold")
    out.append(
        f"acquires {p.acquires}, releases {p.releases}"
        + (f" ({p.releases_lost} lost while held)" if p.releases_lost else "")
        + f", timeouts {p.timeouts}, acquire errors {p.acquire_errors}, "
        f"connects {p.connects}, connect errors {p.connect_errors}\n"
    )
    out.append(
        f"wait p50 {fmt_dur(p.wait.p50)} p99 {fmt_dur(p.wait.p99)} max {fmt_dur(p.wait.max)}"
        f"  hold p50 {fmt_dur(p.hold.p50)} p99 {fmt_dur(p.hold.p99)} "
        f"max {fmt_dur(p.hold.max)}\n"
    )
    closes = ", ".join(f"{k} {n}" for k, n in sorted(p.closes.items(), key=lambda kv: -kv[1]))
    out.append(f"closes: {closes or 'none'}\n")
    if p.last_error:
        out.append("last error: ", style=DIM)
        out.append(f"{p.last_error}\n", style="red")
    return out
