"""Tests of the pool area (see tests/README.md)."""
