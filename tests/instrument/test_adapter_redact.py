"""Pool targets never carry a user name or a password."""

from __future__ import annotations

import pytest

from poolscope.instrument.redact import target, target_from_dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://bob:s3cret@db.example:6543/orders?sslmode=require",
            "db.example:6543/orders",
        ),
        ("postgresql+psycopg://bob:s3cret@db/orders", "db:5432/orders"),
        ("postgresql://bob:s3cret@h1:1,h2:2/orders", "h1:1,h2:2/orders"),
        ("postgresql://bob:s3c@ret@h:5/orders", "h:5/orders"),
        ("postgresql://bob:s3c/ret@h:5/orders", "?"),
        ("host=h port=5433 dbname=orders user=bob password=s3cret", "h:5433/orders"),
        ("host=h dbname=orders password='s3 cret'", "h:5432/orders"),
        ("postgres:///orders?host=/run/pg", "/run/pg:5432/orders"),
        ("postgresql://[::1]:7/orders", "::1:7/orders"),
    ],
)
def test_target_from_dsn_redacts(dsn: str, expected: str) -> None:
    out = target_from_dsn(dsn)
    assert out == expected
    assert "s3" not in out and "bob" not in out and "cret" not in out


def test_overrides_and_parts() -> None:
    assert target_from_dsn(None, host="x", port=1, database="d") == "x:1/d"
    assert target("h", None, None) == "h:5432"
