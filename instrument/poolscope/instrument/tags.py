"""Request tags: labels (strings) the application puts on the code that follows.

    with ps.tag(route="GET /articles/{slug}", tenant="acme"):
        async with pool.acquire() as conn: ...

    @ps.tag(job="nightly-report")
    def report(): ...

Every acquire records the labels current at that moment. The hot path pays one
``ContextVar.get`` and keeps a reference to the :class:`Labels` it returns; the
background thread turns it into pairs (:meth:`Labels.items`), interns them and
sends them once as a ``tags`` event, like acquire sites.

A :class:`Labels` may be lazy: the web middleware (``asgi``/``wsgi``) puts one in
place before the framework has routed the request, and the route template is read
only when the background thread asks, by when routing has happened.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from . import errors

#: Bounds on what one ``tag()`` call keeps: the stream carries labels, not payloads.
MAX_LABELS = 16
MAX_KEY = 64
MAX_VALUE = 200

Pairs = tuple[tuple[str, str], ...]
F = TypeVar("F", bound=Callable[..., Any])


class Labels:
    """An immutable set of labels, over the labels that were current before it."""

    __slots__ = ("pairs", "parent")

    def __init__(self, pairs: Pairs, parent: Labels | None = None) -> None:
        self.pairs = pairs
        self.parent = parent

    def items(self) -> Pairs:
        """The labels in effect, sorted by key (background thread: may do real work)."""
        own = self.own()
        if self.parent is None:
            return own
        merged = dict(self.parent.items())
        merged.update(own)
        return tuple(sorted(merged.items()))

    def own(self) -> Pairs:
        """This level's labels (lazy subclasses resolve here)."""
        return self.pairs

    def request_name(self) -> str | None:
        """The name of the web request these labels belong to, if any: what holders
        show instead of ``Task-8812`` or a thread's name."""
        return self.parent.request_name() if self.parent is not None else None


#: The labels current in this context (thread / task); None when there are none.
current: ContextVar[Labels | None] = ContextVar("poolscope_tags", default=None)


def clean(labels: dict[str, Any]) -> Pairs:
    """Labels as bounded string pairs, sorted by key."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if len(out) >= MAX_LABELS:
            break
        out[str(key)[:MAX_KEY]] = str(value)[:MAX_VALUE]
    return tuple(sorted(out.items()))


class tag:  # a class used like a function: ps.tag(...)
    """Set labels for the code inside: a context manager (sync or async) and a
    decorator (of functions and coroutine functions). Nests: inner labels add to
    and override outer ones. Never raises into the application."""

    def __init__(self, **labels: Any) -> None:
        try:
            self._pairs = clean(labels)
        except Exception as exc:  # a value whose str() raises
            errors.report("tag", exc)
            self._pairs = ()
        self._tokens: list[Token[Labels | None]] = []

    def _set(self) -> Token[Labels | None] | None:
        try:
            return current.set(Labels(self._pairs, current.get()))
        except Exception as exc:
            errors.report("tag", exc)
            return None

    @staticmethod
    def _reset(token: Token[Labels | None] | None) -> None:
        if token is None:
            return
        try:
            current.reset(token)
        except Exception as exc:  # reset in another context than the set
            errors.report("tag", exc)

    def __enter__(self) -> tag:
        token = self._set()
        if token is not None:
            self._tokens.append(token)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tokens:
            self._reset(self._tokens.pop())

    async def __aenter__(self) -> tag:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = self._set()
                try:
                    return await func(*args, **kwargs)
                finally:
                    self._reset(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = self._set()
            try:
                return func(*args, **kwargs)
            finally:
                self._reset(token)

        return run  # type: ignore[return-value]


def current_labels() -> dict[str, str]:
    """The labels in effect here, as a dict (for the application's own use)."""
    labels = current.get()
    try:
        return dict(labels.items()) if labels is not None else {}
    except Exception as exc:
        errors.report("tag", exc)
        return {}


# -- web requests (the asgi/wsgi middleware) -----------------------------------------

#: Longest first path segment kept by the fallback route (beyond, the segment goes).
MAX_SEGMENT = 32
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # Flask/Werkzeug/Django: <int:id>


def fallback_route(method: str, path: str) -> str:
    """``METHOD /first-segment/…``: what is shown when no route template is known.
    Bounded: one segment, cut, and one that looks like an id is ``{id}``, so the
    number of distinct values stays small whatever paths the clients send.

    Every web request asks (the middleware names its task before routing), so the
    answer is kept per (method, first segment, more below it): a handful of keys in
    an application, and at most MAX_FALLBACKS whatever the clients send."""
    head, _, rest = (path or "/").split("?", 1)[0].lstrip("/").partition("/")
    if len(head) > MAX_SEGMENT or len(method) > 16:
        return _fallback_route(method, head, bool(rest))  # not kept: "{id}" or a cut method
    key = (method, head, bool(rest))
    out = _fallbacks.get(key)
    if out is None:
        out = _fallback_route(method, head, bool(rest))
        if len(_fallbacks) >= MAX_FALLBACKS:
            _fallbacks.clear()
        _fallbacks[key] = out
    return out


#: (method, first segment, more below it) -> fallback route.
_fallbacks: dict[tuple[str, str, bool], str] = {}
MAX_FALLBACKS = 1024


def _fallback_route(method: str, head: str, more: bool) -> str:
    method = (method or "?")[:16]
    if not head:
        return f"{method} /"
    if len(head) > MAX_SEGMENT or sum(c.isdigit() for c in head) >= 3:
        head = "{id}"
    return f"{method} /{head}{'/…' if more else ''}"


#: (method, template) -> route: a handful of routes, asked for on every request.
_templates: dict[tuple[str, str], str] = {}
MAX_TEMPLATES = 1024


def template_route(method: str, template: str) -> str:
    """``METHOD /articles/{slug}`` from a framework's template (``<slug>`` too)."""
    key = (method, template)
    out = _templates.get(key)
    if out is None:
        t = _CONVERTER.sub(r"{\1}", template or "/")
        if not t.startswith("/"):
            t = "/" + t
        out = f"{(method or '?')[:16]} {t[:MAX_VALUE]}"
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        _templates[key] = out
    return out


class RequestLabels(Labels):
    """The labels of one web request: ``route`` is found lazily (:meth:`find_route`),
    since the framework routes the request after the middleware has run. While the
    request runs, the task or thread serving it is named after its route."""

    __slots__ = ("_done", "_route", "fallback", "holder", "holder_name")

    def __init__(self, fallback: str, holder: Any) -> None:
        super().__init__(())
        self.fallback = fallback
        self.holder = holder  # the asyncio task or thread serving the request
        self.holder_name = fallback
        self._route: str | None = None
        self._done = False

    def find_route(self) -> str | None:
        """The route template, once the framework knows it (each middleware says how)."""
        return None

    def route(self) -> str:
        """The route template if known (then kept), else the fallback."""
        if self._route is None:
            try:
                found = self.find_route()
            except Exception as exc:
                errors.report("route", exc)
                found = None
            if found is not None:
                self._route = found
                self._rename(found)
        return self._route or self.fallback

    def own(self) -> Pairs:
        return (("route", self.route()),)

    def request_name(self) -> str | None:
        return self.route()

    def start(self) -> None:
        self._rename(self.fallback)

    def finish(self) -> None:
        """The request is over: keep what is known, stop renaming its holder, and let
        go of the request: the acquire records carry these labels until the drain
        folds them (up to a tick later), and must not keep the finished request's
        task, scope or environ alive meanwhile (see naming.held_by for the cost)."""
        self.route()
        self._done = True
        self.holder = None
        self._forget()

    def _forget(self) -> None:
        """Drop what the framework's request lent (each middleware's own)."""

    def _rename(self, name: str) -> None:
        if self._done or self.holder is None:
            return
        try:
            if isinstance(self.holder, threading.Thread):
                self.holder.name = name
            else:
                self.holder.set_name(name)
            self.holder_name = name
        except Exception as exc:
            errors.report("route", exc)
