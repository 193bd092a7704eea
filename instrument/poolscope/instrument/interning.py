"""Acquire sites and ``ps.tag()`` label sets, interned to small ids for the stream.

An acquire carries the id; the first time one is seen a ``site`` or ``tags`` event
describing it is queued (in ``pending``), and the drain sends it before the acquire
that needs it. Both tables are bounded: past the limit an acquire carries no id.
"""

from __future__ import annotations

import time
from typing import Any

from poolscope.events import Event
from poolscope.records import MAX_SITES

from . import errors
from .naming import format_site

MAX_TAGS = 10_000


class Interner:
    """Site and label ids of one runtime (the background thread's alone)."""

    def __init__(self) -> None:
        self.site_ids: dict[Any, int] = {}
        self.tag_ids: dict[tuple[tuple[str, str], ...], int] = {}
        #: ``site``/``tags`` events made and not yet folded.
        self.pending: list[Event] = []

    def site_id(self, raw: Any) -> int | None:
        if not raw:
            return None
        sid = self.site_ids.get(raw)
        if sid is None:
            if len(self.site_ids) >= MAX_SITES:
                return None
            sid = self.site_ids[raw] = len(self.site_ids) + 1
            stack = format_site(raw)
            self.pending.append({"type": "site", "t": time.time(), "id": sid, "stack": stack})
        return sid

    def tags_id(self, labels: Any) -> int | None:
        """The id of the labels in effect at an acquire (a ``tags`` event for new ones)."""
        try:
            pairs = labels.items()
        except Exception as exc:
            errors.report("tags", exc)
            return None
        if not pairs:
            return None
        tid = self.tag_ids.get(pairs)
        if tid is None:
            if len(self.tag_ids) >= MAX_TAGS:
                return None
            tid = self.tag_ids[pairs] = len(self.tag_ids) + 1
            self.pending.append(
                {"type": "tags", "t": time.time(), "id": tid, "labels": dict(pairs)}
            )
        return tid
