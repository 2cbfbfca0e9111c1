"""Private, throwaway database servers for the lab and for tests.

The lab must never touch a database server it did not start (unless ``--db`` says so), and
fault-injection tests need servers they may kill, restart or reconfigure. So everything here
starts a server in a fresh temporary directory on a free 127.0.0.1 port, and the context
managers *always* stop it and delete the directory, even when the body raises.

Reusable pieces:

* :func:`private_mariadb` / :func:`private_postgres` - context managers yielding a
  :class:`DBServer` (``extra_args`` lets TLS or fault tests add server options);
* :meth:`DBServer.stop` / :meth:`DBServer.start` - restart the same data directory on the same
  port (a "database restart" fault);
* :func:`free_port`, :func:`missing_binaries_message`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

log = logging.getLogger("forkguard_lab")

MARIADB_PACKAGES = "mariadb-server"
POSTGRES_PACKAGES = "postgresql"


class ServerUnavailable(RuntimeError):
    """The server binaries are missing or the server did not come up; the message says why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _which(*candidates: str) -> Optional[str]:
    for cand in candidates:
        if os.path.isabs(cand):
            if os.access(cand, os.X_OK):
                return cand
            continue
        found = shutil.which(cand) or shutil.which(cand, path="/usr/sbin:/usr/local/sbin:/sbin")
        if found:
            return found
    return None


def mariadb_binaries() -> Optional[tuple[str, str]]:
    """(install-db, server) paths, or None when MariaDB/MySQL server binaries are missing."""
    install_db = _which("mariadb-install-db", "mysql_install_db")
    server = _which("/usr/sbin/mariadbd", "mariadbd", "/usr/sbin/mysqld", "mysqld")
    if install_db and server:
        return install_db, server
    return None


def postgres_bindir() -> Optional[str]:
    """The newest ``/usr/lib/postgresql/N/bin`` (Debian layout) or the dir of ``initdb`` on PATH."""
    cands = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if cands:
        return os.path.dirname(cands[-1])
    initdb = _which("initdb")
    return os.path.dirname(initdb) if initdb else None


def missing_binaries_message(kinds: Sequence[str]) -> Optional[str]:
    """A message naming exactly what to install, or None when every needed server exists."""
    missing: list[str] = []
    absent: list[str] = []
    if "mysql" in kinds and mariadb_binaries() is None:
        missing.append(MARIADB_PACKAGES)
        absent.append("mysql")
    if "postgresql" in kinds and postgres_bindir() is None:
        missing.append(POSTGRES_PACKAGES)
        absent.append("postgresql")
    if not missing:
        return None
    return (
        "forkguard lab: no database server binaries found for "
        + ", ".join(absent)
        + ".\nThe lab starts its own private, throwaway servers. Install them with:\n"
        + f"    sudo apt-get install -y {' '.join(missing)}\n"
        + "(nothing needs to run: the lab never uses a server it did not start),\n"
        + "or point the lab at servers you own: forkguard lab --db mysql://root@127.0.0.1:3306/"
        + " --db postgresql://postgres@127.0.0.1:5432/postgres"
    )


@dataclass
class DBServer:
    """One private server: its kind, port, data directory and the admin URL to reach it."""

    kind: str  # "mysql" or "postgresql"
    port: int
    basedir: str
    argv: list[str]
    user: Optional[str] = None  # run the server as this system user (root cannot run postgres)
    log_path: str = ""
    proc: Optional[subprocess.Popen[bytes]] = None
    started_at: float = 0.0
    _log_file: Any = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, driver: str, database: str) -> str:
        """A SQLAlchemy URL for ``driver`` (pymysql, mysqldb, psycopg2, psycopg) and database."""
        if self.kind == "mysql":
            return f"mysql+{driver}://root@127.0.0.1:{self.port}/{database}"
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def admin_url(self) -> str:
        """A URL to the server's always-present database, for CREATE/DROP DATABASE."""
        if self.kind == "mysql":
            return f"mysql+pymysql://root@127.0.0.1:{self.port}/"
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _popen_kwargs(self) -> dict[str, Any]:
        return {"start_new_session": True, **_run_as(self.user)}

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server on its data directory and wait until it accepts TCP."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **self._popen_kwargs(),
        )
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.kind} server exited with {self.proc.returncode} at start; "
                    f"its log:\n{self.tail_log()}"
                )
            if self._accepts():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"{self.kind} server did not come up in {timeout:.0f}s")

    def _accepts(self) -> bool:
        try:
            if self.kind == "mysql":
                import pymysql

                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
            else:
                import psycopg2

                psycopg2.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
                ).close()
        except Exception as exc:  # any connect failure means "not ready yet"
            log.debug("%s on port %d not ready: %s", self.kind, self.port, exc)
            return False
        return True

    def stop(self, timeout: float = 30.0, *, hard: bool = False) -> None:
        """Stop the server (SIGTERM/SIGINT, or SIGKILL with ``hard``); wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # postgres: SIGINT = fast shutdown; mariadbd: SIGTERM = normal shutdown.
            sig = (
                signal.SIGKILL
                if hard
                else (signal.SIGINT if self.kind == "postgresql" else signal.SIGTERM)
            )
            _signal_group(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s pid %d ignored shutdown; killing it", self.kind, proc.pid)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start again on the same port and data (for fault-injection tests)."""
        self.stop(hard=hard)
        self.start()

    def tail_log(self, nbytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - nbytes))
                return fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def execute_admin(self, sql: str, *, database: Optional[str] = None) -> None:
        """Run one statement as the admin user (autocommit; CREATE DATABASE needs it)."""
        admin_execute(self.kind, "127.0.0.1", self.port, self.admin_user, sql, database=database)

    @property
    def admin_user(self) -> str:
        return "root" if self.kind == "mysql" else "postgres"


def admin_execute(
    kind: str,
    host: str,
    port: int,
    user: str,
    sql: str,
    *,
    password: Optional[str] = None,
    database: Optional[str] = None,
) -> list[tuple[Any, ...]]:
    """Run one autocommit statement with a short-lived admin connection; return its rows."""
    if kind == "mysql":
        import pymysql

        conn: Any = pymysql.connect(
            host=host,
            port=port,
            user=user,
            password=password or "",
            database=database,
            autocommit=True,
        )
    else:
        import psycopg2

        conn = psycopg2.connect(
            host=host, port=port, user=user, password=password, dbname=database or "postgres"
        )
        conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = list(cur.fetchall()) if cur.description else []
        cur.close()
        return rows
    finally:
        conn.close()


def _run_as(user: Optional[str]) -> dict[str, Any]:
    """subprocess arguments that drop root to ``user`` (nothing when not root or no user)."""
    if not user or os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group we created with start_new_session (only our own processes)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        log.warning("cannot signal process group %d: %s", pid, exc)


def _make_tmpdir(prefix: str, owner: Optional[str]) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    if owner and os.geteuid() == 0:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o700)
    return path


def _init_datadir(what: str, argv: list[str], **kwargs: Any) -> None:
    """Run a server's data-directory initializer; its own output is the error message."""
    init = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False, **kwargs
    )
    if init.returncode != 0:
        raise ServerUnavailable(f"{what} failed:\n{init.stdout.decode()}{init.stderr.decode()}")


@contextlib.contextmanager
def _serving(base: str, make: Callable[[], DBServer]) -> Iterator[DBServer]:
    """Make the server in ``base`` (its data directory initialized), run it while the caller
    needs it, then stop it and delete ``base`` - whatever failed on the way."""
    try:
        server = make()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_mariadb(
    extra_args: Sequence[str] = (), *, port: Optional[int] = None
) -> Iterator[DBServer]:
    """A throwaway MariaDB on 127.0.0.1 (root, no password); stopped and deleted on exit.

    Tuned for a short lab run, not for durability: the data directory is deleted anyway.
    """
    bins = mariadb_binaries()
    if bins is None:
        raise ServerUnavailable(missing_binaries_message(["mysql"]) or "MariaDB missing")
    base = _make_tmpdir("fg-lab-mariadb-", None)
    with _serving(base, lambda: _mariadb_server(bins, base, extra_args, port)) as server:
        yield server


def _mariadb_server(
    bins: tuple[str, str], base: str, extra_args: Sequence[str], port: Optional[int]
) -> DBServer:
    """Initialize a MariaDB data directory in ``base``; the server to run on it (not started)."""
    install_db, mariadbd = bins
    datadir = os.path.join(base, "data")
    user_args = ["--user=root"] if os.geteuid() == 0 else []
    _init_datadir(
        "mariadb-install-db",
        [
            install_db,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *user_args,
        ],
    )
    port = port or free_port()
    return DBServer(
        kind="mysql",
        port=port,
        basedir=base,
        log_path=os.path.join(base, "server.log"),
        argv=[
            mariadbd,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={os.path.join(base, 'mysqld.sock')}",
            f"--pid-file={os.path.join(base, 'mysqld.pid')}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--max-connections=1000",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-innodb-doublewrite",
            *user_args,
            *extra_args,
        ],
    )


@contextlib.contextmanager
def private_postgres(
    extra_args: Sequence[str] = (), *, port: Optional[int] = None
) -> Iterator[DBServer]:
    """A throwaway PostgreSQL on 127.0.0.1 (user postgres, trust auth); stopped and deleted.

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system
    user (which the Debian package creates) in a directory that user owns.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise ServerUnavailable(missing_binaries_message(["postgresql"]) or "PostgreSQL missing")
    run_as = _postgres_user()
    base = _make_tmpdir("fg-lab-postgres-", run_as)
    with _serving(base, lambda: _postgres_server(bindir, base, run_as, extra_args, port)) as server:
        yield server


def _postgres_user() -> Optional[str]:
    """The system user to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerUnavailable(
            "running as root and there is no 'postgres' system user to run PostgreSQL as "
            "(PostgreSQL refuses root): create one with `useradd -r postgres`"
        ) from exc
    return "postgres"


def _postgres_server(
    bindir: str,
    base: str,
    run_as: Optional[str],
    extra_args: Sequence[str],
    port: Optional[int],
) -> DBServer:
    """Initialize a PostgreSQL cluster in ``base``; the server to run on it (not started).

    The log file is opened by us (root) and handed over as stdout: no chown needed.
    """
    datadir = os.path.join(base, "data")
    _init_datadir(
        "initdb",
        [
            os.path.join(bindir, "initdb"),
            "-D",
            datadir,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        cwd=base,
        **_run_as(run_as),
    )
    port = port or free_port()
    settings = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "500",
        "shared_buffers": "32MB",
    }
    return DBServer(
        kind="postgresql",
        port=port,
        basedir=base,
        user=run_as,
        log_path=os.path.join(base, "server.log"),
        argv=[
            os.path.join(bindir, "postgres"),
            *("-D", datadir, "-k", base, "-p", str(port), "-h", "127.0.0.1"),
            *[arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")],
            *extra_args,
        ],
    )


@contextlib.contextmanager
def private_server(kind: str, extra_args: Sequence[str] = ()) -> Iterator[DBServer]:
    """``private_mariadb`` or ``private_postgres`` by kind ("mysql" or "postgresql")."""
    if kind == "mysql":
        with private_mariadb(extra_args) as srv:
            yield srv
    elif kind == "postgresql":
        with private_postgres(extra_args) as srv:
            yield srv
    else:
        raise ValueError(f"unknown server kind {kind!r}")
