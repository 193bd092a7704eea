"""The adapter protocol: what every kind of pool poolscope instruments declares and does.

One adapter per library (asyncpg, SQLAlchemy, psycopg_pool, the reference pool, redis-py,
aiohttp, httpx, ...). ``instrument()`` asks the module-level ``registry`` below for the
adapter that matches an object, checks its library's version against the range the
adapter declares and the private attributes it relies on, and calls ``attach``;
``uninstrument()`` calls ``detach``. docs/adapters.md is the guide for people who write one.

Standard library only: an adapter's module imports its pool library lazily, inside
``attach``, never at import time of ``poolscope.instrument``.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .runtime import Runtime

#: How an adapter hooks the pool: in place (the same object, hooks installed on it or on
#: its class) or by returning a proxy the application must use from then on.
Attachment = Literal["in_place", "proxy"]


@dataclass(frozen=True)
class Options:
    """What ``instrument()`` was asked for, passed to ``Adapter.attach``."""

    name: str | None = None
    leak_threshold: float | None = 30.0
    heartbeat: float | None = None


@runtime_checkable
class Adapter(Protocol):
    """One kind of pool. Implementations are small classes with class attributes."""

    #: Short kind name, as in the ``pool`` event's ``kind`` ("asyncpg", "sqlalchemy", ...).
    kind: str
    #: The classes it handles, as users know them ("asyncpg.Pool"): for error messages.
    classes: tuple[str, ...]
    #: The distribution whose version is checked ("asyncpg", "SQLAlchemy", ...), or ""
    #: for poolscope's own pool.
    distribution: str
    #: Supported versions of that distribution, as an inclusive lower and exclusive upper
    #: bound ("0.29", "0.33"); None for no bound.
    supported: tuple[str | None, str | None]
    #: In place or by proxy (see ``Attachment``).
    attaches: Attachment
    #: The private attributes of the library this adapter reads or replaces, so a new
    #: release that moves them is refused with a clear error (and found by a test), not
    #: hooked silently wrong. Two forms: ``"attr.sub"`` is looked up on
    #: ``private_root(obj)`` (attributes an instance sets in ``__init__``);
    #: ``"module:Class.attr"`` on a class (methods, slots), imported from the library.
    private_attributes: tuple[str, ...]

    def matches(self, obj: Any) -> bool:
        """Whether this adapter handles ``obj`` (by its classes' modules and names; the
        library itself must not be imported to answer)."""

    def private_root(self, obj: Any) -> Any:
        """The object the instance paths of ``private_attributes`` start from (the pool
        behind an engine, say); ``obj`` itself for most adapters."""

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        """Instrument ``obj``; returns what the application should use from now on."""

    def detach(self, obj: Any) -> Any:
        """Undo ``attach`` exactly: no hook, listener, thread or proxy left. ``obj`` is
        what ``attach`` was given or returned. Returns what the application should use
        from now on (the unwrapped pool for a proxy), or None if ``obj`` was not
        instrumented by this adapter."""


@dataclass
class Registry:
    """The adapters ``instrument()`` chooses from, in order: the first that matches wins."""

    adapters: list[Adapter] = field(default_factory=list)

    def register(self, adapter: Adapter) -> Adapter:
        """Add an adapter (one of the same ``kind`` is replaced, in its place)."""
        for i, known in enumerate(self.adapters):
            if known.kind == adapter.kind:
                self.adapters[i] = adapter
                return adapter
        self.adapters.append(adapter)
        return adapter

    def __iter__(self) -> Iterator[Adapter]:
        return iter(list(self.adapters))

    def for_object(self, obj: Any) -> Adapter | None:
        for adapter in list(self.adapters):
            if adapter.matches(obj):
                return adapter
        return None

    def describe(self) -> str:
        """What is supported, for the TypeError an unsupported object gets."""
        return "; ".join(
            f"{'/'.join(a.classes) or a.kind} ({describe_range(a)})" for a in self.adapters
        )


#: The process-wide registry: each adapter module registers its adapter at import.
registry = Registry()


def class_names(obj: Any) -> Iterator[tuple[str, str]]:
    """(top-level module, class name) of every class in ``obj``'s MRO."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        yield module.split(".")[0], cls.__name__


def describe_range(adapter: Adapter) -> str:
    low, high = adapter.supported
    if not adapter.distribution:
        return "built in"
    parts = [f">={low}" if low else "", f"<{high}" if high else ""]
    return f"{adapter.distribution} {','.join(p for p in parts if p) or 'any version'}"


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3])


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def in_range(version: str, supported: tuple[str | None, str | None]) -> bool:
    low, high = supported
    key = _version_key(version)
    return not ((low and key < _version_key(low)) or (high and key >= _version_key(high)))


def check_version(adapter: Adapter, version: str | None = None) -> None:
    """Raise a one-line TypeError when the adapter's library is outside its range.

    ``version``: the version to judge (default: the installed distribution's)."""
    if not adapter.distribution:
        return
    if version is None:
        version = installed_version(adapter.distribution)
    if version is None:
        return  # vendored or unusual install: the private-attribute checks still apply
    if not in_range(version, adapter.supported):
        raise TypeError(
            f"poolscope.instrument: {adapter.distribution} {version} is not supported by the "
            f"{adapter.kind} adapter (supported: {describe_range(adapter)})"
        )


def _resolve_class(spec: str) -> Any:
    module, _, qualname = spec.partition(":")
    mod = sys.modules.get(module)
    if mod is None:
        mod = importlib.import_module(module)  # the library is in use: obj is one of its
    target: Any = mod
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def missing_private_attributes(adapter: Adapter, obj: Any) -> list[str]:
    """Which of the adapter's declared private attributes are missing for ``obj``."""
    missing = []
    root = adapter.private_root(obj)
    for path in adapter.private_attributes:
        if ":" in path:
            cls_spec, _, attr = path.rpartition(".")
            try:
                target: Any = _resolve_class(cls_spec)
            except (ImportError, AttributeError):
                missing.append(path)
                continue
            if not hasattr(target, attr):
                missing.append(path)
            continue
        target = root
        for part in path.split("."):
            if not hasattr(target, part):
                missing.append(path)
                break
            target = getattr(target, part)
    return missing


def check_private_attributes(adapter: Adapter, obj: Any) -> None:
    """Raise a one-line TypeError naming what is missing and the supported range."""
    missing = missing_private_attributes(adapter, obj)
    if missing:
        version = installed_version(adapter.distribution) if adapter.distribution else None
        raise TypeError(
            f"poolscope.instrument: the {adapter.kind} adapter cannot hook "
            f"{type(obj).__module__}.{type(obj).__qualname__}"
            f"{f' ({adapter.distribution} {version})' if version else ''}: missing "
            f"{', '.join(missing)} (supported: {describe_range(adapter)})"
        )


def attach_function(adapter: Adapter) -> Callable[..., Any]:
    """The old per-adapter ``instrument_<kind>(obj, runtime, *, name, leak_threshold,
    heartbeat)`` function, kept for its callers, as a thin call of ``adapter.attach``."""

    def attach(
        obj: Any,
        runtime: Runtime,
        *,
        name: str | None,
        leak_threshold: float | None,
        heartbeat: float | None,
    ) -> Any:
        return adapter.attach(obj, runtime, Options(name, leak_threshold, heartbeat))

    attach.__name__ = attach.__qualname__ = f"instrument_{adapter.kind}"
    attach.__doc__ = (
        f"The {adapter.kind} adapter's ``attach`` (kept for callers of the old function)."
    )
    return attach
