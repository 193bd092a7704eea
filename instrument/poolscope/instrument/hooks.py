"""Instance-level hooks that can be undone exactly (for adapters that attach in place).

An adapter replaces methods on one pool object (never on its class, so other pools are
untouched) by setting instance attributes; ``restore`` deletes them again, or puts back
an instance attribute that was there before.
"""

from __future__ import annotations

import os
from typing import Any

from . import sites

_MISSING = object()
_internal_added: set[str] = set()


class InstanceHooks:
    """The attributes set on one object, and what was there before."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self._saved: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        if name not in self._saved:
            self._saved[name] = self.obj.__dict__.get(name, _MISSING)
        setattr(self.obj, name, value)

    def original(self, name: str) -> Any:
        """The attribute as it was before hooking (bound method or instance value)."""
        saved = self._saved.get(name, _MISSING)
        if saved is not _MISSING:
            return saved
        return getattr(type(self.obj), name).__get__(self.obj, type(self.obj))

    def restore(self) -> None:
        for name, saved in self._saved.items():
            if saved is _MISSING:
                self.obj.__dict__.pop(name, None)
            else:
                setattr(self.obj, name, saved)
        self._saved.clear()


def library_is_machinery(module: Any) -> None:
    """Frames from ``module``'s package are pool machinery, not the acquire site."""
    file = getattr(module, "__file__", None)
    if not file:
        return
    path = os.path.dirname(os.path.abspath(file))
    if path not in _internal_added:
        _internal_added.add(path)
        sites.add_internal_dir(path + os.sep)
