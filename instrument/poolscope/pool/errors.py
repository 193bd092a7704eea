"""Errors of the reference pool; all derive from :class:`PoolError`."""

from __future__ import annotations


class PoolError(Exception):
    """Base class of every error the reference pool raises."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection became available within ``acquire_timeout``."""


class PoolClosed(PoolError):
    """The pool is closed (or closing) and takes no new acquires."""


class CircuitOpenError(PoolError):
    """The circuit breaker is open: the backend is failing, acquire fails fast."""
