"""Turn a DSN or connection parameters into a pool ``target``: ``host:port/dbname``.

Never a user name, never a password: the target travels in events to every observer
and into recordings. Handles libpq URLs (``postgresql://u:p@h:5432/db?x=y``, also
SQLAlchemy's ``postgresql+driver://``), libpq keyword strings (``host=h password=p``)
and multi-host lists. Anything unparseable becomes ``"?"`` rather than leak text.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 5432
_KV = re.compile(r"""(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)""")


def target(
    host: Any = None, port: Any = None, dbname: Any = None, *, default_port: int = DEFAULT_PORT
) -> str:
    """``host:port/dbname`` from parts (lists of hosts/ports are joined with commas)."""
    hosts = _as_list(host) or ["localhost"]
    ports = _as_list(port)
    pairs = []
    for i, h in enumerate(hosts):
        p = ports[i] if i < len(ports) else (ports[-1] if ports else default_port)
        h = str(h)
        # A Unix socket directory has no port worth showing separately from its path.
        pairs.append(f"{h}:{p}")
    out = ",".join(pairs)
    return f"{out}/{dbname}" if dbname else out


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v not in (None, "")]
    if isinstance(value, str) and "," in value:
        return [v for v in value.split(",") if v]
    return [value]


def target_from_dsn(dsn: str | None, **overrides: Any) -> str:
    """The redacted target of a DSN; ``overrides`` (host, port, database/dbname) win."""
    host: Any = None
    port: Any = None
    db: Any = None
    try:
        if dsn:
            if "://" in dsn:
                host, port, db = _parse_url(dsn)
            else:
                kv = {k: v.strip("'") for k, v in _KV.findall(dsn)}
                host, port, db = (
                    kv.get("host") or kv.get("hostaddr"),
                    kv.get("port"),
                    kv.get("dbname"),
                )
    except Exception:
        return "?"
    host = overrides.get("host") or host
    port = overrides.get("port") or port
    db = overrides.get("database") or overrides.get("dbname") or db
    return target(host, port, db)


def _parse_url(dsn: str) -> tuple[Any, Any, Any]:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rpartition("@")[2]  # drop user:password
    hosts: list[str] = []
    ports: list[str] = []
    for item in netloc.split(","):
        if not item:
            continue
        if item.startswith("["):  # IPv6 literal
            h, _, rest = item[1:].partition("]")
            hosts.append(h)
            if rest.startswith(":") and rest[1:]:
                ports.append(rest[1:])
        else:
            h, sep, p = item.partition(":")
            hosts.append(unquote(h))
            if sep and p:
                ports.append(p)
    if any(not p.isdigit() for p in ports) or "@" in parts.path:
        # An unencoded "/" or "@" in a password confuses URL parsing: say nothing
        # rather than show a fragment of the secret.
        raise ValueError("ambiguous DSN")
    db = unquote(parts.path.lstrip("/")) or None
    # libpq lets the query string carry host/port/dbname too.
    for key, value in (q.split("=", 1) for q in parts.query.split("&") if "=" in q):
        if key == "host" and not hosts:
            hosts = [unquote(value)]
        elif key == "port" and not ports:
            ports = [value]
        elif key == "dbname" and not db:
            db = unquote(value)
    return hosts or None, ports or None, db
