"""Tests of the core area (see tests/README.md)."""
