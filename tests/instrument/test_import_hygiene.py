"""Import hygiene, checked in fresh interpreters: the in-app side loads only the
standard library, and the protocol and model never load Textual."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("textual", "plotext", "aiohttp", "prometheus_client", "psutil")
POOL_LIBS = ("asyncpg", "sqlalchemy", "psycopg", "psycopg_pool")

# Runs in a fresh interpreter: imports the given modules and reports what they
# loaded that was not loaded before, with the file each came from.
_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys, sysconfig
    before = set(sys.modules)
    for name in sys.argv[1:]:
        importlib.import_module(name)
    stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    new = {}
    for name in sorted(set(sys.modules) - before):
        f = getattr(sys.modules[name], "__file__", None)
        new[name] = os.path.realpath(f) if f else None
    print(json.dumps({"new": new, "stdlib": sorted(stdlib)}))
    """
)


def _loaded_by(*modules: str) -> tuple[dict[str, str | None], list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    return data["new"], data["stdlib"]


def _top(name: str) -> str:
    return name.split(".")[0]


def _foreign(new: dict[str, str | None], stdlib: list[str]) -> dict[str, str]:
    """Modules loaded from outside the standard library and poolscope."""
    return {
        name: path
        for name, path in new.items()
        if path is not None
        and _top(name) != "poolscope"
        and (
            "site-packages" in path
            or "dist-packages" in path
            or not any(path.startswith(d + "/") for d in stdlib)
        )
    }


def test_instrument_loads_only_the_standard_library() -> None:
    new, stdlib = _loaded_by("poolscope.instrument")
    tops = {_top(n) for n in new}
    assert not tops & set(HEAVY + POOL_LIBS), sorted(tops & set(HEAVY + POOL_LIBS))
    # Stronger: every newly loaded module is poolscope's own, built in, or from the
    # standard library directory - nothing from site-packages at all.
    foreign = _foreign(new, stdlib)
    assert foreign == {}, f"import poolscope.instrument loaded third-party modules: {foreign}"
    assert "poolscope.instrument.runtime" in new


def test_the_stdlib_check_catches_a_third_party_import() -> None:
    # The check above must be able to fail: psutil comes from site-packages.
    new, stdlib = _loaded_by("poolscope.instrument", "psutil")
    assert "psutil" in _foreign(new, stdlib)


@pytest.mark.parametrize(
    "modules",
    [
        ("poolscope.events", "poolscope.model", "poolscope.histogram"),
        ("poolscope.client", "poolscope.endpoint"),
        ("poolscope.pool",),
        ("poolscope.cli", "poolscope.commands.record"),
    ],
)
def test_protocol_model_pool_and_record_never_load_textual(modules: tuple[str, ...]) -> None:
    new, _ = _loaded_by(*modules)
    tops = {_top(n) for n in new}
    assert not tops & set(HEAVY + POOL_LIBS), sorted(tops & set(HEAVY + POOL_LIBS))
