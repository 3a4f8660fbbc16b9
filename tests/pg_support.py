"""A real PostgreSQL for the data-check tests: Debian's server binaries, started on a free
loopback port in a temporary data directory, as an unprivileged user (the server refuses to run
as root: under root the fixture runs it as ``postgres`` through ``runuser``). Never the
machine's own cluster on 5432.

The superuser is ``cutover`` with a password (scram), so a DSN holds a secret the tests can
look for in logs and answers. ``school_template`` holds the sample schema; each test makes its
own database from it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "rules" / "sample_schema.sql"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run 'apt-get install -y postgresql' (scripts/test.sh does)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="cutover-pg-"))
        self.data = self.dir / "data"
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, input=input_text, timeout=60)

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "cutover",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c max_connections=50"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.psql("postgres", "CREATE DATABASE school_template")
        self.psql("school_template", SCHEMA.read_text())

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, database: str) -> str:
        return f"postgresql://cutover:{self.password}@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "cutover",
                "-d",
                database,
            ],
            input=sql,
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return done.stdout.strip()

    def create_school(self, name: str) -> str:
        """A database with the sample schema and a small consistent school in it; returns its DSN."""
        self.psql("postgres", f"CREATE DATABASE {name} TEMPLATE school_template")
        self.psql(name, SEED)
        return self.dsn(name)

    def drop(self, name: str) -> None:
        self.psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")


SEED = """
INSERT INTO students VALUES (1, 'Ada'), (2, 'Grace');
INSERT INTO classes VALUES (10, '5A');
INSERT INTO subjects VALUES (100, 'Maths');
INSERT INTO enrollments VALUES (1000, 1, 10), (1001, 2, 10);
INSERT INTO grades VALUES (5000, 1000, 100, 15.50), (5001, 1001, 100, 12.00);
INSERT INTO grade_components VALUES (1, 5000, 14.00, 0.5), (2, 5000, 17.00, 0.5), (3, 5001, 12.00, 1.0);
INSERT INTO attendance VALUES (1, 1000, '2026-11-02', true), (2, 1001, '2026-11-02', false);
"""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
