"""WSGI middleware: tag every request's acquires with its route template.

    from poolscope.instrument.wsgi import PoolscopeMiddleware
    app.wsgi_app = PoolscopeMiddleware(app.wsgi_app)  # Flask
    application = PoolscopeMiddleware(application)    # Django, any WSGI application

Every acquire made while serving a request carries ``route`` = ``METHOD
/template`` (``GET /articles/{slug}``; Flask's ``<slug>`` is written ``{slug}``),
and the thread serving the request is named so for its duration. The template is
read from the framework once it has routed: Flask/Werkzeug
(``environ["werkzeug.request"].url_rule``), Bottle (``environ["bottle.route"]``),
Pyramid (``environ["bfg.routes.route"]``), Django (the path resolved against the
project's URLconf, when Django is loaded). Before that, or with another framework,
the route is the method and a bounded path prefix (``GET /articles/…``). Standard
library only: the frameworks are read, never imported.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import errors
from .tags import RequestLabels, current, fallback_route, template_route

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


#: A finished request's environ (read only: finding no route there).
_FINISHED: Environ = {}


class WsgiRequestLabels(RequestLabels):
    __slots__ = ("environ", "method", "thread_name")

    def __init__(self, environ: Environ, thread: threading.Thread) -> None:
        method = str(environ.get("REQUEST_METHOD") or "?")
        path = str(environ.get("SCRIPT_NAME") or "") + str(environ.get("PATH_INFO") or "/")
        super().__init__(fallback_route(method, path), thread)
        self.environ = environ
        self.method = method
        self.thread_name = thread.name

    def find_route(self) -> str | None:
        env = self.environ
        template: Any = None
        request = env.get("werkzeug.request")
        rule = getattr(request, "url_rule", None) if request is not None else None
        if rule is not None:
            template = getattr(rule, "rule", None)
        if template is None and env.get("bottle.route") is not None:
            template = getattr(env["bottle.route"], "rule", None)
        if template is None and env.get("bfg.routes.route") is not None:
            template = getattr(env["bfg.routes.route"], "pattern", None)
        if template is None:
            template = _django_route(env)
        if not isinstance(template, str):
            return None
        return template_route(self.method, str(env.get("SCRIPT_NAME") or "") + template)

    def _forget(self) -> None:
        self.environ = _FINISHED

    def finish(self) -> None:
        holder = self.holder
        super().finish()
        if isinstance(holder, threading.Thread):
            try:
                holder.name = self.thread_name  # a pooled thread serves others next
            except Exception as exc:
                errors.report("wsgi middleware", exc)


_REGEX_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _django_route(env: Environ) -> str | None:
    """Django keeps its match on the request object only: resolve the path against
    the project's URLconf (already imported, since Django serves the request) and
    take the matched pattern (``articles/<slug:slug>``; a ``re_path``'s groups are
    written ``{name}``)."""
    urls = sys.modules.get("django.urls")
    if urls is None:
        return None
    try:
        match = urls.resolve(str(env.get("PATH_INFO") or "/"))
    except Exception:  # Resolver404, or Django not configured in this process
        return None
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    route = _REGEX_GROUP.sub(r"{\1}", route).replace("^", "").replace("$", "")
    return "/" + route.lstrip("/")


class _Body:
    """The response body, passed through; the request's labels end at ``close()``
    (a body may still use the database while it is iterated)."""

    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body = body
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()


class PoolscopeMiddleware:
    """Wraps a WSGI application; see the module's documentation."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            labels = WsgiRequestLabels(environ, threading.current_thread())
            labels.start()
            token = current.set(labels)
        except Exception as exc:
            errors.report("wsgi middleware", exc)
            return self.app(environ, start_response)
        ended = False

        def end() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            try:
                labels.finish()
                current.reset(token)
            except Exception as exc:  # closed from another context than the call
                errors.report("wsgi middleware", exc)

        def start_routed(*args: Any) -> Any:
            # The application has routed (and may forget the route when it returns).
            labels.route()
            return start_response(*args)

        try:
            body = self.app(environ, start_routed)
        except BaseException:
            end()
            raise
        return _Body(body, end)
