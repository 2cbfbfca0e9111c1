"""What forkguard guards: every tracked DB-API connection, its owner pid and its socket.

One fact, one place: "which process opened this connection, and which fd is its socket" lives
here. The state is keyed by ``id()`` of the DB-API connection and dropped by a weak-reference
callback, so the registry never keeps a connection alive in the process that owns it.

That callback is also the last line of defence in a child: if an inherited connection is freed
before the fork was noticed (mysqlclient's dealloc sends COM_QUIT), the callback runs first and
points the fd at /dev/null.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import _drivers, _fork, _stats
from ._neutralize import FdIdentity, keep_alive, neutralize_fd

log = logging.getLogger("forkguard")


@dataclass(eq=False)
class TrackedConnection:
    """One DB-API connection, as it was when it was opened."""

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


def track(
    conn: Any,
    *,
    url: str | None = None,
    port: int | None = None,
    record: Any = None,
    opened_at: str | None = None,
    stack: list[str] | None = None,
) -> TrackedConnection:
    """Start guarding ``conn``, owned by this process; idempotent."""
    key = id(conn)
    existing = _tracked.get(key)
    if existing is not None and existing.connection() is conn:
        return existing
    driver = _drivers.driver_for(conn)
    fd = _drivers.known_fd(conn)
    fds: list[FdIdentity] = []
    if fd is not None:
        identity = FdIdentity.of(fd)
        if identity is not None:
            fds.append(identity)
    elif driver is None and port is not None:
        claimed = {i.inode for s in _tracked.values() for i in s.fds}
        found = _drivers.newest_fd_to_port(port, claimed)
        identity = FdIdentity.of(found) if found is not None else None
        if identity is not None:
            fds.append(identity)
    state = TrackedConnection(
        key=key,
        owner_pid=os.getpid(),
        driver=_drivers.driver_name(conn),
        fds=tuple(fds),
        keep_alive=driver.keep_alive if driver is not None else not fds,
        url=url,
        opened_at=opened_at,
        stack=stack,
    )

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
    if not fds and not state.keep_alive:
        log.debug("forkguard: no socket found for %s", state.describe())
    _tracked[key] = state
    _stats.counters.connections_opened += 1
    return state


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


def _neutralize_one(state: TrackedConnection, conn: Any) -> None:
    state.neutralized = True
    for identity in state.fds:
        try:
            if not neutralize_fd(identity):
                log.debug("forkguard: fd %d no longer holds %s", identity.fd, state.describe())
        except OSError:
            log.exception("forkguard: could not neutralize fd %d", identity.fd)
    if state.keep_alive and conn is not None:
        keep_alive(conn)
    driver = _drivers.driver_for(conn) if conn is not None else None
    if driver is not None and driver.detach is not None:
        try:
            driver.detach(_drivers.unwrap(conn))
        except Exception:
            log.debug("forkguard: could not detach %s", state.describe(), exc_info=True)
    _stats.counters.connections_neutralized += 1


def neutralize_inherited() -> list[TrackedConnection]:
    """Silence every inherited connection not yet silenced; returns the ones done now."""
    done = []
    for state in inherited():
        if state.neutralized:
            continue
        _neutralize_one(state, state.connection())
        done.append(state)
    return done


def tracked_count() -> int:
    return len(_tracked)


def clear() -> None:
    _tracked.clear()


def all_tracked() -> list[TrackedConnection]:
    """Every connection currently tracked, in this process or inherited (for reports)."""
    return list(_tracked.values())


def _after_fork(parent_pid: int) -> None:
    _stats.reset_for_child()
    _stats.counters.forks_seen += 1
    neutralize_inherited()


def activate() -> None:
    """Watch for forks; in every child, silence inherited sockets before anything else runs."""
    _fork.add_child_handler(_after_fork, first=True)
    _fork.activate()


def deactivate() -> None:
    _fork.remove_child_handler(_after_fork)
    _fork.deactivate()
    clear()
