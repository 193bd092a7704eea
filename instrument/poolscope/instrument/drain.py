"""The drain: the recorder's items, oldest first, folded into the model and made
into the lines observers are sent.

This is the second half of an acquire's path (the first is the pool's handle in
:mod:`.recorder`, on the application's thread). For each hot-path record
(:data:`poolscope.events.AcquireRecord` / ``ReleaseRecord``), in order:

1. the monotonic time becomes wall time; the raw acquire site and the ``ps.tag()``
   labels are interned to ids (:mod:`.interning`: a new one queues its ``site`` or
   ``tags`` event, sent before the acquire); the holder is named (:mod:`.naming`);
2. the model folds it (``PoolState.fold_acquire`` / ``fold_ended``): its counters,
   histograms and the open hold, which the leak watch (:mod:`.leakwatch`) reads;
3. only when an observer is connected, its NDJSON line is formatted
   (``encode_acquire`` / ``encode_release``); only when a tap listens, its dict.

Anything else the recorder holds is a rarer event's dict (connects, closes, state,
...): checked, completed from the open hold where it concerns one, redacted, then
folded with ``PoolState.apply`` and encoded with ``encode``. The runtime's tick
(:mod:`.runtime`) calls :meth:`Drain.run`, then hands the lines to the stream server.
"""

from __future__ import annotations

from typing import Any

from poolscope import events as _events
from poolscope.events import Event, encode, encode_acquire, encode_release
from poolscope.fold import PoolState

from . import accel, errors, leakwatch
from .interning import Interner
from .naming import holder_name, redacted_name, request_name


class Drain:
    """Folds batches of recorder items into one model (the background thread's)."""

    def __init__(self, model: PoolState) -> None:
        self.model = model
        self.interner = Interner()
        self._fast: Any = None
        self._fast_for: tuple[Any, ...] = ()

    def _folder(self) -> Any:
        """The C fold of the usual records, for the model as it is now (a sync may have
        replaced its pools or attribution), or None without the accelerator."""
        if encode_acquire is not _events.encode_acquire or encode_release is not (
            _events.encode_release
        ):  # replaced here (a wrapper, an injected fault): the Python loop calls it
            return None
        m = self.model
        a = m.attribution
        key = (m.pools, a, a._pools)
        if self._fast is None or any(x is not y for x, y in zip(key, self._fast_for, strict=False)):
            self._fast = accel.make_folder(m, self.interner)
            self._fast_for = key
        return self._fast

    def _normalise(self, item: Any, offset: float) -> Event | None:
        """A non-hot event (a dict from ``PoolHandle.event`` or the runtime), checked."""
        if not isinstance(item, dict):
            return None
        etype = item.get("type")
        if etype == "leak" and "stack" not in item:
            leakwatch.complete(self.model, item)
        elif etype == "close":
            release = leakwatch.lost_release(self.model, item, offset)
            if release is not None:  # folded just before the close
                self.interner.pending.append(release)
        # Last line of defence for secrets: a driver's message may quote the DSN (and
        # a task name, in events such as ``adopt``, a request's query string).
        for key in ("error", "target", "task"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = errors.redact(value)
        return item

    def run(
        self,
        items: list[Any],
        first: list[Event],
        offset: float,
        want_lines: bool,
        want_events: bool,
    ) -> tuple[list[bytes], list[Event]]:
        """Fold ``first`` (the runtime's own events), then ``items``; return the lines
        for observers (if ``want_lines``) and the events as dicts (if ``want_events``).

        ``offset`` is wall time minus ``perf_counter`` now: hot-path records carry the
        latter (one clock read on the application's thread, and a monotonic one)."""
        lines: list[bytes] = []
        events: list[Event] = []
        model = self.model
        pools = model.pools
        new_pool = model.pool
        fold_acquire = model.fold_acquire
        fold_ended = model.fold_ended
        pending = self.interner.pending
        site_id = self.interner.site_id
        tags_id = self.interner.tags_id
        # Fast events not yet counted by the model: counted in one go before any
        # generic ``apply`` (so its clock never runs behind an event it folds) and at
        # the end.
        n_fast = 0
        t_first = t_last = 0.0
        names: dict[int, tuple[str, Any]] = {}

        def generic(batch: list[Event]) -> None:
            nonlocal n_fast
            if n_fast:
                model.advance_many(n_fast, t_first, t_last)
                n_fast = 0
            for ev in batch:
                try:
                    model.apply(ev)
                except Exception as exc:
                    errors.report("fold", exc)
                if want_lines:
                    try:
                        lines.append(encode(ev))
                    except Exception as exc:
                        errors.report("encode", exc)
            if want_events:
                events.extend(batch)

        if first:
            generic(first)
        folder = self._folder()
        i, n_items = 0, len(items)
        while i < n_items:
            if folder is not None and not pending:
                # The C fold (accel.py) takes the usual records from i on, and stops at
                # the first it leaves to the loop body below: its reference.
                i, n, tf, tl = folder.run(
                    items,
                    i,
                    offset,
                    names,
                    lines if want_lines else None,
                    events if want_events else None,
                )
                if n:
                    if not n_fast:
                        t_first = tf
                    n_fast += n
                    if tl > t_last:
                        t_last = tl
                if i >= n_items:
                    break
            item = items[i]
            i += 1
            try:
                if type(item) is not tuple:
                    ev = self._normalise(item, offset)
                    if pending:
                        generic(pending)
                        pending.clear()
                    if ev is not None:
                        generic([ev])
                    continue
                kind = item[0]
                if kind == "acquire":
                    _, mono, pool, conn, wait, raw_site, holder, labels = item
                    t = mono + offset
                    site = site_id(raw_site) if raw_site else None
                    # Before the holder's name: a request's labels may rename its task.
                    tid = tags_id(labels) if labels is not None else None
                    # A task or thread that acquires again in the batch is named once
                    # (the batch holds it, so its id is not reused meanwhile). A thread
                    # is a fresh int per acquire: keyed by its ident, negated so it is
                    # no object's id.
                    named: tuple[str, Any] | None
                    if type(holder) is tuple:  # named at the acquire (naming.held_by)
                        named = holder
                    else:
                        key = -holder if type(holder) is int else id(holder)
                        named = names.get(key)
                        if named is None:
                            named = names[key] = holder_name(holder)
                    task, ref = named
                    if tid is not None:  # a web request's holder is named after it
                        task = request_name(labels) or task
                    task = redacted_name(task)
                    c = conn if type(conn) is str else str(conn)
                    if pending:  # a new site's ``site`` event goes before its acquire
                        generic(pending)
                        pending.clear()
                    try:
                        fold_acquire(pool, c, t, wait, site, task, tid, mono, raw_site, ref)
                    except Exception as exc:
                        errors.report("fold", exc)
                    if not n_fast:
                        t_first = t
                    n_fast += 1
                    if t > t_last:
                        t_last = t
                    if want_lines:
                        try:
                            lines.append(encode_acquire(t, pool, c, wait, site, task, tid))
                        except Exception as exc:
                            errors.report("encode", exc)
                    if want_events:
                        ev = {"type": "acquire", "t": t, "pool": pool, "conn": c, "wait": wait}
                        ev.update(site=site, task=task)
                        if tid is not None:
                            ev["tags"] = tid
                        events.append(ev)
                elif kind == "release":
                    _, mono, pool, conn, hold = item
                    t = mono + offset
                    c = conn if type(conn) is str else str(conn)
                    p = pools.get(pool) or new_pool(pool)
                    h = p.holders.pop(c, None)
                    if hold is None:
                        hold = mono - h.mono if h is not None and h.mono else 0.0
                    if h is not None and h.leak_reported:
                        # Given back after all: the leak ends first, then the hold.
                        generic([leakwatch.unleak(pool, h, t, hold)])
                    try:
                        fold_ended(p, h, t, hold)
                    except Exception as exc:
                        errors.report("fold", exc)
                    if not n_fast:
                        t_first = t
                    n_fast += 1
                    if t > t_last:
                        t_last = t
                    if want_lines:
                        try:
                            lines.append(encode_release(t, pool, c, hold))
                        except Exception as exc:
                            errors.report("encode", exc)
                    if want_events:
                        events.append(
                            {"type": "release", "t": t, "pool": pool, "conn": c, "hold": hold}
                        )
            except Exception as exc:
                errors.report("normalise", exc)
        if pending:
            generic(pending)
            pending.clear()
        if n_fast:
            model.advance_many(n_fast, t_first, t_last)
        model.settle()  # the batch's waits and holds into the histograms, in one go
        return lines, events
