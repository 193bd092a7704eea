"""Discovery entries: one small JSON file per instrumented process, removed at exit.

``poolscope ps`` and ``poolscope attach`` (no endpoint) read them.

The directory is private to the user: created 0700, then opened without following a
symlink and checked (a directory, owned by this user, mode 0700). Anything else -
another user's directory planted at ``$TMPDIR/poolscope-<uid>``, a symlink - is
refused with one logged line, and there is no discovery (never another shared path).
Every read and write goes through the checked directory's descriptor, so the
directory cannot be swapped between the check and the use. Entries are written to a
fresh temporary name with ``O_EXCL|O_NOFOLLOW`` and renamed into place; readers trust
only regular files owned by the user.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .redact import redact, redact_argv

log = logging.getLogger("poolscope")

#: An entry is a few hundred bytes; anything bigger is not one of ours.
MAX_ENTRY_BYTES = 64 * 1024
_warned: set[str] = set()


class UntrustedDirectory(PermissionError):
    """A directory another user could write to (or swap): refused."""


def process_name() -> str:
    """A short name for this process: the script's name, or ``python -m pkg`` for a
    package run with ``-m`` (whose argv[0] is its ``__main__.py``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if not argv0 or argv0 == "-c":
        return "python"
    base = os.path.basename(argv0)
    if base == "__main__.py":
        return f"python -m {os.path.basename(os.path.dirname(os.path.abspath(argv0)))}"
    return redact(base)


def registry_dir() -> Path:
    """``$POOLSCOPE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/poolscope``, else a per-user temp dir."""
    override = os.environ.get("POOLSCOPE_RUNTIME_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "poolscope"
    return Path(tempfile.gettempdir()) / f"poolscope-{os.getuid()}"


def _why_untrusted_private(st: os.stat_result) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not {os.geteuid()}"
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        return f"mode {mode:04o}, not 0700"
    return None


def _refuse(path: Path | str, why: str) -> None:
    """One line per directory and process: the refusal is not repeated per write."""
    key = f"{path}: {why}"
    if key not in _warned:
        _warned.add(key)
        log.warning("poolscope: not using discovery directory %s (%s); discovery is off", path, why)


def _open_private_dir(path: Path, *, create: bool) -> int | None:
    """A descriptor of ``path`` after checking it is this user's 0700 directory (and
    not a symlink); None - after one logged line - if it is not, or does not exist."""
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            _refuse(path, f"cannot create it: {exc.strerror or exc}")
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if create:
            _refuse(path, "it vanished after it was created")
        return None
    except OSError as exc:
        # ELOOP: the last component is a symlink; ENOTDIR: a file.
        why = "a symlink" if os.path.islink(path) else (exc.strerror or str(exc))
        _refuse(path, why)
        return None
    problem = _why_untrusted_private(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        _refuse(path, problem)
        return None
    return fd


@contextmanager
def _private_dir(*, create: bool) -> Iterator[int | None]:
    fd = _open_private_dir(registry_dir(), create=create)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _entry_name(pid: int) -> str:
    return f"{pid}.json"


def write_entry(endpoint: str, pools: list[str]) -> Path | None:
    """Write (or rewrite) this process's entry atomically; None if the directory is
    not this user's private one (refused, logged once)."""
    pid = os.getpid()
    entry: dict[str, Any] = {
        "pid": pid,
        "endpoint": endpoint,
        "process": process_name(),
        "argv": redact_argv(sys.argv)[:8],
        "pools": [redact(p) for p in pools],
        "started": time.time(),
    }
    data = json.dumps(entry).encode()
    with _private_dir(create=True) as d:
        if d is None:
            return None
        # A fresh name each time, created exclusively and never through a symlink:
        # nothing planted in the directory can redirect the write.
        tmp = f".{pid}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, _entry_name(pid), src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=d)
            except OSError:
                pass
            raise
    return registry_dir() / _entry_name(pid)


def remove_entry() -> None:
    try:
        with _private_dir(create=False) as d:
            if d is not None:
                os.unlink(_entry_name(os.getpid()), dir_fd=d)
    except OSError:
        pass


def _read_trusted(d: int, name: str) -> tuple[dict[str, Any], os.stat_result] | None:
    """An entry that is a regular file owned by this user (never through a symlink)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=d)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        raw = os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if isinstance(entry, dict) and isinstance(entry.get("pid"), int) and "endpoint" in entry:
        return entry, st
    return None


def _scan(d: int) -> list[tuple[str, dict[str, Any], os.stat_result]]:
    out = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        found = _read_trusted(d, name)
        if found is not None:
            out.append((name, *found))
    return out


def read_entries() -> list[dict[str, Any]]:
    """Every trusted entry (liveness is the reader's to check): none at all when the
    directory is not this user's private one."""
    with _private_dir(create=False) as d:
        return [] if d is None else [entry for _, entry, _ in _scan(d)]


def prune_entries(alive: Callable[[dict[str, Any]], bool]) -> int:
    """Remove the entries of processes that no longer exist (``alive(entry)`` is
    False); returns how many. Only this user's entries in its private directory."""
    removed = 0
    with _private_dir(create=False) as d:
        if d is None:
            return 0
        for name, entry, st in _scan(d):
            if alive(entry):
                continue
            try:
                now = os.stat(name, dir_fd=d, follow_symlinks=False)
                if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):  # not rewritten since
                    os.unlink(name, dir_fd=d)
                    removed += 1
            except OSError:
                pass
    return removed


# -- the directory of a Unix socket ---------------------------------------------------


def check_socket_dir(path: str) -> None:
    """Raise :class:`UntrustedDirectory` unless the directory of the Unix socket
    ``path`` - and each directory above it - is safe from other users: not a symlink,
    owned by this user or root, and writable by nobody else unless sticky (like
    ``/tmp``, where others cannot remove or rename what is ours). A socket in another
    user's directory could be replaced by theirs."""
    d = os.path.dirname(os.path.abspath(path))
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedDirectory(f"socket directory {d} is a symlink")
    current = d
    while True:
        st = os.stat(current)
        why = _why_unsafe_ancestor(st)
        if why is not None:
            raise UntrustedDirectory(f"socket directory {current} is {why}")
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _why_unsafe_ancestor(st: os.stat_result) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid not in (os.geteuid(), 0):
        return f"owned by uid {st.st_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None
