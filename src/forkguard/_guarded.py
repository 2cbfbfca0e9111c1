"""Per-process DB-API connections for code that uses a driver directly, without SQLAlchemy.

``Guarded(connect)`` is the smallest correct pattern for a module-level connection in a
process that forks (a ``multiprocessing.Pool`` with the fork start method, a script that
pre-forks workers): each process gets its own connection on first use, and the parent's is
tracked, so a child that inherits it can neither use it nor, by closing or freeing it, end the
parent's session.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Generic, Optional, TypeVar

from . import _fork, _origin, _registry

T = TypeVar("T")


class Guarded(Generic[T]):
    """A lazily opened DB-API connection that is never shared across ``fork()``.

    ``db = forkguard.Guarded(lambda: pymysql.connect(...))``; then ``db()`` (or ``db.get()``)
    returns this process's connection, and attribute access is forwarded to it, so
    ``db.cursor()`` works too.
    """

    def __init__(self, connect: Callable[[], T], *, port: Optional[int] = None) -> None:
        if not callable(connect):
            raise TypeError(
                f"forkguard.Guarded() takes a function that opens a connection, not {connect!r}"
            )
        self._connect = connect
        self._port = port
        self._conn: Optional[T] = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> T:
        """This process's connection, opened on first use (and again after a fork)."""
        conn, pid = self._conn, os.getpid()
        if conn is not None and self._pid == pid:
            return conn
        with self._lock:
            if self._conn is None or self._pid != pid:
                _registry.activate()
                _fork.check()  # silences the inherited one (it is tracked) before we let go
                new = self._connect()
                _registry.track(new, port=self._port, opened_at=_origin.opening_site(2))
                self._conn, self._pid = new, pid
            return self._conn

    __call__ = get

    def close(self) -> None:
        """Close this process's connection; a connection inherited from a parent is only
        dropped (it is the parent's to close)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                _registry.forget(conn)
                conn.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __repr__(self) -> str:
        state = "open" if self._conn is not None and self._pid == os.getpid() else "not open"
        return f"<forkguard.Guarded {state} in pid {os.getpid()}>"
