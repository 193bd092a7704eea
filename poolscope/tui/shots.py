"""SVG screenshots to PNG, when a converter is present (cairosvg, else rsvg-convert)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _local_fonts(svg: bytes) -> bytes:
    # Textual's SVG asks for Fira Code from a CDN; an offline converter falls back
    # to a proportional font and the columns drift. Any local monospace lines up.
    return svg.replace(b'"Fira Code"', b"monospace").replace(b"Fira Code,", b"")


def svg_to_png(svg: str | Path, png: str | Path | None = None) -> Path | None:
    """Convert ``svg`` to PNG beside it (or at ``png``); None when no converter works."""
    src = Path(svg)
    dst = Path(png) if png is not None else src.with_suffix(".png")
    try:
        import cairosvg  # type: ignore[import-not-found,import-untyped,unused-ignore]

        cairosvg.svg2png(
            bytestring=_local_fonts(src.read_bytes()), write_to=str(dst), output_width=1800
        )
        return dst
    except ImportError:
        pass
    except Exception:  # a converter failure must not cost the user the SVG
        return None
    exe = shutil.which("rsvg-convert")
    if exe is None:
        return None
    try:
        subprocess.run([exe, "-w", "1800", "-o", str(dst), str(src)], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return dst
