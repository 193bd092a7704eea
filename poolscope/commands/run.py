"""``poolscope run [OPTIONS] -- CMD [ARGS...]``: run CMD with every pool it creates
instrumented, with no change to its code.

CMD runs in place of this process (``exec``: same pid, signals and exit status) with
poolscope's ``sitecustomize`` directory first on ``PYTHONPATH`` and the options passed as
``POOLSCOPE_*`` environment variables, so every Python process of the command - forked
or spawned workers, reloaders, ``python -m`` children - instruments its pools as it
creates them. See docs/attach.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from poolscope.cli import CommandError, UsageError
from poolscope.commands.common import positive_float


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--leak-threshold",
        type=positive_float,
        metavar="S",
        help="a connection held longer is a suspected leak (default 30)",
    )
    p.add_argument("--no-leak-detection", action="store_true", help="turn leak detection off")
    p.add_argument("--heartbeat", type=positive_float, metavar="S", help="probe idle connections")
    p.add_argument(
        "--listen",
        metavar="ADDR",
        help="HOST:PORT or unix:PATH to stream on (default 127.0.0.1:9400, else a free port)",
    )
    p.add_argument(
        "--prometheus",
        action="store_true",
        help="register the in-app Prometheus collector (prometheus_client's default registry)",
    )
    p.add_argument(
        "--pools",
        metavar="KINDS",
        help="which kinds to instrument, comma-separated: asyncpg,sqlalchemy,psycopg,reference "
        "(default all)",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def site_dir() -> str:
    """The directory holding poolscope's sitecustomize."""
    import poolscope.instrument as ps

    return os.path.join(os.path.dirname(os.path.abspath(ps.__file__)), "_site")


def environment(args: argparse.Namespace, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment CMD runs with."""
    from poolscope.remote import instrument_root

    env = dict(os.environ if base is None else base)
    site = site_dir()
    old = env.get("PYTHONPATH", "")
    parts = [p for p in old.split(os.pathsep) if p and os.path.abspath(p) != site]
    env["PYTHONPATH"] = os.pathsep.join([site, *parts])
    env["POOLSCOPE_AUTO"] = "1"
    env["POOLSCOPE_RUN_PYTHON"] = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env["POOLSCOPE_INSTRUMENT_PATH"] = instrument_root()
    if args.no_leak_detection:
        env["POOLSCOPE_LEAK_THRESHOLD"] = "off"
    elif args.leak_threshold is not None:
        env["POOLSCOPE_LEAK_THRESHOLD"] = repr(args.leak_threshold)
    if args.heartbeat is not None:
        env["POOLSCOPE_HEARTBEAT"] = repr(args.heartbeat)
    if args.listen:
        from poolscope.endpoint import EndpointError, parse_endpoint

        try:
            env["POOLSCOPE_LISTEN"] = str(parse_endpoint(args.listen))
        except EndpointError as exc:
            raise UsageError(f"poolscope run: bad --listen: {exc}") from None
    if args.prometheus:
        env["POOLSCOPE_PROMETHEUS"] = "1"
    if args.pools:
        from poolscope.instrument.autorun import KINDS

        kinds = [k.strip() for k in args.pools.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise UsageError(
                f"poolscope run: --pools: unknown kind {','.join(bad) or '(none)'} "
                f"(choose from {','.join(KINDS)})"
            )
        env["POOLSCOPE_POOLS"] = ",".join(kinds)
    return env


def command_line(command: list[str]) -> list[str]:
    """CMD as given, a script run with this Python if it is a ``.py`` file."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("poolscope run: give the command to run after --")
    if command[0].endswith(".py") and not os.access(command[0], os.X_OK):
        return [sys.executable, *command]
    return command


def run(args: argparse.Namespace) -> int:
    argv = command_line(list(args.argv))
    env = environment(args)
    program = shutil.which(argv[0], path=env.get("PATH")) if os.sep not in argv[0] else argv[0]
    if program is None or not os.path.exists(program):
        raise CommandError(f"run: command not found: {argv[0]}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        raise CommandError(f"run: cannot run {argv[0]}: {exc.strerror}") from None
    return 1  # not reached
