"""Shared test set-up. Fixture modules live in tests/fixtures/ and are loaded here
automatically, so each area of the suite adds its fixtures without editing this file."""

from __future__ import annotations

import pathlib

import pytest

_FIXTURES = pathlib.Path(__file__).parent / "fixtures"
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in _FIXTURES.glob("*.py") if p.stem != "__init__"
)

# Area markers from the file name, so `-m security`, `-m hardening` or `-m fuzz` selects
# them wherever a test lives (pyproject registers the markers).
_NAME_MARKERS = {
    "hardening": "hardening",
    "security": "security",
    "redact": "security",
    "fuzz": "fuzz",
    "crafted": "fuzz",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        stem = item.path.stem
        for needle, marker in _NAME_MARKERS.items():
            if needle in stem:
                item.add_marker(getattr(pytest.mark, marker))
