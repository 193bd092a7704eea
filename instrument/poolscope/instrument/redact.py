"""Secrets never leave the application: the one redaction function, and pool targets.

Everything poolscope sends, logs or writes passes through here first - error texts
(a driver's message may quote the DSN), pool names (a DSN given as a name), targets,
the command line (``--dsn postgresql://u:PW@h``, ``--password PW``) and source lines
of stacks. Redaction happens before any truncation: a secret cut in half by a length
limit would leak its first half.

``redact(text)`` masks

- the password of a URL's userinfo, ``scheme://user:PASSWORD@host``, up to the last
  ``@`` of the line (an unencoded space, ``@``, ``#`` or ``?`` in the password too);
- the value of anything named like a secret (:func:`is_secret_name`) and given with
  ``=`` or ``:`` - libpq keywords (``password=pw``, ``password='p w'``), environment
  assignments (``PGPASSWORD=pw``), dict reprs (``'password': 'pw'``), JSON
  (``"password": "pw"``), YAML-ish and log text (``password: pw``), query strings
  (``?password=pw``) and HTTP headers (``Authorization: Bearer tok``).

``redact_argv(argv)`` does that to every argument and also masks the value of a flag
named like a secret, ``--password PW`` and ``--password=PW``. ``-p`` is not masked:
it is the port for psql and most tools, a password only for some.

``target_from_dsn(dsn)`` is a pool's ``host:port/dbname``: never a user name, never a
password, ``"?"`` when the DSN cannot be read without guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

DEFAULT_PORT = 5432
MASK = "***"

# -- names ---------------------------------------------------------------------------

# Words that name a secret on their own (``--key``, ``pass=``, ``auth:``) ...
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "pw",
        "pgpass",
        "secret",
        "secrets",
        "token",
        "key",
        "apikey",
        "credential",
        "credentials",
        "cred",
        "creds",
        "auth",
        "authorization",
    }
)
# ... and stems that make any word containing them one (PGPASSWORD, sslpassword,
# authtoken, dbsecret).
_SECRET_STEMS = ("password", "passwd", "passphrase", "secret", "token", "credential", "apikey")
# A last word that makes the name a type, not a setting: ``KeyError: 'x'`` and
# asyncpg's ``InvalidPasswordError: password authentication failed`` are messages.
_NOT_SECRET_LAST = frozenset({"error", "exception", "warning", "failed", "failure"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def is_secret_name(name: str) -> bool:
    """True for a setting, flag or key whose value is a secret: ``password``,
    ``PGPASSWORD``, ``db-password``, ``api_key``, ``apiKey``, ``token``, ``secret``,
    ``credentials``, ``auth`` ... but not ``no-password`` (a switch) nor ``KeyError``."""
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]
    if not words or words[0] == "no" or words[-1] in _NOT_SECRET_LAST:
        return False
    return any(w in _SECRET_WORDS or any(s in w for s in _SECRET_STEMS) for w in words)


# -- free text ----------------------------------------------------------------------

# The user part of a URL's userinfo, up to the ":" before its password. Every pattern
# here runs in time linear in the text (no pattern can rescan a stretch from many
# starting points): error texts may echo input an attacker chose.
_USER_END = re.compile(r"[\s:/]")  # an unencoded "@" in the user name too
_SCHEME_TAIL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,39}\Z")


def _mask_url_passwords(line: str) -> str:
    """``scheme://user:PASSWORD@`` in one line, masked up to the line's last ``@``, so a
    password with an unencoded ``@``, space, ``#`` or ``?`` is masked whole (masking a
    little more is the safe side of the ambiguity)."""
    last_at = line.rfind("@")
    i = line.find("://")
    while 0 <= i < last_at:
        user_end = _USER_END.search(line, i + 3)
        if (
            user_end is not None
            and line[user_end.start()] == ":"
            and user_end.start() < last_at
            and _SCHEME_TAIL.search(line, max(0, i - 40), i) is not None
        ):
            return f"{line[: user_end.start() + 1]}{MASK}{line[last_at:]}"
        i = line.find("://", i + 3)
    return line


# name <sep> value, where the name may be quoted ('password': / "password":), or a
# flag quoted from a command line (--password=pw, --password pw). A name starts where
# a word does (never inside one: linear time again).
_NAMED = re.compile(
    r"""(?<![\w.-])(?P<q>["']?)(?P<dashes>--?)?(?P<name>[A-Za-z_][\w.-]*)(?P=q)"""
    r"""(?:[ \t]*(?P<sep>[=:])[ \t]*|(?P<space>[ \t]+))"""
)
_VALUE = re.compile(
    # 'quoted' (libpq, Python repr) and "quoted" (JSON, repr), and what sticks to the
    # closing quote (the shell's PGPASSWORD='a'b is "ab")
    r"""(?:[bBrRuU]{0,2}'(?:[^'\\\n]|\\.)*'|[bBrRuU]{0,2}"(?:[^"\\\n]|\\.)*")"""
    r"""(?:[^\s,;:}\])&]\S*)?"""
    r"""|['"][^\n]*"""  # an unterminated quote: to the end of the line
    r"""|(?i:bearer|basic|digest|token)[ \t]+\S+"""  # Authorization: Bearer tok
    r"""|\S+"""
)


def plain(text: str) -> bool:
    """No secret can be in ``text``: no separator, and only a flag followed by a blank
    could take a value. asyncio's "Task-8812", unique per request, is plain. (The C
    fold, ``_accel.c``'s ``plain_name``, tests the same characters.)"""
    return (
        "=" not in text
        and ":" not in text
        and ("-" not in text or (" " not in text and "\t" not in text))
    )


def redact(text: str) -> str:
    """``text`` with every password and secret value replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    if plain(text):  # not in the regular expressions
        return text
    if "://" in text and "@" in text:
        text = "\n".join(_mask_url_passwords(line) for line in text.split("\n"))
    out: list[str] = []
    done = pos = 0  # text[:done] is in out; the next name is searched from pos
    while (m := _NAMED.search(text, pos)) is not None:
        if m.group("space") is not None and m.group("dashes") is None:
            pos = m.end()  # a word and a space: only a flag takes its value so
            continue
        start = m.end()
        if m.group("dashes") is not None and m.group("sep") == ":":
            # A flag's value that starts with ":" (--password :pw), or --password: pw.
            if m.start("sep") > m.end("name"):
                start = m.start("sep")
        elif m.group("sep") == ":" and not m.group("q") and m.end() == m.end("sep"):
            # "name: value" takes a space after an unquoted name (YAML, logs), so
            # host:port ("auth-db:5432") and a URL's scheme are not names.
            pos = m.end()
            continue
        if not is_secret_name(m.group("name")):
            pos = m.end("name") + 1  # its value may itself hold "password=..."
            continue
        v = _VALUE.match(text, start)
        if v is None:  # nothing after the separator
            pos = m.end()
            continue
        value = v.group(0)
        quote = (
            value[-1] if len(value) > 1 and value[-1] in "'\"" and value[-1] in value[:-1] else ""
        )
        out.append(text[done:start])
        out.append(f"{quote}{MASK}{quote}")  # a masked JSON or repr stays well-formed
        done = pos = v.end()
    out.append(text[done:])
    return "".join(out)


def redact_argv(argv: Iterable[Any]) -> list[str]:
    """A command line with secrets masked: each argument through :func:`redact`, and
    the value of a secret-named flag (``--password PW``, ``--password=PW``,
    ``-password PW``) replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for raw in argv:
        arg = str(raw)
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        m = _FLAG.match(arg)
        if m is not None and (m.group("dashes") or m.group("value") is not None):
            secret = is_secret_name(m.group("name"))
        else:
            secret = False
        if m is not None and secret:
            if m.group("value") is not None:  # --password=PW, PGPASSWORD=P W
                out.append(f"{m.group('dashes')}{m.group('name')}={MASK}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact(arg))
    return out


# --name, -name, --name=value, or NAME=value (an environment assignment via env(1)).
_FLAG = re.compile(r"(?P<dashes>-{0,2})(?P<name>[A-Za-z_][\w.-]*)(?:=(?P<value>.*))?\Z", re.DOTALL)


# -- targets ------------------------------------------------------------------------


def target(
    host: Any = None, port: Any = None, dbname: Any = None, *, default_port: int = DEFAULT_PORT
) -> str:
    """``host:port/dbname`` from parts (lists of hosts/ports are joined with commas)."""
    hosts = _as_list(host) or ["localhost"]
    ports = _as_list(port)
    pairs = []
    for i, h in enumerate(hosts):
        p = ports[i] if i < len(ports) else (ports[-1] if ports else default_port)
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


# libpq splits a keyword DSN on C-locale whitespace only (re.ASCII): a password may hold
# other characters Python calls whitespace (\x1c-\x1f, \x85, ...), and splitting on
# them would read the rest of the password as keywords of its own.
_KV = re.compile(r"""(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)""", re.ASCII)


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
    return redact(target(host, port, db))


def _parse_url(dsn: str) -> tuple[Any, Any, Any]:
    """Host, port and dbname of a libpq URL, read the way libpq reads it.

    The userinfo ends at the last ``@`` before the first ``/``, so ``#``, ``?``, ``:``
    and ``@`` in a password stay in the password (urlsplit would end the authority at
    the ``#`` and show ``admin:2024`` of ``admin:2024#x@db``). What cannot be read
    without guessing - an ``@`` after the first ``/`` (an unencoded ``/`` in the
    password), a ``?...=`` before the ``@`` (a query value or a password?) - raises,
    and the target is ``"?"``.
    """
    rest = dsn.split("://", 1)[1]
    slash = rest.find("/")
    head, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in tail:
        raise ValueError("ambiguous DSN: '@' after the first '/'")
    if "@" in head:
        userinfo, _, authority = head.rpartition("@")
        query_like = re.search(r"[?#]", userinfo)
        if query_like is not None and "=" in userinfo[query_like.start() :]:
            raise ValueError("ambiguous DSN: a query before the last '@'")
    else:
        authority = head
    query = ""
    cut = re.search(r"[?#]", authority)
    if cut is not None:  # no path: "postgresql://h?sslmode=x"
        if authority[cut.start()] == "?":
            query = authority[cut.start() + 1 :].split("#", 1)[0]
        authority = authority[: cut.start()]
    path = tail[1:]
    cut = re.search(r"[?#]", path)
    if cut is not None:
        if path[cut.start()] == "?":
            query = path[cut.start() + 1 :].split("#", 1)[0]
        path = path[: cut.start()]
    hosts: list[str] = []
    ports: list[str] = []
    for item in authority.split(","):
        if not item:
            continue
        if item.startswith("["):  # IPv6 literal
            h, _, after = item[1:].partition("]")
            hosts.append(h)
            if after.startswith(":") and after[1:]:
                ports.append(after[1:])
            elif after:
                raise ValueError("bad IPv6 host")
        else:
            h, sep, p = item.partition(":")
            hosts.append(unquote(h))
            if sep and p:
                ports.append(p)
    if any(not p.isdigit() for p in ports):
        raise ValueError("port is not a number")
    db = unquote(path) or None
    # libpq lets the query string carry host/port/dbname too.
    for key, value in (q.split("=", 1) for q in query.split("&") if "=" in q):
        if key == "host" and not hosts:
            hosts = [unquote(value)]
        elif key == "port" and not ports:
            if not value.isdigit():
                raise ValueError("port is not a number")
            ports = [value]
        elif key == "dbname" and not db:
            db = unquote(value)
    return hosts or None, ports or None, db
