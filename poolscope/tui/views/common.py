"""What every view shares: alert thresholds, styles, the formatters, acquire-site
labels and the ``/`` filter. Pure functions over plain values; no Textual."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from poolscope.units import fmt_duration

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
