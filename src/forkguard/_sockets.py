"""Client sockets that forkguard knows by their fd alone: HTTP keep-alive pools and the like.

A database connection is an object forkguard follows (:mod:`._registry`): its pool is given a
stand-in after a fork. An HTTP client's pool needs none of that. urllib3 asks every pooled
connection ``is_connected`` before reusing it, httpcore asks ``has_expired``; both answer with a
zero-timeout poll of the socket. A socket pointed at /dev/null polls readable - "the server hung
up" - so the library closes that connection itself (closing /dev/null: no byte, no TLS
close_notify, which ``SSLSocket.close()`` never sends) and opens one of its own. So all the
child needs is the core's one step: every inherited client socket silenced before anything can
use it.

What is recorded is the socket's identity (fd, device, inode), who opened it and where. The
socket object itself is not: a TLS client wraps its plain socket into another object on the
same fd, and httpcore swaps stream objects at ``start_tls``, so no one object lives as long as
the connection. The fd and inode do. An entry whose fd no longer holds that inode was closed by
its owner; such entries are dropped whenever the table has doubled since the last sweep, so it
stays as small as the number of open connections.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from . import _registry, _report, _stats
from ._neutralize import FdIdentity, neutralize_fd

log = logging.getLogger("forkguard")

_MIN_SWEEP = 64


@dataclass(eq=False)
class TrackedSocket:
    identity: FdIdentity
    owner_pid: int
    library: str
    peer: str | None
    opened_at: str | None
    neutralized: bool = False

    def describe(self) -> str:
        where = self.opened_at or "an unknown line (opened before forkguard was installed)"
        peer = f" to {self.peer}" if self.peer else ""
        return f"{self.library} connection{peer} opened in pid {self.owner_pid} at {where}"


_tracked: dict[tuple[int, int], TrackedSocket] = {}
_sweep_at = _MIN_SWEEP


def _peer(sock: Any) -> str | None:
    try:
        name = sock.getpeername()
    except (OSError, AttributeError):
        return None
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)


def track(
    sock: Any, *, library: str, opened_at: str | None = None, found: bool = False
) -> TrackedSocket | None:
    """Guard a client's socket (anything with ``fileno()``); None if it has no open fd.

    ``found``: the socket was already open when forkguard saw it (``install()`` ran after the
    client connected), so it may be inherited: :func:`forkguard._registry.owner_of_found`.
    """
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return None
    identity = FdIdentity.of(fd) if fd >= 0 else None
    if identity is None:
        return None
    key = (identity.device, identity.inode)
    existing = _tracked.get(key)
    if existing is not None and existing.identity == identity:
        return existing
    owner = _registry.owner_of_found((identity,)) if found else os.getpid()
    state = TrackedSocket(identity, owner, library, _peer(sock), opened_at)
    _tracked[key] = state
    if state.owner_pid == os.getpid():
        _stats.counters.connections_opened += 1
    if len(_tracked) >= _sweep_at:
        _sweep()
    return state


def _sweep() -> None:
    """Drop entries whose socket was closed (the fd no longer holds it)."""
    global _sweep_at
    for key, state in list(_tracked.items()):
        if not state.neutralized and not state.identity.is_current():
            del _tracked[key]
    _sweep_at = max(_MIN_SWEEP, 2 * len(_tracked))


def neutralize_inherited() -> list[TrackedSocket]:
    """Point every inherited client socket still open at /dev/null; returns the ones done.

    A socket whose fd no longer holds it was closed by its owner before the fork: nothing of it
    reached this process, so there is nothing to silence (and it is not a failure).
    """
    pid, done = os.getpid(), []
    for key, state in list(_tracked.items()):
        if state.owner_pid == pid or state.neutralized:
            continue
        try:
            silenced = neutralize_fd(state.identity)
        except OSError as exc:
            _report.neutralize_failed(f"{state.describe()}: dup2 failed: {exc}")
            continue
        if not silenced:
            del _tracked[key]
            continue
        state.neutralized = True
        _stats.counters.connections_neutralized += 1
        done.append(state)
    if done:
        log.debug("forkguard silenced %d inherited client socket(s)", len(done))
    return done


def inherited() -> list[TrackedSocket]:
    """Every tracked socket this process did not open itself."""
    pid = os.getpid()
    return [s for s in list(_tracked.values()) if s.owner_pid != pid]


def all_tracked() -> list[TrackedSocket]:
    return list(_tracked.values())


def clear() -> None:
    _tracked.clear()
