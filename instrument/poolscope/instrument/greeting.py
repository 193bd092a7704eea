"""What a process says of itself: the ``hello`` event, and the lines an observer is
greeted with when it connects (hello, the folded state as a ``sync``, each pool's
configuration), so an observer that attaches late starts from the whole picture.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

from poolscope.events import PROTOCOL_VERSION, Event, encode
from poolscope.fold import PoolState
from poolscope.version import __version__

from .recorder import PoolHandle
from .redact import redact_argv


def hello(process: str) -> Event:
    return {
        "type": "hello",
        "t": time.time(),
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "process": process,
        "argv": redact_argv(sys.argv)[:8],  # redacted whole, then cut
        "version": __version__,
        "python": sys.version.split()[0],
    }


def lines(process: str, model: PoolState, handles: Iterable[PoolHandle]) -> list[bytes]:
    now = time.time()
    out = [
        encode(hello(process)),
        encode({"type": "sync", "t": now, "state": model.to_dict()}),
    ]
    # Each pool's configuration again as a live event, so a recording that
    # starts late still describes its pools line by line.
    for handle in handles:
        out.append(encode({"type": "pool", "t": now, **handle.describe()}))
    return out
