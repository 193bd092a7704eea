"""The poolscope TUI: data feeds (``data``), pure views (``views``), keys (``keys``),
Textual widgets (``widgets``) and the app (``app``). Only ``widgets`` and ``app``
import Textual, so the rest is testable without a terminal."""
