"""Tests of the e2e area (see tests/README.md)."""
