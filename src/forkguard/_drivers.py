"""Per-driver knowledge: where a DB-API connection keeps its socket, and what it does in a child.

Finding the file descriptor is all forkguard needs from a driver: once the child's copy of that
fd points at /dev/null, nothing the driver does later (close, dealloc, TLS shutdown, a rollback
on return) can reach the server. For a driver we do not know, the socket is found by its peer
address instead (the connection's server port, from /proc), so it is still protected.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

log = logging.getLogger("forkguard")

FdFinder = Callable[[Any], Optional[int]]


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


def _call_fileno(conn: Any) -> int | None:
    fileno = getattr(conn, "fileno", None)
    return fileno() if callable(fileno) else None


def _pymysql_fd(conn: Any) -> int | None:
    sock = getattr(conn, "_sock", None)
    return sock.fileno() if sock is not None else None


def _mysql_connector_fd(conn: Any) -> int | None:
    wrapper = getattr(conn, "_socket", None)
    sock = getattr(wrapper, "sock", None)
    return sock.fileno() if sock is not None else None


def _transport_fd(transport: Any) -> int | None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock.fileno() if sock is not None else None


def _asyncpg_fd(conn: Any) -> int | None:
    return _transport_fd(getattr(conn, "_transport", None))


def _aiomysql_fd(conn: Any) -> int | None:
    writer = getattr(conn, "_writer", None)
    return _transport_fd(getattr(writer, "transport", None))


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
        _call_fileno,
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
        _call_fileno,
        close_in_child="Terminate message (kills the parent's session)",
        gc_in_child="pid-gated in libpq wrapper, no bytes",
    ),
    "psycopg": Driver(
        "psycopg 3",
        _call_fileno,
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


def known_fd(conn: Any) -> int | None:
    """The connection's socket fd through the driver's own accessor, if we know the driver."""
    driver = driver_for(conn)
    if driver is None or driver.find_fd is None:
        return None
    try:
        return driver.find_fd(unwrap(conn))
    except (OSError, ValueError, AttributeError) as exc:
        log.debug("forkguard: cannot read the fd of %r: %s", conn, exc)
        return None


# ---- the generic fallback: find a new socket by its peer port -------------------------------


def _socket_inodes() -> dict[int, int]:
    """fd -> socket inode for every socket this process has open (Linux /proc)."""
    result: dict[int, int] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return result
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            result[int(name)] = int(target[8:-1])
    return result


def _established_tcp_inodes_to_port(port: int) -> set[int]:
    inodes: set[int] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if fields[3] == "01" and remote_port == port:
                        inodes.add(int(fields[9]))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return inodes


def newest_fd_to_port(port: int, exclude_inodes: set[int]) -> int | None:
    """The newest socket of this process with an established TCP connection to ``port``.

    Used for drivers we have no accessor for, right after they connect: among the sockets to
    the server's port that no tracked connection owns, the one with the highest inode number
    (the kernel hands socket inodes out in increasing order) is the one just opened.
    """
    wanted = _established_tcp_inodes_to_port(port) - exclude_inodes
    candidates = [(inode, fd) for fd, inode in _socket_inodes().items() if inode in wanted]
    return max(candidates)[1] if candidates else None
