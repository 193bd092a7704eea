"""The one boundary between untrusted text and the operator's terminal.

Everything an application sends (pool, process, task and thread names, error
texts, stack files, functions and source lines, discovery entries) is made
visible here before anything shows it: C0 and C1 controls, ESC, DEL, the bidi
marks, embeddings, overrides and isolates, the Unicode line and paragraph
separators and lone surrogates become escapes such as ``\\x1b`` or ``\\u202e``.
So an OSC 52 or ``ESC[2J`` in a task name is drawn as text instead of setting
the clipboard or wiping the screen, and a right-to-left override cannot make a
name read backwards. Rich markup needs nothing here: poolscope builds
``rich.text.Text`` objects, which never interpret ``[bold]`` or ``[@click=...]``.

The stream readers in :mod:`poolscope.client` call :func:`safe_event` on every
decoded line; the command line passes what it prints through :func:`visible`.
A clean line (nearly all of them) costs one regex search over its raw bytes.
"""

from __future__ import annotations

import re
from typing import Any

#: Characters never shown as they are: C0 (tab and newline too: one value stays on
#: one line), DEL and C1, the Arabic letter mark, LRM/RLM, the line and paragraph
#: separators, LRE/RLE/PDF/LRO/RLO, the isolates LRI/RLI/FSI/PDI, and surrogates
#: (only lone ones survive JSON decoding; a terminal cannot encode them).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)

#: A raw NDJSON line that may hold one of those once decoded: the character itself
#: in UTF-8 (JSON strings may carry DEL, C1 and the bidi characters raw; raw C0 is
#: not valid JSON inside a string) or a ``\\u`` escape of one of their ranges;
#: JSON's short escapes ``\\b \\f \\n \\r \\t`` are controls too. False positives
#: (``\\u00e9``, an emoji's surrogate pair) only cost a walk of the event.
_SUSPECT_LINE = re.compile(
    rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
    rb"|\\[bfnrt]|\\u(?:00[0-9a-f]{2}|061c|20[0-6][0-9a-f]|d[89a-f])",
    re.IGNORECASE,
)


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every unsafe character replaced by a visible escape."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


def is_visible(text: str) -> bool:
    """True when ``text`` needs no escaping."""
    return _UNSAFE.search(text) is None


def clean(value: Any) -> Any:
    """A decoded JSON value with every string in it (keys too) made visible.

    Returns the same object when nothing needed escaping. Nesting is as deep as
    the JSON decoder allowed; deeper input raises ``RecursionError``, which the
    readers count as a bad line.
    """
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {(visible(k) if isinstance(k, str) else k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def line_may_need_cleaning(line: bytes) -> bool:
    """The cheap test: False guarantees the decoded line holds no unsafe character."""
    # Most lines are ASCII with no escape at all: two scans in C, no regex.
    if line.isascii() and b"\\" not in line and b"\x7f" not in line:
        return False
    return _SUSPECT_LINE.search(line) is not None


def safe_event(event: dict[str, Any], line: bytes | None = None) -> dict[str, Any]:
    """``event`` (decoded from ``line``) with all of its text safe to display.

    With the raw ``line`` the walk happens only when the line may need it.
    """
    if line is not None and not line_may_need_cleaning(line):
        return event
    cleaned: dict[str, Any] = clean(event)
    return cleaned
