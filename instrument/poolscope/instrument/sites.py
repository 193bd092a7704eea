"""Acquire-site capture: cheap at acquire time, formatted only when needed.

At acquire time we keep a flat tuple ``(code, lasti, code, lasti, ...)`` of the
application's frames (the first frame outside poolscope and the pool libraries,
and its callers). Turning that into file, line, function and source text happens
on the background thread, once per distinct site.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import threading
from types import CodeType, FrameType
from typing import Any

from .redact import redact

# Frames from these directories are the pool's machinery, not the application's.
_INTERNAL_DIRS: list[str] = []


def _module_dir(name: str) -> str | None:
    mod = sys.modules.get(name)
    file = getattr(mod, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) + os.sep if file else None


def _init_internal_dirs() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    _INTERNAL_DIRS.append(here + os.sep)
    pkg = os.path.dirname(os.path.realpath(os.path.join(here, "..", "poolscope", "__init__.py")))
    _INTERNAL_DIRS.append(pkg + os.sep)
    stdlib = sysconfig.get_paths().get("stdlib")
    if stdlib:
        for sub in ("asyncio", "contextlib.py", "threading.py", "concurrent"):
            _INTERNAL_DIRS.append(os.path.join(stdlib, sub))


_init_internal_dirs()
_getframe = sys._getframe

# Libraries whose frames are skipped once they are imported; checked lazily because
# they may be imported after poolscope.
_LIBRARIES = ("asyncpg", "sqlalchemy", "psycopg", "psycopg_pool", "poolscope")
_internal_cache: dict[CodeType, bool] = {}
_APP_MARK = os.sep + os.path.join("poolscope", "demo") + os.sep


# Code objects seen at acquire sites, interned to small ints. Hashing a code object
# hashes its bytecode, names and constants on every call (0.2-1 us each), so both the
# capture walk and the runtime's site-id lookup of a raw site tuple got slower with
# every frame; ids and int tuples cost next to nothing. ``_codes`` keeps each code
# alive, so its ``id()`` stays unique; past ``MAX_CODES`` (code generated at run
# time, say) frames are kept as index -1 and print as unknown.
MAX_CODES = 100_000
_code_index: dict[int, int] = {}  # id(code) -> index into _codes
_codes: list[CodeType] = []
_code_internal: list[bool] = []  # index -> frame is pool machinery
_intern_lock = threading.Lock()


def _intern(code: CodeType) -> int:
    with _intern_lock:
        i = _code_index.get(id(code))
        if i is not None:
            return i
        if len(_codes) >= MAX_CODES:
            return -1
        internal = _is_internal(code)
        # Publish the index last: readers index the lists only after finding it.
        _codes.append(code)
        _code_internal.append(internal)
        i = _code_index[id(code)] = len(_codes) - 1
        return i


def add_internal_dir(path: str) -> None:
    """Treat frames from ``path`` as pool machinery (for extra adapters and tests)."""
    _INTERNAL_DIRS.append(os.path.abspath(path))
    _internal_cache.clear()
    with _intern_lock:
        for i, code in enumerate(_codes):
            _code_internal[i] = _is_internal(code)


def _is_internal(code: CodeType) -> bool:
    filename = code.co_filename
    for lib in _LIBRARIES:
        d = _module_dir(lib)
        if d is not None and d not in _INTERNAL_DIRS:
            _INTERNAL_DIRS.append(d)
    if filename.startswith("<frozen "):
        return True
    if _APP_MARK in filename:
        # The demo's workload is the demo application, not poolscope machinery.
        return False
    try:
        real = os.path.realpath(filename)
    except (OSError, ValueError):
        real = filename
    return any(real.startswith(d) or filename.startswith(d) for d in _INTERNAL_DIRS)


def capture(depth: int = 1, skip: int = 2) -> tuple[Any, ...]:
    """The application's frames above the caller, as ``(code index, lasti, ...)``.

    ``skip`` frames are dropped first (this function and its caller); pool
    machinery frames after that are skipped; then up to ``depth`` frames are kept.
    Cost: a few attribute reads and one int-keyed dict lookup per frame.
    """
    try:
        f: FrameType | None = _getframe(skip)
    except ValueError:
        return ()
    index = _code_index
    internal = _code_internal
    i = -1
    while f is not None:
        code = f.f_code
        i = index.get(id(code), -2)
        if i == -2:
            i = _intern(code)
        if i < 0 or not internal[i]:
            break
        f = f.f_back
    if f is None:
        return ()
    if depth == 1:
        return (i, f.f_lasti)
    out = [i, f.f_lasti]
    f = f.f_back
    depth -= 1
    while f is not None and depth > 0:
        code = f.f_code
        i = index.get(id(code), -2)
        if i == -2:
            i = _intern(code)
        out.append(i)
        out.append(f.f_lasti)
        f = f.f_back
        depth -= 1
    return tuple(out)


#: ``capture`` as defined here: the optional accelerator walks frames the same way in
#: C, and only while ``capture`` is this one (a replaced one - a wrapper, an injected
#: fault - is called by the pure-Python hot path instead).
CAPTURE = capture


def line_of(code: CodeType, lasti: int) -> int:
    """Source line of the instruction at byte offset ``lasti``."""
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


_LOOP_FILE = os.path.join("asyncio", "events.py")


def format_site(raw: tuple[Any, ...]) -> list[dict[str, Any]]:
    """``[{file, line, func, code}, ...]``, innermost (the acquiring line) first."""
    frames: list[dict[str, Any]] = []
    n_codes = len(_codes)
    for j in range(0, len(raw) - 1, 2):
        ref, lasti = raw[j], raw[j + 1]
        if isinstance(ref, CodeType):  # a site captured as (code, lasti) pairs
            code: CodeType = ref
            internal = _internal_cache.get(code, False)
        elif isinstance(ref, int) and 0 <= ref < n_codes:
            code = _codes[ref]
            internal = _code_internal[ref]
        else:
            continue
        # An event loop running a callback is where an asyncio task's logical stack
        # ends: the frames below it (``asyncio.run(main())`` ...) did not call the task.
        if frames and code.co_name == "_run" and code.co_filename.endswith(_LOOP_FILE):
            break
        # Below the acquiring frame, event-loop and pool machinery is noise.
        if frames and internal:
            continue
        line = line_of(code, lasti)
        frames.append(
            {
                "file": code.co_filename,
                "line": line,
                "func": getattr(code, "co_qualname", code.co_name),
                # Source text may hold a literal DSN: redacted like everything sent.
                "code": redact(linecache.getline(code.co_filename, line).strip()),
            }
        )
    return frames


def format_frames(frames: list[FrameType], limit: int = 30) -> list[dict[str, Any]]:
    """A live stack (innermost first), application frames only, for a holder's current stack."""
    out: list[dict[str, Any]] = []
    for f in frames:
        if _internal_cache.get(f.f_code) is None:
            _internal_cache[f.f_code] = _is_internal(f.f_code)
        if _internal_cache[f.f_code]:
            continue
        code = f.f_code
        out.append(
            {
                "file": code.co_filename,
                "line": f.f_lineno,
                "func": getattr(code, "co_qualname", code.co_name),
                "code": redact(linecache.getline(code.co_filename, f.f_lineno or 0).strip()),
            }
        )
        if len(out) >= limit:
            break
    return out
