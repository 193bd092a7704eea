"""The adapter protocol and registry: what is supported, version ranges refused in one
line, and every declared private attribute present in the installed libraries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import poolscope.instrument as ps
from poolscope.instrument import adapter as adapter_module
from poolscope.instrument.adapter import (
    Adapter,
    check_version,
    describe_range,
    installed_version,
    missing_private_attributes,
    registry,
)
from poolscope.instrument.asyncpg import AsyncpgAdapter
from poolscope.instrument.psycopg import PsycopgPoolAdapter
from poolscope.instrument.reference import ReferenceAdapter
from poolscope.instrument.sqlalchemy import SQLAlchemyAdapter

pytestmark = pytest.mark.fast


@pytest.fixture
def restore_registry() -> Iterator[None]:
    saved = list(registry.adapters)
    yield
    registry.adapters[:] = saved


def test_every_builtin_adapter_is_registered_and_follows_the_protocol() -> None:
    kinds = [a.kind for a in registry]
    for kind in ("poolscope", "asyncpg", "sqlalchemy", "psycopg_pool"):
        assert kind in kinds
    for a in registry:
        assert isinstance(a, Adapter)
        assert a.attaches in ("in_place", "proxy")
    assert next(a for a in registry if a.kind == "asyncpg").attaches == "proxy"


def test_unsupported_object_names_what_is_supported() -> None:
    with pytest.raises(TypeError) as err:
        ps.instrument(object(), listen=False)
    text = str(err.value)
    assert "\n" not in text
    for part in (
        "builtins.object",
        "asyncpg >=0.30,<0.33",
        "SQLAlchemy >=2.0.5,<2.2",
        "psycopg-pool >=3.2.8,<3.4",
        "poolscope.pool.Pool",
    ):
        assert part in text
    with pytest.raises(TypeError):
        ps.uninstrument(object())


@pytest.mark.parametrize(
    ("adapter", "old", "new"),
    [
        (AsyncpgAdapter(), "0.29.0", "0.33.0"),
        (SQLAlchemyAdapter(), "2.0.4", "2.2.0"),
        (PsycopgPoolAdapter(), "3.2.7", "3.4.0"),
    ],
)
def test_versions_outside_the_range_are_refused_in_one_line(
    adapter: Adapter, old: str, new: str
) -> None:
    for version in (old, new):
        with pytest.raises(TypeError) as err:
            check_version(adapter, version)
        assert "\n" not in str(err.value)
        assert version in str(err.value) and describe_range(adapter) in str(err.value)
    low = adapter.supported[0]
    assert low is not None
    check_version(adapter, low)  # the bounds: inclusive below
    installed = installed_version(adapter.distribution)
    assert installed is not None
    check_version(adapter, installed)  # what this venv has is in range


async def test_instrument_refuses_a_library_outside_the_adapter_range(
    restore_registry: None,
) -> None:
    """The range check is on instrument()'s path: an adapter that supports only older
    releases than the installed asyncpg refuses it, and nothing is hooked."""
    import asyncpg

    class OnlyOld(AsyncpgAdapter):
        supported = ("0.1", "0.2")

    registry.register(OnlyOld())
    pool = asyncpg.create_pool("postgresql://u@127.0.0.1:1/db", min_size=0)
    original = pool._connect
    with pytest.raises(TypeError, match=r"asyncpg .* not supported .*>=0\.1,<0\.2"):
        ps.instrument(pool, listen=False)
    assert pool._connect is original


def test_instrument_refuses_when_a_private_attribute_is_missing(restore_registry: None) -> None:
    import sqlalchemy as sa

    class Moved(SQLAlchemyAdapter):
        private_attributes = (*SQLAlchemyAdapter.private_attributes, "_moved_in_next_release")

    registry.register(Moved())
    eng = sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    with pytest.raises(TypeError, match=r"missing _moved_in_next_release .*SQLAlchemy >=2\.0"):
        ps.instrument(eng, listen=False)
    assert "_do_get" not in vars(eng.pool)
    assert len(eng.pool.dispatch.checkout) == 0


def _objects() -> Iterator[tuple[Adapter, Any]]:
    import psycopg_pool
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.fixtures.faults import make_pool

    sa_adapter = SQLAlchemyAdapter()
    yield sa_adapter, sa.create_engine("postgresql+psycopg://u@127.0.0.1:1/db")
    yield sa_adapter, create_async_engine("postgresql+asyncpg://u@127.0.0.1:1/db")
    yield sa_adapter, sa.pool.QueuePool(lambda: None)
    pg = PsycopgPoolAdapter()
    yield pg, psycopg_pool.ConnectionPool("host=127.0.0.1 port=1", open=False)
    yield pg, psycopg_pool.AsyncConnectionPool("host=127.0.0.1 port=1", open=False)
    yield pg, psycopg_pool.NullConnectionPool("host=127.0.0.1 port=1", open=False)
    yield ReferenceAdapter(), make_pool()


async def test_declared_private_attributes_exist_in_the_installed_libraries() -> None:
    import asyncpg

    found = [(AsyncpgAdapter(), asyncpg.create_pool("postgresql://u@127.0.0.1:1/db"))]
    found.extend(_objects())
    for adapter, obj in found:
        assert adapter.matches(obj), (adapter.kind, type(obj))
        assert adapter.private_attributes
        assert missing_private_attributes(adapter, obj) == [], (adapter.kind, type(obj))
        assert registry.for_object(obj) is not None
        assert registry.for_object(obj).kind == adapter.kind  # type: ignore[union-attr]
    await asyncio.sleep(0)


def test_class_paths_that_do_not_resolve_are_reported_missing() -> None:
    class Broken(ReferenceAdapter):
        private_attributes = ("poolscope.pool.core:NoSuchClass.x", "poolscope.pool.core:Pool.y")

    from tests.fixtures.faults import make_pool

    assert missing_private_attributes(Broken(), make_pool()) == list(Broken.private_attributes)
    assert adapter_module.in_range("2.1.9", ("2.0", "2.2"))
    assert not adapter_module.in_range("2.2.0rc1", ("2.0", "2.2"))
