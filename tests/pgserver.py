"""A real PostgreSQL server for the tests: Debian's postgresql 15, in a temporary data directory.

initdb and the server run as the `postgres` user when the tests run as root (PostgreSQL refuses to run as
root), listening on a free loopback port and a unix socket in the same temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from mailserver import free_port

BIN = Path(os.environ.get("POLICY_SITE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PgServer:
    """initdb + pg_ctl start on a free port; `url(db)` for a database on it; `restart()`; `stop()`."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"{BIN}/initdb not found: run `make db-deps` (Debian's postgresql package).")
        self.root = Path(tempfile.mkdtemp(prefix="policy-site-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                     "-E", "UTF8", "--locale=C", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
                         " -c shared_buffers=64MB")
        self.pg_ctl("start", "-w", "-l", str(self.log), "-o", self._options)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), *args]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own generated name
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.log), "-o", self._options)

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
