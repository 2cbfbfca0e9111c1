"""What forkguard guards: every tracked DB-API connection, its owner pid and its socket.

One fact, one place: "which process opened this connection, and which fd is its socket" lives
here. The state is keyed by ``id()`` of the DB-API connection and dropped by a weak-reference
callback, so the registry never keeps a connection alive in the process that owns it.

That callback is also the last line of defence in a child: if an inherited connection is freed
before the fork was noticed (mysqlclient's dealloc sends COM_QUIT), the callback runs first and
points the fd at /dev/null.

Who owns a connection is decided when forkguard first sees it. Opened under forkguard (a
connect event) it is this process's. Found already open - ``install()`` ran after the engines
existed, perhaps in a worker after the fork - it is this process's unless it was inherited:
its socket is still open in the parent process, or, where /proc cannot say, it existed before
a fork this process came out of that forkguard has not handled yet.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import _drivers, _fork, _procfs, _report, _stats
from ._neutralize import FdIdentity, keep_alive, neutralize_fd

log = logging.getLogger("forkguard")


@dataclass(eq=False)
class TrackedConnection:
    """One DB-API connection, as it was when forkguard first saw it."""

    key: int
    owner_pid: int
    driver: str
    fds: tuple[FdIdentity, ...]
    keep_alive: bool
    url: str | None = None
    opened_at: str | None = None
    stack: list[str] | None = None
    conn_ref: weakref.ref[Any] | None = None
    # The pool record (SQLAlchemy) holding the connection: where a stand-in goes after a fork,
    # and the way to reach connections that take no weak reference (sqlite3).
    record_ref: weakref.ref[Any] | None = None
    neutralized: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def connection(self) -> Any:
        if self.conn_ref is not None:
            return self.conn_ref()
        if "conn" in self.extra:
            return self.extra["conn"]
        record = self.record_ref() if self.record_ref is not None else None
        conn = getattr(record, "dbapi_connection", None)
        return conn if conn is not None and id(conn) == self.key else None

    def describe(self) -> str:
        where = self.opened_at or "an unknown line (opened before forkguard was installed)"
        url = f" to {self.url}" if self.url else ""
        return f"{self.driver} connection{url} opened in pid {self.owner_pid} at {where}"

    def stack_text(self) -> str:
        """The opening stack, for messages (empty unless tracing was on when it was opened)."""
        return "\nOpened at:\n" + "".join(self.stack) if self.stack else ""


_tracked: dict[int, TrackedConnection] = {}


def _collected(key: int, state: TrackedConnection) -> None:
    if _tracked.get(key) is state:
        del _tracked[key]
    if state.owner_pid != os.getpid() and not state.neutralized:
        # Freed in a child before the fork was handled: silence the socket before the driver's
        # dealloc (which runs right after this callback) can write to it.
        _neutralize_one(state, None)


def _find_fds(conn: Any, port: int | None) -> tuple[tuple[FdIdentity, ...], bool]:
    """The connection's socket(s), and whether we know them (False: keep the object alive)."""
    try:
        fd = _drivers.socket_fd(conn)
    except _drivers.Unknown as exc:
        log.debug("no socket accessor for %r (%s); looking for it by port", conn, exc)
        fd = None
        if port is not None:
            # A copy: a collection during this loop runs weak-reference callbacks that delete
            # entries from _tracked (seen in SQLAlchemy's own suite: "dictionary changed size").
            claimed = {i.inode for s in list(_tracked.values()) for i in s.fds}
            fd = _drivers.newest_fd_to_port(port, claimed)
        identity = FdIdentity.of(fd) if fd is not None else None
        return ((identity,), True) if identity is not None else ((), False)
    identity = FdIdentity.of(fd) if fd is not None else None
    return ((identity,) if identity is not None else ()), True


_parent_sockets: tuple[int, int, float, set[int] | None] = (0, 0, 0.0, None)


def _sockets_of_parent() -> set[int] | None:
    """Socket inodes the parent process holds (cached for a second: adoption asks per record)."""
    global _parent_sockets
    pid, ppid, now = os.getpid(), os.getppid(), time.monotonic()
    cached_pid, cached_ppid, when, inodes = _parent_sockets
    if (cached_pid, cached_ppid) != (pid, ppid) or now - when > 1.0:
        held = _procfs.socket_inodes(ppid) if ppid > 1 else None
        inodes = set(held.values()) if held is not None else None
        _parent_sockets = (pid, ppid, now, inodes)
    return inodes


def owner_of_found(fds: tuple[FdIdentity, ...]) -> int:
    """The pid that owns a connection found already open (see the module docstring)."""
    parent_sockets = _sockets_of_parent() if fds else None
    if parent_sockets is not None:
        shared = any(identity.inode in parent_sockets for identity in fds)
        return os.getppid() if shared else os.getpid()
    pending = _fork.pending_fork()
    return pending if pending is not None else os.getpid()


def track(
    conn: Any,
    *,
    url: str | None = None,
    port: int | None = None,
    record: Any = None,
    opened_at: str | None = None,
    stack: list[str] | None = None,
    found: bool = False,
    owner_pid: int | None = None,
) -> TrackedConnection:
    """Start guarding ``conn``; idempotent.

    ``found``: the connection was already open when forkguard saw it, so it may be inherited
    (:func:`owner_of_found`); otherwise it was just opened by this process, unless
    ``owner_pid`` says whose it is.
    """
    key = id(conn)
    existing = _tracked.get(key)
    if existing is not None and existing.connection() is conn:
        return existing
    driver = _drivers.driver_for(conn)
    fds, known = _find_fds(conn, port)
    if owner_pid is None:
        owner_pid = owner_of_found(fds) if found else os.getpid()
    state = TrackedConnection(
        key=key,
        owner_pid=owner_pid,
        driver=_drivers.driver_name(conn),
        fds=fds,
        keep_alive=(driver is not None and driver.keep_alive) or not known,
        url=url,
        opened_at=opened_at,
        stack=stack,
    )
    _watch(state, conn, record)
    _tracked[key] = state
    if owner_pid == os.getpid():
        _stats.counters.connections_opened += 1
    return state


def _watch(state: TrackedConnection, conn: Any, record: Any) -> None:
    key = state.key

    def on_collected(_ref: weakref.ref[Any]) -> None:
        _collected(key, state)

    def on_record_gone(_ref: weakref.ref[Any]) -> None:
        _forget(key, state)

    try:
        state.conn_ref = weakref.ref(conn, on_collected)
    except TypeError:
        if record is None:
            # No weak reference and no record to watch: hold it until forget() (sqlite3 only).
            state.extra["conn"] = conn
    if record is not None:
        state.record_ref = weakref.ref(
            record, None if state.conn_ref is not None else on_record_gone
        )


def _forget(key: int, state: TrackedConnection) -> None:
    if _tracked.get(key) is state:
        del _tracked[key]


def forget(conn: Any) -> None:
    """Stop guarding ``conn`` (it is being closed by the process that owns it)."""
    state = _tracked.get(id(conn))
    if state is not None and state.owner_pid == os.getpid():
        _forget(state.key, state)
        state.extra.pop("conn", None)


def lookup(conn: Any) -> TrackedConnection | None:
    state = _tracked.get(id(conn))
    if state is not None and state.connection() is conn:
        return state
    return None


def inherited() -> list[TrackedConnection]:
    """Every tracked connection this process did not open itself."""
    pid = os.getpid()
    return [s for s in list(_tracked.values()) if s.owner_pid != pid]


def _current_fds(state: TrackedConnection, conn: Any) -> tuple[FdIdentity, ...] | None:
    """The socket to silence, read again now: a connection that reconnected before the fork
    (PyMySQL ``ping(reconnect=True)``, psycopg ``reset()``) has a new one. None: it is closed."""
    if conn is not None:
        try:
            fd = _drivers.socket_fd(conn)
        except _drivers.Unknown:
            return state.fds  # found by port when it was opened: that is all we know
        if fd is None:
            return None
        identity = FdIdentity.of(fd)
        if identity is not None:
            return (identity,)
    return state.fds


def _silence(state: TrackedConnection, conn: Any) -> bool:
    """Point the connection's socket at /dev/null; False (reported) if we could not."""
    fds = _current_fds(state, conn)
    if fds is None:
        return True  # closed: no socket left to reach the server through
    if not fds:
        driver = _drivers.driver_for(conn) if conn is not None else None
        if driver is not None and driver.find_fd is None and driver.keep_alive:
            return True  # sqlite3: no socket by design, kept alive instead
        _report.neutralize_failed(f"{state.describe()}: no socket found for it")
        return False
    try:
        done = [neutralize_fd(identity) for identity in fds]
    except OSError as exc:
        _report.neutralize_failed(f"{state.describe()}: dup2 failed: {exc}")
        return False
    if not any(done):
        _report.neutralize_failed(
            f"{state.describe()}: fd {fds[0].fd} no longer holds the socket it was opened on"
        )
        return False
    return True


def _neutralize_one(state: TrackedConnection, conn: Any) -> None:
    state.neutralized = True
    silenced = _silence(state, conn)
    if conn is not None and (state.keep_alive or not silenced):
        keep_alive(conn)  # never let the child close or free what may still reach the server
    driver = _drivers.driver_for(conn) if conn is not None else None
    if driver is not None and driver.detach is not None:
        try:
            driver.detach(_drivers.unwrap(conn))
        except Exception:
            _report.step_failed(f"detaching {state.describe()}")
    if silenced:
        _stats.counters.connections_neutralized += 1


def neutralize(state: TrackedConnection) -> None:
    """Silence one inherited connection now, if it is not already."""
    if not state.neutralized and state.owner_pid != os.getpid():
        _neutralize_one(state, state.connection())


def let_go_inherited(state: TrackedConnection, conn: Any) -> None:
    """An integration stops holding the inherited ``conn`` in this child: keep the object
    allocated anyway, and stop tracking it as if it had been freed.

    Freeing it would write to the pages it shares with the parent - the driver object, its
    buffers and, for PyMySQL (TLS preferred since 1.1), an ``SSLContext`` with the CA store -
    and copy them: 1.5 MB of private memory per worker for the memory benchmark's one PyMySQL
    connection. Left alone, those pages stay shared; the object is dead here (its fd points at
    /dev/null, which it keeps holding, so the number is never reused under it). SQLAlchemy's
    recipe, ``engine.dispose(close=False)``, leaves it allocated too. Each process keeps only
    what it inherited: bounded by the connections its ancestors held when they forked.
    """
    keep_alive(conn)
    _forget(state.key, state)


def neutralize_inherited() -> list[TrackedConnection]:
    """Silence every inherited connection not yet silenced; returns the ones done now."""
    done = []
    for state in inherited():
        if state.neutralized:
            continue
        _neutralize_one(state, state.connection())
        done.append(state)
    return done


def clear() -> None:
    _tracked.clear()


def all_tracked() -> list[TrackedConnection]:
    """Every connection currently tracked, in this process or inherited (for reports)."""
    return list(_tracked.values())
