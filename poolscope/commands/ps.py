"""``poolscope ps``: instrumented processes on this machine (pid, command, endpoint, pools)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from poolscope.textsafe import visible


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _command(entry: dict[str, Any]) -> str:
    import psutil

    from poolscope.instrument.redact import redact_argv

    # The live command line carries what the application was started with: secrets too.
    try:
        cmdline = psutil.Process(int(entry["pid"])).cmdline()
        if cmdline:
            return " ".join(redact_argv(cmdline))
        return str(entry.get("process"))
    except (psutil.Error, OSError):
        argv = entry.get("argv")
        return (
            " ".join(redact_argv(argv))
            if isinstance(argv, list)
            else str(entry.get("process", "?"))
        )


def rows() -> list[dict[str, Any]]:
    from poolscope.commands.attach import live_entries

    out = []
    for e in live_entries(prune=True):
        pools = e.get("pools")
        out.append(
            {
                "pid": int(e["pid"]),
                "command": _command(e),
                "endpoint": str(e["endpoint"]),
                "pools": [str(p) for p in pools] if isinstance(pools, list) else [],
                "started": e.get("started"),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    found = rows()
    if args.json:
        # JSON escapes every control and non-ASCII character itself (ensure_ascii).
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no instrumented processes found")
        return 0
    print(f"{'PID':>7}  {'ENDPOINT':<22} {'POOLS':<24} COMMAND")
    for r in found:
        # Entries and command lines are other processes' text: shown made visible.
        pools = visible(",".join(r["pools"])) or "-"
        command = visible(r["command"])
        if len(command) > 60:
            command = command[:59] + "…"
        print(f"{r['pid']:>7}  {visible(r['endpoint']):<22} {pools:<24} {command}")
    return 0
