"""Crafted recordings and streams: non-finite and absurd numbers are refused at decode
(counted as bad lines), per-second structures are bounded by their own count, and
a TUI crash is one line and exit code 1 (issue 12, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolscope.cli import main
from poolscope.client import FileFeed
from poolscope.endpoint import Endpoint
from poolscope.events import DecodeError, decode
from poolscope.export import Exporter
from poolscope.tui.app import PoolscopeApp
from poolscope.tui.data import ReplaySource

HELLO = '{"type":"hello","t":1000.0,"protocol":1,"pid":5,"process":"app","version":"0"}'
POOL = '{"type":"pool","t":1000.0,"pool":"p","kind":"k","target":"t","config":{"min":0,"max":4}}'
GOOD = [
    HELLO,
    POOL,
    '{"type":"acquire","t":1001.0,"pool":"p","conn":"1","wait":0.01,"site":null}',
    '{"type":"release","t":1001.5,"pool":"p","conn":"1","hold":0.5}',
    '{"type":"timeout","t":1002.0,"pool":"p","wait":1.0,"error":"x"}',
]
HUGE = "9" * 400
CRAFTED = [
    '{"type":"acquire","t":NaN,"pool":"p","conn":"2","wait":0.01,"site":null}',
    '{"type":"acquire","t":Infinity,"pool":"p","conn":"2","wait":0.01,"site":null}',
    '{"type":"acquire","t":1e999,"pool":"p","conn":"2","wait":0.01,"site":null}',
    '{"type":"acquire","t":-5,"pool":"p","conn":"2","wait":0.01,"site":null}',
    '{"type":"acquire","t":3e15,"pool":"p","conn":"2","wait":0.01,"site":null}',
    f'{{"type":"acquire","t":{HUGE},"pool":"p","conn":"2","wait":0.01,"site":null}}',
    '{"type":"release","t":1003.0,"pool":"p","conn":"1","hold":1e999}',
    '{"type":"release","t":1003.0,"pool":"p","conn":"1","hold":-1}',
    '{"type":"release","t":1003.0,"pool":"p","conn":"1","hold":NaN}',
    f'{{"type":"state","t":1003.0,"pool":"p","size":{HUGE},"idle":0,"in_use":0}}',
    '{"type":"sync","t":1003.0,"state":{"pools":{"p":{"counters":{"acquires":-Infinity}}}}}',
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.fast
@pytest.mark.parametrize("line", CRAFTED)
def test_decode_refuses_non_finite_and_absurd_numbers(line: str) -> None:
    with pytest.raises(DecodeError):
        decode(line)


@pytest.mark.fast
def test_decode_accepts_sane_numbers() -> None:
    for line in GOOD:
        decode(line)
    assert decode('{"type":"bye","t":0}')["t"] == 0
    assert decode('{"type":"x","t":1.7e9,"n":9223372036854775807}')["n"] == 2**63 - 1


@pytest.mark.fast
def test_crafted_lines_count_as_bad_lines(tmp_path: Path) -> None:
    feed = FileFeed(write(tmp_path / "c.ndjson", GOOD + CRAFTED))
    assert [ev["type"] for ev in feed] == ["hello", "pool", "acquire", "release", "timeout"]
    assert feed.bad_lines == len(CRAFTED)


@pytest.mark.fast
def test_advise_on_crafted_numbers_skips_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "c.ndjson", GOOD + CRAFTED)
    assert main(["advise", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    (pool,) = json.loads(out)["pools"]
    assert pool["workload"]["attempts"] == 2  # the one acquire and the one timeout
    assert f"skipped {len(CRAFTED)} unreadable lines" in err
    assert "Traceback" not in err


@pytest.mark.fast
def test_advise_on_only_crafted_lines_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "c.ndjson", CRAFTED)
    assert main(["advise", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a poolscope recording" in err, err


def test_advise_over_a_huge_time_span_is_bounded(tmp_path: Path) -> None:
    """350 bytes: an acquire at t=1 and a ``bye`` at t=3e8 once grew to 7.9 GB."""
    path = write(
        tmp_path / "span.ndjson",
        [
            '{"type":"pool","t":1,"pool":"p","kind":"k","target":"","config":{"max":2}}',
            '{"type":"acquire","t":1,"pool":"p","conn":"1","wait":0.1,"site":null}',
            '{"type":"release","t":2,"pool":"p","conn":"1","hold":1}',
            '{"type":"state","t":3,"pool":"p","size":1,"idle":1,"in_use":0,"waiting":0,"max":2}',
            '{"type":"state","t":3e8,"pool":"p","size":1,"idle":1,"in_use":0,"waiting":0,"max":2}',
            '{"type":"bye","t":3e8}',
        ],
    )
    code = (
        "import sys; from poolscope.cli import main; "
        f"rc = main(['advise', {str(path)!r}]); "
        "rc |= main(['advise', " + repr(str(path)) + ", '--all']); "
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child of a
        # large pytest process would report the parent's peak.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print(hwm.split()[1]); sys.exit(rc)"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    max_rss_kib = int(out.stdout.strip().splitlines()[-1])
    assert max_rss_kib < 200 * 1024, max_rss_kib
    assert time.monotonic() - started < 30


@pytest.mark.fast
async def test_replay_of_crafted_numbers_renders(tmp_path: Path) -> None:
    """NaN / Inf / 1e999 times and holds once crashed the TUI (``_mmss``, ``fmt_dur``)."""
    src = ReplaySource(write(tmp_path / "c.ndjson", GOOD + CRAFTED))
    assert src.file.bad_lines == len(CRAFTED)
    src.playing = False
    app = PoolscopeApp(src)
    async with app.run_test(size=(120, 36)) as pilot:
        for key in "1234567":
            await pilot.press(key)
            await pilot.pause()
        await pilot.press("e", "end")
        await pilot.pause()
        assert not app.crash
        assert f"skipped {len(CRAFTED)} unreadable lines" in src.stopped_reading


class _Exploding(ReplaySource):
    """A recording whose clock breaks after the first screen: a fault in the TUI."""

    calls = 0

    def clock(self) -> float:
        self.calls += 1
        if self.calls > 2:
            secret = "DSN=postgresql://app:hunter2@db/app"  # a local a traceback would show
            raise RuntimeError(f"injected fault ({len(secret)})")
        return super().clock()


@pytest.mark.fast
def test_a_tui_crash_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _Exploding(write(tmp_path / "c.ndjson", GOOD))
    app = PoolscopeApp(src, refresh_interval=0.05)
    rc = app.run_tui(headless=True)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines() == [
        "poolscope: the TUI stopped on an internal error: RuntimeError: injected fault (35)"
    ]
    assert "hunter2" not in err and "Traceback" not in err


@contextlib.asynccontextmanager
async def crafted_app(payload: bytes) -> AsyncIterator[Endpoint]:
    """A peer that sends ``payload`` and then keeps the connection open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Endpoint("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()


@pytest.mark.fast
async def test_export_of_a_crafted_stream_serves_finite_metrics() -> None:
    sync = '{"type":"sync","t":1000.0,"state":{"process":{"pid":5,"process":"app"}}}'
    lines = [HELLO, sync, *GOOD[1:], *CRAFTED]
    async with crafted_app("".join(x + "\n" for x in lines).encode()) as ep:
        exp = Exporter([ep])
        exp.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                target = exp.targets[0]
                st = target.state
                if target.up and st is not None and "p" in st.pools and st.pools["p"].timeouts:
                    break
                assert time.monotonic() < deadline, "exporter never folded the stream"
                await asyncio.sleep(0.05)
            body, _ = exp.render()
            assert target.client.stats.bad_lines == len(CRAFTED)
        finally:
            await exp.close()
    text = body.decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    lb = (("db_client_connection_pool_name", "p"), ("pid", "5"), ("process", "app"))
    assert values[("db_client_connection_timeouts_total", lb)] == 1
    assert values[("db_client_connection_use_time_seconds_count", lb)] == 1
    assert values[("db_client_connection_use_time_seconds_sum", lb)] == 0.5
    assert all(v == v and abs(v) != float("inf") for v in values.values()), text


@pytest.mark.fast
def test_a_sync_with_absurd_histogram_buckets_folds_to_sane_percentiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bucket 100000 is 10**10000 s: its percentile overflowed a float."""
    hist = {"buckets": {"100000": 5, "-3": -7, "-20": 3}, "count": 1, "sum": 1.0}
    pool = {"name": "p", "max": 4, "histograms": {"wait": hist, "hold": hist}}
    sync = {"type": "sync", "t": 1000.0, "state": {"pools": {"p": pool}}}
    path = write(tmp_path / "s.ndjson", [HELLO, json.dumps(sync), *GOOD[1:]])
    assert main(["advise", str(path), "--all", "--json"]) == 0
    (advice,) = json.loads(capsys.readouterr().out)["pools"]
    assert advice["workload"]["wait_p99"] == pytest.approx(0.01, rel=0.3)
    src = ReplaySource(path, start=1e6)
    p = src.feeds[0].state.pools["p"]
    assert p.wait.buckets.keys() <= set(range(-90, 201))
    assert p.wait.p99 < 1.0 and p.wait.count == 4  # the sync's 3 plus the live acquire
