"""Per-process DB-API connections for code that uses a driver directly, without SQLAlchemy.

``Guarded(connect)`` is the smallest correct pattern for a module-level connection in a
process that forks (a ``multiprocessing.Pool`` with the fork start method, a script that
pre-forks workers): each process gets its own connection on first use, and the parent's is
tracked, so a child that inherits it can neither use it nor, by closing or freeing it, end the
parent's session.

One connection per process *and thread*: DB-API drivers (PyMySQL, mysqlclient, psycopg's
``threadsafety`` of 1 or 2 at most for sharing a connection's cursors) do not let threads share
a connection safely, so each thread opens its own, as SQLAlchemy's ``SingletonThreadPool``
does. No lock is held while the user's connect function runs: a fork while another thread is
inside it cannot leave the child waiting on a lock that thread held.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Generic, Optional, TypeVar

from . import _api, _fork, _origin, _registry

T = TypeVar("T")


class Guarded(Generic[T]):
    """A lazily opened DB-API connection per process and thread, never shared across ``fork()``.

    ``db = forkguard.Guarded(lambda: pymysql.connect(...))``; then ``db()`` (or ``db.get()``)
    returns this thread's connection in this process, and attribute access is forwarded to it,
    so ``db.cursor()`` works too.
    """

    def __init__(self, connect: Callable[[], T], *, port: Optional[int] = None) -> None:
        if not callable(connect):
            raise TypeError(
                f"forkguard.Guarded() takes a function that opens a connection, not {connect!r}"
            )
        self._connect = connect
        self._port = port
        self._local = threading.local()

    def _mine(self) -> Optional[T]:
        conn: Optional[T] = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", 0) == os.getpid():
            return conn
        return None

    def get(self) -> T:
        """This thread's connection in this process, opened on first use (and after a fork)."""
        conn = self._mine()
        if conn is not None:
            return conn
        # The inherited one (tracked) is silenced by the fork handling before we let go of it.
        _api.start("forkguard.Guarded", None)
        _fork.check()
        conn = self._connect()
        _registry.track(conn, port=self._port, opened_at=_origin.opening_site(2))
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    __call__ = get

    def close(self) -> None:
        """Close this thread's connection; one inherited from a parent is only dropped (it is
        the parent's to close)."""
        conn = self._mine()
        # An inherited one is only dropped: the fork handling silenced it, so that sends nothing.
        self._local.conn = None
        if conn is not None:
            _registry.forget(conn)
            conn.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __repr__(self) -> str:
        state = "open" if self._mine() is not None else "not open"
        return f"<forkguard.Guarded {state} in pid {os.getpid()}>"
