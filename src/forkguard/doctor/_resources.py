"""The other things still open after import that every worker would inherit: threads,
sockets that are not a database connection, asyncio event loops."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

from .. import _procfs
from ._recorders import recorder
from ._sockets import inode, socket_facts


def collect_threads() -> list[dict[str, Any]]:
    result = []
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is main:
            continue
        site, stack, phase = recorder.thread_sites.get(id(thread), (None, [], "unknown"))
        target = getattr(thread, "_target", None)
        result.append(
            {
                "name": thread.name,
                "daemon": thread.daemon,
                "target": getattr(target, "__qualname__", None) if target is not None else None,
                "class": f"{type(thread).__module__}.{type(thread).__qualname__}",
                "started_at": site,
                "stack": stack,
                "phase": phase,
            }
        )
    return result


def _open_loops() -> list[Any]:
    """Every asyncio event loop not closed (without importing asyncio if the app did not)."""
    if "asyncio" not in sys.modules:
        return []
    import asyncio

    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed()
    ]


def collect_loops() -> list[dict[str, Any]]:
    return [{"class": type(loop).__name__, "running": loop.is_running()} for loop in _open_loops()]


def _loop_socket_inodes() -> set[int]:
    """The self-pipe sockets of event loops: reported with the loop, not as sockets."""
    inodes: set[int] = set()
    for loop in _open_loops():
        for attr in ("_ssock", "_csock"):
            sock = getattr(loop, attr, None)
            sock_inode = inode(sock.fileno()) if sock is not None else None
            if sock_inode is not None:
                inodes.add(sock_inode)
    return inodes


def collect_sockets(db_inodes: set[int]) -> list[dict[str, Any]]:
    """Every socket open but those of the database connections (``db_inodes``) and loops."""
    result = []
    db_inodes = db_inodes | _loop_socket_inodes()
    for fd, sock_inode in sorted((_procfs.socket_inodes() or {}).items()):
        if sock_inode in db_inodes or fd <= 2:
            continue
        facts = socket_facts(fd)
        record = recorder.sockets.get(sock_inode)
        facts["opened_at"] = record.site if record else None
        facts["stack"] = record.stack if record else []
        facts["phase"] = record.phase if record else "unknown"
        facts["library"] = record.library if record else None
        if record is not None and not facts.get("peer") and record.event == "connect":
            facts["peer"] = record.address
        result.append(facts)
    return _without_internal_pairs(result)


def _without_internal_pairs(sockets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the two ends of a TCP connection that this process holds both of: a library's
    wake-up pair (pika's ioloop connects to itself over 127.0.0.1), reported with its client."""
    local = {s.get("local") for s in sockets if s.get("peer")}
    paired = {s.get("local") for s in sockets if s.get("peer") in local}
    return [s for s in sockets if s.get("local") not in paired and s.get("peer") not in paired]
