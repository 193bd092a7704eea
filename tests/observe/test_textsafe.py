"""The sanitizing boundary (poolscope.textsafe) on its own, and in the stream readers."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from poolscope.client import FileFeed
from poolscope.events import decode, encode
from poolscope.textsafe import clean, is_visible, line_may_need_cleaning, safe_event, visible

pytestmark = [pytest.mark.fast, pytest.mark.security]

# Everything the boundary promises to make visible.
UNSAFE = (
    [chr(c) for c in range(0x20)]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\ud800", "\udfff"]
)


def unsafe_in(value: Any) -> list[str]:
    """Every unsafe character in any string (or key) of a decoded value."""
    if isinstance(value, str):
        return [ch for ch in value if ch in UNSAFE_SET]
    if isinstance(value, dict):
        return [c for k, v in value.items() for c in unsafe_in(k) + unsafe_in(v)]
    if isinstance(value, list):
        return [c for v in value for c in unsafe_in(v)]
    return []


UNSAFE_SET = frozenset(UNSAFE)


def test_visible_escapes_each_unsafe_character() -> None:
    assert visible("a\x1b]52;c;SGk=\x07b") == r"a\x1b]52;c;SGk=\x07b"
    assert visible("\x1b[2J") == r"\x1b[2J"
    assert visible("\x9b2J\x7f") == r"\x9b2J\x7f"
    assert visible("x\u202eevil\u2066\u2069") == r"x\u202eevil\u2066\u2069"
    assert visible("line\nbreak\ttab\r") == r"line\nbreak\ttab\r"
    assert visible("\u2028\u2029\u200e\u200f\u061c") == r"\u2028\u2029\u200e\u200f\u061c"
    assert visible("\ud83d") == r"\ud83d"  # a lone surrogate no terminal could encode
    for ch in UNSAFE:
        out = visible(ch)
        assert out.startswith("\\") and is_visible(out), repr(ch)


def test_safe_text_is_left_alone() -> None:
    for s in ("orders", "Task-12", "µs é 中文 😀", "C:\\path\\x1b", "[bold]x[/bold]", ""):
        assert visible(s) is s
        assert is_visible(s)


def test_markup_stays_literal_in_rich_text() -> None:
    """poolscope draws Text objects: markup and @click actions are never interpreted."""
    console = Console(width=200, record=True, color_system=None)
    raw = "[bold]B[/bold][@click=app.quit]Q[/] [link=http://x]L[/link]"
    console.print(Text(visible(raw)))
    assert console.export_text().strip() == raw


def test_clean_walks_keys_values_and_lists() -> None:
    ev = {"type": "x", "t": 1.0, "k\x1b": ["a\x9b", {"b": "\u202e", "n": 5}], "f": 1.5}
    out = clean(ev)
    assert out == {"type": "x", "t": 1.0, "k\\x1b": ["a\\x9b", {"b": "\\u202e", "n": 5}], "f": 1.5}
    assert clean(ev["f"]) == 1.5 and clean(None) is None and clean(True) is True


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=6),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner),
            max_leaves=12,
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_no_unsafe_character_survives_the_reader_path(obj: dict[str, Any], ascii_: bool) -> None:
    """What the readers do to each line (decode, then safe_event with the raw bytes):
    whatever the strings hold and however the line escapes them, nothing unsafe is
    left, and a line the cheap test passes really held nothing unsafe."""
    event = {"type": "acquire", "t": 1.0, **obj}
    line = json.dumps(event, ensure_ascii=ascii_).encode("utf-8", "surrogatepass") + b"\n"
    try:
        decoded = decode(line)
    except Exception:
        return  # lone surrogates raw in UTF-8 are not a valid line at all
    out = safe_event(decoded, line)
    assert unsafe_in(out) == []
    if not line_may_need_cleaning(line):
        assert out is decoded and unsafe_in(decoded) == []


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_visible_is_idempotent_and_loses_nothing(s: str) -> None:
    out = visible(s)
    assert is_visible(out) and visible(out) == out
    if "\\" not in s:  # without backslashes of its own, the escapes read back exactly
        short = {"t": "\t", "n": "\n", "r": "\r"}
        back = re.sub(
            r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|\\([tnr])",
            lambda m: short[m.group(3)] if m.group(3) else chr(int(m.group(1) or m.group(2), 16)),
            out,
        )
        assert back == s


def test_unicode_categories_of_what_is_escaped() -> None:
    # Every C0/C1 control and every bidi formatting character is in the set.
    for c in range(0x10000):
        ch = chr(c)
        if unicodedata.category(ch) == "Cc" or unicodedata.bidirectional(ch) in (
            "LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI",
        ):  # fmt: skip
            assert not is_visible(ch), hex(c)


def test_the_encoder_output_of_the_app_is_caught_by_the_cheap_test() -> None:
    """poolscope's own encoder escapes non-ASCII (\\u...): every unsafe character it
    can produce makes the line take the walk."""
    for ch in UNSAFE:
        line = encode({"type": "acquire", "t": 1.0, "task": f"a{ch}b"})
        assert line_may_need_cleaning(line), repr(ch)
    assert not line_may_need_cleaning(encode({"type": "acquire", "t": 1.0, "task": "Task-1"}))


def test_file_feed_sanitizes_every_event(tmp_path: Path) -> None:
    rec = tmp_path / "r.ndjson"
    lines = [
        json.dumps({"type": "pool", "t": 1.0, "pool": "p\x1b[2J", "kind": "k", "target": "t",
                    "config": {}}),
        json.dumps({"type": "acquire", "t": 2.0, "pool": "p\x1b[2J", "conn": "1",
                    "wait": 0.0, "site": None, "task": "\u202etask"}, ensure_ascii=False),
        json.dumps({"type": "x\x1b", "t": 3.0}),  # an unknown type
    ]  # fmt: skip
    rec.write_text("\n".join(lines) + "\n")
    events = list(FileFeed(rec))
    assert [e.get("pool") for e in events[:2]] == ["p\\x1b[2J", "p\\x1b[2J"]
    assert events[1]["task"] == "\\u202etask"
    assert events[2]["type"] == "x\\x1b"


def test_file_feed_stop_reason_is_visible(tmp_path: Path) -> None:
    """The reason reading stopped quotes the stream (an event type) and is shown."""
    rec = tmp_path / "r.ndjson"
    rec.write_bytes(b'{"type":"a\\u001b[2J","t":"x"}')  # truncated: no newline
    feed = FileFeed(rec)
    assert list(feed) == []
    assert "\x1b" not in feed.stopped and "\\x1b[2J" in feed.stopped


def test_deep_nesting_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    rec = tmp_path / "r.ndjson"
    depth = sys.getrecursionlimit() - 50
    deep = '{"type":"x","t":1,"v":' + "[" * depth + '"\\u001b"' + "]" * depth + "}\n"
    rec.write_text(deep + '{"type":"bye","t":2}\n')
    feed = FileFeed(rec)
    events = list(feed)
    assert events[-1]["type"] == "bye"
    assert all(unsafe_in(e) == [] for e in events)
