"""`poolscope run` start-up: the sitecustomize hooks a pool library only when the
application imports it, chains to the sitecustomize it shadows, leaves sys.path as it
was, takes its settings from the POOLSCOPE_* variables, and fails with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inject_support import POOLSCOPE, ROOT, app_env

pytestmark = [pytest.mark.timeout(120)]

PROBE = """
import json, sys
out = {
    "instrument_loaded": "poolscope.instrument" in sys.modules,
    "site_on_path": any(p.endswith("_site") for p in sys.path),
    "chained": getattr(sys, "_chained_marker", False),
}
if "--pool" in sys.argv:
    from poolscope.pool import Pool

    async def factory():
        return object()

    async def ping(conn):
        return True

    pool = Pool(factory, max_size=2, ping=ping)
    out["loaded_by_pool"] = "poolscope.instrument" in sys.modules
    import poolscope.instrument as ps

    rt = ps.get_runtime()
    out.update(pools=sorted(rt.handles), endpoint=str(rt.endpoint))
    for h in rt.handles.values():
        out.update(leak=h.leak_threshold, heartbeat=h.heartbeat)
print(json.dumps(out))
"""


def _run(*args: str, env: dict[str, str], pool: bool = False) -> dict[str, object]:
    r = subprocess.run(
        [
            *POOLSCOPE,
            "run",
            *args,
            "--",
            sys.executable,
            "-c",
            PROBE,
            *(["--pool"] if pool else []),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_no_pool_library_imported_means_poolscope_never_loads(tmp_path: Path) -> None:
    out = _run(env=app_env(tmp_path))
    assert out["instrument_loaded"] is False
    assert out["site_on_path"] is False


def test_chains_to_the_existing_sitecustomize(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import sys\nsys._chained_marker = True\n")
    env = app_env(tmp_path)
    env["PYTHONPATH"] = str(theirs)
    out = _run(env=env)
    assert out["chained"] is True
    assert out["site_on_path"] is False


def test_pool_instrumented_with_flags_and_env(tmp_path: Path) -> None:
    env = app_env(tmp_path)
    out = _run(
        "--leak-threshold", "2.5", "--heartbeat", "7", "--listen", "127.0.0.1:0", env=env, pool=True
    )
    # Importing the pool library loaded poolscope; making the pool instrumented it.
    assert out["instrument_loaded"] is False and out["loaded_by_pool"] is True
    assert out["leak"] == 2.5 and out["heartbeat"] == 7.0
    assert len(out["pools"]) == 1  # type: ignore[arg-type]
    assert str(out["endpoint"]).startswith("127.0.0.1:")
    env.update(POOLSCOPE_LEAK_THRESHOLD="off", POOLSCOPE_LISTEN="127.0.0.1:0")
    assert _run(env=env, pool=True)["leak"] is None
    env.update(POOLSCOPE_POOLS="asyncpg")
    assert _run(env=env, pool=True)["pools"] == []  # the reference pool was not selected


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give the command to run after --"),
        (["--", "no-such-command-poolscope"], "command not found: no-such-command-poolscope"),
        (["--pools", "mysql", "--", "true"], "unknown kind mysql"),
        (["--listen", "nowhere:x", "--", "true"], "bad --listen"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [*POOLSCOPE, "run", *args],
        capture_output=True,
        text=True,
        env=app_env(tmp_path),
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode in (1, 2)
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
