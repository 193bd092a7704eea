"""poolscope: live observability for the connection pools inside running Python programs.

This package's top level imports only the standard library, because the in-app
side (``poolscope.instrument``) is imported through it inside applications.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
