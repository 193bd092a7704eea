"""ASGI middleware: tag every request's acquires with its route template.

    from poolscope.instrument.asgi import PoolscopeMiddleware
    app.add_middleware(PoolscopeMiddleware)          # Starlette / FastAPI
    app = PoolscopeMiddleware(app)                   # any ASGI application

Every acquire made while serving a request carries ``route`` = ``METHOD
/template`` (``GET /articles/{slug}``, never the raw path), and the task serving
the request is named so, so holders and leaks say which route holds a
connection. The template is read after routing, from ``scope["route"]`` (Starlette
and FastAPI put the matched route there; Mounts add their prefix to
``root_path``); before that, or with a framework that says nothing, the route is
the method and a bounded path prefix (``GET /articles/…``). Standard library
only: the framework is read through the scope, never imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import errors
from .tags import RequestLabels, current, fallback_route, template_route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: A finished request's scope (read only: finding no route there).
_FINISHED: Scope = {}


class AsgiRequestLabels(RequestLabels):
    __slots__ = ("method", "root_path", "scope")

    def __init__(self, scope: Scope, method: str, holder: Any) -> None:
        # RequestLabels.__init__ (and Labels') written out: this runs on every request,
        # and each Python call in the chain cost more than the assignments.
        fallback = fallback_route(method, str(scope.get("path") or "/"))
        self.pairs = ()
        self.parent = None
        self.fallback = self.holder_name = fallback
        self.holder = holder
        self._route = None
        self._done = False
        self.scope = scope
        self.method = method
        self.root_path = str(scope.get("root_path") or "")

    def _forget(self) -> None:
        self.scope = _FINISHED

    def find_route(self) -> str | None:
        scope = self.scope
        route = scope.get("route")
        if route is None:
            route = _route_by_endpoint(scope)
        if route is None:
            return None
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        # A Mount puts its prefix in root_path; the route's own path is below it.
        root = str(scope.get("root_path") or "")
        prefix = root[len(self.root_path) :] if root.startswith(self.root_path) else ""
        return template_route(self.method, prefix + path)


def _route_by_endpoint(scope: Scope) -> Any:
    """A router that records only the endpoint: the route whose endpoint it is."""
    endpoint = scope.get("endpoint")
    router = scope.get("router")
    if endpoint is None or router is None:
        return None
    for r in getattr(router, "routes", ()) or ():
        if getattr(r, "endpoint", None) is endpoint:
            return r
    return None


#: asyncio's table of each running loop's current task (C, where asyncio was built
#: with its accelerator): ``current_task()`` without its Python frame.
_current_tasks: Any = getattr(asyncio.tasks, "_current_tasks", None)
_get_running_loop = asyncio.get_running_loop


def _current_task() -> Any:
    """The asyncio task serving the request; None under another event loop (trio):
    the labels still apply, only no task is renamed."""
    try:
        if _current_tasks is not None:
            task = _current_tasks.get(_get_running_loop())
            if task is not None:
                return task
        # No table, or one this Python no longer keeps up to date (it moved into C
        # state in later versions): the public way.
        return asyncio.current_task()
    except RuntimeError:
        return None


class PoolscopeMiddleware:
    """Wraps an ASGI application; see the module's documentation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        labels: AsgiRequestLabels | None = None
        token = None
        try:
            method = str(scope.get("method") or "WS") if kind == "http" else "WS"
            task = _current_task()
            labels = AsgiRequestLabels(scope, method, task)
            token = current.set(labels)
            # labels.start() written out (named before routing), after the labels are
            # in effect: a task that refuses its name still has its acquires labelled.
            if task is not None:
                task.set_name(labels.fallback)
        except Exception as exc:
            errors.report("asgi middleware", exc)

        if labels is None:
            await self.app(scope, receive, send)
            return
        found = labels

        async def send_routed(message: Message) -> None:
            # The response starts after routing: the route is known by now (and the
            # framework may forget it when the request ends). Once found, it is kept.
            if found._route is None and message.get("type") in (
                "http.response.start",
                "websocket.accept",
            ):
                found.route()
            await send(message)

        try:
            await self.app(scope, receive, send_routed)
        finally:
            try:
                found.finish()
                if token is not None:
                    current.reset(token)
            except Exception as exc:
                errors.report("asgi middleware", exc)
