"""The two distributions, built the way users get them: no symlink in the repository, a
clone with ``core.symlinks=false`` builds wheels that instrument a pool, the in-app
distribution installs and works alone (no observer dependency), and the sdist carries
what its tests need."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OBSERVER_DEPS = ("textual", "plotext", "aiohttp", "psutil", "prometheus_client")

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{cmd}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_repository_holds_no_symlink() -> None:
    listing = _run("git", "ls-files", "-s", cwd=ROOT)
    assert [line for line in listing.splitlines() if line.startswith("120000")] == []


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this checkout's HEAD as Windows makes it: symlinks as plain files."""
    where = tmp_path_factory.mktemp("clone") / "poolscope"
    _run("git", "-c", "core.symlinks=false", "clone", "-q", "--no-hardlinks", ROOT, where)
    _run("git", "config", "core.symlinks", "false", cwd=where)
    return where


@pytest.fixture(scope="module")
def wheels(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    pip = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out)
    _run(*pip, clone / "instrument", cwd=clone)
    _run(*pip, clone, cwd=clone)
    return out


def _one(where: Path, pattern: str) -> Path:
    found = sorted(where.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_wheels_from_a_symlink_free_clone_carry_both_sides(wheels: Path) -> None:
    inapp = zipfile.ZipFile(_one(wheels, "poolscope_instrument-*.whl")).namelist()
    observer = zipfile.ZipFile(_one(wheels, "poolscope-*.whl")).namelist()
    for name in (
        "poolscope/instrument/__init__.py",
        "poolscope/instrument/runtime.py",
        "poolscope/pool/core.py",
        "poolscope/events.py",
        "poolscope/model.py",
        "poolscope/fold.py",
        "poolscope/records.py",
        "poolscope/sync_codec.py",
    ):
        assert name in inapp
        assert name not in observer  # one owner per file: no clash when both are installed
    assert "poolscope/cli.py" in observer and "poolscope/tui/poolscope.tcss" in observer
    # A subpackage of the observer with its own __init__.py (the advisor's parts).
    assert "poolscope/sizing/recommend.py" in observer and "poolscope/follow.py" in observer
    # PEP 420: neither side may own the namespace's __init__.py.
    assert "poolscope/__init__.py" not in inapp + observer
    # The C hot path is built where a compiler is (this machine has one); its source is
    # the sdist's, not the wheel's.
    built = [n for n in inapp if n.startswith("poolscope/instrument/_accel.")]
    assert len(built) == 1 and built[0].endswith(".so"), built


def test_in_app_distribution_without_a_compiler_runs_on_the_python_hot_path(
    clone: Path, tmp_path: Path
) -> None:
    # A machine with no working C compiler (CC fails): the build still succeeds, the
    # wheel has no extension, and a pool is instrumented by the pure-Python closures.
    out = tmp_path / "wheels"
    src = tmp_path / "src"  # a clone of its own: the other builds leave build/ behind
    _run("git", "clone", "-q", "--no-hardlinks", clone, src)
    env = {**os.environ, "CC": "/bin/false"}
    pip = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out)
    subprocess.run([*map(str, pip), str(src / "instrument")], env=env, check=True, cwd=src)
    wheel = _one(out, "poolscope_instrument-*.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if "_accel" in n]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-index", wheel)
    script = tmp_path / "alone.py"
    script.write_text(_INSTRUMENT_A_POOL)
    last = _run(python, script, "", cwd=tmp_path, timeout=60).strip().splitlines()[-1]
    assert '"acquires": 5' in last, last
    check = "from poolscope.instrument import accel; print(accel.ENABLED, accel.REASON)"
    assert _run(python, "-c", check).startswith("False not built")


_INSTRUMENT_A_POOL = textwrap.dedent(
    """
    import asyncio, importlib.util, json, socket, sys
    import poolscope.instrument as ps
    from poolscope.pool import Pool

    heavy = [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is not None]

    class Conn:
        async def close(self):
            pass

    async def main():
        async def factory():
            return Conn()
        pool = Pool(factory, min_size=1, max_size=2, name="alone")
        pool = ps.instrument(pool, leak_threshold=None, listen="127.0.0.1:0")
        async with pool:
            for _ in range(5):
                async with pool.acquire():
                    pass
        endpoint = ps.get_runtime().server.endpoint
        for _ in range(50):  # the background thread folds the releases within a tick
            with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as s:
                f = s.makefile("r")
                hello = json.loads(f.readline())
                sync = json.loads(f.readline())
            acquires = sync["state"]["pools"]["alone"]["counters"]["acquires"]
            if acquires == 5:
                break
            await asyncio.sleep(0.1)
        print(json.dumps({"heavy": heavy, "hello": hello["type"], "acquires": acquires}))
        ps.shutdown()

    asyncio.run(main())
    """
)


def test_in_app_distribution_alone_instruments_a_pool(wheels: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(
        python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
        "poolscope-instrument",
    )  # fmt: skip
    script = tmp_path / "alone.py"
    script.write_text(_INSTRUMENT_A_POOL)
    result = _run(python, script, ",".join(OBSERVER_DEPS), cwd=tmp_path, timeout=60)
    last = result.strip().splitlines()[-1]
    assert '"heavy": []' in last, last  # no observer dependency was installed
    assert '"hello": "hello"' in last and '"acquires": 5' in last, last


def test_sdist_carries_tests_fixtures_data_docs_and_licence(clone: Path, tmp_path: Path) -> None:
    _run(sys.executable, "-m", "build", "-q", "--sdist", "-o", tmp_path / "dist", clone)
    sdist = _one(tmp_path / "dist", "poolscope-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path / "unpacked", filter="data")
    for needed in (
        "LICENSE",
        "docs/protocol.md",
        "tests/conftest.py",
        "tests/fixtures/__init__.py",
        "tests/data/session.ndjson",
        "instrument/pyproject.toml",
        "instrument/LICENSE",
        "instrument/poolscope/instrument/__init__.py",
    ):
        assert needed in names, needed
    tree = _one(tmp_path / "unpacked", "poolscope-*")
    # Its tests run from the unpacked tree, importing the tree's own code first.
    env_path = f"{tree}:{tree / 'instrument'}"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/core/test_histogram.py", "tests/core/test_events.py"],
        cwd=tree, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": env_path, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout


def test_in_app_sdist_carries_the_accelerator_source(clone: Path, tmp_path: Path) -> None:
    _run(sys.executable, "-m", "build", "-q", "--sdist", "-o", tmp_path, clone / "instrument")
    with tarfile.open(_one(tmp_path, "poolscope_instrument-*.tar.gz")) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {
        "setup.py",
        "poolscope/instrument/_accel.c",
        "poolscope/instrument/_shortest.h",
        "poolscope/instrument/accel.py",
    } <= names
