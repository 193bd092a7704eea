"""The version both distributions share (poolscope and poolscope-instrument release together)."""

__version__ = "0.1.0"
