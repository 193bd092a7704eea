"""Event types of the poolscope wire protocol and their NDJSON codec.

Shared by both sides, so standard library only. Events are plain dicts (cheap to
build, to fold and to serialise); the constants below name the types and the
fields every type carries at least. ``docs/protocol.md`` is the user-facing
description and a test keeps the two in step.
"""

from __future__ import annotations

import json
import json.encoder as _json_encoder
import math
from collections.abc import Iterable, Iterator
from typing import Any

PROTOCOL_VERSION = 1

#: A line longer than this closes the connection that sent it.
MAX_LINE_BYTES = 1 << 20

Event = dict[str, Any]

# -- the hot-path records --------------------------------------------------------------
# An application's acquires and releases are most of what poolscope sees. They do not
# start as event dicts: a pool's handle (``poolscope.instrument.recorder``) appends one
# of these tuples on the application's thread, and the runtime's drain
# (``poolscope.instrument.drain``) unpacks it on the background thread, folds it
# (``PoolState.fold_acquire`` / ``fold_release``, the only fold of these events) and
# formats its line (``encode_acquire`` / ``encode_release`` below, the only encoding
# of them). The layout is written here once. Plain tuples, not NamedTuples: a
# NamedTuple's constructor costs ~270 ns more per record on the reference machine,
# a quarter of the whole per-pair budget.

#: ("acquire", perf_counter, pool, conn, wait, raw site, holder, labels): the raw
#: site is ``sites.capture``'s, the holder a thread ident or a task's (name, weak
#: reference) pair, named at the acquire (``naming.held_by``: a record must not keep
#: a finished task alive; a task itself is still accepted), the labels the
#: ``ps.tag()`` labels in effect (None without any).
AcquireRecord = tuple[str, float, str, Any, float, Any, Any, Any]
ACQUIRE_RECORD_FIELDS = ("type", "mono", "pool", "conn", "wait", "site", "holder", "labels")
#: ("release", perf_counter, pool, conn, hold): ``hold`` None when the pool does not
#: time its holds itself (the drain takes it from the holder's acquire).
ReleaseRecord = tuple[str, float, str, Any, "float | None"]
RELEASE_RECORD_FIELDS = ("type", "mono", "pool", "conn", "hold")

# type -> fields it carries at least (besides ``type`` and ``t``; ``pool`` where it
# concerns a pool).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "hello": ("protocol", "pid", "process", "version"),
    "sync": ("state",),
    "pool": ("pool", "kind", "config", "target"),
    "state": ("pool", "size", "idle", "in_use", "waiting", "max", "min"),
    "acquire": ("pool", "conn", "wait", "site"),
    "timeout": ("pool", "wait", "error"),
    "release": ("pool", "conn", "hold"),
    "connect": ("pool", "conn", "duration"),
    "connect_error": ("pool", "error"),
    "close": ("pool", "conn", "reason", "age"),
    "heartbeat": ("pool", "conn", "ok", "latency", "error"),
    "leak": ("pool", "conn", "held", "stack", "task"),
    "unleak": ("pool", "conn", "held", "stack", "task"),
    "dropped": ("count",),
    "acquire_error": ("pool", "error"),
    # Extensions beyond the DESIGN table.
    "site": ("id", "stack"),
    "tags": ("id", "labels"),
    "backend_pid": ("pool", "conn", "backend_pid"),
    "backend": ("pool", "state", "previous"),
    "breaker": ("pool", "state"),
    "resize": ("pool", "max", "previous", "reason"),
    "reclaim": ("pool", "conn", "held"),
    "adopt": ("pool", "conn", "task", "since"),
    "error": ("error",),
    "bye": (),
}

EVENT_TYPES = frozenset(REQUIRED_FIELDS)

#: Close reasons used by poolscope's own pool and adapters. Adapters may add more.
CLOSE_REASONS = (
    "idle_timeout",
    "lifetime",
    "invalid",
    "lost",
    "overflow",
    "closed",
    "gc_leak",
    "reclaimed",
    "reset_failed",
    "max_idle",
    "abandoned",
)


class DecodeError(ValueError):
    """A line that is not a valid poolscope event."""


def _jsonable(value: Any) -> Any:
    # JSON has no NaN or infinity; a probe that never answered is reported as None.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# Built once: ``json.dumps`` with keyword arguments constructs an encoder per call,
# which cost several times the encoding itself on the stream's per-event path. The C
# encoder without a circular-reference check is stateless, so one serves all threads.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable)
_c_make_encoder: Any = getattr(_json_encoder, "c_make_encoder", None)
_c_encode: Any = (
    _c_make_encoder(
        None, _jsonable, _json_encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if _c_make_encoder is not None
    else None
)


def _dumps(value: Any) -> str:
    if _c_encode is None:
        return _ENCODER.encode(value)
    return "".join(_c_encode(value, 0))


_ACQUIRE_KEYS = ("type", "t", "pool", "conn", "wait", "site", "task")
_ACQUIRE_TAGS_KEYS = (*_ACQUIRE_KEYS, "tags")
_RELEASE_KEYS = ("type", "t", "pool", "conn", "hold")


def encode(event: Event) -> bytes:
    """One event as one NDJSON line (with its newline).

    An acquire or a release with exactly its usual fields is written by
    ``encode_acquire`` / ``encode_release``: one encoding of those lines, wherever
    the event comes from."""
    etype = event.get("type")
    if etype == "acquire" or etype == "release":
        keys = tuple(event)
        if keys == _RELEASE_KEYS:
            return encode_release(event["t"], event["pool"], event["conn"], event["hold"])
        if keys == _ACQUIRE_KEYS or (keys == _ACQUIRE_TAGS_KEYS and event["tags"] is not None):
            e = event
            return encode_acquire(
                e["t"], e["pool"], e["conn"], e["wait"], e["site"], e["task"], e.get("tags")
            )
    return _encode_dict(event)


def _encode_dict(event: Event) -> bytes:
    """Any event through the JSON encoder."""
    try:
        text = _dumps(event)
    except ValueError:
        text = json.dumps(_scrub(event), separators=(",", ":"), default=_jsonable)
    return text.encode("utf-8") + b"\n"


# -- fast lines for the two hot event types -------------------------------------------
# The application's own acquires and releases are most of the stream. Their lines are
# formatted from a template instead of a dict walk: byte for byte what ``encode`` makes
# of ``{"type", "t", "pool", "conn", "wait", "site", "task"}`` / ``{"type", "t",
# "pool", "conn", "hold"}`` (same keys, order, separators, ASCII escaping, float repr),
# about twice as fast. Anything unusual (a non-float or non-finite number, a non-int
# site) goes through the JSON encoder.
_ACQUIRE_LINE = '{"type":"acquire","t":%r,"pool":%s,"conn":%s,"wait":%r,"site":%s,"task":%s}\n'
_ACQUIRE_TAGS_LINE = _ACQUIRE_LINE[:-2] + ',"tags":%T}\n'
_RELEASE_LINE = '{"type":"release","t":%r,"pool":%s,"conn":%s,"hold":%r}\n'
_INF = math.inf
_escape: Any = getattr(_json_encoder, "c_encode_basestring_ascii", None) or (
    _json_encoder.py_encode_basestring_ascii
)
#: JSON-escaped strings (pool names, connection ids, task names) seen lately; cleared
#: when full, so it stays bounded whatever the application names things.
_escaped: dict[str, str] = {}
_ESCAPED_MAX = 4096


def _quoted(s: str) -> str:
    q = _escaped.get(s)
    if q is None:
        if len(_escaped) >= _ESCAPED_MAX:
            _escaped.clear()
        q = _escaped[s] = _escape(s)
    return q


def encode_acquire(
    t: float,
    pool: str,
    conn: str,
    wait: float,
    site: int | None,
    task: str,
    tags: int | None = None,
) -> bytes:
    """``encode`` of an ``acquire`` event with exactly these fields, faster (``tags``,
    the interned labels' id, is written only when there are labels)."""
    if (
        type(t) is float
        and type(wait) is float
        and -_INF < t < _INF
        and -_INF < wait < _INF
        and (site is None or type(site) is int)
        and type(pool) is str
        and type(conn) is str
        and type(task) is str
        and (tags is None or type(tags) is int)
    ):
        q = _escaped.get
        return (
            (_ACQUIRE_LINE if tags is None else _ACQUIRE_TAGS_LINE.replace("%T", str(tags)))
            % (
                t,
                q(pool) or _quoted(pool),
                q(conn) or _quoted(conn),
                wait,
                "null" if site is None else site,
                q(task) or _quoted(task),
            )
        ).encode()
    ev = {"type": "acquire", "t": t, "pool": pool, "conn": conn, "wait": wait, "site": site}
    ev["task"] = task
    if tags is not None:
        ev["tags"] = tags
    return _encode_dict(ev)


def encode_release(t: float, pool: str, conn: str, hold: float) -> bytes:
    """``encode`` of a ``release`` event with exactly these fields, faster."""
    if (
        type(t) is float
        and type(hold) is float
        and -_INF < t < _INF
        and -_INF < hold < _INF
        and type(pool) is str
        and type(conn) is str
    ):
        q = _escaped.get
        return (
            _RELEASE_LINE % (t, q(pool) or _quoted(pool), q(conn) or _quoted(conn), hold)
        ).encode()
    return _encode_dict({"type": "release", "t": t, "pool": pool, "conn": conn, "hold": hold})


def _scrub(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


#: Sane wall-clock times: from the epoch up to the year 2286. A ``t`` outside is
#: a crafted or corrupted line, and would make span-sized structures absurd.
T_MIN = 0.0
T_MAX = 1e10
#: Fields that are durations (seconds): finite, non-negative, at most ~31 years.
DURATION_FIELDS = frozenset({"wait", "hold", "held", "latency", "duration", "age"})
MAX_DURATION = 1e9
#: Integers beyond 64 bits are absurd anywhere in an event (and overflow float()).
MAX_INT = 1 << 63
#: Nesting deeper than this is refused before the walk below recurses into it.
MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    # json accepts NaN, Infinity and -Infinity; none is a time, count or duration.
    raise DecodeError(f"non-finite number {name}")


#: One decoder for every line (``json.loads`` with keyword arguments builds one per
#: call, which cost more than the parse).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _absurd(value: dict[str, Any] | list[Any], depth: int = 0) -> str:
    """Why a decoded object or array holds a number no event may carry ("" if none)."""
    if depth > MAX_DEPTH:
        return "nested too deeply"
    # ``type() is`` rather than isinstance: this runs for every line of every stream,
    # and bool (an int subclass) is never out of range.
    items: Iterable[Any] = value.values() if type(value) is dict else value
    for v in items:
        tv = type(v)
        if tv is float:
            if not -_INF < v < _INF:
                return "non-finite number"
        elif tv is int:
            if not -MAX_INT < v < MAX_INT:
                return "integer out of range"
        elif tv is dict or tv is list:
            why = _absurd(v, depth + 1)
            if why:
                return why
    return ""


def decode(line: bytes | str) -> Event:
    """Parse one NDJSON line into an event, or raise :class:`DecodeError`.

    Checks the shape (an object with a string ``type`` and a numeric ``t``) but
    not the fields of the type: unknown types are the caller's to skip, so that
    an older observer keeps working against a newer application. Numbers no
    event may carry are refused here, once, for every reader: NaN and infinities
    (also ``1e999``), integers beyond 64 bits, a ``t`` outside
    [:data:`T_MIN`, :data:`T_MAX`], and durations (:data:`DURATION_FIELDS`)
    that are negative or above :data:`MAX_DURATION`.
    """
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise DecodeError(f"line of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc.reason}") from None
    try:
        obj = _DECODER.decode(line)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"not an object but {type(obj).__name__}")
    etype = obj.get("type")
    if not isinstance(etype, str):
        raise DecodeError("missing string field 'type'")
    t = obj.get("t")
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise DecodeError(f"{etype}: missing numeric field 't'")
    why = _absurd(obj)
    if why:
        raise DecodeError(f"{etype[:40]}: {why}")
    if not T_MIN <= t <= T_MAX:
        raise DecodeError(f"{etype[:40]}: t={t:g} outside [{T_MIN:g}, {T_MAX:g}]")
    for key in DURATION_FIELDS.intersection(obj):
        d = obj[key]
        if isinstance(d, (int, float)) and not isinstance(d, bool) and not 0.0 <= d <= MAX_DURATION:
            raise DecodeError(f"{etype[:40]}: {key}={d:g} is not a duration")
    return obj


def is_valid(event: Event) -> bool:
    """True when the event is of a known type and has that type's required fields."""
    fields = REQUIRED_FIELDS.get(event.get("type", ""))
    return fields is not None and all(f in event for f in fields)


def iter_lines(lines: Iterable[bytes | str]) -> Iterator[Event]:
    """Decode lines, skipping blank and malformed ones."""
    for line in lines:
        if not line.strip():
            continue
        try:
            yield decode(line)
        except DecodeError:
            continue


def make(etype: str, t: float, **fields: Any) -> Event:
    """Build an event dict; ``type`` and ``t`` first, as on the wire."""
    event: Event = {"type": etype, "t": t}
    event.update(fields)
    return event
