"""The first code ``poolscope inject`` runs inside its target (executed by file path).

The injector puts one short statement into the target, at a safe point of its main
thread (a pending call, or a debugger's call while the thread waits outside the
interpreter; ``sys.remote_exec`` on 3.14+)::

    try:
        exec(compile(open(BOOTSTRAP).read(), BOOTSTRAP, "exec"),
             {"__name__": "_poolscope_bootstrap", "REQUEST": REQUEST_FILE})
    except BaseException:
        pass

This file then reads the request (JSON: action, deadline, result path, options), makes
poolscope importable if the target's own environment lacks it (poolscope's install
path, added only when the Python versions match, and removed again at detach), runs
:func:`poolscope.instrument.live.attach` or ``detach`` and writes the result file the
injector waits for (``PyRun_SimpleString`` returns only an int).

Standard library only, no names left in the target's ``__main__``, and nothing raised:
a late request (past its deadline, the injector gave up and cleaned up) does nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any


def _write(path: str, result: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def _import_live(request: dict[str, Any]) -> tuple[Any, str | None, str]:
    """poolscope.instrument.live, the sys.path entry added for it (or None), or why not."""
    try:
        return importlib.import_module("poolscope.instrument.live"), None, ""
    except ImportError as exc:
        first = str(exc)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    root = request.get("instrument_root")
    if not root or request.get("python") != here:
        return (
            None,
            None,
            f"poolscope is not importable by the target's Python {here} ({first}); install "
            f"poolscope-instrument into its environment"
            + (f" (poolscope here runs on Python {request.get('python')})" if root else ""),
        )
    added = None
    if root not in sys.path:
        sys.path.append(root)
        added = root
    importlib.invalidate_caches()
    try:
        return importlib.import_module("poolscope.instrument.live"), added, ""
    except ImportError as exc:
        if added is not None and added in sys.path:
            sys.path.remove(added)
        return (
            None,
            None,
            f"poolscope is not importable by the target's Python {here} even from {root} "
            f"({exc}); install poolscope-instrument into its environment",
        )


def handle(request: dict[str, Any], reply: Any) -> dict[str, Any] | None:
    """Run one request; the result to write now, or None when there is nothing to say
    (yet: ``reply`` is called with it later, from poolscope's side of the process)."""
    action = request.get("action")
    if action == "detach":
        live = sys.modules.get("poolscope.instrument.live")
        if live is None or live.current() is None:
            return {"ok": False, "error": "not injected by poolscope (nothing to detach)"}
        result: dict[str, Any] | None = live.detach(request, reply)
        return None if result is None or result.get("duplicate") else result
    if action == "ping":
        return {"ok": True, "python": sys.version.split()[0], "pid": os.getpid()}
    t0 = time.perf_counter()
    live, added, why = _import_live(request)
    if live is None:
        return {"ok": False, "error": why, "not_importable": True}
    request = dict(request, added_path=added)
    imports = time.perf_counter() - t0

    def replied(result: dict[str, Any]) -> None:
        result["pause"] = float(result.get("pause", 0.0)) + imports  # imports included
        reply(result)

    result = live.attach(request, replied)
    if result is None or result.get("duplicate"):
        return None
    if not result.get("ok") and added is not None and added in sys.path:
        sys.path.remove(added)
    result["pause"] = time.perf_counter() - t0
    return result


def main(request_path: str) -> None:
    try:
        with open(request_path) as f:
            request = json.load(f)
        if time.time() > float(request["deadline"]):
            return  # the injector gave up; it says so and leaves nothing behind
        out = str(request["result"])
        if os.path.exists(out):
            return  # answered already (the pending call and the debugger's call both ran)

        def reply(later: dict[str, Any]) -> None:
            try:
                _write(out, later)
            except OSError:
                pass  # the injector gave up and removed its directory: nobody to tell

        result = handle(request, reply)
        if result is not None:
            _write(out, result)
    except BaseException:  # nothing may reach the target's code
        pass


if __name__ == "_poolscope_bootstrap":
    main(globals()["REQUEST"])
