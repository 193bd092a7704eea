"""Tests of the tui area (see tests/README.md)."""
