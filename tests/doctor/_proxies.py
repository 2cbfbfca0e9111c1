"""Things that stand between an app and its database server, for the doctor's pooler tests: a
private PgBouncer in front of the shared PostgreSQL (the lab's harness starts it), and a plain
TCP forwarder (what a proxy or a port mapping looks like from the client side)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from forkguard_lab.harness.pooler import PgBouncer, private_pgbouncer

__all__ = ["PgBouncer", "private_pgbouncer", "tcp_forwarder"]


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        while True:
            readable, _, _ = select.select([a, b], [], [], 60)
            if not readable:
                return
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


@contextmanager
def tcp_forwarder(target_port: int) -> Iterator[int]:
    """Forward a free local port to 127.0.0.1:``target_port``; yields the local port."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()

    thread = threading.Thread(target=serve, name="fg-doc-forwarder", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(timeout=10)
