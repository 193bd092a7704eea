"""``poolscope run``: instrument every pool as the application creates it.

Called by the ``sitecustomize`` that ``poolscope run`` puts on ``PYTHONPATH``, right after
the application imports the module defining a pool library's constructors (never
before: this module imports no pool library itself). The constructors are wrapped so
that each new pool is instrumented as it is made:

* asyncpg: ``asyncpg.pool.Pool.__init__``; the pool is hooked in place
  (:mod:`asyncpg_inplace`), so the application holds the very object asyncpg made;
* SQLAlchemy: ``sqlalchemy.engine.create.create_engine`` (``create_async_engine`` and
  ``engine_from_config`` call it);
* psycopg_pool: ``ConnectionPool.__init__`` and ``AsyncConnectionPool.__init__``;
* poolscope's reference pool: ``poolscope.pool.Pool.__init__``.

Settings come from the environment (docs/attach.md has the table):
``POOLSCOPE_LEAK_THRESHOLD`` (seconds, or ``off``), ``POOLSCOPE_HEARTBEAT`` (seconds),
``POOLSCOPE_PROMETHEUS`` (``1``), ``POOLSCOPE_POOLS`` (which kinds, default all), plus
those the runtime reads itself (``POOLSCOPE_LISTEN``, ``POOLSCOPE_TOKEN``,
``POOLSCOPE_RUNTIME_DIR``).
"""

from __future__ import annotations

import functools
import linecache
import logging
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import errors

log = logging.getLogger("poolscope")

KINDS = ("asyncpg", "sqlalchemy", "psycopg", "reference")


@dataclass(frozen=True)
class Settings:
    leak_threshold: float | None = 30.0
    heartbeat: float | None = None
    prometheus: bool = False
    kinds: frozenset[str] = frozenset(KINDS)


def _seconds(name: str, default: float | None) -> float | None:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("off", "none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        log.warning("poolscope: ignoring %s=%r (seconds or 'off')", name, text)
        return default
    return value if value > 0 and value != float("inf") else default


def settings() -> Settings:
    kinds = os.environ.get("POOLSCOPE_POOLS", "").strip()
    return Settings(
        leak_threshold=_seconds("POOLSCOPE_LEAK_THRESHOLD", 30.0),
        heartbeat=_seconds("POOLSCOPE_HEARTBEAT", None),
        prometheus=os.environ.get("POOLSCOPE_PROMETHEUS", "") in ("1", "true", "yes"),
        kinds=frozenset(k.strip() for k in kinds.split(",") if k.strip())
        if kinds
        else frozenset(KINDS),
    )


# -- names --------------------------------------------------------------------------

_ASSIGNED = re.compile(r"^\s*(?:self\.)?([A-Za-z_][\w.]*)\s*(?::[^=]*)?=[^=]")


def creator() -> tuple[str, str]:
    """(module, variable) of the application code creating a pool: the first frame
    outside poolscope and the pool libraries, and the name its line assigns to, if any."""
    from . import sites

    f: Any = sys._getframe(1)
    while f is not None and sites._is_internal(f.f_code):
        f = f.f_back
    if f is None:
        return "", ""
    module = str(f.f_globals.get("__name__", ""))
    line = linecache.getline(f.f_code.co_filename, f.f_lineno or 0)
    m = _ASSIGNED.match(line)
    return module, (m.group(1).rpartition(".")[2] if m else "")


def pool_name(database: str) -> str:
    """The database name, else the variable the creating line assigns, else the creating
    module; the runtime adds a counter to repeats (``orders``, ``orders-2``)."""
    module, variable = creator()
    if database:
        return database
    if variable:
        return variable
    return module.rpartition(".")[2] if module and module != "__main__" else ""


def _database_of_dsn(text: str) -> str:
    from .redact import target_from_dsn

    target = target_from_dsn(text)
    return target.rpartition("/")[2] if "/" in target else ""


# -- hooks ----------------------------------------------------------------------------


def _serve() -> None:
    """Start streaming after the first pool, as ``instrument()`` does."""
    from . import get_runtime

    runtime = get_runtime()
    if runtime.server is None:
        try:
            runtime.serve(None)
        except (OSError, ValueError) as exc:
            log.warning("poolscope: streaming disabled: cannot listen: %s", exc)


def _instrument(obj: Any, name: str, s: Settings) -> None:
    from . import instrument

    try:
        instrument(
            obj,
            name=name or None,
            leak_threshold=s.leak_threshold,
            heartbeat=s.heartbeat,
            prometheus=s.prometheus,
        )
    except Exception as exc:
        errors.report("poolscope run", exc)


def _hook_asyncpg(module: ModuleType, s: Settings) -> None:
    pool_cls = module.Pool
    original = pool_cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            from . import asyncpg_inplace, get_runtime
            from .asyncpg import _target

            target = _target(self)
            database = target.rpartition("/")[2] if "/" in target else ""
            asyncpg_inplace.adopt_pool(
                self,
                get_runtime(),
                name=pool_name(database) or None,
                leak_threshold=s.leak_threshold,
                heartbeat=s.heartbeat,
            )
            _serve()
            if s.prometheus:
                from .prometheus import register

                register()
        except Exception as exc:
            errors.report("poolscope run", exc)

    pool_cls.__init__ = __init__


def _hook_sqlalchemy(module: ModuleType, s: Settings) -> None:
    original = getattr(module, "create_engine")  # noqa: B009 - a module we did not type

    @functools.wraps(original)
    def create_engine(*args: Any, **kwargs: Any) -> Any:
        engine = original(*args, **kwargs)
        try:
            database = str(getattr(engine.url, "database", "") or "")
            # A file path (SQLite) is not a readable name: its base name is.
            database = os.path.basename(database) if database else ""
            _instrument(engine, pool_name(database), s)
        except Exception as exc:
            errors.report("poolscope run", exc)
        return engine

    setattr(module, "create_engine", create_engine)  # noqa: B010 - a module we did not type


def _hook_psycopg(module: ModuleType, s: Settings) -> None:
    for cls_name in ("ConnectionPool", "AsyncConnectionPool"):
        cls = getattr(module, cls_name, None)
        if cls is None:
            continue
        _wrap_init(cls, s, "psycopg")


def _hook_reference(module: ModuleType, s: Settings) -> None:
    _wrap_init(module.Pool, s, "reference")


def _wrap_init(cls: Any, s: Settings, kind: str) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            if kind == "psycopg":
                given = str(getattr(self, "name", "") or "")
                if given and not re.fullmatch(r"pool-\d+", given):
                    name = given  # the application named it
                else:
                    conninfo = getattr(self, "conninfo", "") or ""
                    kw = getattr(self, "kwargs", {}) or {}
                    database = str(kw.get("dbname") or "") or _database_of_dsn(
                        conninfo if isinstance(conninfo, str) else ""
                    )
                    name = pool_name(database)
            else:
                name = str(getattr(self, "name", "") or "") or pool_name("")
            _instrument(self, name, s)
        except Exception as exc:
            errors.report("poolscope run", exc)

    cls.__init__ = __init__


_HOOKS = {
    "asyncpg.pool": ("asyncpg", _hook_asyncpg),
    "sqlalchemy.engine.create": ("sqlalchemy", _hook_sqlalchemy),
    "psycopg_pool.pool": ("psycopg", _hook_psycopg),
    "psycopg_pool.pool_async": ("psycopg", _hook_psycopg),
    "poolscope.pool.core": ("reference", _hook_reference),
}


def on_import(module: ModuleType) -> None:
    """The application just imported ``module`` (one of the watched ones): hook it."""
    entry = _HOOKS.get(module.__name__)
    if entry is None:
        return
    kind, hook = entry
    s = settings()
    if kind not in s.kinds:
        return
    try:
        hook(module, s)
    except Exception as exc:
        errors.report("poolscope run", exc)
