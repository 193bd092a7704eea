"""A standard-library-only process that never imports poolscope, busy in one way, for
`poolscope inject` safety and error tests.

    python tests/apps/live_plain.py sleep|loop|ccall [SECONDS]

Prints ``{"ready": true}`` then: ``sleep`` sits in time.sleep; ``loop`` spins a tight
Python loop; ``ccall`` runs one long C call holding the GIL for SECONDS (about), then a
tight Python loop. Runs until killed.
"""

import json
import sys
import time

mode = sys.argv[1]
print(json.dumps({"ready": True}), flush=True)
if mode == "sleep":
    while True:
        time.sleep(3600)
elif mode == "loop":
    x = 0
    while True:
        x += 1
elif mode == "ccall":
    seconds = float(sys.argv[2])
    # Calibrate: one C-level sum over a range, holding the GIL the whole time.
    t0 = time.perf_counter()
    sum(range(2_000_000))
    per = (time.perf_counter() - t0) / 2_000_000
    print(json.dumps({"ccall": True}), flush=True)
    sum(range(int(seconds / per)))
    print(json.dumps({"ccall_done": True}), flush=True)
    x = 0
    while True:
        x += 1
