"""Discovery entries: one small JSON file per instrumented process, removed at exit.

``poolscope ps`` and ``poolscope attach`` (no endpoint) read them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def process_name() -> str:
    """A short name for this process: the script's name, or ``python -m pkg`` for a
    package run with ``-m`` (whose argv[0] is its ``__main__.py``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if not argv0 or argv0 == "-c":
        return "python"
    base = os.path.basename(argv0)
    if base == "__main__.py":
        return f"python -m {os.path.basename(os.path.dirname(os.path.abspath(argv0)))}"
    return base


def registry_dir() -> Path:
    """``$POOLSCOPE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/poolscope``, else a per-user temp dir."""
    override = os.environ.get("POOLSCOPE_RUNTIME_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "poolscope"
    return Path(tempfile.gettempdir()) / f"poolscope-{os.getuid()}"


def _entry_path(pid: int) -> Path:
    return registry_dir() / f"{pid}.json"


def write_entry(endpoint: str, pools: list[str]) -> Path:
    """Write (or rewrite) this process's entry atomically; the directory is 0700."""
    d = registry_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    pid = os.getpid()
    entry: dict[str, Any] = {
        "pid": pid,
        "endpoint": endpoint,
        "process": process_name(),
        "argv": sys.argv[:8],
        "pools": pools,
        "started": time.time(),
    }
    path = _entry_path(pid)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f)
    os.replace(tmp, path)
    return path


def remove_entry() -> None:
    try:
        _entry_path(os.getpid()).unlink()
    except OSError:
        pass


def read_entries() -> list[dict[str, Any]]:
    """Every entry in the registry directory (liveness is the reader's to check)."""
    d = registry_dir()
    out: list[dict[str, Any]] = []
    try:
        files = sorted(d.glob("*.json"))
    except OSError:
        return out
    for f in files:
        try:
            entry = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("pid"), int) and "endpoint" in entry:
            out.append(entry)
    return out
