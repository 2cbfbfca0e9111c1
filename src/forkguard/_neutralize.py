"""Make an inherited connection harmless in the child, without sending a byte.

The child's copy of the socket fd is replaced, in place, by /dev/null (``dup2``), the way Ruby's
mysql2 and Rails do it. The fd number stays owned by the driver object, so no other socket can
take that number while the driver still holds it, and whatever the driver does later — COM_QUIT,
a Terminate message, a TLS close_notify, a rollback — goes to /dev/null (or fails with ENOTSOCK),
never to the server. A socketpair would make OpenSSL loop; /dev/null does not.

Before overwriting, the fd is checked to still be the very socket recorded at connect time
(device and inode), so a number the driver already closed and the kernel reused is never hit.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("forkguard")

_devnull: int | None = None
# Objects a child must never close or free (sqlite3 connections, sockets we could not find),
# and inherited connections a pool or session let go of: freeing those would copy the pages
# they share with the parent (_registry.let_go_inherited).
_kept_alive: list[Any] = []


@dataclass(frozen=True)
class FdIdentity:
    """A socket fd and the kernel object it pointed to when the connection was made."""

    fd: int
    device: int
    inode: int

    @classmethod
    def of(cls, fd: int) -> FdIdentity | None:
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        return cls(fd, st.st_dev, st.st_ino)

    def is_current(self) -> bool:
        try:
            st = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.device, self.inode) and stat.S_ISSOCK(st.st_mode)


def _devnull_fd() -> int:
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull


def neutralize_fd(identity: FdIdentity) -> bool:
    """Point ``identity.fd`` at /dev/null if it is still the recorded socket; True if done."""
    if not identity.is_current():
        return False
    os.dup2(_devnull_fd(), identity.fd, inheritable=False)
    return True


def keep_alive(obj: Any) -> None:
    """Hold ``obj`` for the life of the process, so that its close never runs here."""
    _kept_alive.append(obj)


def kept_alive_count() -> int:
    return len(_kept_alive)


class InheritedConnection:
    """Stands in for an inherited DB-API connection wherever a pool or session still holds it.

    SQLAlchemy resets, rolls back and closes the connections it holds; after a fork those calls
    would reach the driver, which (even when its socket is /dev/null) logs errors and may try a
    reconnect. The stand-in absorbs what is safe to absorb — ``rollback()`` and ``close()`` of a
    connection this process never used — and raises on anything that would pretend to talk to
    the server (``cursor()``, ``commit()``, ...), so nothing claims a write that did not happen.
    """

    def __init__(self, description: str, error: Callable[[], Exception]) -> None:
        self._description = description
        self._error = error

    @property
    def driver_connection(self) -> InheritedConnection:
        return self

    def make_error(self) -> Exception:
        """The exception that any real use of this connection raises."""
        return self._error()

    def close(self) -> None:
        """Nothing to do: the real connection is the parent's."""

    def rollback(self) -> None:
        """Nothing to roll back: this process never ran a statement on it."""

    def terminate(self) -> None:
        """Nothing to terminate (asyncio adapters call this instead of close)."""

    def commit(self) -> None:
        raise self._error()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error()

    def ping(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._error()

    def __repr__(self) -> str:
        return f"<forkguard.InheritedConnection {self._description}>"
