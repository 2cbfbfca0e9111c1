"""Per-driver knowledge: where a DB-API connection keeps its socket, and what it does in a child.

Finding the file descriptor is all forkguard needs from a driver: once the child's copy of that
fd points at /dev/null, nothing the driver does later (close, dealloc, TLS shutdown, a rollback
on return) can reach the server. For a driver we do not know - or a known one whose layout is
not what we expect, such as mysql-connector's C extension - the socket is found by its peer
address instead (the server's port, from /proc), so it is still protected.

Each finder answers one of three things, and the difference matters in a child: the socket's fd;
``None``, the connection has no socket (it is closed, nothing to silence); or it raises, we
cannot tell (fall back to the generic discovery, and never let the object be closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import _procfs

log = logging.getLogger("forkguard")

FdFinder = Callable[[Any], Optional[int]]

# The one table of default server ports, by SQLAlchemy backend name / Django vendor.
DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


@dataclass(frozen=True)
class Driver:
    """What we know about one DB-API driver."""

    name: str
    find_fd: FdFinder | None
    # sqlite3: the connection is a file, not a socket; the child must never close or free it.
    keep_alive: bool = False
    close_in_child: str = ""
    gc_in_child: str = ""
    # Run on an inherited connection in the child once its fd is /dev/null: cut what its
    # finalizer would do through the parent's objects (aiomysql closes via the parent's loop).
    detach: Optional[Callable[[Any], None]] = None


def _socket_fileno(sock: Any) -> int | None:
    if sock is None:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None  # a closed socket object answers -1


def _pymysql_fd(conn: Any) -> int | None:
    return _socket_fileno(conn._sock)


def _mysqlclient_fd(conn: Any) -> int | None:
    return conn.fileno() if conn.open else None


def _libpq_fd(conn: Any) -> int | None:
    # psycopg2 and psycopg 3: fileno() raises on a closed connection.
    return None if conn.closed else int(conn.fileno())


def _mysql_connector_fd(conn: Any) -> int | None:
    # The pure-Python connection; the C extension (CMySQLConnection) has no ``_socket`` and
    # falls back to the generic discovery.
    wrapper = conn._socket
    return _socket_fileno(wrapper.sock) if wrapper is not None else None


def _transport_fd(transport: Any) -> int | None:
    if transport is None or transport.is_closing():
        return None
    return _socket_fileno(transport.get_extra_info("socket"))


def _asyncpg_fd(conn: Any) -> int | None:
    return _transport_fd(conn._transport)


def _aiomysql_fd(conn: Any) -> int | None:
    writer = conn._writer
    return _transport_fd(writer.transport) if writer is not None else None


def _aiomysql_detach(conn: Any) -> None:
    # Connection.__del__ closes its transport through the loop that opened it (the parent's,
    # often closed: "RuntimeError: Event loop is closed") only while _writer is set.
    conn._writer = None
    conn._reader = None


# Keyed by the top-level module of the connection's class.
DRIVERS: dict[str, Driver] = {
    "pymysql": Driver(
        "PyMySQL",
        _pymysql_fd,
        close_in_child="COM_QUIT (kills the parent's session)",
        gc_in_child="socket closed, no bytes",
    ),
    "MySQLdb": Driver(
        "mysqlclient",
        _mysqlclient_fd,
        close_in_child="COM_QUIT (kills the parent's session)",
        gc_in_child="mysql_close() sends COM_QUIT (kills the parent's session)",
    ),
    "mysql": Driver(
        "mysql-connector-python",
        _mysql_connector_fd,
        close_in_child="COM_QUIT",
        gc_in_child="socket shutdown(SHUT_RDWR) (kills the parent's session)",
    ),
    "psycopg2": Driver(
        "psycopg2",
        _libpq_fd,
        close_in_child="Terminate message (kills the parent's session)",
        gc_in_child="pid-gated in libpq wrapper, no bytes",
    ),
    "psycopg": Driver(
        "psycopg 3",
        _libpq_fd,
        close_in_child="Terminate message (kills the parent's session)",
        gc_in_child="pid-gated, no bytes",
    ),
    "asyncpg": Driver(
        "asyncpg",
        _asyncpg_fd,
        close_in_child="Terminate message",
        gc_in_child="transport closed",
    ),
    "aiomysql": Driver(
        "aiomysql",
        _aiomysql_fd,
        close_in_child="COM_QUIT",
        gc_in_child="transport closed through the parent's event loop",
        detach=_aiomysql_detach,
    ),
    "sqlite3": Driver(
        "sqlite3",
        None,
        keep_alive=True,
        close_in_child="may checkpoint or delete the parent's journal/WAL",
        gc_in_child="same as close",
    ),
}


def unwrap(conn: Any) -> Any:
    """SQLAlchemy's asyncio adapters wrap the driver's connection; look through them."""
    module = type(conn).__module__
    if module.startswith("sqlalchemy."):
        inner = getattr(conn, "driver_connection", None)
        if inner is not None and inner is not conn:
            return inner
    return conn


def driver_for(conn: Any) -> Driver | None:
    root = type(unwrap(conn)).__module__.split(".", 1)[0]
    return DRIVERS.get(root)


def driver_name(conn: Any) -> str:
    driver = driver_for(conn)
    if driver is not None:
        return driver.name
    return type(unwrap(conn)).__module__.split(".", 1)[0]


class Unknown(Exception):
    """We cannot tell where this connection keeps its socket (unknown driver or layout)."""


def socket_fd(conn: Any) -> int | None:
    """The socket fd through the driver's own accessor; None when the connection is closed.

    Raises :class:`Unknown` for a driver we have no accessor for, or whose objects are not
    laid out as we expect: the caller then falls back to :func:`newest_fd_to_port`.
    """
    driver = driver_for(conn)
    if driver is None or driver.find_fd is None:
        raise Unknown(driver_name(conn))
    try:
        return driver.find_fd(unwrap(conn))
    except Exception as exc:  # any surprise in a driver's layout means "we can't tell"
        raise Unknown(f"{driver.name}: {type(exc).__name__}: {exc}") from exc


def known_fd(conn: Any) -> int | None:
    """:func:`socket_fd`, with "closed" and "unknown" both as None (for reports)."""
    try:
        return socket_fd(conn)
    except Unknown:
        return None


def newest_fd_to_port(port: int, exclude_inodes: set[int]) -> int | None:
    """The newest socket of this process with an established TCP connection to ``port``.

    Used for drivers we have no accessor for, right after they connect: among the sockets to
    the server's port that no tracked connection owns, the one with the highest inode number
    (the kernel hands socket inodes out in increasing order) is the one just opened.
    """
    wanted = _procfs.established_tcp_inodes_to_port(port) - exclude_inodes
    sockets = _procfs.socket_inodes() or {}
    candidates = [(inode, fd) for fd, inode in sockets.items() if inode in wanted]
    return max(candidates)[1] if candidates else None
