"""Tests of the advisor area (see tests/README.md)."""
