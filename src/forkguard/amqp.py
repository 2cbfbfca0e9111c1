"""py-amqp connections - what kombu's ``pyamqp://`` / ``amqp://`` transport and Celery's
RabbitMQ broker connections are made of - opened at import and inherited by every worker.

The failure is pika's (:mod:`forkguard.pika`): interleaved frames on one connection, or a
publish on a silenced socket that is lost without an error. In a child, after the core has
pointed the inherited socket at /dev/null, the ``amqp.Connection`` raises
:class:`~forkguard.InheritedConnectionError` on any use, and so does every channel and kombu
producer on it (they reach the connection to write). ``connected`` answers False, so kombu
(``Connection.connected``, ``ensure_connection``) opens a new connection of the child's own
instead of using it; ``close()`` and ``collect()`` do nothing - py-amqp's own ``collect()``
would ``shutdown()`` the socket, which the parent shares, and unwrap TLS (a close_notify).

py-amqp has no hook that runs when a connection opens; this adapter wraps
``amqp.Connection.connect`` (public) and records the connection and ``transport.sock``.
Connections opened before ``install()`` are found on the heap.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _clients, _heap, _inert, _integration

# Installed by forkguard.install() when amqp (kombu's transport) is imported; nothing to call.
__all__: list[str] = []

LIBRARY = "amqp"
_installed = False
_connections = _clients.InheritedObjects(
    LIBRARY,
    {"connected": False, "close": _inert.nothing, "collect": _inert.nothing},
)


def _socket_of(conn: Any) -> Any:
    return getattr(getattr(conn, "transport", None), "sock", None)


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        _connections.record(self, _socket_of(self))
        return result

    return connect


def _install() -> None:
    global _installed
    if _installed:
        return
    from amqp import Connection

    _clients.wrap(LIBRARY, Connection, "connect", _recording)
    _installed = True
    _integration.register(_INTEGRATION)
    for conn in _heap.instances_of(Connection):
        _connections.record(conn, _socket_of(conn), found=True)


def uninstall() -> None:
    global _installed
    _clients.unwrap_all(LIBRARY)
    _connections.clear()
    _integration.unregister(LIBRARY)
    _installed = False


_INTEGRATION = _integration.Integration(
    LIBRARY, install=_install, uninstall=uninstall, after_fork=_connections.after_fork
)
