"""``python -m poolscope`` is the ``poolscope`` command."""

from poolscope.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
