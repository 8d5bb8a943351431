"""A throwaway PostgreSQL cluster (Debian's ``postgresql``) on 127.0.0.1, in a temp folder.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user
(runuser); as anyone else, as that user. Durability is off (fsync, full page writes): a test
cluster has to survive its clients being killed, not the machine.

Roles: ``newsletter`` (trust: no password) owns each test database; ``newsletter_pw`` has the
same rights (a member of ``newsletter``) but must give ``PASSWORD`` (scram-sha-256), for tests
of the password path.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import Server, ServerError, free_port, retry_port_clash, run

SUPERUSER = "postgres"
USER = "newsletter"
PASSWORD_USER = "newsletter_pw"
PASSWORD = "test-secret-pw"


def bin_dir() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/<ver>/bin), if any;
    PG_BIN overrides."""
    override = os.environ.get("PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").is_file() else None
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((tuple(int(p) for p in version.split(".")), initdb.parent))
    return max(found)[1] if found else None


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    if bin_dir() is None:
        return "no PostgreSQL server (Debian package postgresql: /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "no 'postgres' user to run initdb as (Debian package postgresql)"
    return None


@dataclass(frozen=True)
class Database:
    """One database of the cluster, owned by ``newsletter``."""

    name: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """``postgresql://newsletter@127.0.0.1:PORT/NAME`` (trust auth: no password)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{self.name}"

    @property
    def password_url(self) -> str:
        """The same database as ``newsletter_pw``, who must give ``PASSWORD`` (not in the URL)."""
        return f"postgresql://{PASSWORD_USER}@{self.host}:{self.port}/{self.name}"


class PostgresCluster(Server):
    """``with PostgresCluster() as pg: db = pg.create_database()`` -> ``db.url``."""

    name = "pg"
    host = "127.0.0.1"

    def __init__(self) -> None:
        found = bin_dir()
        if found is None:
            raise ServerError(missing() or "no PostgreSQL")
        self.bin = found
        super().__init__()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._names = itertools.count(1)
        self._running = False

    @property
    def logs(self) -> list[Path]:
        return [self.log]

    # -- use

    def create_database(self, name: str | None = None) -> Database:
        """A fresh, empty database owned by ``newsletter``."""
        name = name or f"test_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" OWNER {USER}')
        return Database(name=name, host=self.host, port=self.port)

    def drop_database(self, name: str) -> None:
        """Drop it, closing any connection a test left open."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statements: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser with psql; return its unaligned, tuples-only output."""
        return run(
            [
                *(self.bin / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", dbname),
                *("-c", statements),
            ],
            what="psql",
            logs=self.logs,
            cwd=self.root,
        )

    # -- life cycle

    def _start(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        run(
            [
                *(self.bin / "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
            ],
            what="initdb",
            cwd=self.root,
            user=SUPERUSER,
        )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n",
            encoding="utf-8",
        )
        retry_port_clash(self._start_server, "postgres")
        self.sql(
            f"CREATE ROLE {USER} LOGIN CREATEDB;"
            f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}' IN ROLE {USER};"
        )

    def _start_server(self) -> None:
        self.port = free_port()
        # initdb made this file, owned by postgres; writing it keeps the owner.
        (self.data / "postgresql.auto.conf").write_text(
            f"listen_addresses = '{self.host}'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "max_connections = 200\n",
            encoding="utf-8",
        )
        # pg_ctl -w returns once the server accepts connections (or failed, with its log).
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))
        self._running = True

    def _halt(self) -> None:
        if not self._running:
            return
        self._running = False
        try:
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        except ServerError:
            # SIGQUIT is PostgreSQL's own immediate shutdown; it frees shared memory.
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)

    def _pg_ctl(self, *args: str) -> None:
        run(
            [self.bin / "pg_ctl", "-D", self.data, *args],
            what=f"pg_ctl {args[0]}",
            logs=self.logs,
            cwd=self.root,
            user=SUPERUSER,
        )
