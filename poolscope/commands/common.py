"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse

from poolscope.endpoint import Endpoint, EndpointError, parse_endpoint


def endpoint_arg(text: str) -> Endpoint:
    """argparse ``type=`` for ENDPOINT: a one-line error on bad input."""
    try:
        return parse_endpoint(text)
    except EndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pid_number(text: str) -> int:
    """argparse ``type=`` for PID: a positive integer (0 and negatives mean process
    groups to the kernel, never one process)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id (a positive integer)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def window_seconds(text: str) -> float:
    """argparse ``type=`` for ``--window S`` of the TUI: up to the 15 minutes it keeps."""
    from poolscope.window import HORIZON

    value = positive_float(text)
    if value > HORIZON:
        raise argparse.ArgumentTypeError(f"{text!r}: the TUI keeps at most {HORIZON:g} s")
    return value


def add_window_arg(p: argparse.ArgumentParser) -> None:
    """``--window S`` for the commands that open the TUI."""
    from poolscope.window import DEFAULT_WINDOW

    p.add_argument(
        "--window",
        type=window_seconds,
        default=DEFAULT_WINDOW,
        metavar="S",
        help=f"seconds of recent data the pools table and alerts cover ({DEFAULT_WINDOW:g}; "
        "the w key changes it)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value
