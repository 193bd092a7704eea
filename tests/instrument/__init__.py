"""Tests of the instrument area (see tests/README.md)."""
