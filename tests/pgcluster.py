"""A throwaway PostgreSQL cluster for tests and benchmarks.

    with PgCluster() as pg:
        dsn = pg.dsn          # postgresql://poolscope@127.0.0.1:PORT/poolscope

``initdb`` into a temporary directory, trust auth on 127.0.0.1 only, a free port,
settings chosen for a fast start (fsync off, small shared_buffers). When run as root
(CI does) every server binary runs through ``runuser -u postgres --`` because
PostgreSQL refuses to run as root. When ``$POOLSCOPE_TEST_DSN`` is set, that server is
used instead and start/stop/restart are no-ops (restart cannot be forced there).

Importable from bench code run at the repository root: ``from tests.pgcluster import
PgCluster``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
# Debian/Ubuntu keep the server binaries off PATH; look there too.
_EXTRA_DIRS = tuple(f"/usr/lib/postgresql/{v}/bin" for v in (17, 16, 15, 14, 13))


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries cannot be found or the cluster would not start."""


def find_binary(name: str) -> str | None:
    """The path to a PostgreSQL server binary, or None."""
    found = shutil.which(name)
    if found:
        return found
    for d in _EXTRA_DIRS:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_binaries() -> list[str]:
    """Names of the server binaries that are not installed (empty when all are)."""
    return [b for b in BINARIES if find_binary(b) is None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A private PostgreSQL cluster in a temp dir (or the server in ``$POOLSCOPE_TEST_DSN``)."""

    def __init__(
        self,
        *,
        user: str = "poolscope",
        database: str = "poolscope",
        max_connections: int = 100,
        use_env: bool = True,
    ) -> None:
        self.user = user
        self.database = database
        self.max_connections = max_connections
        self.external_dsn = os.environ.get("POOLSCOPE_TEST_DSN") if use_env else None
        self.port = 0
        self.host = "127.0.0.1"
        self.tmpdir: str | None = None
        self._running = False
        self._created = False

    # -- public ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """A libpq URL for the test user and database (no password: trust auth)."""
        if self.external_dsn:
            return self.external_dsn
        if not self.port:
            raise PgUnavailable("PgCluster not started")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def datadir(self) -> str:
        if self.tmpdir is None:
            raise PgUnavailable("PgCluster not started")
        return os.path.join(self.tmpdir, "data")

    @property
    def external(self) -> bool:
        return bool(self.external_dsn)

    def start(self) -> PgCluster:
        """Create (first time) and start the cluster; returns self."""
        if self.external or self._running:
            return self
        if self.tmpdir is None:
            self._init()
        self._pg_ctl("start", "-w", "-t", "30", "-l", os.path.join(self.tmpdir or "", "log"))
        self._running = True
        if not self._created:
            self._create_role_and_db()
            self._created = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (data kept; ``start()`` again works)."""
        if self.external or not self._running:
            return
        self._pg_ctl("stop", "-w", "-t", "30", "-m", mode)
        self._running = False

    def restart(self) -> None:
        """Stop and start again on the same port; every existing connection is lost."""
        if self.external:
            return
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop("immediate")
        finally:
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None

    def __enter__(self) -> PgCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- internals ------------------------------------------------------------------------

    def _as_postgres(self) -> list[str]:
        # PostgreSQL refuses to run as root; CI runs the suite as root.
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"]
        return []

    def _run(self, argv: list[str], timeout: float = 60.0) -> None:
        proc = subprocess.run(
            self._as_postgres() + argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            log = ""
            if self.tmpdir is not None:
                try:
                    with open(os.path.join(self.tmpdir, "log"), encoding="utf-8") as f:
                        log = f.read()[-2000:]
                except OSError:
                    pass
            tool = os.path.basename(argv[0])
            raise PgUnavailable(f"{tool} failed ({proc.returncode}): {proc.stdout[-2000:]}{log}")

    def _bin(self, name: str) -> str:
        path = find_binary(name)
        if path is None:
            raise PgUnavailable(f"PostgreSQL binary {name!r} not found on PATH")
        return path

    def _init(self) -> None:
        missing = missing_binaries()
        if missing:
            raise PgUnavailable(f"PostgreSQL server binaries not found: {', '.join(missing)}")
        self.tmpdir = tempfile.mkdtemp(prefix="poolscope-pg-")
        if self._as_postgres():
            shutil.chown(self.tmpdir, user="postgres")
        os.chmod(self.tmpdir, 0o700)
        self._run(
            [
                self._bin("initdb"),
                "-D",
                self.datadir,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        self.port = free_port()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.tmpdir}'",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a", encoding="utf-8") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w", encoding="utf-8") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def _pg_ctl(self, *args: str) -> None:
        self._run([self._bin("pg_ctl"), "-D", self.datadir, *args])

    def _psql_sql(self, sql: str, database: str = "postgres") -> None:
        """Run one SQL statement as the superuser over TCP with ``psql``."""
        psql = self._bin("psql")
        argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port)]
        argv += ["-U", "postgres", "-d", database, "-c", sql]
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise PgUnavailable(f"psql failed: {proc.stdout.strip()[-500:]}")

    def _create_role_and_db(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._psql_sql(f'CREATE ROLE "{self.user}" LOGIN SUPERUSER')
                break
            except PgUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._psql_sql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')
