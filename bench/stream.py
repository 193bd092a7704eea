"""Stream: events per second delivered to one observer, and memory with a stalled observer.

Three processes, all real: an *app* (``python -m bench.stream app``) that records
acquire/release pairs through the real ``Recorder`` -> background thread (drain,
normalise, fold, encode) -> ``StreamServer``; an *observer* (``python -m
bench.stream observer``) reading the TCP stream with a raw socket, counting
acquire/release lines and summing the ``count`` of ``dropped`` events; and this
process, which coordinates, samples the app's RSS and stops/continues the observer.

1. Throughput: the app records 2·N events as fast as it can, with one concession
   so that "none dropped" is meaningful: it yields (sleeps 0.5 ms) whenever more
   than ``HIGH_WATER`` raw events wait in the recorder, i.e. it runs at the
   pipeline's saturation rate instead of overrunning the bounded buffer by design.
   Rate = events delivered / (observer's receipt of the last event - app's start).
   A second check runs the app *paced* at the 200,000/s target for a few seconds
   with no flow control at all and counts drops.
2. Stalled observer: the app records 50,000 events/s (paced); after a warm-up the
   observer gets SIGSTOP for 60 s (10 s in quick mode), then SIGCONT. The app's
   RSS is sampled throughout; once resumed the observer must see ``dropped``
   events whose counts, plus what it received, add up to what the app recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

TARGET_RATE = 200_000
#: Issue 18's stream target (the paced check stays at TARGET_RATE).
ISSUE18_RATE = 600_000
TARGET_RSS_MIB = 32.0
STALL_RATE = 50_000
#: The saturation run's producer yields while more than this many raw events wait. Below
#: the runtime's overload mark (half the recorder's 200,000) and above one 10 Hz tick of
#: production at 600,000/s. At 8,192 (until session 6) the producer stalled whenever the
#: drain caught up and slept its 100 ms tick: the run measured that stall, and a faster
#: fold measured *slower* (Grisu3 floats: 383k -> 300k/s, interleaved, same machine).
HIGH_WATER = 80_000
#: The paced check of issue 18's rate, and how long it runs.
ISSUE18_SECONDS = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the application -----------------------------------------------------------------
def _app(argv: list[str]) -> None:
    """``app MODE ARG...``: MODE is ``burst N`` or ``paced RATE SECONDS``."""
    from poolscope.instrument.recorder import PoolHandle
    from poolscope.instrument.runtime import get_runtime

    mode = argv[0]
    rt = get_runtime()
    conns = [f"c{i}" for i in range(10)]

    # No gauges: only acquire/release flow, so delivered + dropped must equal generated.
    handle = PoolHandle(rt.recorder, "bench", "bench", leak_threshold=None)
    rt.register(handle)
    ep = rt.serve("127.0.0.1:0")
    print(json.dumps({"port": ep.port, "pid": os.getpid()}), flush=True)
    # Wait for the coordinator's go (the observer is connected by then).
    sys.stdin.readline()
    acquired = handle.acquired
    released = handle.released
    buf = rt.recorder.buffer
    sleep = time.sleep
    t0 = time.time()
    n = 0
    if mode == "burst":
        total = int(argv[1])
        while n < total:
            for c in conns:
                acquired(c, 0.0, None, None)
                released(c)
            n += len(conns)
            if len(buf) > HIGH_WATER:
                sleep(0.0005)
    else:
        rate = float(argv[1]) / 2  # pairs per second
        seconds = float(argv[2])
        end = t0 + seconds
        clock = time.time
        i = 0
        while True:
            now = clock()
            if now >= end:
                break
            due = int((now - t0) * rate)
            while n < due:
                c = conns[i]
                i = (i + 1) % 10
                acquired(c, 0.0, None, None)
                released(c)
                n += 1
            sleep(0.001)
    t1 = time.time()
    # Let the background thread drain, then say goodbye (flushes to observers).
    deadline = time.time() + 30
    while buf and time.time() < deadline:
        sleep(0.01)
    rt.shutdown(10.0)
    print(json.dumps({"events": 2 * n, "t0": t0, "t1": t1, "recorder_capacity": buf.maxlen}))


# -- the observer --------------------------------------------------------------------
def _observer(argv: list[str]) -> None:
    """``observer PORT``: count acquire/release lines and dropped counts until ``bye``."""
    port = int(argv[0])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    print(json.dumps({"connected": True}), flush=True)
    tail = b""
    events = 0
    dropped = 0
    drop_events = 0
    t_first = 0.0
    t_last = 0.0
    lines = 0
    bye = False
    recv = sock.recv
    while not bye:
        chunk = recv(1 << 20)
        if not chunk:
            break
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        whole = data[:cut]
        if not whole:
            continue
        lines += whole.count(b"\n")
        k = whole.count(b'"type":"acquire"') + whole.count(b'"type":"release"')
        if k:
            t_last = time.time()
            if not events:
                t_first = t_last
            events += k
        if b'"type":"dropped"' in whole or b'"type":"bye"' in whole:
            for line in whole.splitlines():
                if b'"type":"dropped"' in line:
                    dropped += int(json.loads(line)["count"])
                    drop_events += 1
                elif b'"type":"bye"' in line:
                    bye = True
    print(
        json.dumps(
            {
                "events": events,
                "dropped": dropped,
                "drop_events": drop_events,
                "lines": lines,
                "t_first": t_first,
                "t_last": t_last,
                "bye": bye,
            }
        ),
        flush=True,
    )


# -- coordination --------------------------------------------------------------------
def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.stream", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"bench.stream child {proc.args} exited early ({proc.wait()})")
    result: dict[str, Any] = json.loads(line)
    return result


def _session(
    app_args: list[str],
    *,
    stall: float = 0.0,
    warmup: float = 0.0,
    sample_rss: bool = False,
) -> dict[str, Any]:
    import psutil

    app = _spawn("app", *app_args)
    obs: subprocess.Popen[str] | None = None
    try:
        info = _read_json(app)
        obs = _spawn("observer", str(info["port"]))
        _read_json(obs)
        time.sleep(0.3)  # the greeting is delivered, the observer is registered
        proc = psutil.Process(info["pid"])
        rss: list[tuple[float, int]] = []
        assert app.stdin is not None
        app.stdin.write("go\n")
        app.stdin.flush()
        t_go = time.time()
        base_rss = 0
        stall_info: dict[str, Any] = {}
        if stall:
            # Warm up with a live observer, then stop it.
            while time.time() - t_go < warmup:
                rss.append((time.time() - t_go, proc.memory_info().rss))
                time.sleep(0.25)
            base_rss = proc.memory_info().rss
            os.kill(obs.pid, signal.SIGSTOP)
            t_stop = time.time()
            while time.time() - t_stop < stall:
                rss.append((time.time() - t_go, proc.memory_info().rss))
                time.sleep(0.25)
            os.kill(obs.pid, signal.SIGCONT)
            stall_info = {"stopped_at": t_stop - t_go, "stalled_for": time.time() - t_stop}
        while sample_rss and app.poll() is None:
            try:
                rss.append((time.time() - t_go, proc.memory_info().rss))
            except psutil.Error:
                break
            time.sleep(0.25)
        app_out = _read_json(app)
        obs_out = _read_json(obs)
        app.wait(30)
        obs.wait(30)
        return {
            "app": app_out,
            "observer": obs_out,
            "rss": rss,
            "base_rss": base_rss,
            **stall_info,
        }
    finally:
        for p in (app, obs):
            if p is not None and p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
                p.wait()


def _paced(rate: int, seconds: float) -> dict[str, Any]:
    """The app paced at ``rate`` events/s for ``seconds``, no flow control: what it
    generated, what the observer got and was told was dropped."""
    q = _session(["paced", str(rate), str(seconds)])
    app, ob = q["app"], q["observer"]
    return {
        "rate": rate,
        "seconds": seconds,
        "generated": app["events"],
        "delivered": ob["events"],
        "dropped": ob["dropped"],
        "achieved_rate": app["events"] / (app["t1"] - app["t0"]),
        "delivered_rate": ob["events"] / (ob["t_last"] - app["t0"]),
    }


def _throughput(quick: bool) -> dict[str, Any]:
    pairs = 200_000 if quick else 300_000
    rounds = 3
    rates: list[float] = []
    runs = []
    for _ in range(rounds):
        r = _session(["burst", str(pairs)])
        app, ob = r["app"], r["observer"]
        rate = ob["events"] / (ob["t_last"] - app["t0"])
        rates.append(rate)
        runs.append(
            {
                "generated": app["events"],
                "delivered": ob["events"],
                "dropped": ob["dropped"],
                "rate": rate,
                "app_seconds": app["t1"] - app["t0"],
            }
        )
    # Paced at the target rate, no flow control: does anything drop?
    paced = _paced(TARGET_RATE, 3.0 if quick else 8.0)
    # Issue 18's rate, paced, no flow control: the app produces 600,000/s for seconds on
    # end and every event must reach the observer (three runs: a drop in any is a miss).
    paced18 = [_paced(ISSUE18_RATE, ISSUE18_SECONDS) for _ in range(3)]
    return {
        "pairs": pairs,
        "rates": rates,
        "median_rate": statistics.median(rates),
        "runs": runs,
        "paced": paced,
        "paced_issue18": paced18,
    }


def _stalled(quick: bool) -> dict[str, Any]:
    stall = 10.0 if quick else 60.0
    warmup = 3.0
    after = 4.0
    r = _session(
        ["paced", str(STALL_RATE), str(warmup + stall + after)],
        stall=stall,
        warmup=warmup,
        sample_rss=True,
    )
    base = r["base_rss"]
    in_stall = [v for t, v in r["rss"] if t >= r["stopped_at"]]
    peak = max(in_stall) if in_stall else base
    app, ob = r["app"], r["observer"]
    return {
        "stall_seconds": r["stalled_for"],
        "rate": STALL_RATE,
        "base_rss_mib": base / 2**20,
        "peak_rss_mib": peak / 2**20,
        "growth_mib": (peak - base) / 2**20,
        "generated": app["events"],
        "delivered": ob["events"],
        "dropped_reported": ob["dropped"],
        "drop_events": ob["drop_events"],
        "accounted": ob["events"] + ob["dropped"] == app["events"],
        "rss_samples": [(round(t, 2), v) for t, v in r["rss"]],
    }


def run(quick: bool) -> dict[str, Any]:
    tp = _throughput(quick)
    st = _stalled(quick)
    rates = tp["rates"]
    med = statistics.median(rates)
    none_dropped = all(r["dropped"] == 0 and r["delivered"] == r["generated"] for r in tp["runs"])
    v_rate = "PASS" if med >= TARGET_RATE and none_dropped else "MISS"
    paced = tp["paced"]
    v_paced = (
        "PASS" if paced["dropped"] == 0 and paced["delivered"] == paced["generated"] else "MISS"
    )
    p18 = tp["paced_issue18"]
    # The generator reaches the rate (within 2%: its 1 ms pacing) and nothing is lost.
    p18_ok = [
        r["achieved_rate"] >= 0.98 * ISSUE18_RATE
        and r["dropped"] == 0
        and r["delivered"] == r["generated"]
        for r in p18
    ]
    v_18 = "PASS" if med >= ISSUE18_RATE and none_dropped and all(p18_ok) else "MISS"
    p18_rates = [r["delivered_rate"] for r in p18]
    v_rss = "PASS" if st["growth_mib"] <= TARGET_RSS_MIB else "MISS"
    v_acc = "PASS" if st["accounted"] and st["drop_events"] > 0 else "MISS"
    md = "\n".join(
        [
            "App process (real Recorder -> background thread -> StreamServer) streaming to one "
            "observer process over loopback TCP; the observer counts lines with a raw socket.",
            "",
            "| measure | target | result | verdict |",
            "|---|---|---|---|",
            f"| delivered events/s at saturation, none dropped ({len(rates)} runs of "
            f"{2 * tp['pairs']:,} events; median (min-max)) | >= {TARGET_RATE:,}/s | "
            f"{med:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}); dropped "
            f"{sum(r['dropped'] for r in tp['runs'])} | **{v_rate}** |",
            f"| paced at {TARGET_RATE:,}/s for {paced['seconds']:g} s, no flow control "
            f"| 0 dropped | achieved {paced['achieved_rate']:,.0f}/s; delivered "
            f"{paced['delivered']:,} of {paced['generated']:,}, dropped {paced['dropped']:,} "
            f"| **{v_paced}** |",
            f"| paced at {ISSUE18_RATE:,}/s for {ISSUE18_SECONDS:g} s, no flow control, "
            f"{len(p18)} runs (issue 18) | 0 dropped | delivered "
            f"{statistics.median(p18_rates):,.0f}/s median ({min(p18_rates):,.0f}-"
            f"{max(p18_rates):,.0f}); "
            f"{sum(r['delivered'] for r in p18):,} of {sum(r['generated'] for r in p18):,}, "
            f"dropped {sum(r['dropped'] for r in p18):,} | **{v_18}** |",
            f"| app RSS growth, observer stalled (SIGSTOP) {st['stall_seconds']:.0f} s at "
            f"{STALL_RATE:,} events/s | <= {TARGET_RSS_MIB:g} MiB | "
            f"{st['growth_mib']:+.1f} MiB (base {st['base_rss_mib']:.1f}, peak "
            f"{st['peak_rss_mib']:.1f}) | **{v_rss}** |",
            f"| drops counted after the stall (`dropped` events) | delivered + dropped = "
            f"generated | {st['delivered']:,} + {st['dropped_reported']:,} = "
            f"{st['delivered'] + st['dropped_reported']:,} of {st['generated']:,} "
            f"({st['drop_events']} `dropped` events) | **{v_acc}** |",
        ]
    )
    targets = [
        {
            "target": f"stream >= {TARGET_RATE:,} events/s to one observer, none dropped",
            "result": f"{med:,.0f}/s",
            "verdict": v_rate,
        },
        {
            "target": f"stream >= {ISSUE18_RATE:,} events/s to one observer, none dropped "
            "(issue 18)",
            "result": f"{med:,.0f}/s at saturation; paced at {ISSUE18_RATE:,}/s: "
            f"{sum(r['dropped'] for r in p18):,} dropped in {len(p18)} runs",
            "verdict": v_18,
        },
        {
            "target": f"app RSS growth <= {TARGET_RSS_MIB:g} MiB, observer stalled",
            "result": f"{st['growth_mib']:+.1f} MiB over {st['stall_seconds']:.0f} s",
            "verdict": v_rss,
        },
        {
            "target": "drops counted and told to the observer",
            "result": f"{st['dropped_reported']:,} dropped in {st['drop_events']} events",
            "verdict": v_acc,
        },
    ]
    return {
        "title": "Stream throughput and stalled-observer memory",
        "targets": targets,
        "throughput": tp,
        "stalled": st,
        "verdicts": {
            "rate": v_rate,
            "paced": v_paced,
            "issue18": v_18,
            "rss": v_rss,
            "drops_accounted": v_acc,
        },
        "markdown": md,
        "notes": (
            "Profile (py-spy/cProfile on the app, saturation run): the background thread "
            "is the bottleneck and shares the GIL with the producer. What it does per "
            "event, after the performance pass: the app's own acquires/releases are never "
            "turned into dicts; they are folded from the raw tuple (`fold_acquire`/"
            "`fold_release`, histogram bisect inlined) and formatted straight into their "
            "NDJSON line from a template (`encode_acquire`/`encode_release`: cached "
            "JSON-escaped strings, `repr` of floats; byte-identical to the generic encoder, "
            "checked by a hypothesis test). Measured on the background thread alone: "
            "6.5 -> 4.7 us per event with an observer (2.98 -> 1.85 us without). This "
            "benchmark went from ~94,000/s to 115,000-149,000/s in full runs (a quick "
            "run once reached 203-222k and 200,000/s paced with none dropped; the spread "
            "between runs on this shared 2-core VM is wide). With the optional C "
            "accelerator (`_accel.c`: the producer's hot path, the fold and both lines in "
            "C) the same benchmark runs at 255,000-415,000/s (bench/accel_ab.py: 1.9x the "
            "pure-Python rate in the same run). Then two float reprs per line were ~30% of "
            "the app's CPU (CPython's shortest-repr dtoa, bignum arithmetic for nearly "
            "every double); the accelerator now formats them with Grisu3 (`_shortest.h`, "
            "byte for byte repr, falling back to dtoa for the ~0.4% it cannot be sure of; "
            "0 differences from repr in 20 million doubles). With the saturation run's "
            "producer no longer stalled by its own high-water mark (see below), the rate "
            "went from 383k to 770-820k/s (interleaved with the previous build, same "
            "machine). "
            "Memory with a stalled observer is bounded by design, not by luck: the "
            "observer's queue (20,000 lines, drop-oldest) plus, when the background "
            "thread falls behind, the recorder's buffer (200,000 raw events, drop-oldest); "
            "the RSS samples in results.json plateau once both are full. "
            "Saturation run: the app yields 0.5 ms whenever more than "
            f"{HIGH_WATER:,} raw events wait in the recorder, so it runs at the pipeline's "
            "rate instead of overrunning the bounded buffer (below the runtime's overload "
            "mark, half the recorder; at the former 8,192 the producer waited out the "
            "drain's idle 100 ms tick each time the drain caught up, so the run measured "
            "that stall, and a faster fold measured slower). The rate is measured from the "
            "app's first event to the observer's receipt of the last. Issue 18's "
            f"{ISSUE18_RATE:,}/s is also checked as it would be met in an application: "
            "paced at that rate for seconds with no flow control, nothing dropped."
        ),
    }


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "app":
        _app(sys.argv[2:])
    elif role == "observer":
        _observer(sys.argv[2:])
    else:
        out = run("--quick" in sys.argv)
        print(out["markdown"])
        print(out["notes"])
