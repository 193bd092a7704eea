"""``poolscope demo``: the embedded demo, with the TUI attached over the real socket."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

from poolscope.cli import CommandError
from poolscope.commands.common import endpoint_arg, positive_float
from poolscope.endpoint import Endpoint


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--headless", action="store_true", help="run the demo application only, no TUI")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--listen",
        type=endpoint_arg,
        metavar="ENDPOINT",
        help="where the demo streams (default: a free loopback port)",
    )
    p.add_argument("--rate", type=positive_float, default=60.0, help="requests per second (60)")
    p.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    p.add_argument("--no-trouble", action="store_true", help="no slow spells, leaks or outages")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_headless(args: argparse.Namespace) -> int:
    from poolscope.demo.app import DemoConfig, run_demo

    cfg = DemoConfig(
        rate=args.rate,
        duration=args.duration,
        listen=str(args.listen) if args.listen else None,
        seed=args.seed,
        trouble=not args.no_trouble,
    )
    try:
        asyncio.run(run_demo(cfg))
    except KeyboardInterrupt:
        pass
    return 0


def _wait_listening(ep: Endpoint, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError("the demo application exited at start")
        try:
            with socket.create_connection((ep.host, ep.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise CommandError(f"the demo application did not listen on {ep} within {timeout:g}s")


def run(args: argparse.Namespace) -> int:
    if args.headless:
        return run_headless(args)
    ep: Endpoint = args.listen or Endpoint("127.0.0.1", _free_port())
    cmd = [
        sys.executable,
        "-m",
        "poolscope",
        "demo",
        "--headless",
        "--listen",
        str(ep),
        "--rate",
        str(args.rate),
    ]
    if args.duration:
        cmd += ["--duration", str(args.duration)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.no_trouble:
        cmd.append("--no-trouble")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, POOLSCOPE_LISTEN=str(ep)),
    )
    try:
        _wait_listening(ep, proc)
        from poolscope.tui.app import run_tui

        run_tui([ep], title="poolscope demo")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0
