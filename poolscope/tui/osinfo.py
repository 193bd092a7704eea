"""What the operating system says about an attached process (psutil).

Only for live, local processes: a recording's pid means nothing here. Every
function returns ``None`` when the answer is not available (no such process,
not permitted), never raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass
class ProcInfo:
    cpu_percent: float
    rss: int
    threads: int


class ProcessProbe:
    """psutil handles kept per pid, so CPU percent is measured between calls."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        try:
            if p is None or not p.is_running():
                p = psutil.Process(pid)
                p.cpu_percent(None)  # the first call only starts the measurement
                self._procs[pid] = p
            return p
        except (psutil.Error, OSError):
            self._procs.pop(pid, None)
            return None

    def info(self, pid: int) -> ProcInfo | None:
        p = self._proc(pid)
        if p is None:
            return None
        try:
            with p.oneshot():
                return ProcInfo(p.cpu_percent(None), p.memory_info().rss, p.num_threads())
        except (psutil.Error, OSError):
            return None

    def connections(self, pid: int, targets: list[str]) -> dict[str, int] | None:
        """Established TCP connections of ``pid`` to each ``host:port`` target."""
        p = self._proc(pid)
        if p is None:
            return None
        # Several targets may name one address ("localhost:80", "http://127.0.0.1:80"):
        # each gets that address's count. A target with no host:port gets none.
        wanted: dict[tuple[str, int], set[str]] = {}
        for target in targets:
            addr = parse_target(target)
            if addr is not None:
                wanted.setdefault(addr, set()).add(target)
        counts = {t: 0 for names in wanted.values() for t in names}
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return None
        for c in conns:
            if c.status != psutil.CONN_ESTABLISHED or not c.raddr:
                continue
            for key in wanted.get((_norm_host(c.raddr.ip), c.raddr.port), ()):
                counts[key] += 1
        return counts


def _norm_host(host: str) -> str:
    if host in ("localhost", "::1", "::ffff:127.0.0.1"):
        return "127.0.0.1"
    return host.removeprefix("::ffff:")


def parse_target(target: str) -> tuple[str, int] | None:
    """``host:port[/db]`` (as pools report their redacted target) -> (host, port)."""
    hostport = target.split("/", 1)[0]
    if "@" in hostport:
        hostport = hostport.rsplit("@", 1)[1]
    if "://" in target:
        hostport = target.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]") or "127.0.0.1"
    return _norm_host(host), int(port)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False
