"""The one redaction function, fuzzed over every DSN form and every place a secret is
written: URL userinfo (raw and percent-encoded), libpq keywords (quoted and not),
environment assignments, dict reprs, JSON, ``password: x``, query strings, HTTP
headers and command lines; and pool targets parsed like libpq.

Every generated secret is drawn from letters that appear nowhere else in the input
(SECRET_LETTERS), so a leak of any fragment of it - not only of the whole - is an
uppercase letter from that set in the output.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from poolscope.instrument.adapters import describe_error
from poolscope.instrument.redact import (
    is_secret_name,
    redact,
    redact_argv,
    target,
    target_from_dsn,
)

pytestmark = [pytest.mark.fast, pytest.mark.fuzz]

SECRET_LETTERS = "QZXJVFM"
# Everything a password may hold that breaks naive parsing.
SPECIALS = " @#?:/%&=',;!$*()[]{}\"\\+~<>|^`"
NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8).filter(
    lambda s: s[0].isalpha()
)
HOST = st.one_of(NAME, st.builds(lambda a, b: f"{a}.{b}", NAME, NAME))
PORT = st.integers(1, 65535)
SCHEMES = ["postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg"]


def secret(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=24).filter(
        lambda s: any(c in SECRET_LETTERS for c in s)
    )


# Any character but a newline (a secret is masked up to the end of its line at most).
ANY_SECRET = secret(SECRET_LETTERS + SPECIALS + "\t\r\x0b\x1c\u2028\u00e9")
# A value written unquoted (libpq keywords, ``password: x``, flags): no whitespace, and
# not starting with a quote (that would be a quoted value).
BARE_SECRET = secret(SECRET_LETTERS + SPECIALS.replace(" ", "") + "\u00e9").filter(
    lambda s: s[0] not in "'\""
)
CONTEXT = st.text("abcdefghijklmnopqrstuvwxyz0123456789 .,()-", max_size=30)


def leaked(text: str) -> set[str]:
    return set(text) & set(SECRET_LETTERS)


# -- targets ---------------------------------------------------------------------------


@st.composite
def hostspecs(draw: st.DrawFn) -> tuple[str, str]:
    """(the URL's host list, the target's host:port list)."""
    hosts = draw(
        st.lists(st.tuples(st.one_of(HOST, st.just("[::1]")), PORT), min_size=1, max_size=3)
    )
    url = ",".join(f"{h}:{p}" for h, p in hosts)
    shown = ",".join(f"{h.strip('[]')}:{p}" for h, p in hosts)
    return url, shown


@given(
    scheme=st.sampled_from(SCHEMES),
    user=NAME,
    pw=ANY_SECRET,
    hosts=hostspecs(),
    db=NAME,
    query=st.sampled_from(["", "?sslmode=require", "?sslmode=require&application_name=x"]),
)
@settings(max_examples=400)
def test_target_of_a_url_with_an_encoded_password_is_exact(
    scheme: str, user: str, pw: str, hosts: tuple[str, str], db: str, query: str
) -> None:
    dsn = f"{scheme}://{user}:{quote(pw, safe='')}@{hosts[0]}/{db}{query}"
    assert target_from_dsn(dsn) == f"{hosts[1]}/{db}"


@given(
    scheme=st.sampled_from(SCHEMES),
    user=NAME,
    pw=ANY_SECRET,
    hosts=hostspecs(),
    tail=st.one_of(NAME.map(lambda d: f"/{d}"), st.just("?sslmode=require"), st.just("")),
)
@settings(max_examples=300)
@example(scheme="postgresql", user="admin", pw="2024#Q", hosts=("db:5432", "db:5432"), tail="/x")
@example(scheme="postgresql", user="admin", pw="2024?Q", hosts=("db:5432", "db:5432"), tail="/x")
@example(scheme="postgresql", user="u", pw="5/Q?M=1", hosts=("h:5", "h:5"), tail="/x")
def test_target_of_a_url_with_a_raw_password_never_shows_any_of_it(
    scheme: str, user: str, pw: str, hosts: tuple[str, str], tail: str
) -> None:
    """Unencoded ``@ # ? / :`` in the password: the right target, or ``?`` - never a
    fragment of the password (``admin:2024`` of ``admin:2024#x@db``)."""
    dsn = f"{scheme}://{user}:{pw}@{hosts[0]}{tail}"
    out = target_from_dsn(dsn)
    assert not leaked(out), (dsn, out)
    db = tail[1:] if tail.startswith("/") else ""
    expected = f"{hosts[1]}/{db}" if db else hosts[1]
    assert out in (expected, "?"), (dsn, out)
    if "/" not in pw and not ("=" in pw and set(pw) & set("?#")):
        # libpq's own reading: the userinfo ends at the last "@" before the first "/".
        assert out == expected, (dsn, out)


@given(host=HOST, port=PORT, db=NAME, user=NAME, pw=ANY_SECRET, quoted=st.booleans())
@settings(max_examples=300)
def test_target_of_a_keyword_dsn(
    host: str, port: int, db: str, user: str, pw: str, quoted: bool
) -> None:
    # libpq ends an unquoted value at C-locale whitespace: such a password must be quoted
    # (other characters Python calls whitespace, such as \x1c, need not be).
    if quoted or not pw or any(c in pw for c in " \t\n\r\f\v'\\"):
        value = "'" + pw.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        value = pw
    dsn = f"password={value} host={host} port={port} dbname={db} user={user}"
    assert target_from_dsn(dsn) == f"{host}:{port}/{db}"


def test_target_from_parts() -> None:
    assert target("h", None, None) == "h:5432"
    assert target(["a", "b"], [1, 2], "d") == "a:1,b:2/d"
    assert target_from_dsn(None, host="x", port=1, database="d") == "x:1/d"


# -- free text -------------------------------------------------------------------------


def _libpq_quoted(pw: str) -> str:
    return "'" + pw.replace("\\", "\\\\").replace("'", "\\'") + "'"


FORMS = {
    "url raw": lambda pw: f"postgresql://app:{pw}@db.example:5432/orders",
    "url encoded": lambda pw: f"postgres://app:{quote(pw, safe='')}@db/orders?sslmode=require",
    "url no user": lambda pw: f"postgresql://:{pw}@db/orders",
    "url sqlalchemy": lambda pw: f"postgresql+asyncpg://app:{pw}@h1:1,h2:2/orders",
    "libpq quoted": lambda pw: f"host=db password={_libpq_quoted(pw)} dbname=orders",
    "sslpassword quoted": lambda pw: f"sslpassword={_libpq_quoted(pw)}",
    "PGPASSWORD quoted": lambda pw: f"PGPASSWORD={_libpq_quoted(pw)} psql",
    "dict repr": lambda pw: repr({"user": "app", "password": pw, "host": "db"}),
    "dict repr bytes": lambda pw: repr({"password": pw.encode()}),
    "json": lambda pw: json.dumps({"user": "app", "password": pw}),
    "json compact": lambda pw: json.dumps({"password": pw}, separators=(",", ":")),
    "json api_key": lambda pw: json.dumps({"api_key": pw}),
    "query encoded": lambda pw: f"postgresql://app@db/orders?password={quote(pw, safe='')}",
}
BARE_FORMS = {
    "libpq bare": lambda pw: f"host=db password={pw} dbname=orders",
    "PGPASSWORD": lambda pw: f"PGPASSWORD={pw} psql -h db",
    "pass=": lambda pw: f"pass={pw}",
    "pwd=": lambda pw: f"user=app;pwd={pw};server=db",
    "yaml": lambda pw: f"password: {pw}",
    "token": lambda pw: f"token = {pw}",
    "bearer": lambda pw: f"Authorization: Bearer {pw}",
    "python kwargs": lambda pw: f"connect(host='db', password={pw!r})",
    "flag": lambda pw: f"command failed: app --password {pw} --verbose",
    "flag=": lambda pw: f"command failed: app --db-password={pw} -v",
}


@pytest.mark.parametrize("form", sorted(FORMS))
@given(pw=ANY_SECRET, before=CONTEXT, after=CONTEXT)
@settings(max_examples=80)
def test_redact_hides_every_form(form: str, pw: str, before: str, after: str) -> None:
    text = f"could not connect {before} {FORMS[form](pw)} {after}: refused"
    out = redact(text)
    assert not leaked(out), (text, out)
    assert "***" in out
    assert redact(out) == out, "redaction is stable"


@pytest.mark.parametrize("form", sorted(BARE_FORMS))
@given(pw=BARE_SECRET, before=CONTEXT, after=CONTEXT)
@settings(max_examples=80)
def test_redact_hides_every_bare_form(form: str, pw: str, before: str, after: str) -> None:
    text = f"error {before} {BARE_FORMS[form](pw)} {after}"
    out = redact(text)
    assert not leaked(out), (text, out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The cases that leaked before (issue 12, item 4).
        ("to postgresql://app:my SECRET@db/x failed", "to postgresql://app:***@db/x failed"),
        ("{'password': 'SECRET'}", "{'password': '***'}"),
        ("PGPASSWORD=SECRET psql", "PGPASSWORD=*** psql"),
        ('{"password": "SECRET"}', '{"password": "***"}'),
        ("password: SECRET", "password: ***"),
        ("pass=SECRET", "pass=***"),
        # A command line quoted in a message.
        ("exited: app --password SECRET -v", "exited: app --password *** -v"),
        ("exited: app --api-key=SECRET", "exited: app --api-key=***"),
    ],
)
def test_cases_that_leaked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "KeyError: 'password'",
        'InvalidPasswordError: password authentication failed for user "app"',
        'connection to server at "db" (10.0.0.1), port 5432 failed: Connection refused',
        'duplicate key value violates unique constraint "k" DETAIL: Key (id)=(5) already exists.',
        "auth-db:5432/orders",
        "token-service.internal:8443",
        "timeout after 5.0 s (host=db port=5432 sslmode=require)",
        "postgresql://app@db:5432/orders",
        "exited: psql -p 5432 -h db -U app --no-password -c select",
    ],
)
def test_ordinary_messages_are_left_alone(text: str) -> None:
    assert redact(text) == text


@given(
    host=HOST,
    names=st.lists(st.sampled_from(["host", "port", "dbname", "user", "sslmode", "x"]), max_size=4),
    words=CONTEXT,
)
def test_no_secret_no_change(host: str, names: list[str], words: str) -> None:
    text = " ".join(f"{n}={host}" for n in names) + f" {words} {host}:5432/db"
    assert redact(text) == text


@given(pw=ANY_SECRET, pad=st.integers(0, 320))
@settings(max_examples=300)
def test_errors_are_redacted_before_they_are_cut(pw: str, pad: int) -> None:
    """A DSN straddling the 300-character cut leaked its password's first half."""
    exc = ConnectionError("x" * pad + f" postgresql://app:{pw}@db/orders refused")
    out = describe_error(exc)
    assert len(out) <= 300
    assert not leaked(out), out


# -- command lines ---------------------------------------------------------------------

ARGV_FORMS = {
    "--password X": lambda pw: ["--password", pw],
    "--password=X": lambda pw: [f"--password={pw}"],
    "-password X": lambda pw: ["-password", pw],
    "--db-password X": lambda pw: ["--db-password", pw],
    "--api-key=X": lambda pw: [f"--api-key={pw}"],
    "--apiKey X": lambda pw: ["--apiKey", pw],
    "--token X": lambda pw: ["--token", pw],
    "--secret=X": lambda pw: [f"--secret={pw}"],
    "--key X": lambda pw: ["--key", pw],
    "--credentials X": lambda pw: ["--credentials", pw],
    "--passwd X": lambda pw: ["--passwd", pw],
    "--pwd X": lambda pw: ["--pwd", pw],
    "--dsn URL": lambda pw: ["--dsn", f"postgresql://app:{pw}@db/orders"],
    "--dsn=URL": lambda pw: [f"--dsn=postgresql://app:{pw}@db/orders"],
    "URL": lambda pw: [f"postgres://app:{pw}@db"],
    "password=X": lambda pw: [f"password={pw}"],
    "PGPASSWORD=X": lambda pw: [f"PGPASSWORD={pw}"],
    "libpq": lambda pw: [f"host=db password={_libpq_quoted(pw)}"],
}


@pytest.mark.parametrize("form", sorted(ARGV_FORMS))
@given(pw=ANY_SECRET, before=st.lists(NAME, max_size=3), after=st.lists(NAME, max_size=3))
@settings(max_examples=50)
def test_redact_argv_hides_every_form(
    form: str, pw: str, before: list[str], after: list[str]
) -> None:
    argv = ["app.py", *before, *ARGV_FORMS[form](pw), *after]
    out = redact_argv(argv)
    assert len(out) == len(argv)
    assert not leaked(" ".join(out)), out
    assert out[0] == "app.py" and out[1 : 1 + len(before)] == before
    assert out[len(out) - len(after) :] == after or not after


def test_redact_argv_leaves_ordinary_flags() -> None:
    argv = ["app.py", "-p", "5432", "--host", "db", "--no-password", "--workers=4", "run"]
    assert redact_argv(argv) == argv


@pytest.mark.parametrize(
    ("name", "secret_"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("db_password", True),
        ("apiKey", True),
        ("api-key", True),
        ("auth_token", True),
        ("secretKey", True),
        ("credentials", True),
        ("pass", True),
        ("no-password", False),
        ("KeyError", False),
        ("InvalidPasswordError", False),
        ("host", False),
        ("author", False),
        ("keyspace", False),
        ("passive", False),
    ],
)
def test_secret_names(name: str, secret_: bool) -> None:
    assert is_secret_name(name) is secret_


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        "a." * 100_000 + ":",
        "a+" * 100_000 + "=",
        "x://y:" * 40_000,
        "@" + "a://a:" * 40_000,
        "a://" * 50_000 + "b:c@d",
        '"a"' * 70_000 + ":",
        "password='" * 30_000,
        "k:" * 100_000,
    ],
    ids=lambda t: t[:12],
)
def test_hostile_texts_take_linear_time(text: str) -> None:
    """Error texts may echo what an attacker sent: no pattern may rescan a stretch
    from many starting points (these inputs would take hours if one did)."""
    out = redact(text)
    assert len(out) <= len(text) + 3


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_characters="=: \t"), max_size=80)
    | st.from_regex(r"\ATask-[0-9]{1,9}\Z")
)
def test_text_without_a_separator_or_a_blank_has_no_name_to_mask(text: str) -> None:
    """redact's shortcut (unique asyncio task names skip the regular expressions) is
    exact: without "=", ":" and a blank, no name-and-value can match."""
    from poolscope.instrument import redact as module

    assert module._NAMED.search(text) is None
    assert redact(text) == text
