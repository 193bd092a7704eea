"""Attach to a live process from the inside: what ``poolscope inject`` runs in its target.

``attach()`` finds the pools the application already made (one pass over ``gc``),
instruments each in place (asyncpg through :mod:`asyncpg_inplace`; SQLAlchemy, psycopg_pool
and the reference pool through their adapters, which hook in place), adopts the
connections already checked out as holders - held at least since the attach, at the line
that holds them now - and starts the stream server. ``detach()`` undoes all of it and stops
poolscope's thread and server, so a later inject starts afresh.

Nothing here may raise into the target: both entry points return a result dict.
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import errors

__all__ = ["Session", "attach", "current", "detach"]

#: Kinds found by ``_classify`` (class module top level, class name).
_POOL_CLASSES = {
    ("asyncpg", "Pool"): "asyncpg",
    ("sqlalchemy", "Engine"): "sqlalchemy",
    ("psycopg_pool", "ConnectionPool"): "psycopg",
    ("psycopg_pool", "AsyncConnectionPool"): "psycopg",
    ("psycopg_pool", "NullConnectionPool"): "psycopg",
    ("psycopg_pool", "AsyncNullConnectionPool"): "psycopg",
}


class Session:
    """What one inject did, so that detach can undo exactly that."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.pools: list[tuple[str, Any, Any]] = []  # (kind, pool object, handle)
        self.adopted = 0
        self.endpoint = ""
        self.added_path: str | None = None
        self.started = time.time()


_session: Session | None = None
_seen_requests: set[str] = set()
_lock = threading.Lock()


def current() -> Session | None:
    return _session


# -- finding pools and checked-out connections ------------------------------------------


def _kind(obj: Any) -> str | None:
    cls = type(obj)
    module = getattr(cls, "__module__", "") or ""
    top = module.split(".")[0]
    if top not in ("asyncpg", "sqlalchemy", "psycopg_pool", "poolscope"):
        return None
    for klass in cls.__mro__:
        key = ((klass.__module__ or "").split(".")[0], klass.__name__)
        kind = _POOL_CLASSES.get(key)
        if kind is not None:
            return kind
        if key == ("poolscope", "Pool") and (klass.__module__ or "").startswith("poolscope.pool"):
            return "reference"
    return None


class _Scan:
    """One pass over ``gc.get_objects()``: the pools, and the objects that tell which
    connections are checked out and what the application holds them by."""

    def __init__(self) -> None:
        self.pools: list[tuple[str, Any]] = []
        self.tasks: list[Any] = []
        self.fairies: list[Any] = []  # SQLAlchemy _ConnectionFairy (checked out)
        self.sa_connections: dict[int, list[Any]] = {}  # id(fairy) -> Connection objects
        self.psycopg_conns: list[Any] = []
        asyncio = sys.modules.get("asyncio")
        task_type = getattr(asyncio, "Task", None) if asyncio is not None else None
        for obj in gc.get_objects():
            cls = type(obj)
            if task_type is not None and isinstance(obj, task_type):
                self.tasks.append(obj)
                continue
            module = getattr(cls, "__module__", None)
            if not isinstance(module, str):
                continue
            if module.startswith("sqlalchemy."):
                name = cls.__name__
                if name == "_ConnectionFairy":
                    self.fairies.append(obj)
                    continue
                if name == "Connection" and hasattr(obj, "_dbapi_connection"):
                    fairy = obj.__dict__.get("_dbapi_connection")
                    if fairy is not None:
                        self.sa_connections.setdefault(id(fairy), []).append(obj)
                    continue
            elif (module == "psycopg" or module.startswith("psycopg.")) and hasattr(obj, "pgconn"):
                if obj.__dict__.get("_pool") is not None:
                    self.psycopg_conns.append(obj)
                continue
            kind = _kind(obj)
            if kind is not None:
                self.pools.append((kind, obj))


def _closed(kind: str, pool: Any) -> bool:
    if kind == "asyncpg":
        return bool(getattr(pool, "_closed", False) or getattr(pool, "_closing", False))
    if kind == "psycopg":
        return bool(getattr(pool, "closed", False))
    if kind == "reference":
        return bool(getattr(pool, "closed", False))
    return False


def _database(kind: str, pool: Any) -> str:
    """The database name, for a readable pool name."""
    try:
        if kind == "sqlalchemy":
            return str(pool.url.database or "")
        if kind == "asyncpg":
            from .asyncpg import _target

            target = _target(pool)
        elif kind == "psycopg":
            name = getattr(pool, "name", "") or ""
            if name and not name.startswith("pool-"):
                return str(name)  # the application named it
            from .redact import target_from_dsn

            conninfo = getattr(pool, "conninfo", "") or ""
            kwargs = getattr(pool, "kwargs", {}) or {}
            target = target_from_dsn(
                conninfo if isinstance(conninfo, str) else "",
                host=kwargs.get("host"),
                port=kwargs.get("port"),
                dbname=kwargs.get("dbname"),
            )
        else:
            return str(getattr(pool, "name", "") or "")
        return target.rpartition("/")[2] if "/" in target else ""
    except Exception:
        return ""


def _variable(obj: Any) -> str:
    """``module.variable`` of a module-level global bound to ``obj``, if there is one."""
    try:
        for ref in gc.get_referrers(obj):
            if not isinstance(ref, dict) or "__name__" not in ref:
                continue
            ref_dict: dict[str, Any] = ref
            module = sys.modules.get(str(ref_dict.get("__name__")))
            if module is None or getattr(module, "__dict__", None) is not ref_dict:
                continue
            for key, value in ref_dict.items():
                if value is obj and not key.startswith("__"):
                    mod = str(ref_dict["__name__"])
                    return key if mod == "__main__" else f"{mod}.{key}"
    except Exception:
        pass
    return ""


def pool_name(kind: str, pool: Any) -> str:
    """Database name, else the variable that holds the pool, else the kind; the runtime
    makes names unique with a counter (``orders``, ``orders-2``)."""
    return _database(kind, pool) or _variable(pool) or kind


# -- adopting connections already checked out ---------------------------------------------


def _adapter_state(kind: str, pool: Any) -> Any:
    """The adapter's per-pool state (connection ids, handle) for a pool it hooked."""
    if kind == "asyncpg":
        from . import asyncpg_inplace

        return asyncpg_inplace.state_of(pool)
    candidates: list[Any] = []
    if kind == "sqlalchemy":
        dispatch = getattr(getattr(pool, "pool", pool), "dispatch", None)
        for fn in list(getattr(dispatch, "checkout", ()) or ()):
            candidates.append(getattr(fn, "__self__", None))
    elif kind == "psycopg":
        fn = getattr(pool, "__dict__", {}).get("getconn")
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                candidates.append(cell.cell_contents)
            except ValueError:
                continue
    for c in candidates:
        if c is not None and hasattr(c, "ids") and hasattr(c, "handle"):
            return c
    return None


def _checked_out(kind: str, pool: Any, scan: _Scan) -> list[tuple[Any, list[Any]]]:
    """(raw connection, the objects the application may hold it by) for each connection
    checked out of ``pool`` now."""
    out: list[tuple[Any, list[Any]]] = []
    if kind == "asyncpg":
        for holder in list(getattr(pool, "_holders", ())):
            proxy = getattr(holder, "_proxy", None)
            raw = getattr(holder, "_con", None)
            if getattr(holder, "_in_use", None) is not None and proxy is not None and raw:
                out.append((raw, [proxy]))
    elif kind == "sqlalchemy":
        real = getattr(pool, "pool", pool)
        for fairy in scan.fairies:
            if getattr(fairy, "_pool", None) is not real:
                continue
            dbapi = getattr(fairy, "dbapi_connection", None)
            if dbapi is None or getattr(fairy, "_connection_record", None) is None:
                continue
            forms = [fairy, *scan.sa_connections.get(id(fairy), [])]
            # An AsyncConnection holds the Connection as ``sync_connection``.
            forms += [
                r
                for c in forms[1:]
                for r in gc.get_referrers(c)
                if type(r).__name__ == "AsyncConnection"
            ]
            out.append((dbapi, forms))
    elif kind == "psycopg":
        idle = {id(c) for c in list(getattr(pool, "_pool", ()))}
        for conn in scan.psycopg_conns:
            if conn.__dict__.get("_pool") is pool and id(conn) not in idle and not conn.closed:
                out.append((conn, [conn]))
    return out


def _adopt_connections(kind: str, pool: Any, handle: Any, scan: _Scan) -> int:
    from .holders import find_holding

    st = _adapter_state(kind, pool)
    n = 0
    for raw, forms in _checked_out(kind, pool, scan):
        try:
            if st is not None:
                info = st.ids.get(raw) or (st.track(raw) if kind == "asyncpg" else st.ids.add(raw))
                if info.held:
                    continue
                info.held = True
                if kind == "sqlalchemy" and hasattr(st, "held"):
                    st.held += 1
                cid = info.id
            else:
                cid = f"a{n + 1}"
            holding = find_holding(forms, scan.tasks)
            site = holding.site if holding is not None else ()
            holder = holding.holder if holding is not None else None
            handle.event(
                "adopt",
                conn=cid,
                task=holding.name if holding is not None else "",
                since="attach",
            )
            # An acquire now, at the line that holds it: held time counts from the
            # attach ("at least"), and the leak check reports it past the threshold.
            handle.acquired(cid, 0.0, site, holder)
            n += 1
        except Exception as exc:
            errors.report("adopt connection", exc)
    return n


# -- attach / detach ------------------------------------------------------------------------


def _already_instrumented() -> str:
    """The endpoint of a runtime the application started itself, or ""."""
    runtime_mod = sys.modules.get("poolscope.instrument.runtime")
    rt = getattr(runtime_mod, "_runtime", None) if runtime_mod is not None else None
    if rt is not None and rt.handles:
        return str(rt.endpoint or "(not streaming)")
    return ""


Reply = Callable[[dict[str, Any]], None]


def _later(name: str, work: Callable[[], dict[str, Any]], reply: Reply) -> None:
    """Run ``work`` on a short-lived thread and ``reply`` with its result: whatever waits
    for poolscope's own thread (starting the server, stopping it) happens there, not on
    the application's thread the bootstrap runs on - which may be the one a debugger
    holds while every other thread is stopped."""

    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            result = work()
        except Exception as exc:
            result = {"ok": False, "error": errors.redact(f"{name} failed: {exc!r}")[:300]}
        try:
            reply(result)
        except Exception as exc:
            errors.report(name, exc)

    threading.Thread(target=run, name=f"poolscope-{name}", daemon=True).start()
    # Return only once it runs: a thread born while a debugger holds the process and
    # still unborn when the debugger detaches can be left stopped for good.
    started.wait(5.0)


def attach(request: dict[str, Any], reply: Reply | None = None) -> dict[str, Any] | None:
    """Instrument every live pool in place and stream. Returns the result dict; with
    ``reply``, returns None once the pools are hooked and replies when streaming."""
    global _session
    t0 = time.perf_counter()
    with _lock:
        rid = str(request.get("id", ""))
        if rid and rid in _seen_requests:
            return {"ok": False, "duplicate": True}
        _seen_requests.add(rid)
        if _session is not None:
            return {
                "ok": False,
                "error": f"already injected (streaming on {_session.endpoint}); "
                f"run `poolscope attach {_session.endpoint}` instead",
            }
        existing = _already_instrumented()
        if existing:
            return {
                "ok": False,
                "error": f"already instrumented by the application (streaming on {existing}); "
                f"run `poolscope attach {existing}` instead",
            }
        session = Session(rid)
        session.added_path = request.get("added_path")
        try:
            _attach(session, request)
        except Exception as exc:
            _undo(session)
            # Redacted before the cut: a driver's error may quote the DSN.
            message = errors.redact(f"attach failed inside the target: {exc!r}")[:300]
            return {"ok": False, "error": message}
        _session = session
    pause = time.perf_counter() - t0

    def serve() -> dict[str, Any]:
        global _session
        try:
            _serve(session, request)
        except Exception as exc:
            # Never into the target: a listen address it cannot bind (or parse) undoes
            # the attach and is reported, redacted before the cut like any error.
            with _lock:
                _undo(session)
                if _session is session:
                    _session = None
            message = errors.redact(f"attach failed inside the target: {exc!r}")[:300]
            return {"ok": False, "error": message}
        return {
            "ok": True,
            "endpoint": session.endpoint,
            "pools": [h.name for _, _, h in session.pools],
            "adopted": session.adopted,
            "pause": pause,
            "python": sys.version.split()[0],
        }

    if reply is None:
        return serve()
    _later("attach", serve, reply)
    return None


def _serve(session: Session, request: dict[str, Any]) -> None:
    from . import get_runtime

    listen = request.get("listen")
    session.endpoint = str(get_runtime().serve(listen if listen else "127.0.0.1:0"))


def _attach(session: Session, request: dict[str, Any]) -> None:
    from . import asyncpg_inplace, get_runtime, instrument

    leak = request.get("leak_threshold", 30.0)
    heartbeat = request.get("heartbeat")
    runtime = get_runtime()
    scan = _Scan()
    seen: set[int] = set()
    for kind, pool in scan.pools:
        if _closed(kind, pool):
            continue
        # Engines made by execution_options() share their parent's pool: one each.
        key = id(getattr(pool, "pool", pool)) if kind == "sqlalchemy" else id(pool)
        if key in seen:
            continue
        seen.add(key)
        name = pool_name(kind, pool)
        try:
            if kind == "asyncpg":
                handle = asyncpg_inplace.adopt_pool(
                    pool, runtime, name=name, leak_threshold=leak, heartbeat=heartbeat
                )
            else:
                instrument(pool, name=name, leak_threshold=leak, heartbeat=heartbeat, listen=False)
                handle = _handle_of(runtime, kind, pool)
            session.pools.append((kind, pool, handle))
            if handle is not None:
                session.adopted += _adopt_connections(kind, pool, handle, scan)
        except Exception as exc:
            errors.report(f"inject {kind}", exc)


def _handle_of(runtime: Any, kind: str, pool: Any) -> Any:
    st = _adapter_state(kind, pool)
    if st is not None:
        return st.handle
    # The reference pool keeps its handle itself.
    for attr in ("_handle", "handle", "_ps_handle"):
        h = getattr(pool, attr, None)
        if h is not None and hasattr(h, "acquired"):
            return h
    return None


def _uninstrument(kind: str, pool: Any, handle: Any) -> None:
    if kind == "asyncpg":
        from . import asyncpg_inplace

        asyncpg_inplace.release_pool(pool)
        return
    import poolscope.instrument as ps

    # The adapter's own detach (what ps.uninstrument does, without waiting for the
    # runtime thread to stop: that is _stop_runtime's, off the application's thread).
    adapter_for = getattr(ps, "_adapter_for", None)
    adapter = adapter_for(pool) if adapter_for is not None else None
    if adapter is not None and hasattr(adapter, "detach"):
        adapter.detach(pool)
        return
    _undo_in_place(kind, pool, handle)


def _undo_in_place(kind: str, pool: Any, handle: Any) -> None:
    """Remove the hooks the in-place adapters install, for a library without
    ``ps.uninstrument`` yet: instance attributes and SQLAlchemy event listeners."""
    if kind == "sqlalchemy":
        from sqlalchemy import event

        real = getattr(pool, "pool", pool)
        st = _adapter_state(kind, pool)
        if st is not None:
            for name in (
                "checkout",
                "checkin",
                "invalidate",
                "soft_invalidate",
                "close",
                "detach",
                "close_detached",
            ):
                for fn in list(getattr(real.dispatch, name, ()) or ()):
                    if getattr(fn, "__self__", None) is st:
                        event.remove(real, name, fn)
        for attr in ("_do_get", "_invoke_creator"):
            if getattr(real.__dict__.get(attr), "_poolscope", False):
                del real.__dict__[attr]
        dialect = getattr(real, "_dialect", None)
        if dialect is not None and getattr(
            dialect.__dict__.get("_do_ping_w_event"), "_poolscope", False
        ):
            del dialect.__dict__["_do_ping_w_event"]
    elif kind == "psycopg":
        for attr in (
            "getconn",
            "putconn",
            "_connect",
            "_close_connection",
            "_check_connection",
            "check_connection",
            "_return_connection",
        ):
            pool.__dict__.pop(attr, None)
    if handle is not None:
        from . import get_runtime

        get_runtime().unregister(handle)


def _unhook(session: Session) -> None:
    """Remove every hook (the application's thread: quick, waits for nothing)."""
    for kind, pool, handle in session.pools:
        try:
            _uninstrument(kind, pool, handle)
        except Exception as exc:
            errors.report(f"detach {kind}", exc)
    session.pools.clear()


def _finish(session: Session) -> None:
    """Stop poolscope's thread and server; take poolscope's path entry back out."""
    _stop_runtime()
    if session.added_path and session.added_path in sys.path:
        sys.path.remove(session.added_path)


def _undo(session: Session) -> None:
    _unhook(session)
    _finish(session)


def _stop_runtime() -> None:
    """Stop poolscope's thread and server and forget the runtime, so that the process
    is as before and a later inject starts a new one."""
    from . import runtime as runtime_mod

    rt = runtime_mod._runtime
    if rt is None:
        return
    rt.shutdown(1.0)
    loop, thread = rt.loop, rt.thread
    if loop is not None and thread is not None and thread.is_alive():
        import asyncio

        # Cancel the runtime's tasks (drain, state, leak loops, observer senders) and
        # let them finish, so no "Task was destroyed" warning reaches the target's
        # stderr; then stop the loop and its thread.
        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(2.0)
        except Exception as exc:
            errors.report("detach tasks", exc)
        loop.call_soon_threadsafe(loop.stop)
    if thread is not None and thread is not threading.current_thread():
        thread.join(2.0)
    if loop is not None and not loop.is_running():
        loop.close()
    try:
        atexit.unregister(rt.shutdown)
    except Exception:
        pass
    runtime_mod._runtime = None


def detach(request: dict[str, Any], reply: Reply | None = None) -> dict[str, Any] | None:
    """Undo the inject. Returns the result dict; with ``reply``, returns None once the
    hooks are gone and replies when poolscope's thread and server have stopped."""
    global _session
    t0 = time.perf_counter()
    with _lock:
        rid = str(request.get("id", ""))
        if rid and rid in _seen_requests:
            return {"ok": False, "duplicate": True}
        _seen_requests.add(rid)
        session = _session
        if session is None:
            return {"ok": False, "error": "not injected by poolscope (nothing to detach)"}
        n = len(session.pools)
        try:
            _unhook(session)
        finally:
            _session = None
    pause = time.perf_counter() - t0

    def finish() -> dict[str, Any]:
        _finish(session)
        return {"ok": True, "pools": n, "pause": pause}

    if reply is None:
        return finish()
    _later("detach", finish, reply)
    return None
