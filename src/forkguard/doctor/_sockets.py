"""What a socket is, from its file descriptor: family, addresses, listening, inode."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any, Iterator

from .. import _drivers

log = logging.getLogger("forkguard.doctor")


def format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    if isinstance(address, bytes):
        return address.decode(errors="replace") or "(unnamed)"
    return str(address) if address else "(unnamed)"


def fd_of(conn: Any) -> int | None:
    """The socket under a driver's connection, or None."""
    try:
        return _drivers.known_fd(conn)
    except Exception as exc:
        log.debug("forkguard doctor: no fd for %r: %s", conn, exc)
        return None


@contextlib.contextmanager
def _dup_socket(fd: int) -> Iterator[socket.socket]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        yield sock
    finally:
        sock.close()


def socket_facts(fd: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"fd": fd}
    try:
        with _dup_socket(fd) as sock:
            facts["family"] = sock.family.name
            facts["type"] = sock.type.name
            facts["local"] = format_address(sock.getsockname())
            try:
                facts["peer"] = format_address(sock.getpeername())
            except OSError:
                facts["peer"] = None
            facts["listening"] = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError as exc:
        facts["error"] = str(exc)
    return facts


def inode(fd: int | None) -> int | None:
    if fd is None:
        return None
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None
