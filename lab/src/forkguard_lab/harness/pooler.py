"""A private PgBouncer in front of a PostgreSQL server: what an app fleet puts between its
workers and the database once it outgrows one machine.

Started on a free 127.0.0.1 port with its own temporary directory (trust auth, any database
name forwarded to the upstream server), stopped and deleted afterwards. PgBouncer refuses to
run as root, so as root it runs as the ``postgres`` system user, like the private PostgreSQL.
The lab puts one between its app and its private PostgreSQL (session and transaction pooling);
the doctor's tests put one in front of the shared server to check the doctor's pooler budget.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from .prefork import ServerProcess
from .servers import ServerUnavailable, free_port

POOL_MODES = ("session", "transaction")


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens and the limits it was given."""

    port: int
    pool_mode: str
    max_client_conn: int
    default_pool_size: int
    reserve_pool_size: int
    log_path: str


def pgbouncer_binary() -> Optional[str]:
    """The pgbouncer executable (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    return found if os.access(found, os.X_OK) else None


@contextmanager
def private_pgbouncer(
    upstream_port: int,
    *,
    pool_mode: str = "transaction",
    admin_users: tuple[str, ...] = ("root", "postgres"),
    max_client_conn: int = 200,
    default_pool_size: int = 20,
    reserve_pool_size: int = 0,
) -> Iterator[PgBouncer]:
    """A PgBouncer forwarding every database to 127.0.0.1:``upstream_port``; the users in
    ``admin_users`` may read its admin console (``SHOW POOLS``, ``SHOW CONFIG``)."""
    if pool_mode not in POOL_MODES:
        raise ValueError(f"pool_mode {pool_mode!r}: expected one of {POOL_MODES}")
    binary = pgbouncer_binary()
    if binary is None:
        raise ServerUnavailable("pgbouncer is not installed: sudo apt-get install -y pgbouncer")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fg-pgbouncer-") as tmp:
        log_path = os.path.join(tmp, "pgbouncer.log")
        with open(os.path.join(tmp, "users.txt"), "w") as fh:
            fh.writelines(f'"{user}" ""\n' for user in admin_users)
        with open(os.path.join(tmp, "pgbouncer.ini"), "w") as fh:
            # No logfile: PgBouncer logs to stderr, which ServerProcess appends to log_path.
            fh.write(
                f"[databases]\n* = host=127.0.0.1 port={upstream_port}\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {tmp}/users.txt\npool_mode = {pool_mode}\n"
                f"max_client_conn = {max_client_conn}\ndefault_pool_size = {default_pool_size}\n"
                f"reserve_pool_size = {reserve_pool_size}\n"
                f"stats_users = {', '.join(admin_users)}\n"
            )
        as_root = os.geteuid() == 0
        if as_root:
            _hand_over(tmp, "postgres")
        argv = [binary, *(["-u", "postgres"] if as_root else []), f"{tmp}/pgbouncer.ini"]
        proc = ServerProcess(argv, dict(os.environ), log_path)
        try:
            proc.start().wait_until(lambda: _accepts(port), 60, "pgbouncer")
        except RuntimeError as exc:  # exited at start, or never listened: the log says why
            proc.stop()
            raise ServerUnavailable(str(exc)) from exc
        try:
            yield PgBouncer(port, pool_mode, max_client_conn, default_pool_size,
                            reserve_pool_size, log_path)  # fmt: skip
        finally:
            proc.stop(term_timeout=30)


def _hand_over(tmp: str, user: str) -> None:
    """PgBouncer drops root for ``user``, who must read its config."""
    entry = pwd.getpwnam(user)
    os.chmod(tmp, 0o755)
    for name in ("", "users.txt", "pgbouncer.ini"):
        os.chown(os.path.join(tmp, name), entry.pw_uid, entry.pw_gid)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
