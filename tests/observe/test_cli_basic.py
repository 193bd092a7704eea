"""The command line's contract: one-line errors, exit 2 for bad arguments, exit 1
when the thing asked for cannot be done."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from poolscope.cli import COMMANDS, main
from tests.fixtures.subproc import POOLSCOPE, ROOT, free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLSCOPE, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


def test_record_against_nothing_listening_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "never.ndjson"
    r = _run("record", f":{free_port()}", "-o", str(out), "--duration", "1")
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert line.startswith("poolscope: cannot record:") and "refused" in line
    assert not out.exists()


def test_record_bad_arguments_exit_2_in_a_real_process(tmp_path: Path) -> None:
    r = _run("record", "nonsense", "-o", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "expected :PORT, HOST:PORT or unix:PATH" in _one_line(r.stderr)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["record", ":9400"], "-o/--output"),  # missing output
        (["record", ":99999", "-o", "x"], "out of range"),
        (["record", ":9400", "-o", "x", "--duration", "-1"], "positive"),
        (["record", ":9400", "-o", "x", "--duration", "nan"], "positive"),
        (["record", ":9400", "-o", "x", "--duration", "soon"], "not a number"),
        (["record", "unix:", "-o", "x"], "socket path"),
        (["record", ":9400", "-o", "x", "--bogus"], "unrecognized"),
        (["no-such-command"], "unknown command"),
        (["demo", "--rate", "0"], "positive"),
        (["demo", "--listen", "host-without-port"], "expected"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in _one_line(err)


def test_no_arguments_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: poolscope" in capsys.readouterr().err


def test_help_lists_every_command_and_version_works() -> None:
    r = _run("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout
    v = _run("--version")
    assert v.returncode == 0 and v.stdout.startswith("poolscope ")


def test_record_help_names_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["record", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "ENDPOINT" in out and "--duration" in out and "--output" in out
