"""Every command given bad arguments prints one line and exits 2 - no traceback, no usage
dump - whatever the command."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from poolscope.cli import COMMANDS, main
from tests.fixtures.faults import POOLSCOPE, ROOT

GENERIC = [["--definitely-not-an-option"], ["--definitely-not-an-option=1", "x", "y", "z"]]

# Bad values for options each command has (if a command lacks one, argparse still
# refuses it as unknown: the contract is the same).
SPECIFIC: dict[str, list[list[str]]] = {
    "record": [
        [],
        ["not an endpoint"],
        [":9400"],  # no -o
        [":99999", "-o", "x.ndjson"],
        [":9400", "-o", "x.ndjson", "--duration", "-1"],
        [":9400", "-o", "x.ndjson", "--duration", "nan"],
        ["unix:", "-o", "x.ndjson"],
    ],
    "export": [[], ["host:port:junk"], [":1", "--listen", "nowhere"]],
    "demo": [["--rate", "0"], ["--duration", "abc"], ["--listen", "x"], ["--seed", "1.5"]],
    "attach": [["not an endpoint"]],
    "replay": [[]],
    "advise": [[]],
    "ps": [["unexpected"]],
    "run": [
        [],
        ["--"],
        ["--pools", "nope", "--", "true"],
        ["--pools", ",", "--", "true"],
        ["--listen", "x", "--", "true"],
        ["--leak-threshold", "-1", "--", "true"],
        ["--heartbeat", "abc", "--", "true"],
    ],
    "inject": [
        [],
        ["abc"],
        ["0"],
        ["--", "-1"],
        ["1", "--timeout", "0"],
        ["1", "--listen", "x"],
        ["1", "--leak-threshold", "nan"],
    ],
    "detach": [[], ["abc"], ["0"], ["1", "--timeout", "-1"], ["1", "2"]],
}


def _cases() -> list[object]:
    out: list[object] = []
    for cmd in COMMANDS:
        present = importlib.util.find_spec(f"poolscope.commands.{cmd}") is not None
        marks = [] if present else [pytest.mark.skip(reason=f"poolscope {cmd} not built yet")]
        for args in GENERIC + SPECIFIC.get(cmd, []):
            out.append(pytest.param(cmd, args, marks=marks, id=f"{cmd} {' '.join(args)}"))
    return out


@pytest.mark.parametrize(("command", "args"), _cases())
def test_bad_arguments_one_line_exit_2(
    command: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([command, *args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"poolscope {command}: ") or lines[0].startswith("poolscope: ")
    assert "Traceback" not in err and out == ""


def test_every_command_is_covered() -> None:
    assert set(SPECIFIC) == set(COMMANDS)


@pytest.mark.parametrize("argv", [["no-such-command"], ["record"], ["export", "--listen"]])
def test_bad_arguments_through_the_real_entry_point(argv: list[str]) -> None:
    proc = subprocess.run([*POOLSCOPE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""
