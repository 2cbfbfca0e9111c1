"""urllib3 - and so ``requests.Session``, botocore and every client built on it.

A pool (``PoolManager``, ``HTTPConnectionPool``, a ``requests.Session``'s adapter) built at
import keeps its keep-alive connections open; every preloaded worker inherits them. Two
processes writing on one TLS connection break it for both (``DECRYPTION_FAILED_OR_BAD_RECORD_MAC``
on the server, ``SSLError`` / ``RemoteDisconnected`` in the workers), and on plain HTTP one reads
the other's response. urllib3's maintainers advise forking before using a pool (urllib3 issue
850) and offer no after-fork or connection-created hook.

urllib3 opens every connection through ``urllib3.util.connection.create_connection`` (looked up
on that module at each call), so this adapter wraps that one function to record each new socket
(:mod:`forkguard._clients`). After a fork the core points the inherited sockets at /dev/null;
urllib3's own check before it reuses a pooled connection (``is_connection_dropped``: a
zero-timeout poll) then sees a hang-up, closes the connection - nothing reaches the server -
and opens the worker's own. The parent's connections are untouched. Connections that were open
before ``install()`` are found once, with the read-only heap search (:mod:`forkguard._heap`).
"""

from __future__ import annotations

from typing import Any, Callable

from . import _clients, _heap

# Installed by forkguard.install() when the library is imported; nothing to call.
__all__: list[str] = []

LIBRARY = "urllib3"


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_connection(*args: Any, **kwargs: Any) -> Any:
        sock = original(*args, **kwargs)
        _clients.record(sock, LIBRARY)
        return sock

    return create_connection


def _wrap() -> None:
    from urllib3.util import connection

    _clients.wrap(LIBRARY, connection, "create_connection", _recording)


def _adopt() -> None:
    from urllib3.connection import HTTPConnection

    for conn in _heap.instances_of(HTTPConnection):
        _clients.record_found(getattr(conn, "sock", None), LIBRARY)


_ADAPTER = _clients.Adapter(LIBRARY, wrap=_wrap, adopt=_adopt)
_INTEGRATION = _ADAPTER.integration
uninstall = _ADAPTER.uninstall
