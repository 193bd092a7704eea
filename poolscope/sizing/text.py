"""Advice as text: the lines the CLI prints and the TUI's advice panel shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolscope.units import fmt_duration

if TYPE_CHECKING:  # the advice module imports this one for its reasoning lines
    from poolscope.sizing.recommend import Advice


def fmt_seconds(s: float | None) -> str:
    """A duration for people ("3.2ms", "1.25s", "unbounded"): the observer's one
    duration formatter, with "n/a" for a value that is not known."""
    return fmt_duration(s, missing="n/a")


def fmt_percent(x: float | None) -> str:
    """A share for people ("42%"), "n/a" when not known."""
    return "n/a" if x is None else f"{x * 100:.0f}%"


def format_advice(advice: Advice) -> list[str]:
    """The advice as plain text lines: a headline, the numbers, reasons, warnings."""
    a = advice
    if a.recommended is None:
        head = f"{a.pool}: no recommendation"
    elif a.current_size > 0:
        head = f"{a.pool}: {a.verdict} — recommended size {a.recommended} (now {a.current_size})"
    else:
        head = f"{a.pool}: recommended size {a.recommended}"
    lines = [head]
    if a.recommended is not None:
        lines.append(
            f"  p99 wait: measured {fmt_seconds(a.measured_p99)}, predicted "
            f"{fmt_seconds(a.predicted_p99_current)} at {a.current_size}, "
            f"{fmt_seconds(a.predicted_p99_recommended)} at {a.recommended} "
            f"(target {fmt_seconds(a.p99_target)})"
        )
    lines.extend(f"  {line}" for line in a.reasoning)
    lines.extend(f"  ! {line}" for line in a.warnings)
    return lines
