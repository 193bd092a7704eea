"""``poolscope run``: put on ``PYTHONPATH``, this starts poolscope in every Python process
of the command (workers, spawned children and reloaders included: they inherit the
environment) with no change to the application's code.

It only installs an import hook (standard library only, nothing imported eagerly): when
the application itself imports asyncpg, SQLAlchemy, psycopg_pool or poolscope's pool,
:mod:`poolscope.instrument.autorun` hooks the pool constructors of that library. Then it
runs the next ``sitecustomize`` on the path, if any, as if this one were not there, and
takes its own directory off ``sys.path`` (children still find it through the
environment). Set ``POOLSCOPE_AUTO=0`` to turn it off in a process.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

#: Modules whose import triggers a hook (the module where the pool class or factory
#: is defined).
_WATCHED = frozenset(
    {
        "asyncpg.pool",
        "sqlalchemy.engine.create",
        "psycopg_pool.pool",
        "psycopg_pool.pool_async",
        "poolscope.pool.core",
    }
)


def _run_hook(module: ModuleType) -> None:
    try:
        try:
            from poolscope.instrument import autorun
        except ImportError:
            extra = os.environ.get("POOLSCOPE_INSTRUMENT_PATH", "")
            here = f"{sys.version_info[0]}.{sys.version_info[1]}"
            if not extra or os.environ.get("POOLSCOPE_RUN_PYTHON") != here:
                return
            if extra not in sys.path:
                sys.path.append(extra)
            from poolscope.instrument import autorun
        autorun.on_import(module)
    except Exception as exc:  # never into the application's import
        sys.stderr.write(f"poolscope: not instrumenting {module.__name__}: {exc!r}\n")


class _HookLoader(importlib.abc.Loader):
    """The library's own loader, then the hook; anything else is the library's loader's."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # Look as if loaded by the library's own loader from now on.
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        _run_hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _WATCHED or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookLoader(spec.loader)
        return spec


def _chain() -> None:
    """Run the sitecustomize this one shadows, and leave sys.path as without poolscope."""
    here = os.path.dirname(os.path.abspath(__file__))
    mine = sys.modules.get("sitecustomize")
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")
    except ModuleNotFoundError as exc:
        if exc.name != "sitecustomize":
            raise
        if mine is not None:
            sys.modules["sitecustomize"] = mine


if os.environ.get("POOLSCOPE_AUTO", "1") != "0":
    sys.meta_path.insert(0, _Finder())
_chain()
