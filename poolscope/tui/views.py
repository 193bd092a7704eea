"""Pure views: folded state in, rows and text out. No Textual here.

Every function takes the feeds (or one pool) and the data's own clock
(``state.now``), never the wall clock, so a recording renders the same
whenever it is shown, and these are unit-testable without a terminal.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from poolscope.events import Event
from poolscope.histogram import Histogram, bucket_upper
from poolscope.model import Holder, Leak, PoolMetrics, PoolState
from poolscope.tui.data import INCIDENT_TYPES, ProcessFeed
from poolscope.tui.osinfo import ProcInfo, parse_target
from poolscope.units import fmt_duration
from poolscope.window import DEFAULT_WINDOW, WindowStats

# Alert thresholds people use for pools.
UTIL_ALERT = 0.80
P99_WAIT_ALERT = 0.100
FAILURE_ALERT = 0.01

ALERT = "bold red"
WARN = "yellow"
OK = "green"
DIM = "dim"

# -- formatting ------------------------------------------------------------------


#: A duration in the unit that reads best: the observer's one duration formatter.
fmt_dur = fmt_duration


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in ``…`` when it was cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def fmt_rate(per_s: float) -> str:
    if per_s >= 10_000:
        return f"{per_s / 1000:.0f}k"
    if per_s >= 1000:
        return f"{per_s / 1000:.1f}k"
    if per_s >= 10:
        return f"{per_s:.0f}"
    return f"{per_s:.1f}"


def fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"


def fmt_clock(t: float, millis: bool = False) -> str:
    """Local time of day of a wall-clock timestamp."""
    if not t:
        return "--:--:--"
    base = time.strftime("%H:%M:%S", time.localtime(t))
    return f"{base}.{int(t * 1000) % 1000:03d}" if millis else base


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 24) -> str:
    vals = list(values)[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return SPARK[0] * len(vals)
    return "".join(SPARK[min(7, int((v - lo) / span * 7.999))] for v in vals)


def frame_label(frame: dict[str, Any], full_path: bool = False) -> str:
    """One stack frame as ``func file:line`` (the file's base name unless ``full_path``)."""
    file = str(frame.get("file", "?"))
    if not full_path:
        file = file.rsplit("/", 1)[-1]
    return f"{frame.get('func', '?')} {file}:{frame.get('line', '?')}"


def site_label(stack: list[dict[str, Any]]) -> str:
    """The innermost frame of an acquire site (the acquiring line; stacks on the wire
    are innermost first) as ``func file:line``."""
    if not stack:
        return "?"
    return frame_label(stack[0])


def distinct_site_labels(stacks: Sequence[list[dict[str, Any]]]) -> list[str]:
    """Labels for acquire sites whose innermost frames read the same: each label adds
    the first outer frame that tells its stack apart from the others, as
    ``top ← caller`` or ``top ← … ← caller``; base names first, full paths when only
    the directory differs. Stacks that nothing tells apart get ``[n]`` appended, so no
    two labels are ever equal."""
    labels = [site_label(s) for s in stacks]
    if len(stacks) < 2:
        return labels
    for full_path in (False, True):
        frames = [[frame_label(f, full_path) for f in s] for s in stacks]
        for i, mine in enumerate(frames):
            if labels[i] != site_label(stacks[i]):
                continue  # told apart by base names already
            others = [f for j, f in enumerate(frames) if j != i]
            # With base names the innermost frames are alike by construction; with full
            # paths the innermost file alone may tell them apart.
            for depth in range(0 if full_path else 1, len(mine)):
                if all(o[: depth + 1] != mine[: depth + 1] for o in others):
                    via = "" if depth == 0 else " ← " if depth == 1 else " ← … ← "
                    top = frame_label(stacks[i][0], full_path)
                    labels[i] = top + (f"{via}{mine[depth]}" if depth else "")
                    break
    counts = {label: labels.count(label) for label in labels}
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label} [{seen[label]}]"
    return labels


# -- filter ----------------------------------------------------------------------


@dataclass
class Filter:
    """``/`` text: ``type:NAME`` and ``pool:NAME`` narrow by field; other words must
    all appear somewhere in the row."""

    types: set[str] = field(default_factory=set)
    pools: set[str] = field(default_factory=set)
    words: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Filter:
        f = cls()
        for tok in text.lower().split():
            key, sep, val = tok.partition(":")
            if not sep:
                key, sep, val = tok.partition("=")
            if sep and key == "type" and val:
                f.types.add(val)
            elif sep and key == "pool" and val:
                f.pools.add(val)
            else:
                f.words.append(tok)
        return f

    def __bool__(self) -> bool:
        return bool(self.types or self.pools or self.words)

    def match(self, text: str, *, pool: str = "", etype: str = "") -> bool:
        # A type narrows events only; other views have no type to match.
        if self.types and etype and etype.lower() not in self.types:
            return False
        if self.pools and not any(p in pool.lower() for p in self.pools):
            return False
        low = text.lower()
        return all(w in low for w in self.words)


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


# -- header ----------------------------------------------------------------------


def header_line(
    feed: ProcessFeed, events_per_s: float, info: ProcInfo | None, replay_status: str = ""
) -> Text:
    st = feed.state
    proc = st.process
    name = str(proc.get("process", "?"))
    pid = proc.get("pid", "?")
    line = Text()
    if feed.connected:
        line.append("● ", style=OK)
    else:
        line.append("○ ", style=ALERT)
    line.append(f"{name}", style="bold")
    line.append(f" pid {pid}  ")
    line.append(feed.label, style="cyan")
    line.append("  ")
    if replay_status:
        line.append("replay ", style=DIM)
        line.append(replay_status, style="bold")
    elif feed.connected:
        line.append("connected", style=OK)
    elif feed.disconnected_since is not None:
        line.append(f"disconnected since {fmt_clock(feed.disconnected_since)}", style=ALERT)
        if not feed.ever_connected:
            line.append(" (never connected)", style=ALERT)
    else:
        line.append("connecting…", style=WARN)
    line.append(f"  {fmt_rate(events_per_s)} ev/s")
    line.append("  dropped ")
    line.append(str(st.dropped), style=ALERT if st.dropped else "")
    up = feed.uptime()
    if up is not None:
        line.append(f"  up {fmt_dur(up)}")
    if info is not None:
        line.append(
            f"  cpu {info.cpu_percent:.0f}% rss {fmt_bytes(info.rss)} thr {info.threads}",
            style=DIM,
        )
    line.no_wrap = True
    line.overflow = "ellipsis"
    return line


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


# -- holders ---------------------------------------------------------------------

HOLDER_COLUMNS = ("held for", "pool", "conn", "task / thread", "acquire site", "tags", "backend")


#: Rows the holders view draws: the longest held; the rest are counted, not drawn.
HOLDERS_SHOWN = 500


def holder_rows(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None, limit: int | None = None
) -> list[tuple[str, tuple[Text, ...]]]:
    """Connections checked out now, longest held first (the ``limit`` longest)."""
    return top_holders(feeds, flt, limit)[0]


def top_holders(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None, limit: int | None = HOLDERS_SHOWN
) -> tuple[list[tuple[str, tuple[Text, ...]]], int]:
    """(the ``limit`` longest-held connections' rows, how many match in all). Rows are
    built for those shown only: 100,000 holders cost a selection, not 100,000 rows."""
    many = len(feeds) > 1
    found: list[tuple[float, int, str, str, Holder]] = []  # (held, feed, pool, label, h)
    for i, feed in enumerate(feeds):
        st = feed.state
        for name, p in st.pools.items():
            label = f"{name}@{st.process.get('pid', '?')}" if many else name
            for h in p.holders.values():
                if flt and not flt.match(_holder_text(st, name, label, h), pool=name):
                    continue
                found.append((max(0.0, st.now - h.since), i, name, label, h))
    total = len(found)
    if limit is not None and total > limit:
        found = heapq.nlargest(limit, found, key=lambda r: r[0])
    else:
        found.sort(key=lambda r: -r[0])
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for held, i, name, label, h in found:
        st = feeds[i].state
        p = st.pools[name]
        site = site_label(st.site_stack(h.site))
        tags = st.attribution.label_text(h.tags)  # ps.tag() labels, the route first
        pid = st.attribution.pids.get((name, h.conn))
        threshold = p.config.get("leak_threshold")
        style = ALERT if isinstance(threshold, (int, float)) and held > threshold else ""
        cells = (
            Text(fmt_dur(held), justify="right", style=style),
            Text(label),
            Text(h.conn),
            Text(h.task or "-"),
            Text(site),
            Text(tags or "-"),
            Text(str(pid) if pid else "-", justify="right"),
        )
        rows.append((f"{i}:{name}:{h.conn}", cells))
    return rows, total


def _holder_text(st: PoolState, name: str, label: str, h: Holder) -> str:
    site = site_label(st.site_stack(h.site))
    tags = st.attribution.label_text(h.tags)
    pid = st.attribution.pids.get((name, h.conn))
    return f"{label} {h.conn} {h.task} {tags} {pid or ''} {site}"


# -- leaks -----------------------------------------------------------------------

LEAK_COLUMNS = ("acquire site", "route", "pool", "open", "resolved", "longest hold", "last task")


@dataclass
class LeakGroup:
    key: str
    site: str  # the label: what tells this group's acquire site apart from the others
    pool: str
    open: list[Leak]
    resolved: list[Leak]
    state: PoolState
    stack: list[dict[str, Any]] = field(default_factory=list)
    route: str = ""  # the ps.tag()/middleware route of the acquires (groups are per route too)

    def held(self, lk: Leak) -> float:
        if lk.resolved_held is not None:
            return lk.resolved_held
        return lk.held + max(0.0, self.state.now - lk.t)

    @property
    def longest(self) -> float:
        return max((self.held(lk) for lk in self.open + self.resolved), default=0.0)

    @property
    def latest(self) -> Leak:
        return max(self.open + self.resolved, key=lambda lk: lk.t)

    def cells(self) -> tuple[Text, ...]:
        return (
            Text(self.site, style="bold red" if self.open else ""),
            Text(self.route or "-"),
            Text(self.pool),
            Text(str(len(self.open)), justify="right", style=ALERT if self.open else ""),
            Text(str(len(self.resolved)), justify="right"),
            Text(fmt_dur(self.longest), justify="right"),
            Text(self.latest.task or "-"),
        )


def leak_groups(feeds: Sequence[ProcessFeed], flt: Filter | None = None) -> list[LeakGroup]:
    """Open and resolved leaks grouped by acquire site (the whole stack); groups with
    open leaks first. Sites whose innermost frames read the same are labelled by the
    frame that tells them apart (:func:`distinct_site_labels`)."""
    groups: dict[str, LeakGroup] = {}
    for i, feed in enumerate(feeds):
        st = feed.state
        for lk in list(st.leaks.values()) + list(st.resolved_leaks):
            stack = lk.stack or st.site_stack(lk.site)
            site = site_label(stack)
            route = st.attribution.route_of(lk.tags)
            key = f"{i}:{lk.pool}:{lk.site if lk.site is not None else site}:{route}"
            g = groups.get(key)
            if g is None:
                g = groups[key] = LeakGroup(key, site, lk.pool, [], [], st, stack, route)
            (g.resolved if lk.resolved_t is not None else g.open).append(lk)
    # Groups the table can tell apart by another column (pool, route) need no longer label.
    alike: dict[tuple[str, str, str, str], list[LeakGroup]] = {}
    for g in groups.values():
        alike.setdefault((g.key.partition(":")[0], g.pool, g.route, g.site), []).append(g)
    for same in alike.values():
        if len(same) > 1:
            for g, label in zip(same, distinct_site_labels([g.stack for g in same]), strict=True):
                g.site = label
    out = [
        g
        for g in groups.values()
        if not flt or flt.match(f"{g.site} {g.route} {g.pool}", pool=g.pool)
    ]
    out.sort(key=lambda g: (-len(g.open), -g.longest, g.key))
    return out


def leak_detail(group: LeakGroup | None) -> Text:
    """The traceback of a group's latest leak, with source lines, task and held time."""
    out = Text()
    if group is None:
        out.append("No leaks. A connection held past the pool's leak threshold shows here.", DIM)
        return out
    lk = group.latest
    status = "OPEN" if lk.resolved_t is None else f"resolved ({lk.resolution})"
    out.append(f"{'proven' if lk.proven else 'suspected'} leak ", style="bold red")
    out.append(f"{status}  pool {lk.pool}  conn {lk.conn}  task {lk.task or '-'}")
    tags = group.state.attribution.label_text(lk.tags)
    pid = group.state.attribution.pids.get((lk.pool, lk.conn))
    out.append(f"{'  ' + tags if tags else ''}{f'  backend {pid}' if pid else ''}\n")
    out.append(f"held {fmt_dur(group.held(lk))}", style="bold")
    out.append(f"  reported {fmt_clock(lk.t)} after {fmt_dur(lk.held)}")
    if lk.resolved_t is not None:
        out.append(f"  back {fmt_clock(lk.resolved_t)}")
    out.append(f"\n{len(group.open)} open, {len(group.resolved)} resolved at this site\n\n")
    out.append("Traceback of the acquire (most recent call last):\n", style="bold")
    stack = lk.stack or group.state.site_stack(lk.site)
    if not stack:
        out.append("  (no stack captured)\n", style=DIM)
    for f in reversed(stack):  # the wire has innermost first; Python prints it last
        out.append(f'  File "{f.get("file", "?")}", line {f.get("line", "?")}, in ')
        out.append(f"{f.get('func', '?')}\n", style="bold")
        code = f.get("code")
        if code:
            out.append(f"    {code}\n", style="yellow")
    return out


# -- heartbeat -------------------------------------------------------------------

HEARTBEAT_COLUMNS = ("pool", "backend", "ok", "failed", "skipped", "last", "latency", "last error")


def heartbeat_rows(
    feeds: Sequence[ProcessFeed], flt: Filter | None = None
) -> list[tuple[str, tuple[Text, ...]]]:
    many = len(feeds) > 1
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        st = feed.state
        for name, p in sorted(st.pools.items()):
            label = f"{name}@{st.process.get('pid', '?')}" if many else name
            if flt and not flt.match(f"{label} {p.backend}", pool=name):
                continue
            lat = [v for _, v in p.heartbeat_latency]
            last = fmt_dur(lat[-1]) if lat else "-"
            err = p.heartbeat_failures[-1][1] if p.heartbeat_failures else ""
            style = {"healthy": OK, "suspect": WARN}.get(p.backend, ALERT)
            cells = (
                Text(label, style="bold"),
                Text(p.backend, style=style),
                Text(str(p.heartbeats_ok), justify="right"),
                Text(
                    str(p.heartbeats_failed),
                    justify="right",
                    style=ALERT if p.heartbeats_failed else "",
                ),
                Text(str(p.heartbeats_skipped), justify="right"),
                Text(last, justify="right"),
                Text(sparkline(lat) or "-", style="cyan"),
                Text(clip(err, 40), style=ALERT if err else DIM),
            )
            rows.append((f"{i}:{name}", cells))
    return rows


def heartbeat_failures_text(feeds: Sequence[ProcessFeed], limit: int = 12) -> Text:
    items: list[tuple[float, str, str, str]] = []
    for feed in feeds:
        for name, p in feed.state.pools.items():
            items.extend((t, name, conn, err) for t, err, conn in p.heartbeat_failures)
    out = Text()
    out.append("Recent heartbeat failures\n", style="bold")
    if not items:
        out.append("  none\n", style=DIM)
        return out
    for t, name, conn, err in sorted(items, reverse=True)[:limit]:
        out.append(f"  {fmt_clock(t)}  ", style=DIM)
        out.append(f"{name:<10} conn {conn:<5} ")
        out.append(f"{err}\n", style="red")
    return out


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


# -- events log ------------------------------------------------------------------

EVENT_COLUMNS = ("time", "type", "pool", "details")
_EVENT_HIDE = frozenset({"type", "t", "pool", "stack", "current", "state"})
_EVENT_STYLE = {
    "timeout": "red",
    "acquire_error": "red",
    "connect_error": "red",
    "leak": "bold red",
    "unleak": "green",
    "backend": "yellow",
    "dropped": "red",
    "disconnected": "bold red",
    "connected": "green",
}


def event_summary(ev: Event) -> str:
    parts = []
    for k, v in ev.items():
        if k in _EVENT_HIDE or k.startswith("_") or v is None:
            continue
        if isinstance(v, float):
            v = (
                fmt_dur(v)
                if k in ("wait", "hold", "held", "latency", "duration", "age")
                else f"{v:g}"
            )
        elif isinstance(v, (list, dict)):
            continue
        parts.append(f"{k}={v}")
    return " ".join(parts)


def event_cells(ev: Event) -> tuple[Text, ...]:
    etype = str(ev.get("type", "?"))
    return (
        Text(fmt_clock(float(ev.get("t", 0.0)), millis=True), style=DIM),
        Text(etype, style=_EVENT_STYLE.get(etype, "")),
        Text(str(ev.get("pool", ""))),
        Text(event_summary(ev), no_wrap=True, overflow="ellipsis"),
    )


def event_matches(ev: Event, flt: Filter | None) -> bool:
    if not flt:
        return True
    etype = str(ev.get("type", ""))
    pool = str(ev.get("pool", ""))
    return flt.match(f"{etype} {pool} {event_summary(ev)}", pool=pool, etype=etype)


def recent_events(
    feeds: Iterable[ProcessFeed],
    after: dict[int, int],
    flt: Filter | None,
    limit: int,
    *,
    churn: bool = False,
) -> list[tuple[str, tuple[Text, ...]]]:
    """Events newer than ``after[feed index]`` (a seq), matching the filter, oldest first,
    at most ``limit`` (the newest). From each feed's incident log, or with ``churn``
    (or a ``type:`` filter naming a churn type such as ``acquire``) from its log of
    every recent event."""
    if flt and any(t not in INCIDENT_TYPES for t in flt.types):
        churn = True
    out: list[tuple[float, str, tuple[Text, ...]]] = []
    for i, feed in enumerate(feeds):
        last = after.get(i, 0)
        log = feed.events(churn)
        picked: list[tuple[float, str, tuple[Text, ...]]] = []
        for seq, ev in reversed(log):
            if seq <= last or len(picked) >= limit:
                break
            if event_matches(ev, flt):
                picked.append((float(ev.get("t", 0.0)), f"{i}:{seq}", event_cells(ev)))
        out.extend(picked)
        if log:
            after[i] = log[-1][0]
    out.sort(key=lambda r: r[0])
    return [(k, c) for _, k, c in out[-limit:]]
