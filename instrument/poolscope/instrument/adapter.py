"""The adapter protocol: what every kind of pool poolscope instruments declares and does.

One adapter per library (asyncpg, SQLAlchemy, psycopg_pool, the reference pool, redis-py,
aiohttp, httpx, ...). ``instrument()`` asks the registry below for the adapter that matches
an object, checks its library's version against the range the adapter declares, and calls
``attach``; ``uninstrument()`` calls ``detach``. docs/adapters.md is the guide for people
who write one.

Standard library only: an adapter's module imports its pool library lazily, inside
``attach``, never at import time of ``poolscope.instrument``.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
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
    #: The distribution whose version is checked ("asyncpg", "SQLAlchemy", ...), or ""
    #: for poolscope's own pool.
    distribution: str
    #: Supported versions of that distribution, as an inclusive lower and exclusive upper
    #: bound ("0.29", "0.32"); None for no bound.
    supported: tuple[str | None, str | None]
    #: In place or by proxy (see ``Attachment``).
    attaches: Attachment
    #: The private attributes of the library this adapter reads or replaces, so a new
    #: release that moves them is found by a test, not by a user.
    private_attributes: tuple[str, ...]

    def matches(self, obj: Any) -> bool:
        """Whether this adapter handles ``obj`` (by its classes' modules and names; the
        library itself must not be imported to answer)."""

    def attach(self, obj: Any, runtime: Runtime, options: Options) -> Any:
        """Instrument ``obj``; returns what the application should use from now on."""

    def detach(self, obj: Any) -> bool:
        """Undo ``attach`` exactly: no hook, listener or proxy left. ``obj`` is what
        ``attach`` was given or returned. False if ``obj`` was not instrumented here."""


@dataclass
class Registry:
    """The adapters ``instrument()`` chooses from, in order."""

    adapters: list[Adapter] = field(default_factory=list)

    def register(self, adapter: Adapter) -> None:
        self.adapters.append(adapter)

    def __iter__(self) -> Iterator[Adapter]:
        return iter(self.adapters)

    def for_object(self, obj: Any) -> Adapter | None:
        for adapter in self.adapters:
            if adapter.matches(obj):
                return adapter
        return None

    def describe(self) -> str:
        """What is supported, for the TypeError an unsupported object gets."""
        return ", ".join(f"{a.kind} ({describe_range(a)})" for a in self.adapters)


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


def check_version(adapter: Adapter) -> None:
    """Raise a one-line TypeError when the adapter's library is outside its range."""
    if not adapter.distribution:
        return
    version = installed_version(adapter.distribution)
    if version is None:
        return  # vendored or unusual install: the private-attribute checks still apply
    low, high = adapter.supported
    key = _version_key(version)
    if (low and key < _version_key(low)) or (high and key >= _version_key(high)):
        raise TypeError(
            f"poolscope.instrument: {adapter.distribution} {version} is not supported by the "
            f"{adapter.kind} adapter (supported: {describe_range(adapter)})"
        )


def missing_private_attributes(adapter: Adapter, obj: Any) -> list[str]:
    """Which of the adapter's declared private attributes ``obj`` lacks ("a.b" walks)."""
    missing = []
    for path in adapter.private_attributes:
        target: Any = obj
        for part in path.split("."):
            if not hasattr(target, part):
                missing.append(path)
                break
            target = getattr(target, part)
    return missing
