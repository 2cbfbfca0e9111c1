"""What Linux's /proc says about sockets: the one place forkguard reads it.

Two questions need it. Which fd is a driver's socket, when the driver does not say (the
generic fallback in :mod:`._drivers`)? And is a connection this process finds inherited - is
its socket still open in the parent (:mod:`._registry`, for an ``install()`` that runs after a
fork)? Both come down to "which socket inodes does process P hold"; where /proc cannot be read
(not Linux, another user's process) the answer is ``None``, never a guess.
"""

from __future__ import annotations

import os


def socket_inodes(pid: int | str = "self") -> dict[int, int] | None:
    """fd -> socket inode for every socket ``pid`` has open; None if /proc can't tell."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    result: dict[int, int] = {}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            result[int(name)] = int(target[8:-1])
    return result


def established_tcp_inodes_to_port(port: int) -> set[int]:
    """Inodes of this process's established TCP connections whose peer port is ``port``."""
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
