"""A throwaway PostgreSQL 15 cluster on 127.0.0.1 for one test session.

Why a real server: the provider's claims rely on ``FOR UPDATE SKIP LOCKED``,
PG enums and ``bytea`` columns of the RAMP schema; SQLite would not tell us
whether that SQL is right. The cluster lives in a temp dir owned by the
``postgres`` system user (PostgreSQL refuses to run as root), listens only on
127.0.0.1 with its unix socket inside the temp dir, and is stopped by the PID of
the postmaster that we started ourselves (``postgres`` in the foreground).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from urllib.parse import quote

from testbench._proc import free_port, stop_pid, tail, wait_until

PG_BIN = "/usr/lib/postgresql/15/bin"
SYSTEM_USER = "postgres"
ROLE = "bench"


@dataclasses.dataclass
class PostgresCluster:
    """Where the bench cluster listens and how to log in (role ``bench``)."""

    host: str
    port: int
    user: str
    password: str
    base_dir: str
    pid: int
    _proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq key/value DSN, e.g. for ``psycopg2.connect``."""
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={dbname}"

    def url(self, dbname: str = "postgres", driver: str = "postgresql") -> str:
        """SQLAlchemy URL; ``driver='postgresql+psycopg2'`` for Airflow."""
        return f"{driver}://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/{dbname}"

    def sqlalchemy_config(self, dbname: str) -> dict:
        """The ``sqlalchemy`` section of a RAMP / seed config file."""
        return {
            "drivername": "postgresql",
            "username": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "database": dbname,
        }

    def start(self, timeout: float = 30.0) -> subprocess.Popen:
        """Start the postmaster on the cluster's data folder; wait (bounded) until it accepts connections."""
        base = self.base_dir
        data, log = os.path.join(base, "data"), os.path.join(base, "postgres.log")
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": base,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
        }
        argv = [f"{PG_BIN}/postgres", "-D", data, "-p", str(self.port)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(log, "a") as logf:
            proc = subprocess.Popen(
                argv,
                user=SYSTEM_USER,
                group=SYSTEM_USER,
                cwd=base,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._proc, self.pid = proc, proc.pid
        try:
            wait_until(
                lambda: proc.poll() is not None or _ready(self.port, base),
                timeout,
                "postgres to accept connections",
                0.2,
            )
        except TimeoutError:
            raise RuntimeError(f"postgres not ready:\n{tail(log)}") from None
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited {proc.returncode}:\n{tail(log)}")
        return proc

    def stop(self) -> None:
        """Stop the postmaster by its PID: a "fast shutdown" (SIGINT) that disconnects every client."""
        stop_pid(self.pid, signal.SIGINT, timeout=20, proc=self._proc)

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg2

        conn = psycopg2.connect(self.dsn(dbname))
        conn.autocommit = autocommit
        return conn

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE ``name`` (optionally as a copy of ``template``)."""
        from psycopg2 import sql

        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(query)
        return name

    def drop_database(self, name: str) -> None:
        from psycopg2 import sql

        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_as_postgres(argv, **kwargs):
    return subprocess.run(
        argv, user=SYSTEM_USER, group=SYSTEM_USER, check=True, capture_output=True, text=True, **kwargs
    )


def _ready(port: int, sock_dir: str) -> bool:
    probe = subprocess.run([f"{PG_BIN}/pg_isready", "-q", "-h", sock_dir, "-p", str(port)], user=SYSTEM_USER)
    return probe.returncode == 0


@contextlib.contextmanager
def running_postgres(port: int | None = None, password: str | None = None, timeout: float = 30.0):
    """Start a cluster, yield a :class:`PostgresCluster`, always stop it."""
    port = port or free_port()
    password = password or secrets.token_hex(12)
    base = tempfile.mkdtemp(prefix="bench-pg-")
    pw = pwd.getpwnam(SYSTEM_USER)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    data, log = os.path.join(base, "data"), os.path.join(base, "postgres.log")
    cluster = None
    try:
        pwfile = os.path.join(base, "pwfile")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        _run_as_postgres(
            [
                f"{PG_BIN}/initdb",
                "-D",
                data,
                "-U",
                SYSTEM_USER,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--pwfile",
                pwfile,
                "-E",
                "UTF8",
                "--no-sync",
            ],
            cwd=base,
        )
        with open(log, "w"):
            os.chown(log, pw.pw_uid, pw.pw_gid)
        cluster = PostgresCluster(host="127.0.0.1", port=port, user=ROLE, password=password, base_dir=base, pid=0)
        cluster.start(timeout)
        _run_as_postgres(
            [
                f"{PG_BIN}/psql",
                "-h",
                base,
                "-p",
                str(port),
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"pw={password}",
                "-q",
            ],
            cwd=base,
            input=f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD :'pw';\n",
        )
        yield cluster
    finally:
        if cluster is not None and cluster._proc is not None:
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
