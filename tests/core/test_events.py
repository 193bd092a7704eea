"""The NDJSON codec, and docs/protocol.md kept in step with poolscope/events.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from poolscope.events import (
    EVENT_TYPES,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    REQUIRED_FIELDS,
    DecodeError,
    decode,
    encode,
    is_valid,
    iter_lines,
    make,
)

pytestmark = pytest.mark.fast  # no PostgreSQL, servers or subprocesses

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_SECTION = re.compile(r"^### `([a-z_]+)`\n(.*?)(?=^### |^## |\Z)", re.M | re.S)
_EXAMPLE = re.compile(r"```json\n(.*?)\n```", re.S)


def _sections() -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _SECTION.finditer(DOC.read_text("utf-8"))}


def test_doc_states_the_current_protocol_version() -> None:
    text = DOC.read_text("utf-8")
    assert f"# The poolscope wire protocol, version {PROTOCOL_VERSION}\n" in text
    assert "1 MiB" in text and MAX_LINE_BYTES == 1 << 20
    assert '{"type":"auth","token":' in text


def test_every_event_type_is_documented_and_nothing_else() -> None:
    assert set(_sections()) == set(EVENT_TYPES)


@pytest.mark.parametrize("etype", sorted(REQUIRED_FIELDS))
def test_each_type_has_a_field_table_and_one_valid_example(etype: str) -> None:
    body = _sections()[etype]
    examples = _EXAMPLE.findall(body)
    assert len(examples) == 1, f"{etype}: expected exactly one example line"
    line = examples[0]
    assert "\n" not in line, f"{etype}: the example must be one NDJSON line"
    ev = decode(line.encode())
    assert ev["type"] == etype
    assert is_valid(ev), f"{etype}: example lacks {REQUIRED_FIELDS[etype]}"
    # Every required field is described in the section's field table.
    for f in REQUIRED_FIELDS[etype]:
        if f == "pool":
            continue  # described once, under common fields
        assert f"| `{f}` |" in body, f"{etype}: field {f!r} is not described"
    # Examples come as the wire writes them: type and t first, compact.
    assert list(ev)[:2] == ["type", "t"]
    assert encode(ev).decode().rstrip("\n") == line


def test_encode_is_one_compact_line_and_round_trips() -> None:
    ev = make("acquire", 1.5, pool="p", conn="1", wait=0.25, site=None, task="T-1")
    line = encode(ev)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b" " not in line.replace(b"T-1", b"")
    assert decode(line) == ev
    assert decode(line.decode()) == ev


def test_encode_never_writes_nan_or_infinity() -> None:
    line = encode(make("heartbeat", 2.0, pool="p", conn="1", ok=False, latency=math.nan,
                       error=None, extra=[math.inf, {"x": -math.inf}]))  # fmt: skip
    obj = json.loads(line)  # strict JSON parsers must accept it
    assert obj["latency"] is None and obj["extra"] == [None, {"x": None}]
    assert b"NaN" not in line and b"Infinity" not in line


def test_encode_stringifies_what_json_cannot_hold() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    assert decode(encode(make("error", 1.0, error=Opaque())))["error"] == "opaque!"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"t": 1}', "type"),
        (b'{"type": 3, "t": 1}', "type"),
        (b'{"type": "state"}', "'t'"),
        (b'{"type": "state", "t": "now"}', "'t'"),
        (b'{"type": "state", "t": true}', "'t'"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_decode_rejects_malformed_lines(line: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(why)):
        decode(line)


def test_decode_rejects_a_line_over_one_mib() -> None:
    big = b'{"type":"error","t":1,"error":"' + b"x" * MAX_LINE_BYTES + b'"}'
    with pytest.raises(DecodeError, match="exceeds"):
        decode(big)
    ok = b'{"type":"error","t":1,"error":"' + b"x" * (MAX_LINE_BYTES - 40) + b'"}'
    assert decode(ok)["type"] == "error"


def test_unknown_types_decode_but_are_not_valid() -> None:
    ev = decode(b'{"type":"from_the_future","t":1,"new":true}')
    assert ev["new"] is True
    assert not is_valid(ev)
    assert not is_valid({"type": "acquire", "t": 1, "pool": "p"})  # fields missing
    assert is_valid({"type": "bye", "t": 1})


def test_iter_lines_skips_blank_and_malformed() -> None:
    lines = [b'{"type":"bye","t":1}\n', b"\n", b"garbage\n", "  \n", '{"type":"bye","t":2}']
    assert [e["t"] for e in iter_lines(lines)] == [1, 2]
