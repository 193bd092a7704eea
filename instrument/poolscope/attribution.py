"""Who holds it, and who made them wait: request labels, per-route use, wait blame.

Part of the fold (``PoolState.attribution``), so it gives the same answers live,
in a replay and in ``advise``. Standard library only.

Wait attribution. An acquire that waited ``w`` seconds at ``t`` waited over
``[t - w, t]`` (a timeout likewise). While any acquirer of a pool waits, every
connection of that pool held meanwhile is charged the connection-seconds it was
held, to its acquire site and its labels (``route``). Time when several acquirers
wait at once is charged once (the union of the waits), so the charges add up to
"connection-seconds held while someone waited", and a key's share is its part of
that. Waits under :data:`WAIT_MIN` are not waits (an uncontended acquire takes
microseconds). A wait is charged when it ends (its acquire or timeout event); a
wait still in progress is not charged yet.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from poolscope.histogram import Histogram

#: Shorter waits are not contention (an uncontended acquire takes microseconds).
WAIT_MIN = 0.001
#: Ended holds kept per pool to charge waits that overlapped them (seconds, count).
HORIZON = 300.0
RECENT_HOLDS = 20_000
#: Merged waiting intervals kept per pool (to charge overlapping waits once).
COVER_KEPT = 256
#: The per-second history of charges (for "over the window"), seconds.
WINDOW_KEPT = 900
# Bounds against a peer that floods names (keys beyond go uncounted).
MAX_LABELS = 10_000
MAX_ROUTES = 2_000
MAX_KEYS = 10_000
MAX_PIDS = 100_000
# Work per wait, bounded: real pools hold hundreds of connections and end a few holds
# per wait; a crafted stream could hold 100,000 and send a wait per line.
CALM = 60.0  # seconds without a wait after which a pool's bookkeeping stops
ACQUIRES_KEPT = 4096  # recent acquires, to credit holders acquired during a wait
MAX_RECENT_SCAN = 4096  # ended holds looked at per waiting interval
MAX_PARTS = 8  # uncovered pieces of one wait charged (more: the rest is not charged)

#: (pool, site id, labels id): what a charge is booked to.
Key = tuple[str, "int | None", "int | None"]


class HolderLike(Protocol):
    """What the fold's holders give attribution (``poolscope.model.Holder``)."""

    since: float
    site: int | None
    tags: int | None


@dataclass
class RouteStats:
    """One route's use of one pool (the route label of the acquiring code)."""

    acquires: int = 0
    hold: Histogram = field(default_factory=Histogram)  # its sum: connection-seconds
    waits: int = 0  # acquires that waited (at least WAIT_MIN)
    waited: float = 0.0  # seconds those acquires waited

    def to_dict(self) -> dict[str, Any]:
        return {
            "acquires": self.acquires,
            "hold": self.hold.to_dict(),
            "waits": self.waits,
            "waited": self.waited,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouteStats:
        return cls(
            acquires=_int(d.get("acquires")),
            hold=Histogram.from_dict(d.get("hold")),
            waits=_int(d.get("waits")),
            waited=_float(d.get("waited")),
        )


@dataclass
class Blame:
    """A row of "who made them wait": a site or route of one pool."""

    pool: str
    key: str  # the route, or the site id as text
    site: int | None
    seconds: float  # connection-seconds held while someone waited
    share: float  # of all such seconds in the pool (0..1)


def _float(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:
            return 0.0
        return f if math.isfinite(f) and f >= 0 else 0.0
    return 0.0


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _opt_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class Attribution:
    """Labels, backend pids, per-route use and wait blame, folded from events."""

    def __init__(self) -> None:
        self.labels: dict[int, dict[str, str]] = {}
        self.pids: dict[tuple[str, str], int] = {}
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.caused: dict[Key, float] = {}
        self.waited: dict[str, float] = {}  # seconds someone waited, per pool (union)
        # Per second: the charges booked, and seconds someone waited per pool.
        self._buckets: deque[tuple[int, dict[Key, float], dict[str, float]]] = deque()
        self._pools: dict[str, _PoolBlame] = {}

    # -- queries -----------------------------------------------------------------
    def route_of(self, tags: int | None) -> str:
        """The ``route`` label of a labels id ("" when none)."""
        if tags is None:
            return ""
        return self.labels.get(tags, {}).get("route", "")

    def label_text(self, tags: int | None) -> str:
        """Labels as ``k=v`` words, the route first and bare."""
        labels = self.labels.get(tags, {}) if tags is not None else {}
        words = [labels["route"]] if "route" in labels else []
        words += [f"{k}={v}" for k, v in sorted(labels.items()) if k != "route"]
        return " ".join(words)

    def blame(self, by: str = "route", since: float | None = None) -> list[Blame]:
        """Sites (``by="site"``) or routes by connection-seconds held while someone
        waited, most first; over everything, or the charges at or after ``since``."""
        self.flush()
        if since is None:
            charges = self.caused.items()
        else:
            total: dict[Key, float] = {}
            for sec, bucket, _ in self._buckets:
                if sec + 1 > since:
                    for k, v in bucket.items():
                        total[k] = total.get(k, 0.0) + v
            charges = total.items()
        rows: dict[tuple[str, str], list[Any]] = {}
        per_pool: dict[str, float] = {}
        for (pool, site, tags), secs in charges:
            if secs <= 1e-9:  # charged and credited back: held nothing while they waited
                continue
            key = self.route_of(tags) if by == "route" else ("" if site is None else str(site))
            row = rows.setdefault((pool, key), [site, 0.0])
            row[1] += secs
            per_pool[pool] = per_pool.get(pool, 0.0) + secs
        out = [
            Blame(pool, key, site, secs, secs / per_pool[pool] if per_pool[pool] > 0 else 0.0)
            for (pool, key), (site, secs) in rows.items()
        ]
        out.sort(key=lambda b: (-b.seconds, b.pool, b.key))
        return out

    def waited_since(self, since: float | None = None) -> dict[str, float]:
        """Seconds someone waited, per pool (all, or from ``since``)."""
        self.flush()
        if since is None:
            return dict(self.waited)
        out: dict[str, float] = {}
        for sec, _, waits in self._buckets:
            if sec + 1 > since:
                for pool, v in waits.items():
                    out[pool] = out.get(pool, 0.0) + v
        return out

    # -- the fold ----------------------------------------------------------------
    def on_tags(self, tid: int, labels: Any) -> None:
        if not isinstance(labels, dict) or (
            len(self.labels) >= MAX_LABELS and tid not in self.labels
        ):
            return
        self.labels[tid] = {str(k): str(v) for k, v in list(labels.items())[:32]}

    def on_connect(self, pool: str, conn: str, pid: Any) -> None:
        if isinstance(pid, int) and not isinstance(pid, bool) and len(self.pids) < MAX_PIDS:
            self.pids[(pool, conn)] = pid

    def on_acquire(
        self,
        pool: str,
        t: float,
        wait: float,
        tags: int | None,
        holders: dict[str, Any],
        holder: HolderLike | None = None,
        replaced: HolderLike | None = None,
    ) -> None:
        """An acquire: per-route use, and its wait charged. ``holder`` is the new
        holder, already in ``holders`` (None when the fold keeps no more holders);
        ``replaced`` the holder it replaced (an acquire without a release)."""
        waited = wait >= WAIT_MIN
        if tags is not None:
            r = self._route(pool, tags)
            if r is not None:
                r.acquires += 1
                if waited:
                    r.waits += 1
                    r.waited += wait
        pb = self._pools.get(pool)
        held = pb.held if pb is not None else None
        if held is not None and pb is not None:
            if t - pb.last_wait > CALM:  # no wait for a while: stop the bookkeeping
                pb.calm()
            else:
                if replaced is not None:
                    _count(held, (replaced.site, replaced.tags), -1)
                if holder is not None:
                    _count(held, (holder.site, holder.tags), 1)
                    pb.acquired.append((t, holder))
        if waited:
            self.charge(pool, t - wait, t, holders)

    def on_release(self, pool: str, h: HolderLike | None, t: float, hold: float) -> None:
        """A hold ended (released, or closed while held)."""
        if h is None:
            return
        pb = self._pools.get(pool)
        if pb is None:
            pb = self._pools[pool] = _PoolBlame()
        if pb.held is not None:  # counted only while the pool has waits (see calm)
            _count(pb.held, (h.site, h.tags), -1)
        # Ended holds are always kept: a wait is reported when it ends, and the holds
        # that ended during it are charged then.
        recent = pb.recent
        if t < pb.last_end:  # out of order: look that much further back (at most 1 s)
            pb.disorder = min(1.0, max(pb.disorder, pb.last_end - t))
        else:
            pb.last_end = t
        recent.append((h.since, t, h.site, h.tags))
        if recent[0][1] < t - HORIZON:
            recent.popleft()
        if h.tags is not None:
            r = self._route(pool, h.tags)
            if r is not None:
                r.hold.add_trusted(hold if hold > 0.0 else 0.0)

    def on_close(self, pool: str, conn: str) -> None:
        self.pids.pop((pool, conn), None)

    def _route(self, pool: str, tags: int) -> RouteStats | None:
        key = (pool, self.route_of(tags))
        r = self.routes.get(key)
        if r is None:
            if len(self.routes) >= MAX_ROUTES:
                return None
            r = self.routes[key] = RouteStats()
        return r

    def charge(self, pool: str, a: float, b: float, holders: dict[str, Any]) -> None:
        """Charge the waiting interval [a, b] of ``pool`` to whoever held meanwhile
        (only the part no earlier waiter's interval covered).

        The cost is per key (site, labels) of the holders, not per holder: holders
        are counted by key, each charged the whole part, and those acquired during
        it are then credited the time before their acquire; holds that ended during
        it are charged their overlap."""
        if not b - a >= WAIT_MIN:
            return
        pb = self._pools.get(pool)
        if pb is None:
            pb = self._pools[pool] = _PoolBlame()
        parts = pb.uncovered(a, b)
        if not parts:
            return
        pb.last_wait = b
        held = pb.held
        if held is None:  # the first wait in a while (or after a sync): count the holders
            held = pb.held = {}
            fresh_ones = []
            for h in holders.values():
                _count(held, (h.site, h.tags), 1)
                if h.since > a:
                    fresh_ones.append((h.since, h))
            pb.acquired.extend(sorted(fresh_ones, key=lambda sh: sh[0]))
        # Summed per key for the current second, booked when the second changes or
        # someone asks (flush): a dict update per key here, no more.
        sec = int(b)
        if sec != pb.pending_sec:
            self._flush(pool, pb)
            pb.pending_sec = sec
        acc = pb.pending
        get = acc.get
        total = 0.0
        for x, y in parts[:MAX_PARTS]:
            span = y - x
            total += span
            for key, n in held.items():
                acc[key] = get(key, 0.0) + n * span
            # Holders acquired after x held only from their acquire on.
            for since, fresh in reversed(pb.acquired):
                if since <= x:
                    break
                if fresh is not None and holders.get(getattr(fresh, "conn", "")) is fresh:
                    acquired = cast("HolderLike", fresh)
                    key = (acquired.site, acquired.tags)
                    acc[key] = get(key, 0.0) - (min(since, y) - x)
            slack = pb.disorder
            for s, e, site, tg in itertools.islice(reversed(pb.recent), MAX_RECENT_SCAN):
                if e <= x:
                    if e <= x - slack:  # ended holds come in order of their end (or nearly)
                        break
                    continue
                overlap = min(e, y) - max(s, x)
                if overlap > 0:
                    acc[(site, tg)] = get((site, tg), 0.0) + overlap
        self.waited[pool] = self.waited.get(pool, 0.0) + total
        pb.pending_wait += total

    def _flush(self, pool: str, pb: _PoolBlame) -> None:
        """Book a pool's charges of its current second (see charge)."""
        if not pb.pending and not pb.pending_wait:
            return
        _, bucket, waits = self._bucket(float(pb.pending_sec))
        waits[pool] = waits.get(pool, 0.0) + pb.pending_wait
        caused = self.caused
        for (site, tg), secs in pb.pending.items():
            if secs > 0.0:
                self._book(caused, bucket, (pool, site, tg), secs)
        pb.pending = {}
        pb.pending_wait = 0.0

    def flush(self) -> None:
        """Book every pending charge (queries and serialisation call this first)."""
        for pool, pb in self._pools.items():
            self._flush(pool, pb)

    @staticmethod
    def _book(caused: dict[Key, float], bucket: dict[Key, float], key: Key, s: float) -> None:
        if key not in caused and len(caused) >= MAX_KEYS:
            key = (key[0], None, None)  # beyond the bound: one anonymous key per pool
        caused[key] = caused.get(key, 0.0) + s
        bucket[key] = bucket.get(key, 0.0) + s

    def _bucket(self, t: float) -> tuple[int, dict[Key, float], dict[str, float]]:
        sec = int(t)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= sec:
            return buckets[-1]  # same second (or a little out of order)
        buckets.append((sec, {}, {}))
        while buckets[0][0] < sec - WINDOW_KEPT:
            buckets.popleft()
        return buckets[-1]

    # -- serialisation (part of the ``sync`` state) -------------------------------
    def to_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "labels": {str(k): v for k, v in self.labels.items()},
            "pids": [[p, c, pid] for (p, c), pid in self.pids.items()],
            "routes": [[p, r, s.to_dict()] for (p, r), s in self.routes.items()],
            "caused": [[p, s, g, v] for (p, s, g), v in self.caused.items()],
            "waited": dict(self.waited),
            "buckets": [
                [sec, [[p, s, g, v] for (p, s, g), v in b.items()], w]
                for sec, b, w in self._buckets
            ],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Attribution:
        """From a peer's ``sync``: anything malformed is left out, never raised."""
        a = cls()
        if not isinstance(d, dict):
            return a
        labels = d.get("labels")
        if isinstance(labels, dict):
            for k, v in list(labels.items())[:MAX_LABELS]:
                if isinstance(k, str) and k.isdigit():
                    a.on_tags(int(k), v)
        for row in _rows(d.get("pids"), 3)[:MAX_PIDS]:
            a.on_connect(str(row[0]), str(row[1]), row[2])
        for row in _rows(d.get("routes"), 3)[:MAX_ROUTES]:
            if isinstance(row[2], dict):
                a.routes[(str(row[0]), str(row[1]))] = RouteStats.from_dict(row[2])
        for row in _rows(d.get("caused"), 4)[:MAX_KEYS]:
            a.caused[(str(row[0]), _opt_int(row[1]), _opt_int(row[2]))] = _float(row[3])
        waited = d.get("waited")
        if isinstance(waited, dict):
            for k, v in list(waited.items())[:MAX_KEYS]:
                a.waited[str(k)] = _float(v)
        for row in _rows(d.get("buckets"), 3)[-WINDOW_KEPT:]:
            bucket: dict[Key, float] = {}
            waits: dict[str, float] = {}
            if isinstance(row[2], dict):
                waits = {str(k): _float(v) for k, v in list(row[2].items())[:MAX_KEYS]}
            for c in _rows(row[1], 4)[:MAX_KEYS]:
                bucket[(str(c[0]), _opt_int(c[1]), _opt_int(c[2]))] = _float(c[3])
            sec = row[0]
            if isinstance(sec, int) and not isinstance(sec, bool):
                a._buckets.append((sec, bucket, waits))
        return a


def _count(held: dict[tuple[int | None, int | None], int], key: tuple[Any, Any], d: int) -> None:
    n = held.get(key, 0) + d
    if n > 0:
        held[key] = n
    else:
        held.pop(key, None)


class _PoolBlame:
    """One pool's working state for wait attribution (not serialised: rebuilt)."""

    __slots__ = (
        "acquired",
        "cover",
        "disorder",
        "held",
        "last_end",
        "last_wait",
        "pending",
        "pending_sec",
        "pending_wait",
        "recent",
    )

    def __init__(self) -> None:
        #: Holders by (site, labels) - None until the first wait counts them.
        self.held: dict[tuple[int | None, int | None], int] | None = None
        self.acquired: deque[tuple[float, Any]] = deque(maxlen=ACQUIRES_KEPT)
        self.recent: deque[tuple[float, float, int | None, int | None]] = deque(maxlen=RECENT_HOLDS)
        self.cover: list[list[float]] = []  # merged waiting intervals, in order
        self.last_end = 0.0  # the latest end of a hold
        self.last_wait = 0.0  # the end of the latest wait
        self.pending: dict[tuple[int | None, int | None], float] = {}  # charges this second
        self.pending_sec = 0
        self.pending_wait = 0.0
        self.disorder = 0.0  # how far back an end has come after a later one

    def calm(self) -> None:
        """No wait for CALM seconds: stop counting holders by key and keeping recent
        acquires (the next wait counts them again from the holders themselves)."""
        self.held = None
        self.acquired.clear()

    def uncovered(self, a: float, b: float) -> list[tuple[float, float]]:
        """The parts of [a, b] no earlier wait covered; records [a, b]."""
        cover = self.cover
        if cover:
            last = cover[-1]
            if a >= last[0]:  # the usual case: at or after the latest interval's start
                if a > last[1]:
                    cover.append([a, b])
                    if len(cover) > COVER_KEPT:
                        del cover[0]
                    return [(a, b)]
                if b <= last[1]:
                    return []
                part = (last[1], b)
                last[1] = b
                return [part]
        parts: list[tuple[float, float]] = []
        cur = a
        for s, e in cover:
            if e <= cur:
                continue
            if s >= b:
                break
            if s > cur:
                parts.append((cur, s))
            cur = max(cur, e)
            if cur >= b:
                break
        if cur < b:
            parts.append((cur, b))
        merged: list[list[float]] = []
        for iv in sorted([*cover, [a, b]]):
            if merged and iv[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], iv[1])
            else:
                merged.append(list(iv))
        self.cover = merged[-COVER_KEPT:]
        return parts


def _rows(v: Any, n: int) -> list[list[Any]]:
    """The items of ``v`` that are lists of at least ``n`` values."""
    if not isinstance(v, list):
        return []
    return [r for r in v if isinstance(r, list) and len(r) >= n]


def blocker_lines(attr: Attribution, pool: str, top: int = 3) -> list[str]:
    """ "Who made them wait" for one pool, as text lines (for ``advise``): the routes
    and sites that held connections while others waited, most first."""
    routes = [b for b in attr.blame("route") if b.pool == pool][:top]
    if not routes:
        return []
    waited = attr.waited.get(pool, 0.0)
    lines = [f"{pool}: who made them wait (someone waited {waited:.1f}s in all):"]
    for b in routes:
        name = b.key or "(no route)"
        lines.append(f"    {b.share * 100:3.0f}%  {b.seconds:7.1f} conn-s held  {name}")
    sites = [b for b in attr.blame("site") if b.pool == pool][:top]
    if sites and sites[0].site is not None:
        lines.append(f"    top acquire site: #{sites[0].site} ({sites[0].share * 100:.0f}%)")
    lines.append("  (fix what those hold before adding connections: more only moves the wait)")
    return lines
