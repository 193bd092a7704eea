"""Tests of the observe area (see tests/README.md)."""
