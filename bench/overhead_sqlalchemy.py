"""Overhead per acquire+release pair on SQLAlchemy's QueuePool, poolscope against its peers.

One pair is ``engine.connect()`` + ``close()`` (what applications call; SQLAlchemy
checks a DBAPI connection out of the QueuePool and back in), on a SQLite file and
on a real PostgreSQL (``tests.pgcluster.PgCluster``, psycopg 3 driver). Each
configuration runs in its own fresh interpreter; rounds are interleaved
(``bench._rounds``):

phase 1 (same run, same baseline):
  bare; a bare pair of SQLAlchemy ``checkout``/``checkin`` listeners doing nothing
  (the floor any event-based tool pays); poolscope with leak detection off
  (``leak_threshold=None``) and on (30 s, acquire site captured at every checkout).
phase 2 (after, against a fresh bare baseline, because OpenTelemetry patches
  ``Engine.connect`` class-wide):
  OpenTelemetry's SQLAlchemy instrumentation with an SDK ``MeterProvider`` +
  ``InMemoryMetricReader`` (the peer the targets name; tracing left at the API's
  default no-op provider), and the same with an SDK ``TracerProvider`` +
  ``BatchSpanProcessor`` to a null exporter (what a user who set up tracing pays).

Then psycopg_pool's ``ConnectionPool`` (``with pool.connection()``), bare against
poolscope leak off/on, on the same PostgreSQL.

Poolscope runs with ``listen=False`` (no stream server) but its background thread
is live (drain, fold, leak checks), so its cost is in the numbers. Each worker
says at the end whether its instrumentation recorded anything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from bench import _rounds

TARGET_VS_OTEL = 0.1  # poolscope leak-on added cost <= 1/10 of OpenTelemetry's
TARGET_VS_FLOOR = 1.5  # poolscope leak-off added cost <= 1.5x the bare-listener floor
TARGET_CPU_LEAK_OFF_US = 1.0  # issue 18: leak-off adds <= 1 us of whole-process CPU per pair

PHASE1 = (
    "bare",
    "listeners",
    "poolscope-leak-off",
    "poolscope-leak-on",
    "poolscope-leak-off-hot",
    "poolscope-leak-on-hot",
)
PHASE2 = ("bare (fresh)", "otel-metrics", "otel-metrics+tracing")
PSYCOPG = ("bare", "poolscope-leak-off", "poolscope-leak-on")


# -- worker side ---------------------------------------------------------------------
def _setup_engine(config: str, url: str) -> tuple[Any, ...]:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    engine = sa.create_engine(url, poolclass=QueuePool, pool_size=5, max_overflow=0)
    check: Callable[[], dict[str, Any]] = lambda: {"recorded": None}  # noqa: E731
    if config == "listeners":

        def on_checkout(dbapi_con: Any, rec: Any, proxy: Any) -> None:
            pass

        def on_checkin(dbapi_con: Any, rec: Any) -> None:
            pass

        event.listen(engine.pool, "checkout", on_checkout)
        event.listen(engine.pool, "checkin", on_checkin)
    elif config.startswith("poolscope"):
        check = _instrument_poolscope(engine, config)
        if config.endswith("-hot"):
            return (lambda: engine.connect().close()), check, *_pause_background(), _settle
    elif config.startswith("otel"):
        check = _instrument_otel(engine, tracing=config.endswith("tracing"))
    connect = engine.connect

    def pair() -> None:
        connect().close()

    return pair, check, _nothing, _nothing, _settle


def _nothing() -> None:
    return None


def _settle() -> None:
    """After a timed round, before the process CPU clock is read: let poolscope's
    background thread fold what the round recorded (and OpenTelemetry's span thread
    export), sleeping, so that cost lands in its own round. Every configuration
    sleeps alike; sleeping costs no CPU."""
    import time

    from bench.folded import wait_folded

    # Blocked on the runtime's tick, not polling (each poll's wake-up was CPU the
    # measured process paid: bench/folded.py).
    wait_folded()
    time.sleep(0.03)  # the same for every configuration (OpenTelemetry's export thread)


def _instrument_poolscope(pool: Any, config: str) -> Callable[[], dict[str, Any]]:
    import time

    import poolscope.instrument as ps
    from poolscope.instrument.runtime import get_runtime

    leak = 30.0 if "leak-on" in config else None
    ps.instrument(pool, name="bench", leak_threshold=leak, listen=False)
    rt = get_runtime()

    def check() -> dict[str, Any]:
        time.sleep(0.2)  # one drain interval and then some
        m = rt.model.pools.get("bench")
        return {"recorded": bool(m and m.acquires), "acquires": m.acquires if m else 0}

    return check


def _pause_background() -> tuple[Callable[[], None], Callable[[], None]]:
    """Hooks that park poolscope's background thread during a timed round and let it
    catch up after: what is left is the cost the acquiring code itself pays."""
    import threading

    from poolscope.instrument.runtime import get_runtime

    rt = get_runtime()
    gate = threading.Event()
    parked = threading.Event()

    def park() -> None:
        parked.set()
        gate.wait(60)  # blocks the runtime's loop thread (GIL released while waiting)

    def before() -> None:
        gate.clear()
        parked.clear()
        assert rt.loop is not None
        rt.loop.call_soon_threadsafe(park)
        parked.wait(5)

    def after() -> None:
        from bench.folded import wait_folded

        gate.set()
        wait_folded()

    return before, after


def _instrument_otel(engine: Any, *, tracing: bool) -> Callable[[], dict[str, Any]]:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    kwargs: dict[str, Any] = {"meter_provider": MeterProvider(metric_readers=[reader])}
    exported = [0]
    if tracing:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class NullExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                exported[0] += len(spans)
                return SpanExportResult.SUCCESS

        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(NullExporter()))
        kwargs["tracer_provider"] = tp
    SQLAlchemyInstrumentor().instrument(engine=engine, **kwargs)

    def check() -> dict[str, Any]:
        if tracing:
            kwargs["tracer_provider"].force_flush()
        points = []
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for dp in m.data.data_points:
                        points.append((m.name, dict(dp.attributes).get("state"), dp.value))
        # The usage counter nets to zero per pair: recorded means its series exist.
        return {"recorded": bool(points), "points": points, "spans_exported": exported[0]}

    return check


def _setup_psycopg(config: str, dsn: str) -> tuple[Any, ...]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=2, max_size=2, open=True)
    pool.wait()
    check: Callable[[], dict[str, Any]] = lambda: {"recorded": None}  # noqa: E731
    if config.startswith("poolscope"):
        check = _instrument_poolscope(pool, config)
    connection = pool.connection

    def pair() -> None:
        with connection():
            pass

    return pair, check, _nothing, _nothing, _settle


def _count_calls(pair: Callable[[], Any]) -> dict[str, int]:
    """Python function calls and C calls one pair makes on its thread (sys.setprofile)."""
    counts = {"call": 0, "c_call": 0}

    def prof(_frame: Any, event: str, _arg: Any) -> None:
        if event in counts:
            counts[event] += 1

    sys.setprofile(prof)
    try:
        pair()
    finally:
        sys.setprofile(None)
    counts["c_call"] -= 1  # sys.setprofile(None) itself
    return counts


def _with_calls(setup: Callable[[], tuple[Any, ...]]) -> Callable[[], tuple[Any, ...]]:
    """The setup, its check also reporting the calls per pair (counted at the end)."""

    def wrapped() -> tuple[Any, ...]:
        parts = setup()
        pair, check = parts[0], parts[1]

        def check_with_calls() -> dict[str, Any]:
            out = dict(check())
            _count_calls(pair)  # a first run interns the new call path's code objects
            out["calls"] = _count_calls(pair)
            return out

        return (pair, check_with_calls, *parts[2:])

    return wrapped


def _worker(argv: list[str]) -> None:
    target, config, url = argv
    if target == "psycopg":
        _rounds.serve(_with_calls(lambda: _setup_psycopg(config, url)))
    else:
        _rounds.serve(_with_calls(lambda: _setup_engine(config, url)))


# -- driver side ---------------------------------------------------------------------
def _argv(target: str, config: str, url: str) -> list[str]:
    return ["-m", "bench.overhead_sqlalchemy", "worker", target, config, url]


def _measure(target: str, url: str, rounds: int, ops: int) -> dict[str, Any]:
    p1 = _rounds.interleave([(c, _argv(target, c, url)) for c in PHASE1], rounds, ops)
    p2 = _rounds.interleave(
        [(c, _argv(target, c.split()[0], url)) for c in PHASE2], rounds, max(ops // 4, 50)
    )
    out: dict[str, Any] = {}
    for phase in (p1, p2):
        first = next(iter(phase.values()))
        base, base_cpu = first["samples"], first["cpu"]
        for name, r in phase.items():
            out[name] = {
                **_rounds.summary(r["samples"], base),
                "cpu": _rounds.summary(r["cpu"], base_cpu),
                "thread": _rounds.summary(r["thread"], first["thread"]),
                "check": r["check"],
            }
    return out


def _verdicts(res: dict[str, Any]) -> dict[str, Any]:
    floor = res["listeners"]["added_us"]
    otel = res["otel-metrics"]["added_us"]
    out: dict[str, Any] = {}
    # Whole-process CPU (the background thread included), paired per round.
    cpu_off = res["poolscope-leak-off"]["cpu"]["added_us"]
    cpu_on = res["poolscope-leak-on"]["cpu"]["added_us"]
    cpu_otel = res["otel-metrics"]["cpu"]["added_us"]
    cpu_vs_otel = cpu_on / cpu_otel if cpu_otel > 0 else float("inf")
    out["cpu_leak_off_added_us"] = cpu_off
    out["thread_leak_off_added_us"] = res["poolscope-leak-off"]["thread"]["added_us"]
    out["thread_leak_on_added_us"] = res["poolscope-leak-on"]["thread"]["added_us"]
    out["cpu_leak_off_verdict"] = "PASS" if cpu_off <= TARGET_CPU_LEAK_OFF_US else "FAIL"
    out["cpu_leak_on_vs_otel"] = cpu_vs_otel
    out["cpu_leak_on_vs_otel_verdict"] = "PASS" if cpu_vs_otel <= TARGET_VS_OTEL else "FAIL"
    for suffix in ("", "-hot"):
        on = res[f"poolscope-leak-on{suffix}"]["added_us"]
        off = res[f"poolscope-leak-off{suffix}"]["added_us"]
        vs_otel = on / otel if otel > 0 else float("inf")
        vs_floor = off / floor if floor > 0 else float("inf")
        out[f"leak_on_vs_otel{suffix}"] = vs_otel
        out[f"leak_on_vs_otel{suffix}_verdict"] = "PASS" if vs_otel <= TARGET_VS_OTEL else "MISS"
        out[f"leak_off_vs_floor{suffix}"] = vs_floor
        out[f"leak_off_vs_floor{suffix}_verdict"] = (
            "PASS" if vs_floor <= TARGET_VS_FLOOR else "MISS"
        )
    return out


def _row(name: str, r: dict[str, Any]) -> str:
    added = (
        f"{r['added_us']:+.2f} ({r['added_min_us']:+.1f} to {r['added_max_us']:+.1f})"
        if name not in ("bare", "bare (fresh)")
        else "-"
    )
    rec = r["check"].get("recorded")
    rec_s = "-" if rec is None else ("yes" if rec else "**NO**")
    c = r.get("cpu") or {}
    if not c:
        cpu_s = "-"
    elif name in ("bare", "bare (fresh)"):
        cpu_s = f"{c['median_us']:.2f} ({c['min_us']:.1f}-{c['max_us']:.1f})"
    else:
        cpu_s = (
            f"{c['median_us']:.2f}; added {c['added_us']:+.2f} ({c['added_min_us']:+.1f} to "
            f"{c['added_max_us']:+.1f}); {c['ratio']:.3f}x"
        )
    calls = r["check"].get("calls") or {}
    calls_s = f"{calls.get('call', '?')} + {calls.get('c_call', '?')}"
    return (
        f"| {name} | {r['median_us']:.2f} ({r['min_us']:.1f}-{r['max_us']:.1f}) | {added} "
        f"| {r['ratio']:.3f} | {cpu_s} | {calls_s} | {rec_s} |"
    )


def _table(title: str, res: dict[str, Any]) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| configuration | wall µs per pair, median (min-max) | added wall µs, median of "
        "per-round differences (min to max) | wall ratio to bare | whole-process CPU µs per "
        "pair (all threads): median; added, paired (min to max); ratio | Python + C calls "
        "per pair | recorded data |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(name, r) for name, r in res.items()]
    return lines


def _verdict_lines(target: str, v: dict[str, Any]) -> list[str]:
    out = [
        f"- {target} (whole-process CPU, issue 18): poolscope leak-off adds "
        f"{v['cpu_leak_off_added_us']:+.2f} µs per pair (target <= +{TARGET_CPU_LEAK_OFF_US}): "
        f"**{v['cpu_leak_off_verdict']}**; leak-on added / OpenTelemetry added = "
        f"{v['cpu_leak_on_vs_otel']:.3f} (target <= {TARGET_VS_OTEL}): "
        f"**{v['cpu_leak_on_vs_otel_verdict']}**; of which on the acquiring thread itself "
        f"(`thread_time`, inline cost): leak-off {v['thread_leak_off_added_us']:+.2f} µs, "
        f"leak-on {v['thread_leak_on_added_us']:+.2f} µs"
    ]
    for suffix, what in (("", "total, background thread included"), ("-hot", "hot path only")):
        out.append(
            f"- {target} ({what}): poolscope leak-on added / OpenTelemetry added = "
            f"{v[f'leak_on_vs_otel{suffix}']:.3f} (target <= {TARGET_VS_OTEL}): "
            f"**{v[f'leak_on_vs_otel{suffix}_verdict']}**; poolscope leak-off added / "
            f"listener floor added = {v[f'leak_off_vs_floor{suffix}']:.2f} "
            f"(target <= {TARGET_VS_FLOOR}): **{v[f'leak_off_vs_floor{suffix}_verdict']}**"
        )
    return out


def run(quick: bool) -> dict[str, Any]:
    import sqlalchemy

    rounds, ops = (5, 300) if quick else (15, 2000)
    results: dict[str, Any] = {"rounds": rounds, "ops_per_round": ops}
    md: list[str] = []
    verdict_md: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="poolscope-bench-") as d:
        url = f"sqlite:///{os.path.join(d, 'bench.db')}"
        res = _measure("sqlite", url, rounds, ops)
        results["sqlite"] = {"configs": res, "verdicts": _verdicts(res)}
        md += [*_table("SQLite file, engine.connect()/close()", res), ""]
        verdict_md += _verdict_lines("SQLite", results["sqlite"]["verdicts"])
    try:
        from tests.pgcluster import PgCluster, PgUnavailable
    except ImportError as exc:  # pragma: no cover - the repository always has it
        notes.append(f"PostgreSQL skipped: {exc}")
    else:
        try:
            with PgCluster() as pg:
                dsn = pg.dsn
                url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
                res = _measure("pg", url, rounds, ops)
                results["postgresql"] = {"configs": res, "verdicts": _verdicts(res)}
                md += [*_table("PostgreSQL (psycopg 3), engine.connect()/close()", res), ""]
                verdict_md += _verdict_lines("PostgreSQL", results["postgresql"]["verdicts"])
                results["psycopg_pool"] = _psycopg(dsn, rounds, ops, md, verdict_md, notes)
        except PgUnavailable as exc:
            notes.append(f"PostgreSQL skipped: {exc}")
            md.append(f"PostgreSQL: skipped ({exc})")
    for key in ("sqlite", "postgresql"):
        if key not in results:
            continue
        for name, r in results[key]["configs"].items():
            if r["check"].get("recorded") is False:
                notes.append(f"{key}/{name}: the instrumentation recorded NOTHING")
        otel = results[key]["configs"]["otel-metrics"]["check"]
        notes.append(
            f"{key}: OpenTelemetry recorded {len(otel.get('points', []))} metric series "
            f"({otel.get('points')}); with tracing "
            f"{results[key]['configs']['otel-metrics+tracing']['check'].get('spans_exported')} "
            "spans exported"
        )
    results["sqlalchemy_version"] = sqlalchemy.__version__
    header = (
        f"SQLAlchemy {sqlalchemy.__version__}, QueuePool(pool_size=5, max_overflow=0); "
        f"{rounds} interleaved rounds of {ops} pairs (OpenTelemetry phase: "
        f"{max(ops // 4, 50)} pairs per round), every configuration in a fresh interpreter. "
        "'added' is the median over rounds of (configuration - bare of the same round); the "
        "OpenTelemetry rows are against the fresh bare of their own phase. Rows ending in "
        "`-hot` park poolscope's background thread during each timed round (it catches up "
        "between rounds): the cost the acquiring code itself pays; the rows without it "
        "include the background fold of every event competing for the GIL in a CPU-bound "
        "loop, which is the honest total for a CPU-bound process. The asyncpg "
        "adapter's overhead is in the overhead_adapters section, the reference pool's in "
        "overhead_reference. Whole-process CPU: `time.process_time()` around each round "
        "(every thread of the worker: the background fold included), read after the "
        "round's events are folded (the worker sleeps until then; sleeping costs none)."
    )
    results["markdown"] = "\n".join([header, "", *md, "Verdicts:", "", *verdict_md])
    results["title"] = "Overhead per acquire+release: SQLAlchemy QueuePool and psycopg_pool"
    targets = []
    for key in ("sqlite", "postgresql"):
        if key not in results:
            continue
        v = results[key]["verdicts"]
        targets.append(
            {
                "target": f"{key}: leak-off adds <= {TARGET_CPU_LEAK_OFF_US} us whole-process "
                "CPU per pair",
                "result": f"{v['cpu_leak_off_added_us']:+.2f} us",
                "verdict": v["cpu_leak_off_verdict"],
            }
        )
        targets.append(
            {
                "target": f"{key}: leak-on added whole-process CPU <= 0.10 x OpenTelemetry's",
                "result": f"{v['cpu_leak_on_vs_otel']:.3f}",
                "verdict": v["cpu_leak_on_vs_otel_verdict"],
            }
        )
        for suffix, what in (("", "total"), ("-hot", "hot path")):
            targets.append(
                {
                    "target": f"{key}: leak-on added <= 1/10 of OpenTelemetry's ({what})",
                    "result": f"{v[f'leak_on_vs_otel{suffix}']:.3f}",
                    "verdict": v[f"leak_on_vs_otel{suffix}_verdict"],
                }
            )
            targets.append(
                {
                    "target": f"{key}: leak-off added <= 1.5x listener floor ({what})",
                    "result": f"{v[f'leak_off_vs_floor{suffix}']:.2f}x",
                    "verdict": v[f"leak_off_vs_floor{suffix}_verdict"],
                }
            )
    results["targets"] = targets
    notes.append(
        "Why poolscope's total exceeds its hot path: every acquire and release is folded "
        "by the in-app background thread (normalise + fold into the model that serves "
        "late attachers and in-app Prometheus), and in this CPU-bound loop that thread "
        "competes for the GIL. Profiling (cProfile on the drain, py-spy on the worker) "
        "found the fold's per-event cost dominated by hashing code objects (the raw "
        "acquire-site tuple was a dict key: every lookup re-hashed 8 code objects' "
        "bytecode and constants) and by histogram bucketing; both are fixed (sites "
        "interned to int tuples, buckets by bisect), halving the background cost per "
        "event. What remains is pure-Python per-event work; in an application that waits "
        "on I/O the background thread runs in the gaps, which the hot-path rows show. "
        "OpenTelemetry's cost is all on the acquiring thread (4 UpDownCounter.add calls "
        "with attribute-dict merges per pair, plus a span around Engine.connect)."
    )
    results["notes"] = "\n".join(notes)
    return results


def _psycopg(
    dsn: str, rounds: int, ops: int, md: list[str], verdict_md: list[str], notes: list[str]
) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("poolscope.instrument.psycopg") is None:
        notes.append("psycopg_pool: poolscope's psycopg adapter is not there yet; not measured")
        return {"skipped": "no adapter"}
    raw = _rounds.interleave([(c, _argv("psycopg", c, dsn)) for c in PSYCOPG], rounds, ops)
    base = raw["bare"]["samples"]
    base_cpu = raw["bare"]["cpu"]
    res = {
        n: {
            **_rounds.summary(r["samples"], base),
            "cpu": _rounds.summary(r["cpu"], base_cpu),
            "thread": _rounds.summary(r["thread"], raw["bare"]["thread"]),
            "check": r["check"],
        }
        for n, r in raw.items()
    }
    md += [*_table("psycopg_pool ConnectionPool(2, 2), `with pool.connection()`", res), ""]
    on = res["poolscope-leak-on"]["ratio"]
    verdict_md.append(
        f"- psycopg_pool: poolscope leak-on ratio to bare {on:.3f} "
        f"(added {res['poolscope-leak-on']['added_us']:+.2f} µs per pair)"
    )
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker(sys.argv[2:])
    else:
        out = run("--quick" in sys.argv)
        print(out["markdown"])
        print(out["notes"])
